package admin

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/internal/requestid"
)

// TestInstrumentHTTPRequestID checks that every request reaches the
// handler with one id, the same in its X-Request-Id header, its context
// and the access log; that a client's own X-Request-Id is replaced unless
// its peer is trusted, and kept when it is.
func TestInstrumentHTTPRequestID(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", strings.Join(r.Header.Values(requestid.Header), ","), requestid.FromContext(r.Context()))
	})
	for _, tt := range []struct {
		name     string
		trusted  bool
		incoming string
		wantKept bool
	}{
		{"no id, untrusted peer", false, "", false},
		{"client id, untrusted peer", false, "forged-1", false},
		{"client id, trusted peer", true, "lb-42", true},
		{"bad id, trusted peer", true, "two words", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newLogger()
			var asked []netip.Addr
			srv := httptest.NewUnstartedServer(NewMetrics().InstrumentHTTP(inner, HTTPOptions{
				Known:     known,
				AccessLog: logger,
				TrustedPeer: func(a netip.Addr) bool {
					asked = append(asked, a)
					return tt.trusted
				},
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+"/", nil)
			req.Host = "a.example.test"
			if tt.incoming != "" {
				req.Header.Set(requestid.Header, tt.incoming)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			header, ctxID, _ := strings.Cut(readAll(t, resp), " ")
			if header != ctxID || header == "" {
				t.Fatalf("handler saw X-Request-Id %q and context id %q, want one id in both", header, ctxID)
			}
			if kept := header == tt.incoming; kept != tt.wantKept {
				t.Errorf("handler saw id %q for incoming %q: kept %v, want %v", header, tt.incoming, kept, tt.wantKept)
			}
			if !tt.wantKept && len(header) != 16 {
				t.Errorf("handler saw id %q, want a new 16-character id", header)
			}
			if want := netip.MustParseAddr("127.0.0.1"); len(asked) != 1 || asked[0] != want {
				t.Errorf("TrustedPeer asked about %v, want [%v]", asked, want)
			}
			recs := logs.requests(t)
			if len(recs) != 1 || recs[0]["request_id"] != header {
				t.Errorf("access log %v, want request_id=%q", recs, header)
			}
		})
	}
}

// TestInstrumentHTTPBytesAndInFlight checks the request and response
// byte counters (bodies only, by host and protocol) and that a request
// counts as in flight while, and only while, its handler runs.
func TestInstrumentHTTPBytesAndInFlight(t *testing.T) {
	for _, p := range protos() {
		t.Run(p.name, func(t *testing.T) {
			m := NewMetrics()
			entered, release := make(chan struct{}), make(chan struct{})
			inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if r.URL.Path == "/wait" {
					entered <- struct{}{}
					<-release
				}
				fmt.Fprintf(w, "got %d bytes", len(body))
			})
			srv, logs := startInstrumented(t, m, inner, p.h2, true)
			post := func(path, body string) {
				req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
				req.Host = "a.example.test"
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				readAll(t, resp)
			}
			done := make(chan struct{})
			go func() { defer close(done); post("/wait", "0123456789") }()
			select {
			case <-entered:
			case <-done:
				t.Fatal("the request ended before its handler ran")
			}
			labels := map[string]string{"host": "a.example.test"}
			wantValue(t, scrape(t, m), "leproxy_http_requests_in_flight", labels, 1)
			close(release)
			<-done
			post("/", "abc")
			mfs := scrape(t, m)
			wantValue(t, mfs, "leproxy_http_requests_in_flight", labels, 0)
			byProto := map[string]string{"host": "a.example.test", "protocol": p.label}
			wantValue(t, mfs, "leproxy_http_request_bytes_total", byProto, 13)
			wantValue(t, mfs, "leproxy_http_response_bytes_total", byProto, float64(len("got 10 bytes")+len("got 3 bytes")))
			recs := logs.requests(t)
			if len(recs) != 2 || recs[0]["bytes_in"] != 10.0 || recs[1]["bytes_in"] != 3.0 || recs[1]["bytes_out"] != float64(len("got 3 bytes")) {
				t.Errorf("access log %v, want bytes_in 10 then 3", recs)
			}
		})
	}
}
