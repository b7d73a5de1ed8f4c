package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/requestid"
)

// TestRequestIDReachesBackend runs the daemon and checks that the backend
// receives the request id the access log records: a new one, whatever the
// client sent, unless the client is one of the mapping's trusted_proxies,
// whose X-Request-Id is kept.
func TestRequestIDReachesBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Join(r.Header.Values(requestid.Header), ","))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, tt := range []struct {
		name, limits string
		wantKept     bool
	}{
		{"untrusted client", "", false},
		{"trusted proxy", "limits:\n  trusted_proxies: [127.0.0.1/32]\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mapping := writeFile(t, dir, "mapping.yml", "a.localhost: "+ln.Addr().String()+"\n"+tt.limits)
			addr := addrFor(t)
			d := startDaemon(t, addr, "-map", mapping, "-cache", dir, "-addr", addr, "-http", "", "-acme", "local", "-log-format", "json")
			rootPEM, err := os.ReadFile(localRootFromJSONLog(t, d.log.String()))
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(rootPEM)
			c := clientFor(addr, roots)
			for i, incoming := range []string{"", "from-client-7"} {
				req, _ := http.NewRequest("GET", "https://a.localhost/", nil)
				if incoming != "" {
					req.Header.Set(requestid.Header, incoming)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := string(b)
				if kept := got == incoming; incoming != "" && kept != tt.wantKept {
					t.Errorf("request %d: backend got X-Request-Id %q for the client's %q: kept %v, want %v", i, got, incoming, kept, tt.wantKept)
				}
				if got == "" || strings.Contains(got, ",") {
					t.Errorf("request %d: backend got X-Request-Id %q, want one id", i, got)
				}
				if want := fmt.Sprintf(`"request_id":%q`, got); !waitForLog(d, want) {
					t.Errorf("request %d: no access log line with %s:\n%s", i, want, d.log)
				}
			}
		})
	}
}

// waitForLog reports whether d's log holds want within a few seconds: an
// access log line is written when its handler returns, which may be after
// the client has read the response.
func waitForLog(d *daemon, want string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.log.String(), want) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// localRootFromJSONLog returns the local CA root's file from a JSON log.
func localRootFromJSONLog(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec struct{ Msg, File string }
		if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec.Msg, "local CA root") && rec.File != "" {
			return rec.File
		}
	}
	t.Fatalf("no local CA root file in the log:\n%s", log)
	return ""
}
