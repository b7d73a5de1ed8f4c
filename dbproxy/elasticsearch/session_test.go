package elasticsearch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// get sends a GET for path on conn and reads the response, body included.
func get(t *testing.T, conn net.Conn, br *bufio.Reader, path string) (*http.Response, string) {
	t.Helper()
	dbtest.MustWrite(t, conn, []byte("GET "+path+" HTTP/1.1\r\nHost: es.test\r\n\r\n"))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return res, string(body)
}

// waitingNode is a node whose requests wait until the client's request is
// cancelled: the proxy's connection to it closed.
type waitingNode struct {
	addr      string
	got       chan string // the path of each request, as it arrives
	cancelled chan string // the path of each request, once cancelled
}

func startWaitingNode(t *testing.T) *waitingNode {
	t.Helper()
	n := &waitingNode{got: make(chan string, 10), cancelled: make(chan string, 10)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.got <- r.URL.Path
		<-r.Context().Done()
		n.cancelled <- r.URL.Path
	}))
	t.Cleanup(srv.Close)
	n.addr = srv.Listener.Addr().String()
	return n
}

func receive(t *testing.T, what string, c <-chan string) string {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

// Sessions count as sessions of their route, never as connections handled
// with nothing to pump, and end with an error when leproxy answered 502 or
// refused them; a client that goes away is no error.
func TestElasticsearchSessionErrors(t *testing.T) {
	t.Run("node down", func(t *testing.T) {
		ca := dbtest.NewCA(t)
		down := dbtest.ClosedAddr(t)
		p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: down}}})
		conn := p.DialTLS(t, "es.test", "es.test", alpn)
		br := bufio.NewReader(conn)
		for _, path := range []string{"/first", "/second"} {
			if res, _ := get(t, conn, br, path); res.StatusCode != http.StatusBadGateway {
				t.Fatalf("GET %s: %s, want 502", path, res.Status)
			}
		}
		conn.Close()
		e := p.SessionError(t)
		if !strings.Contains(e, "backend unavailable (GET /first answered 502): dialing backend "+down) {
			t.Errorf("session error %q, want the first request's backend error", e)
		}
		rec := p.SessionEnds(t)[0]
		if rec["route"] != "es.test" || rec["requests"] != float64(2) {
			t.Errorf("session end %v, want route es.test, 2 requests", rec)
		}
		st := p.Srv.Stats()
		if r := st.Routes[0]; r.Sessions != 1 || r.Errors != 1 || st.Unrouted != 0 || st.Handled != 0 {
			t.Errorf("stats %+v, want 1 session with an error on the route", st)
		}
	})
	t.Run("client goes away mid-request", func(t *testing.T) {
		ca := dbtest.NewCA(t)
		node := startWaitingNode(t)
		p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr}}})
		conn := p.DialTLS(t, "es.test", "es.test", alpn)
		dbtest.MustWrite(t, conn, []byte("GET /wait HTTP/1.1\r\nHost: es.test\r\n\r\n"))
		receive(t, "the request at the node", node.got)
		conn.Close()
		receive(t, "the request to be cancelled at the node", node.cancelled)
		if e := p.SessionError(t); e != "" {
			t.Errorf("session error %q, want none", e)
		}
		if st := p.Srv.Stats(); st.Routes[0].Errors != 0 || st.Routes[0].Sessions != 1 {
			t.Errorf("stats %+v, want 1 session, no error", st)
		}
	})
	t.Run("unknown server name", func(t *testing.T) {
		ca := dbtest.NewCA(t)
		node := startFakeNode(t, nil)
		p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}, Default: "es.test"})
		conn := p.DialTLS(t, "other.test", "es.test", alpn)
		if res, _ := get(t, conn, bufio.NewReader(conn), "/"); res.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("got %s, want 421", res.Status)
		}
		e := p.SessionError(t)
		if !strings.Contains(e, `no route for server name "other.test" (answered 1 requests with 421)`) {
			t.Errorf("session error %q, want the route lookup's", e)
		}
		rec := p.SessionEnds(t)[0]
		if rec["route"] != "" || rec["bytes_in"] == float64(0) || rec["bytes_out"] == float64(0) {
			t.Errorf("session end %v, want no route, the bytes of the 421", rec)
		}
		st := p.Srv.Stats()
		if r := st.Routes[0]; st.Unrouted != 1 || r.Sessions != 0 || r.Errors != 0 || r.BytesIn != 0 {
			t.Errorf("stats %+v, want 1 unrouted session and nothing on the route", st)
		}
	})
	// A plaintext client that is refused counts as in the other
	// protocols: on the default route, the route of clients without SNI,
	// when there is one.
	for _, def := range []string{"es.test", ""} {
		t.Run("plaintext refused, default "+def, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			node := startFakeNode(t, nil)
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}, Default: def})
			conn := p.Dial(t)
			if res, _ := get(t, conn, bufio.NewReader(conn), "/"); res.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %s, want 400", res.Status)
			}
			if e := p.SessionError(t); e != "client did not start TLS (plaintext HTTP GET request)" {
				t.Errorf("session error %q", e)
			}
			st := p.Srv.Stats()
			wantUnrouted, wantErrors := uint64(0), uint64(1)
			if def == "" {
				wantUnrouted, wantErrors = 1, 0
			}
			if st.Unrouted != wantUnrouted || st.Routes[0].Errors != wantErrors || st.Routes[0].Sessions != wantErrors {
				t.Errorf("stats %+v, want %d unrouted, %d routed with an error", st, wantUnrouted, wantErrors)
			}
		})
	}
}

// A client that half-closes after its request is taken for gone, as Go's
// HTTP server takes it: the request is cancelled (before or after it
// reaches the node) and the client gets no answer at all, rather than an
// empty 200 of leproxy's making.
func TestElasticsearchHalfClose(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startWaitingNode(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr}}})
	conn := p.DialTLS(t, "es.test", "es.test", alpn)
	dbtest.MustWrite(t, conn, []byte("GET /wait HTTP/1.1\r\nHost: es.test\r\n\r\n"))
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := dbtest.ReadAll(t, conn); got != "" || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after the half-close: got %q, %v; want the connection closed without an answer", got, err)
	}
	if e := p.SessionError(t); e != "" {
		t.Errorf("session error %q, want none", e)
	}
}

// A request whose header has begun to arrive when the Server begins to
// shut down is served, with "Connection: close", and then the session
// ends.
func TestElasticsearchDrainServesRequestUnderWay(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	conn := p.DialTLS(t, "es.test", "es.test", alpn)
	head := "GET / HTTP/1.1\r\n"
	dbtest.MustWrite(t, conn, []byte(head))
	dbtest.WaitFor(t, "the start of the request to be read", func() bool {
		return p.Srv.Stats().Routes[0].BytesIn == uint64(len(head))
	})
	shut := make(chan error, 1)
	go func() { shut <- p.Srv.Shutdown(context.Background()) }()
	dbtest.WaitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", p.Addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	dbtest.MustWrite(t, conn, []byte("Host: es.test\r\n\r\n"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !res.Close || !strings.Contains(string(body), "You Know, for Search") {
		t.Errorf("got %s, close %v, %q; want the node's answer and Connection: close", res.Status, res.Close, body)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// silentNode reads each request's header and never answers. With
// readBody it then reads on until the connection closes; without, it reads
// nothing more until released, so that a large request body stalls in
// the socket buffers, and then drains the connection.
type silentNode struct {
	addr    string
	got     chan string // each request's first line
	ended   chan error  // each connection's last read error (nil: EOF)
	release chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

func startSilentNode(t *testing.T, readBody bool) *silentNode {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &silentNode{addr: l.Addr().String(), got: make(chan string, 10), ended: make(chan error, 10), release: make(chan struct{})}
	dbtest.ServeFake(t, l, time.Minute, nil, func(c net.Conn) {
		n.mu.Lock()
		n.conns = append(n.conns, c)
		n.mu.Unlock()
		br := bufio.NewReader(c)
		first, err := br.ReadString('\n')
		for line := first; err == nil && line != "\r\n"; {
			line, err = br.ReadString('\n')
		}
		if err != nil {
			n.ended <- err
			return
		}
		n.got <- strings.TrimSpace(first)
		if !readBody {
			<-n.release
		}
		_, err = io.Copy(io.Discard, br)
		n.ended <- err
	})
	return n
}

// readOn lets the node read its connections to their end.
func (n *silentNode) readOn() {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.release:
	default:
		close(n.release)
	}
}

// stop closes the node's connections, so that a session stuck on them
// ends.
func (n *silentNode) stop() {
	n.readOn()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.Close()
	}
}

// A forced shutdown closes the connections to the node too: they come
// from Session.Dial. When the node does not read the request body, nothing
// else would: the transport is stuck writing to the node and the HTTP
// server, which does not read the client connection meanwhile, does not
// see it closed.
func TestElasticsearchForcedShutdownClosesBackend(t *testing.T) {
	for _, tt := range []struct {
		name     string
		readBody bool
		request  string
		body     bool
	}{
		{"request sent, no answer", true, "GET /slow HTTP/1.1\r\nHost: es.test\r\n\r\n", false},
		{"request body not read", false, "PUT /books/_doc/1 HTTP/1.1\r\nHost: es.test\r\nContent-Length: 1073741824\r\n\r\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			node := startSilentNode(t, tt.readBody)
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr}}})
			// Runs before the proxy's own cleanup, should the session be
			// stuck.
			t.Cleanup(node.stop)
			conn := p.DialTLS(t, "es.test", "es.test", alpn)
			dbtest.MustWrite(t, conn, []byte(tt.request))
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				if tt.body {
					chunk := bytes.Repeat([]byte("x"), 1<<20)
					for {
						if _, err := conn.Write(chunk); err != nil {
							return
						}
					}
				}
			}()
			receive(t, "the request at the node", node.got)
			if tt.body {
				// The body flows until the buffers on the way to the node
				// are full, long before the drain runs out.
				dbtest.WaitFor(t, "the body to flow", func() bool { return p.Srv.Stats().Routes[0].BytesIn > 64<<10 })
			}
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				shut <- p.Srv.Shutdown(ctx)
			}()
			select {
			case err := <-shut:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Shutdown did not return after its deadline: the session is stuck on its node connection")
			}
			// The node's reads end at the proxy's close (EOF, or a reset).
			node.readOn()
			select {
			case err := <-node.ended:
				t.Logf("node connection ended: %v", err)
			case <-time.After(5 * time.Second):
				t.Fatal("the node connection stayed open after a forced shutdown")
			}
			<-wrote
			if e := p.SessionError(t); !strings.Contains(e, "connection closed with a request under way") {
				t.Errorf("session error %q, want the request under way cut", e)
			}
			if st := p.Srv.Stats(); st.Routes[0].Errors != 1 {
				t.Errorf("stats %+v, want the session's error on the route", st)
			}
		})
	}
}

// What Elasticsearch does not use is refused, and a request that is not
// HTTP gets the HTTP server's own 400 and a clean close; none of it is an
// error of the session.
func TestElasticsearchBadRequests(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	conn := p.DialTLS(t, "es.test", "es.test", alpn)
	br := bufio.NewReader(conn)
	for _, tt := range []struct {
		request    string
		wantStatus int
		wantReason string
	}{
		{"GET / HTTP/1.1\r\nHost: es.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", http.StatusBadRequest, "protocol upgrades are not served"},
		{"CONNECT es.test:443 HTTP/1.1\r\nHost: es.test:443\r\n\r\n", http.StatusMethodNotAllowed, "CONNECT is not served"},
	} {
		dbtest.MustWrite(t, conn, []byte(tt.request))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", tt.request, err)
		}
		var body errorJSON
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
			t.Fatalf("%q: decoding the body: %v", tt.request, err)
		}
		io.Copy(io.Discard, res.Body)
		if res.StatusCode != tt.wantStatus || body.Error.Type != "leproxy_bad_request" || body.Error.Reason != tt.wantReason {
			t.Errorf("%q: got %s, %+v; want %d, leproxy_bad_request, %q", tt.request, res.Status, body, tt.wantStatus, tt.wantReason)
		}
	}
	dbtest.MustWrite(t, conn, []byte("NOT HTTP AT ALL\r\n\r\n"))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("not HTTP: got %v, %v; want 400", res, err)
	}
	// The body runs to the close, which TLS makes clean.
	if body, err := io.ReadAll(res.Body); err != nil || string(body) != "400 Bad Request" {
		t.Errorf("after the 400: got %q, %v; want its body and a clean EOF", body, err)
	}
	conn.Close()

	// A refused request with a large body that is not sent: the HTTP
	// server answers, then half-closes (through TLS, down to TCP) rather
	// than read the body, and waits for the client to go.
	conn = p.DialTLS(t, "es.test", "es.test", alpn)
	br = bufio.NewReader(conn)
	dbtest.MustWrite(t, conn, []byte("POST / HTTP/1.1\r\nHost: es.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 1000000\r\n\r\n"))
	res, err = http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusBadRequest || !res.Close {
		t.Fatalf("upgrade with a body: got %v, %v; want 400 and Connection: close", res, err)
	}
	io.Copy(io.Discard, res.Body)
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the 400: got %q, %v; want a clean EOF", rest, err)
	}
	conn.Close()

	dbtest.WaitFor(t, "both sessions to end", func() bool { return len(p.SessionEnds(t)) == 2 })
	for _, rec := range p.SessionEnds(t) {
		if rec["error"] != nil {
			t.Errorf("session error %v, want none", rec["error"])
		}
	}
	if n := len(node.requests()); n != 0 {
		t.Errorf("node got %d requests, want 0", n)
	}
}

// A node that breaks off a response cuts the client's response short, and
// leproxy logs why.
func TestElasticsearchNodeBreaksOff(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "only part")
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(node.Close)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.Listener.Addr().String()}}})
	conn := p.DialTLS(t, "es.test", "es.test", alpn)
	dbtest.MustWrite(t, conn, []byte("GET / HTTP/1.1\r\nHost: es.test\r\n\r\n"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := io.ReadAll(res.Body); err == nil {
		t.Errorf("got the whole body %q, want it cut short", body)
	}
	dbtest.WaitFor(t, "the backend error log line", func() bool {
		for _, rec := range p.Logs.Records(t, "backend error") {
			if e, _ := rec["error"].(string); strings.Contains(e, "read error during body copy") && rec["route"] == "es.test" {
				return true
			}
		}
		return false
	})
}
