package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/config"
)

// testTimeout bounds every wait of these tests; it is only reached when
// something is broken.
const testTimeout = 30 * time.Second

// echoed is what echoHandler reports about the request it received.
type echoed struct {
	Backend  string
	Host     string
	Path     string
	RawQuery string
	Proto    int
	Header   http.Header
}

// echoHandler answers with a JSON description of the request, naming
// itself backend.
func echoHandler(backend string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echoed{
			Backend:  backend,
			Host:     r.Host,
			Path:     r.URL.Path,
			RawQuery: r.URL.RawQuery,
			Proto:    r.ProtoMajor,
			Header:   r.Header,
		})
	})
}

// startBackend starts a plain HTTP backend on 127.0.0.1 serving h.
func startBackend(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// tcpHost maps name to srv as a BackendTCP host.
func tcpHost(name string, srv *httptest.Server) config.Host {
	addr := srv.Listener.Addr().String()
	return config.Host{Name: name, Backend: config.Backend{Kind: config.BackendTCP, Raw: addr, Addr: addr}}
}

// mustNew builds a Handler and closes it when the test ends.
func mustNew(t testing.TB, hosts []config.Host, opts Options) *Handler {
	t.Helper()
	h, err := New(hosts, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// serve serves h over TLS (HTTP/2 offered when h2) or, with plain, over
// plain HTTP/1.1, and returns the server and a client that sends every
// request to it whatever the URL's host. The server's certificate is
// verified as 127.0.0.1, so the client sends no server name (SNI) and
// any Host may be asked for (see TestMisdirected for SNI).
func serve(t testing.TB, h http.Handler, plain, h2 bool) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if plain {
		srv.Start()
	} else {
		srv.EnableHTTP2 = h2
		srv.StartTLS()
	}
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	d := &net.Dialer{Timeout: testTimeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		ForceAttemptHTTP2: h2,
	}
	if !plain {
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return srv, &http.Client{
		Transport:     tr,
		Timeout:       testTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// scheme returns the URL scheme for a server started by serve.
func scheme(plain bool) string {
	if plain {
		return "http"
	}
	return "https"
}

// do sends a GET for rawURL with header and returns the response and its
// body.
func do(t testing.TB, c *http.Client, rawURL string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	for k, vv := range header {
		for _, v := range vv {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Add(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body of %s: %v", rawURL, err)
	}
	return resp, string(body)
}

// decodeEcho parses an echoHandler body.
func decodeEcho(t testing.TB, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("decoding backend echo %q: %v", body, err)
	}
	return e
}

// logBuffer collects JSON log records; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the records logged so far.
func (b *logBuffer) records(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var recs []map[string]any
	for line := range strings.Lines(b.buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("decoding log line %q: %v", line, err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// newTestLogger returns a debug-level JSON logger writing to a logBuffer.
func newTestLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func TestRouting(t *testing.T) {
	a := startBackend(t, echoHandler("a"))
	b := startBackend(t, echoHandler("b"))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", a), tcpHost("b.example.test", b)}, Options{})

	tests := []struct {
		host        string
		wantStatus  int
		wantBackend string
	}{
		{"a.example.test", http.StatusOK, "a"},
		{"b.example.test", http.StatusOK, "b"},
		{"A.Example.TEST", http.StatusOK, "a"},
		{"a.example.test.", http.StatusOK, "a"},
		{"a.example.test:8443", http.StatusOK, "a"},
		{"B.EXAMPLE.TEST.:443", http.StatusOK, "b"},
		{"c.example.test", http.StatusNotFound, ""},
		{"example.test", http.StatusNotFound, ""},
		{"127.0.0.1", http.StatusNotFound, ""},
	}
	for _, proto := range []struct {
		name      string
		plain, h2 bool
		wantMajor int
	}{
		{"http1-plain", true, false, 1},
		{"http1-tls", false, false, 1},
		{"http2-tls", false, true, 2},
	} {
		t.Run(proto.name, func(t *testing.T) {
			_, c := serve(t, h, proto.plain, proto.h2)
			for _, tc := range tests {
				resp, body := do(t, c, scheme(proto.plain)+"://proxy.test/x", http.Header{"Host": {tc.host}})
				if resp.ProtoMajor != proto.wantMajor {
					t.Errorf("Host %q: got HTTP/%d, want HTTP/%d", tc.host, resp.ProtoMajor, proto.wantMajor)
				}
				if resp.StatusCode != tc.wantStatus {
					t.Errorf("Host %q: got status %d, want %d (body %q)", tc.host, resp.StatusCode, tc.wantStatus, body)
					continue
				}
				if tc.wantStatus == http.StatusNotFound {
					if body != "unknown host\n" {
						t.Errorf("Host %q: got body %q, want %q", tc.host, body, "unknown host\n")
					}
					continue
				}
				if got := decodeEcho(t, body).Backend; got != tc.wantBackend {
					t.Errorf("Host %q: got backend %q, want %q", tc.host, got, tc.wantBackend)
				}
			}
		})
	}
}

func TestKnown(t *testing.T) {
	a := startBackend(t, echoHandler("a"))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", a)}, Options{})
	for host, want := range map[string]bool{
		"a.example.test":      true,
		"A.example.test.:80":  true,
		"b.example.test":      false,
		"":                    false,
		"a.example.test.evil": false,
	} {
		if got := h.Known(host); got != want {
			t.Errorf("Known(%q): got %v, want %v", host, got, want)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	backend := startBackend(t, echoHandler("a"))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	spoofed := http.Header{
		"X-Forwarded-For":   {"203.0.113.7", "198.51.100.1, 10.0.0.1"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Forwarded-Proto": {"gopher"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
		"X-Real-Ip":         {"203.0.113.7"},
	}
	for _, tc := range []struct {
		name      string
		plain, h2 bool
		wantProto string
	}{
		{"plain", true, false, "http"},
		{"tls", false, false, "https"},
		{"http2", false, true, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := serve(t, h, tc.plain, tc.h2)
			hdr := spoofed.Clone()
			hdr.Set("Host", "a.example.test:8443")
			resp, body := do(t, c, scheme(tc.plain)+"://proxy.test/", hdr)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want 200 (body %q)", resp.StatusCode, body)
			}
			got := decodeEcho(t, body).Header
			if xff := got.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
				t.Errorf("got X-Forwarded-For %q, want [\"127.0.0.1\"]", xff)
			}
			if xfh := got.Values("X-Forwarded-Host"); len(xfh) != 1 || xfh[0] != "a.example.test:8443" {
				t.Errorf("got X-Forwarded-Host %q, want [\"a.example.test:8443\"]", xfh)
			}
			if xfp := got.Values("X-Forwarded-Proto"); len(xfp) != 1 || xfp[0] != tc.wantProto {
				t.Errorf("got X-Forwarded-Proto %q, want [%q]", xfp, tc.wantProto)
			}
			for _, k := range []string{"Forwarded", "X-Real-Ip"} {
				if v, ok := got[k]; ok {
					t.Errorf("got %s %q at the backend, want none", k, v)
				}
			}
		})
	}
}

func TestHostHeader(t *testing.T) {
	backend := startBackend(t, echoHandler("a"))
	addr := backend.Listener.Addr().String()
	for _, tc := range []struct {
		name        string
		rewriteHost bool
		want        string
	}{
		{"preserved", false, "a.example.test"},
		{"rewritten", true, addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := tcpHost("a.example.test", backend)
			host.RewriteHost = tc.rewriteHost
			_, c := serve(t, mustNew(t, []config.Host{host}, Options{}), false, true)
			_, body := do(t, c, "https://a.example.test/", nil)
			if got := decodeEcho(t, body).Host; got != tc.want {
				t.Errorf("got backend Host %q, want %q", got, tc.want)
			}
		})
	}
}

func TestURLBackend(t *testing.T) {
	plainBackend := startBackend(t, echoHandler("plain"))
	tlsBackend := httptest.NewUnstartedServer(echoHandler("tls"))
	tlsBackend.EnableHTTP2 = true
	tlsBackend.StartTLS()
	t.Cleanup(tlsBackend.Close)
	trusted := x509.NewCertPool()
	trusted.AddCert(tlsBackend.Certificate())

	urlHost := func(name, raw string) config.Host {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("parsing %q: %v", raw, err)
		}
		return config.Host{Name: name, Backend: config.Backend{Kind: config.BackendURL, Raw: raw, URL: u}}
	}
	for _, tc := range []struct {
		name       string
		backend    string
		roots      *x509.CertPool
		target     string
		wantStatus int
		wantPath   string
		wantQuery  string
		wantProto  int
	}{
		{"http prefix", plainBackend.URL + "/v1", nil, "/foo/bar?x=1&y=%20", 200, "/v1/foo/bar", "x=1&y=%20", 1},
		{"http prefix slash", plainBackend.URL + "/v1/", nil, "/foo", 200, "/v1/foo", "", 1},
		{"http root", plainBackend.URL, nil, "/foo?x", 200, "/foo", "x", 1},
		{"http prefix query", plainBackend.URL + "/api?key=k", nil, "/q?x=1", 200, "/api/q", "key=k&x=1", 1},
		{"https verified http2", tlsBackend.URL + "/v2", trusted, "/foo", 200, "/v2/foo", "", 2},
		{"https untrusted", tlsBackend.URL, nil, "/foo", http.StatusBadGateway, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustNew(t, []config.Host{urlHost("a.example.test", tc.backend)}, Options{RootCAs: tc.roots})
			_, c := serve(t, h, false, true)
			resp, body := do(t, c, "https://a.example.test"+tc.target, nil)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("got status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			e := decodeEcho(t, body)
			if e.Path != tc.wantPath || e.RawQuery != tc.wantQuery {
				t.Errorf("got backend path %q query %q, want %q %q", e.Path, e.RawQuery, tc.wantPath, tc.wantQuery)
			}
			if e.Proto != tc.wantProto {
				t.Errorf("got backend HTTP/%d, want HTTP/%d", e.Proto, tc.wantProto)
			}
			if e.Host != "a.example.test" {
				t.Errorf("got backend Host %q, want %q", e.Host, "a.example.test")
			}
		})
	}
}

func TestHSTS(t *testing.T) {
	plainBackend := startBackend(t, echoHandler("a"))
	ownHSTS := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=60; includeSubDomains")
	}))
	dir := t.TempDir()
	writeFile(t, dir, "index.html", "hello")
	staticHost := func(name string) config.Host {
		return config.Host{Name: name, Backend: config.Backend{Kind: config.BackendStatic, Raw: dir + "/", Dir: dir + "/"}}
	}
	const want = "max-age=31536000"
	for _, tc := range []struct {
		name     string
		flag     bool
		hostHSTS bool
		static   bool
		backend  *httptest.Server
		plain    bool
		want     []string
	}{
		{"off", false, false, false, plainBackend, false, nil},
		{"flag", true, false, false, plainBackend, false, []string{want}},
		{"host", false, true, false, plainBackend, false, []string{want}},
		{"both", true, true, false, plainBackend, false, []string{want}},
		{"flag plain http", true, false, false, plainBackend, true, nil},
		{"host plain http", false, true, false, plainBackend, true, nil},
		{"backend header kept", true, false, false, ownHSTS, false, []string{"max-age=60; includeSubDomains"}},
		{"static off", false, false, true, nil, false, nil},
		{"static host", false, true, true, nil, false, []string{want}},
		{"static flag plain http", true, false, true, nil, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var host config.Host
			if tc.static {
				host = staticHost("a.example.test")
			} else {
				host = tcpHost("a.example.test", tc.backend)
			}
			host.HSTS = tc.hostHSTS
			other := tcpHost("b.example.test", plainBackend) // never has per-host HSTS
			h := mustNew(t, []config.Host{host, other}, Options{HSTS: tc.flag})
			_, c := serve(t, h, tc.plain, !tc.plain)
			resp, body := do(t, c, scheme(tc.plain)+"://a.example.test/", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want 200 (body %q)", resp.StatusCode, body)
			}
			got := resp.Header.Values("Strict-Transport-Security")
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got Strict-Transport-Security %q, want %q", got, tc.want)
			}
			// The other host follows the flag only.
			resp, _ = do(t, c, scheme(tc.plain)+"://b.example.test/", nil)
			otherWant := tc.flag && !tc.plain
			if got := resp.Header.Get("Strict-Transport-Security") != ""; got != otherWant {
				t.Errorf("other host: got Strict-Transport-Security %v, want %v", got, otherWant)
			}
		})
	}
}

// rawRequest writes req verbatim to addr and returns the response.
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("writing request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

func TestUpgradeRefused(t *testing.T) {
	var hits atomic.Int32
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	srv, _ := serve(t, h, true, false)
	addr := srv.Listener.Addr().String()

	for _, tc := range []struct {
		name       string
		req        string
		wantStatus int
		wantHits   int32
	}{
		{"h2c", "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", http.StatusBadRequest, 0},
		{"other protocol", "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n\r\n", http.StatusBadRequest, 0},
		{"websocket and h2c", "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n", http.StatusBadRequest, 0},
		{"h2c then websocket", "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n", http.StatusBadRequest, 0},
		{"websocket then h2c lines", "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n", http.StatusBadRequest, 0},
		{"connect", "CONNECT a.example.test:443 HTTP/1.1\r\nHost: a.example.test:443\r\n\r\n", http.StatusMethodNotAllowed, 0},
		{"upgrade header without connection token", "GET / HTTP/1.1\r\nHost: a.example.test\r\nUpgrade: h2c\r\n\r\n", http.StatusOK, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			resp, body := rawRequest(t, addr, tc.req)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("got status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			if got := hits.Load() - before; got != tc.wantHits {
				t.Errorf("got %d backend requests, want %d", got, tc.wantHits)
			}
		})
	}
}

func TestStreaming(t *testing.T) {
	const first, second = "data: one\n\n", "data: two\n\n"
	for _, tc := range []struct {
		name        string
		contentType string
		knownLength bool // Content-Length set, so only FlushInterval -1 flushes
		h2          bool
	}{
		{"sse http1", "text/event-stream", false, false},
		{"sse http2", "text/event-stream", false, true},
		{"chunked http1", "application/x-ndjson", false, false},
		{"known length http1", "application/octet-stream", true, false},
		{"known length http2", "application/octet-stream", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				if tc.knownLength {
					w.Header().Set("Content-Length", fmt.Sprint(len(first)+len(second)))
				}
				io.WriteString(w, first)
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, second)
			}))
			// Registered after startBackend, so it runs first: the
			// backend's Close waits for its handler.
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unblock)

			h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
			_, c := serve(t, h, false, tc.h2)
			resp, err := c.Get("https://a.example.test/events")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			// The backend is blocked until release is closed, so the first
			// part can only arrive now if the proxy flushed it. Otherwise
			// the read fails when the client's timeout expires.
			buf := make([]byte, len(first))
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				t.Fatalf("reading first part: %v", err)
			}
			if string(buf) != first {
				t.Fatalf("got first part %q, want %q", buf, first)
			}
			unblock()
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading rest: %v", err)
			}
			if string(rest) != second {
				t.Errorf("got rest %q, want %q", rest, second)
			}
		})
	}
}

func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	logger, logs := newTestLogger()
	host := config.Host{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendTCP, Raw: addr, Addr: addr}}
	h := mustNew(t, []config.Host{host}, Options{Logger: logger, HSTS: true})
	_, c := serve(t, h, false, true)

	resp, body := do(t, c, "https://a.example.test/secret/path", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got status %d, want 502", resp.StatusCode)
	}
	if got := resp.Header.Get("Strict-Transport-Security"); got != hstsValue {
		t.Errorf("got Strict-Transport-Security %q, want %q", got, hstsValue)
	}
	if want := badGatewayMsg + "\n"; body != want {
		t.Errorf("got body %q, want %q", body, want)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("got Content-Type %q, want text/plain", ct)
	}
	recs := logs.records(t)
	if len(recs) != 1 {
		t.Fatalf("got %d log records, want 1: %v", len(recs), recs)
	}
	rec := recs[0]
	if rec["level"] != "ERROR" || rec["msg"] != "backend error" || rec["host"] != "a.example.test" || rec["backend"] != addr {
		t.Errorf("got log record %v, want level ERROR, msg %q, host %q, backend %q", rec, "backend error", "a.example.test", addr)
	}
	if e, _ := rec["error"].(string); !strings.Contains(e, "connection refused") {
		t.Errorf("got log error %q, want it to say connection refused", e)
	}
}

func TestBackendFailsMidBody(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "only ten b")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Logger: logger})
	served := make(chan struct{})
	_, c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		h.ServeHTTP(w, r)
	}), false, false)

	resp, err := c.Get("https://a.example.test/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("got full body %q, want a read error", body)
	}
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("proxy handler did not return")
	}
	recs := logs.records(t)
	if len(recs) != 1 {
		t.Fatalf("got %d log records, want 1: %v", len(recs), recs)
	}
	rec := recs[0]
	if rec["level"] != "WARN" || rec["msg"] != "backend error" || rec["host"] != "a.example.test" {
		t.Errorf("got log record %v, want WARN backend error for a.example.test", rec)
	}
	if e, _ := rec["error"].(string); !strings.Contains(e, "unexpected EOF") {
		t.Errorf("got log error %q, want it to mention unexpected EOF", e)
	}
}

func TestRequestBody(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%s %d", r.Method, n)
	}))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	for _, tc := range []struct {
		name   string
		h2     bool
		expect bool
	}{
		{"http1", false, false},
		{"http1 expect continue", false, true},
		{"http2", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := serve(t, h, false, tc.h2)
			const size = 1 << 20
			req, err := http.NewRequest(http.MethodPut, "https://a.example.test/upload", strings.NewReader(strings.Repeat("z", size)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.expect {
				req.Header.Set("Expect", "100-continue")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("PUT: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if want := fmt.Sprintf("PUT %d", size); string(body) != want {
				t.Errorf("got %q, want %q", body, want)
			}
		})
	}
}

func TestClientGone(t *testing.T) {
	arrived := make(chan struct{}, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // the proxy cancels when the client goes
	}))
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Logger: logger})
	served := make(chan struct{})
	_, c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		h.ServeHTTP(w, r)
	}), false, false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://a.example.test/poll", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-arrived:
	case <-time.After(testTimeout):
		t.Fatal("request never reached the backend")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got client error %v, want context.Canceled", err)
	}
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("proxy handler did not return after the client went away")
	}
	var debug int
	for _, rec := range logs.records(t) {
		if rec["level"] != "DEBUG" {
			t.Errorf("got log record %v, want only DEBUG records", rec)
			continue
		}
		debug++
	}
	if debug != 1 {
		t.Errorf("got %d debug records, want 1", debug)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "file", "x")
	backend := config.Backend{Kind: config.BackendTCP, Raw: "127.0.0.1:1", Addr: "127.0.0.1:1"}
	for _, tc := range []struct {
		name  string
		hosts []config.Host
		want  string
	}{
		{"static missing", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendStatic, Dir: dir + "/nope/"}}}, "opening static directory"},
		{"static not a directory", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendStatic, Dir: file}}}, "not a directory"},
		{"unknown kind", []config.Host{{Name: "a.example.test", Backend: config.Backend{Raw: "x"}}}, "unsupported backend kind"},
		{"url without url", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendURL}}}, "url backend without host"},
		{"url scheme", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendURL, URL: &url.URL{Scheme: "ftp", Host: "x"}}}}, `scheme "ftp"`},
		{"tcp without address", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendTCP}}}, "without address"},
		{"unix without path", []config.Host{{Name: "a.example.test", Backend: config.Backend{Kind: config.BackendUnix}}}, "without path"},
		{"duplicate", []config.Host{{Name: "a.example.test", Backend: backend}, {Name: "A.example.test.", Backend: backend}}, "duplicate host name"},
		{"empty name", []config.Host{{Name: "", Backend: backend}}, "empty host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(tc.hosts, Options{})
			if err == nil {
				h.Close()
				t.Fatalf("New: got no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: got error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewSharesTransports(t *testing.T) {
	tcp := config.Backend{Kind: config.BackendTCP, Raw: "127.0.0.1:1", Addr: "127.0.0.1:1"}
	other := config.Backend{Kind: config.BackendTCP, Raw: "127.0.0.1:2", Addr: "127.0.0.1:2"}
	sock := config.Backend{Kind: config.BackendUnix, Raw: "/run/x.sock", Addr: "/run/x.sock"}
	h := mustNew(t, []config.Host{
		{Name: "a.example.test", Backend: tcp},
		{Name: "b.example.test", Backend: tcp},
		{Name: "c.example.test", Backend: other},
		{Name: "d.example.test", Backend: sock},
		{Name: "e.example.test", Backend: sock},
	}, Options{})
	if got := len(h.transports); got != 3 {
		t.Errorf("got %d transports, want 3", got)
	}
}

// BenchmarkGET compares a GET sent straight to a backend with the same GET
// sent through the Handler, both over plain HTTP/1.1 on loopback.
func BenchmarkGET(b *testing.B) {
	body := strings.Repeat("x", 1024)
	backend := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	h := mustNew(b, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	proxy, _ := serve(b, h, true, false)

	for _, tc := range []struct {
		name string
		url  string
	}{
		{"direct", backend.URL + "/"},
		{"proxied", proxy.URL + "/"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			req, err := http.NewRequest(http.MethodGet, tc.url, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "a.example.test"
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(body)) {
					b.Fatalf("got status %d, %d bytes, error %v; want 200, %d bytes", resp.StatusCode, n, err, len(body))
				}
			}
		})
	}
}

// TestMalformedChunkedBody checks that a request body with broken chunked
// framing is the client's fault: 400, the connection closed, no backend
// error counted or logged, while a well-formed chunked body goes through.
func TestMalformedChunkedBody(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		io.WriteString(w, "got "+string(b))
	}))
	var backendErrors atomic.Int32
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{
		Logger:         logger,
		OnBackendError: func(string) { backendErrors.Add(1) },
	})
	srv, _ := serve(t, h, true, false)
	addr := srv.Listener.Addr().String()
	head := "POST / HTTP/1.1\r\nHost: a.example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"well-formed", "5\r\nhello\r\n0\r\n\r\n", http.StatusOK},
		{"size overflow", "ffffffffffffffffff\r\nx\r\n0\r\n\r\n", http.StatusBadRequest},
		{"not hex", "zz\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
		{"leading space", " 5\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawRequest(t, addr, head+tc.body)
			if resp.StatusCode != tc.want {
				t.Errorf("got %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusBadRequest && !resp.Close {
				t.Error("the connection stays open after a malformed body")
			}
		})
	}
	if n := backendErrors.Load(); n != 0 {
		t.Errorf("%d backend errors counted for the clients' malformed bodies", n)
	}
	for _, rec := range logs.records(t) {
		if rec["msg"] == "backend error" {
			t.Errorf("logged as a backend error: %v", rec)
		}
	}
}
