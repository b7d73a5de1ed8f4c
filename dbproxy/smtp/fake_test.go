package smtp

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// startFake starts a minimal SMTP server for the conformance suite, named
// name: it greets with greeting (a 220 when ""), answers EHLO with
// PIPELINING and SIZE, "XECHO msg" with "250 name:msg", QUIT with 221 and
// the close, anything else with 250, and closes at the client's EOF.
func startFake(t testing.TB, name, greeting string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if greeting == "" {
		greeting = "220 " + name + " fake ESMTP"
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveFake(c, name, greeting)
		}
	}()
	return l.Addr().String()
}

func serveFake(c net.Conn, name, greeting string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	write := func(s string) { c.Write([]byte(s + "\r\n")) }
	write(greeting)
	if !strings.HasPrefix(greeting, "220") {
		return
	}
	for {
		line, err := readLine(br)
		if err != nil {
			return
		}
		verb, arg := parseCommand(line)
		switch verb {
		case "EHLO":
			write("250-" + name + " hello " + arg + "\r\n250-PIPELINING\r\n250 SIZE 1000")
		case "XECHO":
			write("250 " + name + ":" + arg)
		case "QUIT":
			write("221 bye")
			return
		default:
			write("250 ok")
		}
	}
}
