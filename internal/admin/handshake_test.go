package admin

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestConnState(t *testing.T) {
	for _, p := range protos() {
		t.Run(p.name, func(t *testing.T) {
			m := NewMetrics()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hijack" {
					if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
						c.Close()
					}
					return
				}
				io.WriteString(w, "ok")
			}))
			srv.EnableHTTP2 = p.h2
			srv.Config.ConnState = m.ConnState("https")
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			t.Cleanup(srv.Close)
			addr := srv.Listener.Addr().String()

			// Success: a request, then the client closes its connection.
			client := srv.Client()
			do(t, srv, "GET", "a.example.test", "/", p.major)
			client.CloseIdleConnections()
			wantHandshakes := 1.0

			// Success: a connection taken over by its handler (HTTP/1.1
			// only: HTTP/2 cannot hijack).
			if !p.h2 {
				c, err := tls.Dial("tcp", addr, client.Transport.(*http.Transport).TLSClientConfig)
				if err != nil {
					t.Fatalf("dialing: %v", err)
				}
				io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
				io.Copy(io.Discard, c)
				c.Close()
				wantHandshakes++
			}

			// Failure: the client does not trust the certificate.
			if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: nil, ServerName: "a.example.test"}); err == nil {
				c.Close()
				t.Fatal("handshake with an untrusted certificate succeeded, want a failure")
			}
			// Failure: plaintext HTTP on the TLS port.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dialing: %v", err)
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
			io.Copy(io.Discard, c)
			c.Close()
			wantHandshakes += 2

			labels := map[string]string{"listener": "https"}
			waitFor(t, "every connection to be counted", func() bool {
				v, _ := value(scrape(t, m), "leproxy_tls_handshakes_total", labels)
				return v >= wantHandshakes
			})
			mfs := scrape(t, m)
			wantValue(t, mfs, "leproxy_tls_handshakes_total", labels, wantHandshakes)
			wantValue(t, mfs, "leproxy_tls_handshake_failures_total", labels, 2)
		})
	}
}
