package httpproxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/config"
)

// selfSigned returns a throwaway certificate for the test hosts.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "a.example.test"},
		DNSNames:     []string{"a.example.test", "b.example.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// edge is an HTTPS server set up as run.go sets up leproxy's: NewTLSListener,
// ConnContext, MaxConcurrentStreams.
type edge struct {
	addr string

	mu         sync.Mutex
	handshakes int
	failures   int
}

func (e *edge) counts() (handshakes, failures int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handshakes, e.failures
}

func startEdge(t testing.TB, h http.Handler, maxHeaderBytes int) *edge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{addr: ln.Addr().String()}
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2", "http/1.1"}}
	srv := &http.Server{
		Handler:           h,
		ConnContext:       ConnContext,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: MaxConcurrentStreams},
		TLSConfig:         cfg,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: testTimeout,
	}
	tln := NewTLSListener(ln, TLSListenerOptions{
		Config:           cfg,
		HandshakeTimeout: 2 * time.Second,
		MaxHeaderBytes:   maxHeaderBytes,
		OnHandshake: func(err error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.handshakes++
			if err != nil {
				e.failures++
			}
		},
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return e
}

// recordingBackend is a backend that records the requests it got.
type recordingBackend struct {
	mu   sync.Mutex
	reqs []string // "METHOD /path body"
}

func (b *recordingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.reqs = append(b.reqs, r.Method+" "+r.URL.Path+" "+string(body))
	b.mu.Unlock()
	io.WriteString(w, "ok "+r.URL.Path)
}

func (b *recordingBackend) got() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.reqs...)
}

// exchange writes raw on one HTTP/1.1 TLS connection to e and reads
// responses until the server closes it or want responses came, then
// reports whether the connection was closed after them.
func exchange(t *testing.T, e *edge, raw string, want int) (statuses []int, bodies []string, closed bool) {
	t.Helper()
	conn := dialTLS(t, e.addr, "http/1.1")
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("writing: %v", err)
	}
	br := bufio.NewReader(conn)
	for len(statuses) < want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return statuses, bodies, true
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		bodies = append(bodies, string(b))
	}
	// Closed is an EOF now; open is a read that waits: probe it with a
	// request of our own, which an open connection answers.
	if _, err := io.WriteString(conn, "GET /probe HTTP/1.1\r\nHost: a.example.test\r\n\r\n"); err != nil {
		return statuses, bodies, true
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return statuses, bodies, true
	}
	resp.Body.Close()
	return statuses, bodies, false
}

func TestSmuggling(t *testing.T) {
	rec := &recordingBackend{}
	backend := startBackend(t, rec)
	var backendErrors atomic.Int32
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{
		Logger:         logger,
		OnBackendError: func(string) { backendErrors.Add(1) },
	})
	e := startEdge(t, h, 0)
	const host = "Host: a.example.test\r\n"
	for _, tc := range []struct {
		name       string
		raw        string
		statuses   []int
		closed     bool
		backendGot []string
	}{
		{
			name:       "content-length body, then another request",
			raw:        "POST /a HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhello" + "GET /b HTTP/1.1\r\n" + host + "\r\n",
			statuses:   []int{200, 200},
			backendGot: []string{"POST /a hello", "GET /b ", "GET /probe "},
		},
		{
			name: "chunked body with extensions and trailers, then another request",
			raw: "POST /a HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" +
				"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" + "GET /b HTTP/1.1\r\n" + host + "\r\n",
			statuses:   []int{200, 200},
			backendGot: []string{"POST /a hello world", "GET /b ", "GET /probe "},
		},
		{
			name: "a chunk whose data holds a request head",
			raw: "POST /a HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" +
				"20\r\nGET /x HTTP/1.1\r\nContent-Length:\r\n0\r\n\r\n" + "GET /b HTTP/1.1\r\n" + host + "\r\n",
			statuses:   []int{200, 200},
			backendGot: []string{"POST /a GET /x HTTP/1.1\r\nContent-Length:", "GET /b ", "GET /probe "},
		},
		{
			name: "content-length and chunked",
			raw: "POST /a HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n",
			statuses: []int{400},
			closed:   true,
		},
		{
			name: "chunked then content-length",
			raw: "POST /a HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
				"0\r\n\r\n",
			statuses: []int{400},
			closed:   true,
		},
		{
			name:     "duplicate equal content-length",
			raw:      "POST /a HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
			statuses: []int{400},
			closed:   true,
		},
		{
			name:     "duplicate different content-length",
			raw:      "POST /a HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			statuses: []int{400},
			closed:   true,
		},
		{
			name:     "obs-fold",
			raw:      "GET /a HTTP/1.1\r\n" + host + "X-Folded: one\r\n two\r\n\r\n",
			statuses: []int{400},
			closed:   true,
		},
		{
			name:     "obs-fold of transfer-encoding",
			raw:      "POST /a HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
			statuses: []int{400},
			closed:   true,
		},
		{
			name:     "transfer-encoding in HTTP/1.0",
			raw:      "POST /a HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n",
			statuses: []int{400},
			closed:   true,
		},
		{
			name: "a good request, then content-length and chunked",
			raw: "GET /first HTTP/1.1\r\n" + host + "\r\n" +
				"POST /a HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			statuses:   []int{200, 400},
			closed:     true,
			backendGot: []string{"GET /first "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.mu.Lock()
			rec.reqs = nil
			rec.mu.Unlock()
			statuses, bodies, closed := exchange(t, e, tc.raw, len(tc.statuses))
			if !equalInts(statuses, tc.statuses) {
				t.Errorf("statuses %v (%q), want %v", statuses, bodies, tc.statuses)
			}
			if closed != tc.closed {
				t.Errorf("connection closed: %v, want %v", closed, tc.closed)
			}
			if got := rec.got(); strings.Join(got, "|") != strings.Join(tc.backendGot, "|") {
				t.Errorf("backend got %q, want %q", got, tc.backendGot)
			}
		})
	}
	if n := backendErrors.Load(); n != 0 {
		t.Errorf("%d backend errors counted for the clients' requests", n)
	}
	refused := 0
	for _, r := range logs.records(t) {
		if r["msg"] == "backend error" {
			t.Errorf("logged as a backend error: %v", r)
		}
		if r["msg"] == "refused request: ambiguous framing" {
			refused++
		}
	}
	if refused != 7 { // the 400s above that net/http does not give itself
		t.Errorf("%d refusals logged, want 7", refused)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTLSListenerHTTP2 checks that HTTP/2 goes on working through the
// listener, where framing is HTTP/2's own and no scanner is involved.
func TestTLSListenerHTTP2(t *testing.T) {
	rec := &recordingBackend{}
	h := mustNew(t, []config.Host{tcpHost("a.example.test", startBackend(t, rec))}, Options{})
	e := startEdge(t, h, 0)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: testTimeout}
	req, _ := http.NewRequest("POST", "https://"+e.addr+"/a", strings.NewReader("hello"))
	req.Host = "a.example.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("got %d over HTTP/%d, want 200 over HTTP/2", resp.StatusCode, resp.ProtoMajor)
	}
	if got := rec.got(); len(got) != 1 || got[0] != "POST /a hello" {
		t.Errorf("backend got %q", got)
	}
}

// TestTLSListenerHandshakes checks the handshake accounting and net/http's
// answer to plaintext on the TLS port.
func TestTLSListenerHandshakes(t *testing.T) {
	e := startEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.ServerName != "a.example.test" {
			t.Errorf("request TLS state: %+v", r.TLS)
		}
		io.WriteString(w, "ok")
	}), 0)
	// Success, HTTP/1.1: the handler sees the connection's TLS state.
	conn, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "a.example.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(testTimeout))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.1 request: %v %v", resp, err)
	}
	conn.Close()
	// Failure: the client does not trust the certificate.
	if c, err := tls.Dial("tcp", e.addr, &tls.Config{ServerName: "a.example.test"}); err == nil {
		c.Close()
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	// Failure: plaintext HTTP, answered with a plain 400.
	raw, err := net.DialTimeout("tcp", e.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(testTimeout))
	io.WriteString(raw, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
	reply, _ := io.ReadAll(raw)
	raw.Close()
	if !strings.HasPrefix(string(reply), "HTTP/1.0 400 Bad Request") {
		t.Errorf("plaintext on the TLS port: got %q, want a 400", reply)
	}
	// Failure: a client that never finishes its handshake, cut at the
	// handshake timeout.
	idle, err := net.DialTimeout("tcp", e.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	idle.SetDeadline(time.Now().Add(testTimeout))
	start := time.Now()
	if _, err := io.ReadAll(idle); err != nil {
		t.Errorf("silent client: %v, want the server to close", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("silent client closed after %v, want the 2s handshake timeout", d)
	}
	idle.Close()
	// A failure is counted as the server gives up on it, which may be
	// just after the client did.
	deadline := time.Now().Add(testTimeout)
	for {
		handshakes, failures := e.counts()
		if handshakes == 4 && failures == 3 {
			break
		}
		if handshakes > 4 || time.Now().After(deadline) {
			t.Fatalf("handshakes %d, failures %d; want 4 and 3", handshakes, failures)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTLSListenerClose checks that Close ends handshakes in progress and
// Accept.
func TestTLSListenerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := NewTLSListener(ln, TLSListenerOptions{Config: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, HandshakeTimeout: time.Minute})
	accepted := make(chan error, 1)
	go func() {
		_, err := tln.Accept()
		accepted <- err
	}()
	stalled, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	// Close must end the stalled client's connection whether its
	// handshake has begun or it still waits in the accept queue.
	closed := make(chan error, 1)
	go func() { closed <- tln.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close waits on a stalled handshake")
	}
	if err := <-accepted; err == nil {
		t.Error("Accept after Close returned no error")
	}
	stalled.SetDeadline(time.Now().Add(testTimeout))
	if _, err := stalled.Read(make([]byte, 1)); err == nil {
		t.Error("the stalled client's connection is still open after Close")
	}
}

// recordSizes is a net.Conn that notes the length of every TLS record it
// reads.
type recordSizes struct {
	net.Conn
	mu      sync.Mutex
	pending []byte // bytes of the record header being read
	skip    int    // bytes of the current record's body left
	sizes   []int
}

func (c *recordSizes) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := p[:n]; len(b) > 0; {
		if c.skip > 0 {
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
			continue
		}
		k := min(5-len(c.pending), len(b))
		c.pending = append(c.pending, b[:k]...)
		b = b[k:]
		if len(c.pending) == 5 {
			c.skip = int(c.pending[3])<<8 | int(c.pending[4])
			c.sizes = append(c.sizes, c.skip)
			c.pending = c.pending[:0]
		}
	}
	return n, err
}

// TestTLSListenerRecordSize checks that the writes of a response on a new
// connection leave whole, not in the segment-sized records of crypto/tls's
// dynamic record sizing.
func TestTLSListenerRecordSize(t *testing.T) {
	body := strings.Repeat("x", 12<<10)
	e := startEdge(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	}), 0)
	raw, err := net.DialTimeout("tcp", e.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordSizes{Conn: raw}
	c := tls.Client(rc, &tls.Config{
		InsecureSkipVerify: true, ServerName: "a.example.test", NextProtos: []string{"http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519}, // a short ServerHello, below 1000 bytes
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != body {
		t.Fatalf("got %d bytes, %v; want %d", len(got), err, len(body))
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	// net/http writes the response 4 KiB at a time. Dynamic record sizing
	// would cut the first writes into records of one TCP segment (about
	// 1.2 KiB, then 2.4 KiB, ...); whole, they are 4 KiB records and a tail.
	// The handshake's records are all smaller than 1000 bytes.
	for _, n := range rc.sizes {
		if n > 1000 && n < 4<<10 {
			t.Fatalf("got TLS records of %v bytes, want no segment-sized ones", rc.sizes)
		}
	}
}
