package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestUnknownServerNamesLogged runs the daemon and sends TLS clients with
// server names the mapping does not have to the HTTPS listener and to a tcp
// listener: each name is logged at Info once ("unknown server name
// refused"), whichever listener saw it first, and a name given twice is
// logged once.
func TestUnknownServerNamesLogged(t *testing.T) {
	echo := dbtest.StartEcho(t, "echo", nil)
	tcpPort := testenv.FreePort(t)
	dir := t.TempDir()
	mapping := writeFile(t, dir, "mapping.yml", fmt.Sprintf(`a.localhost: %s
tcp:
  - listen: "127.0.0.1:%d"
    protocol: tls
    routes: {e.localhost: %s}
`, backend(t, "a"), tcpPort, echo.Addr))
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapping, "-cache", dir, "-addr", addr, "-http", "", "-acme", "local", "-log-format", "json")
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", tcpPort)

	hello := func(addr, sni string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}) // #nosec G402 -- the handshake is refused or its certificate unused
		tc.Handshake()
		io.Copy(io.Discard, tc)
	}
	hello(addr, "nope.localhost")
	hello(addr, "NOPE.localhost")
	hello(addr, "other.localhost")
	hello(tcpAddr, "nope.localhost") // logged by the HTTPS listener already
	hello(tcpAddr, "tcp-only.localhost")

	want := []string{"https nope.localhost", "https other.localhost", "tls tcp-only.localhost"}
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = got[:0]
		for _, line := range strings.Split(d.log.String(), "\n") {
			var rec struct{ Level, Msg, Protocol, SNI, Client string }
			if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "unknown server name refused" {
				continue
			}
			if rec.Level != "INFO" || !strings.HasPrefix(rec.Client, "127.0.0.1:") {
				t.Errorf("unknown name line %q: want INFO with the client", line)
			}
			got = append(got, rec.Protocol+" "+rec.SNI)
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("unknown server names logged: %q, want %q", got, want)
	}
}
