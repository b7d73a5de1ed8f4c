package admin

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/leproxy/leproxy/internal/hostname"
)

var (
	testKnown = map[string]bool{"a.example.test": true, "b.example.test": true}
	testBacks = map[string]string{"a.example.test": "10.0.0.1:8080", "b.example.test": "/run/b.sock"}
)

func known(host string) bool       { return testKnown[host] }
func backendOf(host string) string { return testBacks[host] }

// startInstrumented serves h wrapped by m.InstrumentHTTP over TLS, with
// HTTP/2 offered when h2 is set, and returns the server and its access
// log.
func startInstrumented(t *testing.T, m *Metrics, h http.Handler, h2, accessLog bool) (*httptest.Server, *logBuffer) {
	t.Helper()
	logger, logs := newLogger()
	srv := httptest.NewUnstartedServer(m.InstrumentHTTP(h, known, backendOf, logger, accessLog))
	srv.EnableHTTP2 = h2
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, logs
}

// do sends one request for host and returns the response body.
func do(t *testing.T, srv *httptest.Server, method, host, path string, wantProto int) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	if resp.ProtoMajor != wantProto {
		t.Fatalf("%s %s%s: got HTTP/%d, want HTTP/%d", method, host, path, resp.ProtoMajor, wantProto)
	}
	return resp.StatusCode, readAll(t, resp)
}

func protos() []struct {
	name  string
	h2    bool
	major int
	label string // the proto label
} {
	return []struct {
		name  string
		h2    bool
		major int
		label string
	}{{"HTTP/1.1", false, 1, "http/1.1"}, {"HTTP/2", true, 2, "h2"}}
}

func TestInstrumentHTTP(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "hello")
		case "/created":
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "made")
		case "/empty":
		default:
			http.Error(w, "not here", http.StatusNotFound)
		}
	})
	for _, p := range protos() {
		t.Run(p.name, func(t *testing.T) {
			m := NewMetrics()
			srv, logs := startInstrumented(t, m, inner, p.h2, true)

			for range 3 {
				if code, body := do(t, srv, "GET", "a.example.test", "/ok?token=secret", p.major); code != 200 || body != "hello" {
					t.Fatalf("GET a/ok: got %d %q, want 200 \"hello\"", code, body)
				}
			}
			if code, _ := do(t, srv, "GET", "b.example.test:443", "/nowhere", p.major); code != 404 {
				t.Fatalf("GET b/nowhere: got %d, want 404", code)
			}
			if code, _ := do(t, srv, "GET", "Unknown.Example.Test.", "/ok", p.major); code != 200 {
				t.Fatalf("GET unknown/ok: got %d, want 200", code)
			}
			if code, body := do(t, srv, "POST", "A.example.test", "/created", p.major); code != 201 || body != "made" {
				t.Fatalf("POST a/created: got %d %q, want 201 \"made\"", code, body)
			}
			if code, _ := do(t, srv, "BREW", "a.example.test", "/empty", p.major); code != 200 {
				t.Fatalf("BREW a/empty: got %d, want 200", code)
			}

			mfs := scrape(t, m)
			req := func(host, code, method string) map[string]string {
				return map[string]string{"host": host, "code": code, "method": method, "proto": p.label}
			}
			wantValue(t, mfs, "leproxy_http_requests_total", req("a.example.test", "200", "GET"), 3)
			wantValue(t, mfs, "leproxy_http_requests_total", req("b.example.test", "404", "GET"), 1)
			wantValue(t, mfs, "leproxy_http_requests_total", req("other", "200", "GET"), 1)
			wantValue(t, mfs, "leproxy_http_requests_total", req("a.example.test", "201", "POST"), 1)
			wantValue(t, mfs, "leproxy_http_requests_total", req("a.example.test", "200", "OTHER"), 1)
			if n := len(mfs["leproxy_http_requests_total"].GetMetric()); n != 5 {
				t.Errorf("leproxy_http_requests_total: got %d series, want 5", n)
			}
			for _, tt := range []struct {
				host, method string
				count        uint64
			}{
				{"a.example.test", "GET", 3}, {"b.example.test", "GET", 1}, {"other", "GET", 1},
				{"a.example.test", "POST", 1}, {"a.example.test", "OTHER", 1},
			} {
				hm := findMetric(mfs, "leproxy_http_request_duration_seconds", map[string]string{"host": tt.host, "method": tt.method, "proto": p.label})
				if hm == nil || hm.Histogram == nil {
					t.Errorf("duration histogram for %s %s: missing", tt.host, tt.method)
					continue
				}
				if got := hm.Histogram.GetSampleCount(); got != tt.count {
					t.Errorf("duration histogram for %s %s: got %d samples, want %d", tt.host, tt.method, got, tt.count)
				}
				var bounds []float64
				for _, b := range hm.Histogram.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), +1) {
						bounds = append(bounds, b.GetUpperBound())
					}
				}
				if !slices.Equal(bounds, httpDurationBuckets) {
					t.Errorf("duration histogram: got bucket bounds %v, want %v", bounds, httpDurationBuckets)
				}
			}

			recs := logs.requests(t)
			if len(recs) != 7 {
				t.Fatalf("got %d access log lines, want 7: %v", len(recs), recs)
			}
			wantLog := []struct {
				host, method, path, backend string
				status, bytes               float64
			}{
				{"a.example.test", "GET", "/ok", "10.0.0.1:8080", 200, 5},
				{"a.example.test", "GET", "/ok", "10.0.0.1:8080", 200, 5},
				{"a.example.test", "GET", "/ok", "10.0.0.1:8080", 200, 5},
				{"b.example.test", "GET", "/nowhere", "/run/b.sock", 404, float64(len("not here\n"))},
				{"unknown.example.test", "GET", "/ok", "", 200, 5},
				{"a.example.test", "POST", "/created", "10.0.0.1:8080", 201, 4},
				{"a.example.test", "BREW", "/empty", "10.0.0.1:8080", 200, 0},
			}
			for i, w := range wantLog {
				rec := recs[i]
				for k, v := range map[string]any{"proto": p.label, "host": w.host, "method": w.method, "path": w.path, "backend": w.backend, "status": w.status, "bytes": w.bytes, "level": "INFO"} {
					if rec[k] != v {
						t.Errorf("access log line %d: got %s=%v, want %v", i, k, rec[k], v)
					}
				}
				if client, _ := rec["client"].(string); !strings.HasPrefix(client, "127.0.0.1:") {
					t.Errorf("access log line %d: got client=%v, want 127.0.0.1:PORT", i, rec["client"])
				}
				if d, ok := rec["duration"].(float64); !ok || d <= 0 {
					t.Errorf("access log line %d: got duration=%v, want a positive number of nanoseconds", i, rec["duration"])
				}
				if _, ok := rec["aborted"]; ok {
					t.Errorf("access log line %d: got aborted=%v, want no such attribute", i, rec["aborted"])
				}
			}
		})
	}
}

func TestInstrumentHTTPAccessLogOff(t *testing.T) {
	m := NewMetrics()
	srv, logs := startInstrumented(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false, false)
	do(t, srv, "GET", "a.example.test", "/", 1)
	if recs := logs.requests(t); len(recs) != 0 {
		t.Errorf("got %d access log lines with the access log off, want 0", len(recs))
	}
	wantValue(t, scrape(t, m), "leproxy_http_requests_total", map[string]string{"host": "a.example.test", "code": "200", "method": "GET", "proto": "http/1.1"}, 1)
}

func TestInstrumentHTTPNilMetrics(t *testing.T) {
	var m *Metrics
	srv, logs := startInstrumented(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}), false, true)
	if code, _ := do(t, srv, "GET", "a.example.test", "/", 1); code != http.StatusTeapot {
		t.Fatalf("got status %d, want 418", code)
	}
	recs := logs.requests(t)
	if len(recs) != 1 || recs[0]["status"] != float64(http.StatusTeapot) {
		t.Errorf("got access log %v, want one line with status 418", recs)
	}
}

// TestInstrumentHTTPAborted checks a handler that panics with
// http.ErrAbortHandler, as httputil.ReverseProxy does when the backend
// fails in the middle of a body.
func TestInstrumentHTTPAborted(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantStatus  float64
		wantBytes   float64
		wantBodyErr bool
	}{
		{"after the header", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, 200, 7, true},
		{"before the header", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, 500, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics()
			srv, logs := startInstrumented(t, m, tt.handler, false, true)
			req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
			req.Host = "a.example.test"
			resp, err := srv.Client().Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("got a complete response from an aborted handler, want an error")
			}
			var recs []map[string]any
			waitFor(t, "the access log line", func() bool {
				recs = logs.requests(t)
				return len(recs) > 0
			})
			if recs[0]["aborted"] != true || recs[0]["status"] != tt.wantStatus || recs[0]["bytes"] != tt.wantBytes {
				t.Errorf("got access log %v, want aborted=true status=%v bytes=%v", recs[0], tt.wantStatus, tt.wantBytes)
			}
			wantValue(t, scrape(t, m), "leproxy_http_requests_total",
				map[string]string{"host": "a.example.test", "code": fmt.Sprint(tt.wantStatus), "method": "GET", "proto": "http/1.1"}, 1)
		})
	}
}

// TestInstrumentHTTPFlush checks that a flush through the wrapper reaches
// the client while the handler is still running.
func TestInstrumentHTTPFlush(t *testing.T) {
	flushers := []struct {
		name  string
		flush func(http.ResponseWriter) error
	}{
		{"http.Flusher", func(w http.ResponseWriter) error {
			f, ok := w.(http.Flusher)
			if !ok {
				return errors.New("ResponseWriter is not an http.Flusher")
			}
			f.Flush()
			return nil
		}},
		{"ResponseController", func(w http.ResponseWriter) error {
			return http.NewResponseController(w).Flush()
		}},
	}
	for _, p := range protos() {
		for _, fl := range flushers {
			t.Run(p.name+"/"+fl.name, func(t *testing.T) {
				release := make(chan struct{})
				var released bool
				t.Cleanup(func() {
					if !released {
						close(release)
					}
				})
				flushErr := make(chan error, 1)
				srv, logs := startInstrumented(t, NewMetrics(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "first\n")
					flushErr <- fl.flush(w)
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
					io.WriteString(w, "second\n")
				}), p.h2, true)

				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
				req.Host = "a.example.test"
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatalf("request: %v (the flushed header never arrived)", err)
				}
				defer resp.Body.Close()
				if err := <-flushErr; err != nil {
					t.Fatalf("flushing: %v", err)
				}
				br := bufio.NewReader(resp.Body)
				line, err := br.ReadString('\n')
				if err != nil || line != "first\n" {
					t.Fatalf("before the handler ended: got %q, %v; want \"first\\n\" (the flush did not reach the client)", line, err)
				}
				released = true
				close(release)
				rest, err := io.ReadAll(br)
				if err != nil || string(rest) != "second\n" {
					t.Fatalf("after the handler ended: got %q, %v; want \"second\\n\"", rest, err)
				}
				var recs []map[string]any
				waitFor(t, "the access log line", func() bool {
					recs = logs.requests(t)
					return len(recs) > 0
				})
				if recs[0]["bytes"] != float64(len("first\nsecond\n")) || recs[0]["status"] != float64(200) {
					t.Errorf("got access log %v, want status 200 and bytes %d", recs[0], len("first\nsecond\n"))
				}
			})
		}
	}
}

// TestInstrumentHTTPHijack checks that a handler can take over the
// connection through the wrapper, and that what it writes is counted.
func TestInstrumentHTTPHijack(t *testing.T) {
	const (
		switching = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		request   = "GET /raw HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
	)
	hijackers := []struct {
		name   string
		hijack func(http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error)
	}{
		{"http.Hijacker", func(w http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error) {
			h, ok := w.(http.Hijacker)
			if !ok {
				return nil, nil, errors.New("ResponseWriter is not an http.Hijacker")
			}
			return h.Hijack()
		}},
		{"ResponseController", func(w http.ResponseWriter) (io.ReadWriteCloser, *bufio.ReadWriter, error) {
			return http.NewResponseController(w).Hijack()
		}},
	}
	for _, hj := range hijackers {
		t.Run(hj.name, func(t *testing.T) {
			m := NewMetrics()
			handlerErr := make(chan error, 1)
			srv, logs := startInstrumented(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := hj.hijack(w)
				if err != nil {
					handlerErr <- err
					return
				}
				defer conn.Close()
				// The switch through the buffered writer, the echo on the
				// connection itself.
				brw.WriteString(switching)
				if err := brw.Flush(); err != nil {
					handlerErr <- err
					return
				}
				line, err := brw.ReadString('\n')
				if err != nil {
					handlerErr <- err
					return
				}
				if _, err := io.WriteString(conn, "echo: "+line); err != nil {
					handlerErr <- err
					return
				}
				// A *tls.Conn can half-close; the wrapper must keep that
				// (httputil.ReverseProxy uses it for websockets).
				cw, ok := conn.(interface{ CloseWrite() error })
				if !ok {
					handlerErr <- fmt.Errorf("hijacked %T cannot CloseWrite", conn)
					return
				}
				handlerErr <- cw.CloseWrite()
			}), false, true)

			conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), srv.Client().Transport.(*http.Transport).TLSClientConfig)
			if err != nil {
				t.Fatalf("dialing: %v", err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, request+"ping\n"); err != nil {
				t.Fatalf("writing: %v", err)
			}
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if err := <-handlerErr; err != nil {
				t.Fatalf("handler: %v", err)
			}
			if want := switching + "echo: ping\n"; string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}

			var recs []map[string]any
			waitFor(t, "the access log line", func() bool {
				recs = logs.requests(t)
				return len(recs) > 0
			})
			wantBytes := float64(len(switching) + len("echo: ping\n"))
			if recs[0]["status"] != float64(101) || recs[0]["bytes"] != wantBytes {
				t.Errorf("got access log %v, want status 101 and bytes %v", recs[0], wantBytes)
			}
			mfs := scrape(t, m)
			wantValue(t, mfs, "leproxy_http_requests_total", map[string]string{"host": "a.example.test", "code": "101", "method": "GET", "proto": "http/1.1"}, 1)
			if hm := findMetric(mfs, "leproxy_http_request_duration_seconds", map[string]string{"host": "a.example.test", "method": "GET", "proto": "http/1.1"}); hm != nil {
				t.Errorf("a hijacked connection was observed in the latency histogram: %v", hm)
			}
		})
	}

	t.Run("HTTP/2 refuses", func(t *testing.T) {
		handlerErr := make(chan error, 1)
		srv, _ := startInstrumented(t, NewMetrics(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _, err := w.(http.Hijacker).Hijack()
			handlerErr <- err
		}), true, false)
		do(t, srv, "GET", "a.example.test", "/", 2)
		if err := <-handlerErr; !errors.Is(err, http.ErrNotSupported) {
			t.Errorf("hijacking an HTTP/2 stream: got %v, want http.ErrNotSupported", err)
		}
	})
}

// TestInstrumentHTTPWebsocket runs a websocket through
// httputil.ReverseProxy behind the wrapper, the way leproxy serves it.
func TestInstrumentHTTPWebsocket(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo "), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(backend.Close)
	target, _ := url.Parse(backend.URL)
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	m := NewMetrics()
	srv, logs := startInstrumented(t, m, proxy, true, true)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	u := strings.Replace(srv.URL, "https://", "wss://", 1) + "/socket"
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: srv.Client(), Host: "a.example.test"})
	if err != nil {
		t.Fatalf("dialing through the wrapper: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("got status %d, want 101", resp.StatusCode)
	}
	var echoed int
	for i := range 3 {
		msg := fmt.Sprintf("message %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("writing %q: %v", msg, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("reading the echo of %q: %v", msg, err)
		}
		if want := "echo " + msg; typ != websocket.MessageText || string(got) != want {
			t.Errorf("got %v %q, want text %q", typ, got, want)
		}
		echoed += len(got)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("closing: %v", err)
	}

	var recs []map[string]any
	waitFor(t, "the access log line", func() bool {
		recs = logs.requests(t)
		return len(recs) > 0
	})
	if recs[0]["status"] != float64(101) || recs[0]["backend"] != "10.0.0.1:8080" {
		t.Errorf("got access log %v, want status 101 and backend 10.0.0.1:8080", recs[0])
	}
	// The 101 response, three echo frames (2-byte header each) and the
	// close frame: at least the echoed payloads and their headers.
	if b, _ := recs[0]["bytes"].(float64); b < float64(echoed+3*2) {
		t.Errorf("got bytes=%v, want at least %d", recs[0]["bytes"], echoed+3*2)
	}
	wantValue(t, scrape(t, m), "leproxy_http_requests_total", map[string]string{"host": "a.example.test", "code": "101", "method": "GET", "proto": "http/1.1"}, 1)
}

// TestInstrumentHTTPResponseController checks that what
// http.ResponseController reaches through Unwrap still works.
func TestInstrumentHTTPResponseController(t *testing.T) {
	for _, p := range protos() {
		t.Run(p.name, func(t *testing.T) {
			handlerErr := make(chan error, 1)
			srv, _ := startInstrumented(t, NewMetrics(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				handlerErr <- errors.Join(
					rc.SetReadDeadline(time.Now().Add(time.Minute)),
					rc.SetWriteDeadline(time.Now().Add(time.Minute)),
					rc.EnableFullDuplex(),
				)
			}), p.h2, false)
			do(t, srv, "GET", "a.example.test", "/", p.major)
			if err := <-handlerErr; err != nil {
				t.Errorf("through the wrapper: %v", err)
			}
		})
	}
}

// BenchmarkInstrumentHTTP is the per-request cost of the metrics and the
// access log around a handler that does nothing.
func BenchmarkInstrumentHTTP(b *testing.B) {
	m := NewMetrics()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	known := func(host string) bool { return hostname.FromHostHeader(host) == "app.example.com" } // as leproxy's Handler.Known
	backendOf := func(string) string { return "127.0.0.1:8080" }
	h := m.InstrumentHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}), known, backendOf, logger, true)
	r := httptest.NewRequest(http.MethodGet, "https://app.example.com/index.html", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
