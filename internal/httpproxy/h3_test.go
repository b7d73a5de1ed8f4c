package httpproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/leproxy/leproxy/internal/config"
)

// h3Edge is an H3Server on a loopback UDP port with a certificate for
// a.example.test and b.example.test.
type h3Edge struct {
	srv   *H3Server
	addr  string
	roots *x509.CertPool

	mu         sync.Mutex
	handshakes []error
}

func (e *h3Edge) handshakeResults() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.handshakes...)
}

// startH3 serves h over HTTP/3; opts.Handler, TLSConfig and OnHandshake
// are filled in. The server is closed at cleanup.
func startH3(t testing.TB, h http.Handler, opts H3Options) *h3Edge {
	t.Helper()
	cert := selfSigned(t)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	e := &h3Edge{roots: x509.NewCertPool()}
	e.roots.AddCert(leaf)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Handler = h
	opts.TLSConfig = &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "a.example.test" && hello.ServerName != "b.example.test" {
				return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
			}
			return &cert, nil
		},
	}
	opts.OnHandshake = func(err error) {
		e.mu.Lock()
		e.handshakes = append(e.handshakes, err)
		e.mu.Unlock()
	}
	if e.srv, err = NewH3Server(pc, opts); err != nil {
		t.Fatal(err)
	}
	e.addr = pc.LocalAddr().String()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve() }()
	t.Cleanup(func() {
		e.srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return e
}

// h3Client returns an HTTP/3 client (quic-go's) that sends every request
// to e and verifies e's certificate against the name in the URL.
func h3Client(t testing.TB, e *h3Edge) (*http.Client, *http3.Transport) {
	t.Helper()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.roots},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, e.addr, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: testTimeout}, tr
}

func TestH3Proxy(t *testing.T) {
	backend := startBackend(t, echoHandler("a"))
	logger, _ := newTestLogger()
	limited := tcpHost("b.example.test", backend)
	limited.Middleware = &config.Middleware{MaxBody: 10}
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend), limited}, Options{HSTS: true, Logger: logger})
	e := startH3(t, h, H3Options{MaxHeaderBytes: 4096})
	c, _ := h3Client(t, e)

	big, _ := http.NewRequest(http.MethodGet, "https://a.example.test/", nil)
	big.Header.Set("X-Big", strings.Repeat("b", 8192))
	if resp, err := c.Do(big); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers over MaxHeaderBytes: got %v, %v; want 431", resp, err)
	} else {
		resp.Body.Close()
	}

	req, _ := http.NewRequest(http.MethodGet, "https://a.example.test/p?q=1", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET over HTTP/3: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 3 {
		t.Fatalf("got %d %s %q, want 200 over HTTP/3", resp.StatusCode, resp.Proto, body)
	}
	got := decodeEcho(t, string(body))
	if got.Host != "a.example.test" || got.Path != "/p" || got.RawQuery != "q=1" {
		t.Errorf("backend saw host %q path %q query %q", got.Host, got.Path, got.RawQuery)
	}
	for k, want := range map[string]string{
		"X-Forwarded-For":   "127.0.0.1", // the QUIC peer, not the client's claim
		"X-Forwarded-Proto": "https",
		"X-Forwarded-Host":  "a.example.test",
	} {
		if v := got.Header.Get(k); v != want {
			t.Errorf("backend got %s %q, want %q", k, v, want)
		}
	}
	if v := resp.Header.Get("Strict-Transport-Security"); v != hstsValue {
		t.Errorf("Strict-Transport-Security %q, want %q", v, hstsValue)
	}

	// The handler chain answers a body over max_body with 413 and
	// "Connection: close", a field HTTP/3 forbids: it must be dropped, or
	// the client refuses the response as malformed.
	req, _ = http.NewRequest(http.MethodPost, "https://b.example.test/", strings.NewReader(strings.Repeat("x", 100)))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatalf("POST over max_body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST over max_body: got %d, want 413", resp.StatusCode)
	}

	// The connection is still good after it.
	if resp, _ := do(t, c, "https://b.example.test/", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("b.example.test after the 413: got %d, want 200", resp.StatusCode)
	}
}

func TestH3HandshakeRefusals(t *testing.T) {
	h := mustNew(t, []config.Host{tcpHost("a.example.test", startBackend(t, echoHandler("a")))}, Options{})
	e := startH3(t, h, H3Options{HandshakeTimeout: 2 * time.Second})
	for _, tc := range []struct {
		name   string
		config *tls.Config
	}{
		{"unmapped name", &tls.Config{ServerName: "evil.test", RootCAs: e.roots, NextProtos: []string{NextProtoH3}}},
		{"acme-tls/1 only", &tls.Config{ServerName: "a.example.test", RootCAs: e.roots, NextProtos: []string{"acme-tls/1"}}},
		{"no server name", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{NextProtoH3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			conn, err := quic.DialAddr(ctx, e.addr, tc.config, nil)
			if err == nil {
				conn.CloseWithError(0, "")
				t.Fatal("QUIC handshake succeeded")
			}
			if _, ok := errors.AsType[*quic.TransportError](err); !ok {
				t.Errorf("got %v, want a TLS alert (a quic.TransportError)", err)
			}
		})
	}
	// Each failure is reported once quic-go drops the connection.
	deadline := time.Now().Add(testTimeout)
	for {
		res := e.handshakeResults()
		n := 0
		for _, err := range res {
			if errors.Is(err, ErrQUICHandshake) {
				n++
			}
		}
		if n == 3 && len(res) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake results %v, want 3 times ErrQUICHandshake", res)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestH3ZeroRTTRefused(t *testing.T) {
	h := mustNew(t, []config.Host{tcpHost("a.example.test", startBackend(t, echoHandler("a")))}, Options{})
	e := startH3(t, h, H3Options{})
	tlsConf := &tls.Config{
		ServerName:         "a.example.test",
		RootCAs:            e.roots,
		NextProtos:         []string{NextProtoH3},
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for i := range 2 {
		conn, err := quic.DialAddrEarly(ctx, e.addr, tlsConf, &quic.Config{Allow0RTT: true})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		select {
		case <-conn.HandshakeComplete():
		case <-ctx.Done():
			t.Fatal("handshake not complete")
		}
		if i == 0 {
			// The session ticket comes after the handshake; a request
			// makes sure the client has it.
			rt := (&http3.Transport{}).NewClientConn(conn)
			req, _ := http.NewRequest(http.MethodGet, "https://a.example.test/", nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			resp.Body.Close()
		}
		st := conn.ConnectionState()
		if i == 1 && !st.TLS.DidResume {
			t.Error("the second connection did not resume its session: the test proves nothing")
		}
		if st.Used0RTT {
			t.Errorf("connection %d used 0-RTT", i)
		}
		conn.CloseWithError(0, "")
	}
}

// TestH3ShutdownDrains checks that Shutdown lets a streaming request
// finish, refuses new ones, and then closes connections that sit idle
// instead of waiting for their clients until ctx runs out.
func TestH3ShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "quick")
			return
		}
		io.WriteString(w, "first ")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
		io.WriteString(w, "last")
	}))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	e := startH3(t, h, H3Options{})
	streamer, _ := h3Client(t, e)
	// A client that ignores GOAWAY (quic-go's closes an idle connection
	// on it; RFC 9114 only expects clients to).
	idler, err := quic.DialAddr(context.Background(), e.addr,
		&tls.Config{ServerName: "a.example.test", RootCAs: e.roots, NextProtos: []string{NextProtoH3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idler.CloseWithError(0, "")

	resp, err := streamer.Get("https://a.example.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	// Shorter than testTimeout: a Shutdown that waits for the idle
	// client returns ctx's error.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(ctx) }()

	// Once shutting down, a new connection is not served.
	deadline := time.Now().Add(testTimeout)
	for {
		fresh, _ := h3Client(t, e)
		fresh.Timeout = 300 * time.Millisecond
		r, err := fresh.Get("https://a.example.test/")
		if err != nil {
			break
		}
		r.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still served during shutdown")
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "first last" {
		t.Fatalf("streaming response during shutdown: got %q, %v; want %q", body, err, "first last")
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v, want nil (the idle connection closed, not waited for)", err)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return")
	}
	select {
	case <-idler.Context().Done():
	case <-time.After(testTimeout):
		t.Error("the idle connection is still open after Shutdown")
	}
}

func TestH3Websocket(t *testing.T) {
	h := mustNew(t, []config.Host{tcpHost("a.example.test", startBackend(t, echoHandler("a")))}, Options{})
	e := startH3(t, h, H3Options{})
	c, _ := h3Client(t, e)
	for _, tc := range []struct {
		name, proto string
		want        int
	}{
		{"extended CONNECT websocket", "websocket", http.StatusNotImplemented},
		{"plain CONNECT", "", http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodConnect, "https://a.example.test/socket", nil)
			req.Proto = tc.proto
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// refuseGuard refuses every connection and counts them.
type refuseGuard struct{ admits atomic.Int32 }

func (g *refuseGuard) Admit(net.Addr) (func(), error) {
	g.admits.Add(1)
	return nil, errors.New("over the limit")
}
func (g *refuseGuard) Failed(net.Addr, string) {}

// countGuard admits every connection and tracks how many are open.
type countGuard struct{ open atomic.Int32 }

func (g *countGuard) Admit(net.Addr) (func(), error) {
	g.open.Add(1)
	return func() { g.open.Add(-1) }, nil
}
func (g *countGuard) Failed(net.Addr, string) {}

func TestH3Guard(t *testing.T) {
	h := mustNew(t, []config.Host{tcpHost("a.example.test", startBackend(t, echoHandler("a")))}, Options{})
	var guard ConnGuard
	var mu sync.Mutex
	e := startH3(t, h, H3Options{Guard: func() ConnGuard { mu.Lock(); defer mu.Unlock(); return guard }})

	refuse := &refuseGuard{}
	mu.Lock()
	guard = refuse
	mu.Unlock()
	c, _ := h3Client(t, e)
	_, err := c.Get("https://a.example.test/")
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || appErr.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
		t.Errorf("refused connection: got %v, want H3_EXCESSIVE_LOAD", err)
	}
	if refuse.admits.Load() == 0 {
		t.Error("the guard was not asked")
	}

	count := &countGuard{}
	mu.Lock()
	guard = count
	mu.Unlock()
	c, tr := h3Client(t, e)
	if resp, _ := do(t, c, "https://a.example.test/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("admitted connection: got %d", resp.StatusCode)
	}
	if n := count.open.Load(); n != 1 {
		t.Errorf("%d connections held against the client, want 1", n)
	}
	tr.Close()
	deadline := time.Now().Add(testTimeout)
	for count.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection's place was not given back after it closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAltSvc(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("alt"); v != "" {
			w.Header().Set("Alt-Svc", v)
		}
		if r.URL.Path == "/flush" {
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "ok")
	}))
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	_, c := serve(t, AltSvc(h, 8443), false, true)
	want := `h3=":8443"; ma=86400`
	for _, tc := range []struct {
		name, url, want string
	}{
		{"proxied", "https://a.example.test/", want},
		{"flushed before the body", "https://a.example.test/flush", want},
		{"unknown host", "https://other.example.test/", want},
		{"backend's own", "https://a.example.test/?alt=h3%3D%22%3A9443%22", `h3=":9443"`},
		{"backend clears", "https://a.example.test/?alt=clear", "clear"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := do(t, c, tc.url, nil)
			if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != tc.want {
				t.Errorf("Alt-Svc %q, want just %q", got, tc.want)
			}
		})
	}
}

// BenchmarkProxyProto compares a proxied 1 KiB GET over HTTP/2 (TLS over
// TCP, as run.go serves it but without the listener's handshake
// bookkeeping) and over HTTP/3, each on one warm connection. Run with
// -count to interleave the two.
func BenchmarkProxyProto(b *testing.B) {
	body := strings.Repeat("x", 1024)
	backend := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	h := mustNew(b, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	_, h2 := serve(b, h, false, true)
	e := startH3(b, h, H3Options{})
	h3, _ := h3Client(b, e)
	for _, tc := range []struct {
		name   string
		client *http.Client
		major  int
	}{{"h2", h2, 2}, {"h3", h3, 3}} {
		b.Run(tc.name, func(b *testing.B) {
			req, err := http.NewRequest(http.MethodGet, "https://a.example.test/", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				resp, err := tc.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(body)) || resp.ProtoMajor != tc.major {
					b.Fatalf("got %s %d, %d bytes, error %v", resp.Proto, resp.StatusCode, n, err)
				}
			}
		})
	}
}

func TestWarnSmallUDPBuffers(t *testing.T) {
	for _, raise := range []bool{false, true} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if raise {
			uc := pc.(*net.UDPConn)
			if uc.SetReadBuffer(quicBufferSize) != nil || uc.SetWriteBuffer(quicBufferSize) != nil {
				t.Fatal("setting the buffer sizes failed")
			}
		}
		logger, logs := newTestLogger()
		warnSmallUDPBuffers(pc, logger)
		warned := 0
		for _, rec := range logs.records(t) {
			if strings.HasPrefix(rec["msg"].(string), "UDP buffers smaller") {
				warned++
			}
		}
		switch {
		case !raise && warned != 1:
			t.Errorf("default socket buffers: %d warnings, want 1", warned)
		case raise && warned != 0:
			t.Logf("the kernel did not grant %d bytes (net.core.rmem_max): %d warnings", quicBufferSize, warned)
		}
	}
}

// TestH3RapidReset floods one QUIC connection with requests each
// cancelled at once by the client (HEADERS, then STOP_SENDING: the
// HTTP/3 form of CVE-2023-44487). The connection must be closed with
// H3_EXCESSIVE_LOAD, and hardly any of the requests may reach the backend.
func TestH3RapidReset(t *testing.T) {
	const (
		n    = 3000
		host = "a.example.test"
	)
	var hits atomic.Int64
	backend := startBackend(t, countingHandler(&hits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
	})))
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost(host, backend)}, Options{Logger: logger})
	e := startH3(t, h, H3Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, e.addr, &tls.Config{ServerName: host, RootCAs: e.roots, NextProtos: []string{NextProtoH3}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")

	var block bytes.Buffer
	enc := qpack.NewEncoder(&block)
	for _, f := range []qpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: host}, {Name: ":path", Value: "/"},
	} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	headers := quicvarint.Append(quicvarint.Append(nil, 0x1), uint64(block.Len())) // HEADERS frame
	headers = append(headers, block.Bytes()...)
	sent := 0
	for ; sent < n; sent++ {
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			break
		}
		if _, err := str.Write(headers); err != nil {
			break
		}
		str.Close()                                                        // the request is complete...
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled)) // ...and its response unwanted
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("connection still open 10s after %d cancelled requests", sent)
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &appErr) || appErr.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
		t.Errorf("connection closed with %v, want H3_EXCESSIVE_LOAD", err)
	}
	t.Logf("sent %d cancelled requests; backend saw %d", sent, hits.Load())
	if got := hits.Load(); got*20 > n {
		t.Errorf("backend saw %d cancelled requests, want at most 5%% of %d", got, n)
	}
	warns := 0
	for _, rec := range logs.records(t) {
		if rec["msg"] == "http3 rapid reset: closing connection" {
			warns++
		}
	}
	if warns != 1 {
		t.Errorf("%d rapid reset warnings logged, want 1", warns)
	}
}
