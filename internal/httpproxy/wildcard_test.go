package httpproxy

import (
	"net/http"
	"testing"

	"github.com/leproxy/leproxy/internal/config"
)

// TestWildcardRouting checks that a wildcard host serves the names one
// label under it, that an exact host beats it, and that a request under
// the wildcard's certificate for another name it covers is not misdirected
// while one for the exact host is.
func TestWildcardRouting(t *testing.T) {
	wild := startBackend(t, echoHandler("wild"))
	exact := startBackend(t, echoHandler("exact"))
	h := mustNew(t, []config.Host{tcpHost("*.example.test", wild), tcpHost("a.example.test", exact)}, Options{})

	type request struct {
		host        string
		wantStatus  int
		wantBackend string
	}
	for _, tc := range []struct {
		sni  string
		reqs []request
	}{
		{"z.example.test", []request{
			{"z.example.test", http.StatusOK, "wild"},
			{"Y.Example.Test.:443", http.StatusOK, "wild"}, // same wildcard certificate
			{"a.example.test", http.StatusMisdirectedRequest, ""},
			{"x.y.example.test", http.StatusNotFound, ""}, // one label only
			{"example.test", http.StatusNotFound, ""},
			{"*.example.test", http.StatusNotFound, ""}, // the pattern is no host
		}},
		{"a.example.test", []request{
			{"a.example.test", http.StatusOK, "exact"},
			{"z.example.test", http.StatusMisdirectedRequest, ""},
		}},
	} {
		t.Run(tc.sni, func(t *testing.T) {
			c := serveSNI(t, h, true, tc.sni)
			for _, rq := range tc.reqs {
				resp, body := do(t, c, "https://proxy.test/x", http.Header{"Host": {rq.host}})
				if resp.StatusCode != rq.wantStatus {
					t.Errorf("Host %q: got status %d, want %d (body %q)", rq.host, resp.StatusCode, rq.wantStatus, body)
					continue
				}
				if rq.wantStatus == http.StatusOK {
					if got := decodeEcho(t, body).Backend; got != rq.wantBackend {
						t.Errorf("Host %q: got backend %q, want %q", rq.host, got, rq.wantBackend)
					}
				}
			}
		})
	}
	for host, want := range map[string]bool{"q.example.test": true, "a.example.test": true, "q.r.example.test": false, "example.test": false} {
		if got := h.Known(host); got != want {
			t.Errorf("Known(%q) = %v, want %v", host, got, want)
		}
	}
}
