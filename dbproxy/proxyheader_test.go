package dbproxy_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/pires/go-proxyproto"
)

// proxyBackend is a backend behind a go-proxyproto listener that requires
// the header: for each connection it answers one line with the client
// address the header gave, "from <addr> to <addr>: <line>".
func proxyBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{
		Listener:          l,
		ReadHeaderTimeout: 5 * time.Second,
		ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
	}
	t.Cleanup(func() { pl.Close() })
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					c.Write([]byte("error: " + err.Error() + "\n"))
					return
				}
				c.Write([]byte("from " + c.RemoteAddr().String() + " to " + c.LocalAddr().String() + ": " + line))
			}()
		}
	}()
	return l.Addr().String()
}

// TestProxyProtocolHeader checks that a route with ProxyProtocol makes the
// backend, which parses the header with go-proxyproto, see the client's
// own address and the listener's, in both versions, and that a route
// without it sends none (the header-requiring backend refuses it).
func TestProxyProtocolHeader(t *testing.T) {
	for _, v := range []dbproxy.ProxyVersion{dbproxy.ProxyV1, dbproxy.ProxyV2} {
		t.Run(string(v), func(t *testing.T) {
			p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{
				Protocol: tlsProto(t),
				Routes:   []dbproxy.Route{{Host: "a.test", Backend: proxyBackend(t), ProxyProtocol: v}},
			})
			tc := p.DialTLS(t, "a.test", "a.test")
			dbtest.MustWrite(t, tc, []byte("hello\n"))
			got, err := bufio.NewReader(tc).ReadString('\n')
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			client := tc.LocalAddr().String() // the client's side of its TCP connection
			want := "from " + client + " to " + p.Addr + ": hello\n"
			if got != want {
				t.Errorf("backend answered %q, want %q", got, want)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{
			Protocol: tlsProto(t),
			Routes:   []dbproxy.Route{{Host: "a.test", Backend: proxyBackend(t)}},
		})
		tc := p.DialTLS(t, "a.test", "a.test")
		dbtest.MustWrite(t, tc, []byte("hello\n"))
		got, _ := bufio.NewReader(tc).ReadString('\n')
		if strings.HasPrefix(got, "from ") {
			t.Errorf("backend answered %q: it got a PROXY header from a route without proxy_protocol", got)
		}
	})
}

func TestProxyProtocolInvalid(t *testing.T) {
	_, err := dbproxy.New(dbproxy.Config{
		Protocol:       tlsProto(t),
		Routes:         []dbproxy.Route{{Host: "a.test", Backend: "127.0.0.1:1", ProxyProtocol: "v3"}},
		GetCertificate: dbtest.NewCA(t).CertSource(t, "a.test"),
	})
	if err == nil || !strings.Contains(err.Error(), `proxy protocol "v3"`) {
		t.Errorf("New with proxy protocol v3: %v, want an error naming it", err)
	}
}
