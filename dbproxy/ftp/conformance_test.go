package ftp_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// TestConformance runs the dbproxy conformance suite on "ftp" (explicit
// TLS; "ftps" has no plaintext to allow) with a fake FTP server that
// answers "SITE <msg>" with "200 <name>:<msg>": the session is leproxy's
// control loop relaying commands and replies, not a byte pump.
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol:     "ftp",
		StartBackend: startFake,
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c, err := connect(conn, cfg)
			if err != nil {
				conn.Close() // a refused FTP client quits
			}
			return c, err
		},
		Request:    func(msg string) []byte { return []byte("SITE " + msg + "\r\n") },
		ReadAnswer: readAnswer,
	}.Run(t)
}

// connect logs in as an FTP client does: the greeting, AUTH TLS when cfg
// is set, then a first SITE exchange, whose refusal is the error.
func connect(conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	if _, err := readAnswer(conn); err != nil && !strings.HasPrefix(err.Error(), "220 ") {
		return nil, err
	}
	c := conn
	if cfg != nil {
		if _, err := conn.Write([]byte("AUTH TLS\r\n")); err != nil {
			return nil, err
		}
		if _, err := readAnswer(conn); err == nil || !strings.HasPrefix(err.Error(), "234 ") {
			return nil, errors.New("AUTH TLS: " + errString(err))
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write([]byte("SITE connect\r\n")); err != nil {
		return nil, err
	}
	got, err := readAnswer(c)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(got, ":connect") {
		return nil, errors.New("first answer: " + got)
	}
	return c, nil
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// readAnswer reads one reply a byte at a time (nothing beyond it is
// consumed) and returns the text of a 200; any other reply is an error
// carrying the whole line.
func readAnswer(r io.Reader) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		for {
			if _, err := io.ReadFull(r, b); err != nil {
				return "", err
			}
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		l := strings.TrimSuffix(string(line), "\r")
		if len(l) >= 4 && l[3] == '-' {
			line = line[:0]
			continue // a multi-line reply: its last line decides
		}
		if strings.HasPrefix(l, "200 ") {
			return l[4:], nil
		}
		return "", errors.New(l)
	}
}

// startFake starts a fake FTP server named name.
func startFake(t testing.TB, name string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbtest.ServeFake(t, l, time.Minute, nil, func(c net.Conn) {
		w := func(s string) { io.WriteString(c, s+"\r\n") }
		w("220 " + name + " ready")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			switch strings.ToUpper(verb) {
			case "SITE":
				w("200 " + name + ":" + arg)
			case "QUIT":
				w("221 bye")
				return
			default:
				w("500 " + strconv.Quote(verb) + " unknown")
			}
		}
	})
	return l.Addr().String()
}
