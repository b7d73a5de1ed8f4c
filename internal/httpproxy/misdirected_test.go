package httpproxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/leproxy/leproxy/internal/config"
)

// serveSNI serves h over TLS (HTTP/2 offered when h2) and returns a client
// that sends every request to it with sni as the TLS server name, whatever
// the URL's host. All requests of a client share one connection where the
// protocol allows, as a coalescing browser's would.
func serveSNI(t *testing.T, h http.Handler, h2 bool, sni string) *http.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	d := &net.Dialer{Timeout: testTimeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		ForceAttemptHTTP2: h2,
		// The test certificate does not name the test hosts; what is
		// tested is the server name the client sends.
		TLSClientConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// countingHandler counts its requests before passing them to next.
func countingHandler(n *atomic.Int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		next.ServeHTTP(w, r)
	})
}

func TestMisdirected(t *testing.T) {
	var hitsA, hitsB atomic.Int64
	a := startBackend(t, countingHandler(&hitsA, echoHandler("a")))
	b := startBackend(t, countingHandler(&hitsB, echoHandler("b")))
	hosts := []config.Host{tcpHost("a.example.test", a), tcpHost("b.example.test", b)}

	type request struct {
		host        string
		wantStatus  int
		wantBackend string // for 200
		wantBody    string // otherwise
	}
	tests := []struct {
		name  string
		allow bool
		sni   string // "" sends none (the client asks for 127.0.0.1)
		reqs  []request
	}{
		{"sni a", false, "a.example.test", []request{
			{"a.example.test", http.StatusOK, "a", ""},
			{"b.example.test", http.StatusMisdirectedRequest, "", "misdirected request\n"},
			{"B.Example.Test.:443", http.StatusMisdirectedRequest, "", "misdirected request\n"},
			{"a.example.test:443", http.StatusOK, "a", ""},
			{"c.example.test", http.StatusNotFound, "", "unknown host\n"},
		}},
		{"sni spelt differently", false, "A.Example.TEST", []request{
			{"a.example.test", http.StatusOK, "a", ""},
			{"b.example.test", http.StatusMisdirectedRequest, "", "misdirected request\n"},
		}},
		{"no sni", false, "", []request{
			{"a.example.test", http.StatusOK, "a", ""},
			{"b.example.test", http.StatusOK, "b", ""},
			{"c.example.test", http.StatusNotFound, "", "unknown host\n"},
		}},
		{"allowed", true, "a.example.test", []request{
			{"a.example.test", http.StatusOK, "a", ""},
			{"b.example.test", http.StatusOK, "b", ""},
		}},
	}
	for _, proto := range []struct {
		name      string
		h2        bool
		wantMajor int
	}{{"http1", false, 1}, {"http2", true, 2}} {
		for _, tc := range tests {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				h := mustNew(t, hosts, Options{AllowMisdirected: tc.allow})
				sni := tc.sni
				if sni == "" {
					sni = "127.0.0.1" // an IP address: crypto/tls sends no SNI
				}
				c := serveSNI(t, h, proto.h2, sni)
				for _, rq := range tc.reqs {
					hitsA.Store(0)
					hitsB.Store(0)
					resp, body := do(t, c, "https://proxy.test/x", http.Header{"Host": {rq.host}})
					if resp.ProtoMajor != proto.wantMajor {
						t.Errorf("Host %q: got HTTP/%d, want HTTP/%d", rq.host, resp.ProtoMajor, proto.wantMajor)
					}
					if resp.StatusCode != rq.wantStatus {
						t.Errorf("Host %q: got status %d, want %d (body %q)", rq.host, resp.StatusCode, rq.wantStatus, body)
						continue
					}
					if rq.wantStatus != http.StatusOK {
						if body != rq.wantBody {
							t.Errorf("Host %q: got body %q, want %q", rq.host, body, rq.wantBody)
						}
						if n := hitsA.Load() + hitsB.Load(); n != 0 {
							t.Errorf("Host %q: backends got %d requests, want none", rq.host, n)
						}
						continue
					}
					if got := decodeEcho(t, body).Backend; got != rq.wantBackend {
						t.Errorf("Host %q: got backend %q, want %q", rq.host, got, rq.wantBackend)
					}
				}
			})
		}
	}
}

func TestMisdirectedPlainHTTP(t *testing.T) {
	// Without TLS there is no server name to compare: a plain request for
	// any mapped host is routed (the plain listener's redirects and ACME
	// http-01 do not go through the Handler at all).
	b := startBackend(t, echoHandler("b"))
	a := startBackend(t, echoHandler("a"))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", a), tcpHost("b.example.test", b)}, Options{})
	req := httptest.NewRequest(http.MethodGet, "http://b.example.test/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("got status %d, want 200 (body %q)", rec.Code, rec.Body.String())
	}
	// The same request with r.TLS naming a is refused.
	req = httptest.NewRequest(http.MethodGet, "https://b.example.test/", nil)
	req.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: "a.example.test"}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMisdirectedRequest {
		t.Fatalf("got status %d, want 421 (body %q)", rec.Code, rec.Body.String())
	}
}
