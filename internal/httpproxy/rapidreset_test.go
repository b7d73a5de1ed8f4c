package httpproxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/leproxy/leproxy/internal/config"
)

// guardedServer serves h over TLS with HTTP/2 set up as run.go sets up
// leproxy's HTTPS server: ConnContext and MaxConcurrentStreams.
// connState, if not nil, is the server's ConnState hook.
func guardedServer(t *testing.T, h http.Handler, connState func(net.Conn, http.ConnState)) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = connState
	srv.EnableHTTP2 = true
	srv.Config.ConnContext = ConnContext
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: MaxConcurrentStreams}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// rapidResetClient is a raw HTTP/2 client connection.
type rapidResetClient struct {
	conn   *tls.Conn
	fr     *http2.Framer
	wmu    sync.Mutex // guards writes on fr
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	pings  chan [8]byte  // PING acks
	closed chan struct{} // closed when reading stops
	goaway atomic.Bool   // a GOAWAY arrived
	rerr   error         // why reading stopped, once closed is
}

func dialRapidReset(t *testing.T, addr string) *rapidResetClient {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	conn.SetDeadline(time.Now().Add(testTimeout))
	c := &rapidResetClient{conn: conn, fr: http2.NewFramer(conn, conn), pings: make(chan [8]byte, 1), closed: make(chan struct{})}
	c.henc = hpack.NewEncoder(&c.hbuf)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatalf("writing preface: %v", err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatalf("writing SETTINGS: %v", err)
	}
	go c.readLoop()
	return c
}

func (c *rapidResetClient) readLoop() {
	defer close(c.closed)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.rerr = err
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				c.fr.WriteSettingsAck()
				c.wmu.Unlock()
			}
		case *http2.PingFrame:
			if f.IsAck() {
				c.pings <- f.Data
			}
		case *http2.GoAwayFrame:
			c.goaway.Store(true)
		}
	}
}

// headersAndReset writes a GET of host / on stream id and resets it at once.
func (c *rapidResetClient) headersAndReset(id uint32, host string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"},
		{Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: host},
		{Name: ":path", Value: "/"},
	} {
		c.henc.WriteField(f)
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true,
	}); err != nil {
		return err
	}
	return c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// ping writes a PING and waits for its ack, so that the server has read
// every frame written before it. It reports false when the connection
// closed or sent GOAWAY instead.
func (c *rapidResetClient) ping(t *testing.T, n uint64) bool {
	t.Helper()
	var data [8]byte
	for i := range data {
		data[i] = byte(n >> (8 * i))
	}
	c.wmu.Lock()
	err := c.fr.WritePing(false, data)
	c.wmu.Unlock()
	if err != nil {
		return false
	}
	select {
	case got := <-c.pings:
		if got != data {
			t.Fatalf("PING ack %v, want %v", got, data)
		}
		return !c.goaway.Load()
	case <-c.closed:
		return false
	case <-time.After(testTimeout):
		t.Fatal("no PING ack, GOAWAY or close")
		return false
	}
}

// TestRapidReset floods one HTTP/2 connection with HEADERS each followed at
// once by RST_STREAM (CVE-2023-44487). The server must close the
// connection long before the flood ends, and hardly any of the streams may
// reach the backend.
func TestRapidReset(t *testing.T) {
	const (
		n     = 2000
		batch = 50 // pairs between PINGs
		host  = "rr.example.test"
	)
	var hits atomic.Int64
	backend := startBackend(t, countingHandler(&hits, echoHandler("rr")))
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost(host, backend)}, Options{Logger: logger})
	var streams atomic.Int64
	srv := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		streams.Add(1)
		h.ServeHTTP(w, r)
	}), nil)
	c := dialRapidReset(t, srv.Listener.Addr().String())

	sent := 0
	open := true
	for sent < n && open {
		for range batch {
			if err := c.headersAndReset(uint32(2*sent+1), host); err != nil {
				open = false
				break
			}
			sent++
		}
		open = open && c.ping(t, uint64(sent))
	}
	if open {
		t.Errorf("connection still open after all %d streams", n)
		c.conn.Close()
	}
	select {
	case <-c.closed:
	case <-time.After(testTimeout):
		t.Fatal("server did not close the connection")
	}
	goaway := c.goaway.Load()
	srv.Close() // waits for the handlers
	t.Logf("sent %d HEADERS+RST_STREAM pairs; handler saw %d streams; backend saw %d; GOAWAY %v; read ended with %v",
		sent, streams.Load(), hits.Load(), goaway, c.rerr)
	if sent > n/2 {
		t.Errorf("connection closed only after %d of %d streams", sent, n)
	}
	// The attacker meant to send n streams; the few that reached the
	// backend were forwarded before their RST_STREAM was read.
	if got := hits.Load(); got*20 > n {
		t.Errorf("backend saw %d reset streams (%d sent of %d), want at most 5%% of %d", got, sent, n, n)
	}
	warns := 0
	for _, rec := range logs.records(t) {
		if rec["msg"] == "http2 rapid reset: closing connection" {
			warns++
			if rec["level"] != "WARN" || rec["client"] == nil {
				t.Errorf("log record %v, want level WARN and the client", rec)
			}
		}
	}
	if warns != 1 {
		t.Errorf("%d rapid reset warnings logged, want 1", warns)
	}
}

// TestRapidResetNoFalsePositive sends 500 ordinary requests over one
// guarded HTTP/2 connection: none may be refused and the connection must
// stay open.
func TestRapidResetNoFalsePositive(t *testing.T) {
	const (
		n       = 500
		workers = 10
		host    = "ok.example.test"
	)
	var hits atomic.Int64
	backend := startBackend(t, countingHandler(&hits, echoHandler("ok")))
	logger, logs := newTestLogger()
	h := mustNew(t, []config.Host{tcpHost(host, backend)}, Options{Logger: logger})
	var conns atomic.Int64
	srv := guardedServer(t, h, func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}
	// One request first, so that the workers share its connection.
	get := func() error {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		if err != nil {
			return err
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			return errors.New("got " + resp.Proto + " " + resp.Status)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n-1; i += workers {
				if err := get(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := hits.Load(); got != n {
		t.Errorf("backend saw %d requests, want %d", got, n)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d connections, want 1", got)
	}
	for _, rec := range logs.records(t) {
		if rec["msg"] == "http2 rapid reset: closing connection" {
			t.Errorf("false positive: %v", rec)
		}
	}
}
