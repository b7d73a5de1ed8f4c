package elasticsearch

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// fakeNode is an Elasticsearch node over plain HTTP, enough for the Go
// client: the root info (with the X-Elastic-Product header the client
// insists on), indexing documents and a match search over them, and a
// streamed endpoint. It records the headers each request arrived with.
type fakeNode struct {
	srv     *httptest.Server
	release chan struct{} // lets /_stream send its second part

	mu   sync.Mutex
	docs map[string]map[string]map[string]any // index → id → source
	reqs []http.Header                        // headers of each request, with Host
}

func startFakeNode(t *testing.T, tlsCert *tls.Certificate) *fakeNode {
	t.Helper()
	n := &fakeNode{docs: map[string]map[string]map[string]any{}, release: make(chan struct{})}
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(n.serve))
	n.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsCert != nil {
		n.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*tlsCert}}
		n.srv.StartTLS()
	} else {
		n.srv.Start()
	}
	t.Cleanup(func() {
		n.releaseStream()
		n.srv.Close()
	})
	return n
}

func (n *fakeNode) releaseStream() {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.release:
	default:
		close(n.release)
	}
}

func (n *fakeNode) addr() string { return n.srv.Listener.Addr().String() }

// requests returns the headers of the requests so far.
func (n *fakeNode) requests() []http.Header {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]http.Header(nil), n.reqs...)
}

func (n *fakeNode) serve(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set("Host", r.Host)
	n.mu.Lock()
	n.reqs = append(n.reqs, h)
	n.mu.Unlock()
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.URL.Path == "/":
		fmt.Fprint(w, `{"name":"node-1","cluster_name":"leproxy-test","cluster_uuid":"x",`+
			`"version":{"number":"8.19.0","build_flavor":"default","lucene_version":"9.12.0",`+
			`"minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},`+
			`"tagline":"You Know, for Search"}`)
	case r.URL.Path == "/_stream":
		fmt.Fprint(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-n.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "second\n")
	case len(parts) == 3 && parts[1] == "_doc" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var src map[string]any
		if err := json.NewDecoder(r.Body).Decode(&src); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"type":"parse_exception","reason":%q},"status":400}`, err)
			return
		}
		n.mu.Lock()
		if n.docs[parts[0]] == nil {
			n.docs[parts[0]] = map[string]map[string]any{}
		}
		n.docs[parts[0]][parts[2]] = src
		n.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"_index":%q,"_id":%q,"_version":1,"result":"created",`+
			`"_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1}`, parts[0], parts[2])
	case len(parts) == 2 && parts[1] == "_search":
		var q struct {
			Query struct {
				Match map[string]any `json:"match"`
			} `json:"query"`
		}
		if r.ContentLength != 0 {
			json.NewDecoder(r.Body).Decode(&q)
		}
		type hit struct {
			Index  string         `json:"_index"`
			ID     string         `json:"_id"`
			Score  float64        `json:"_score"`
			Source map[string]any `json:"_source"`
		}
		hits := []hit{}
		n.mu.Lock()
		for id, src := range n.docs[parts[0]] {
			match := true
			for k, v := range q.Query.Match {
				match = match && fmt.Sprint(src[k]) == fmt.Sprint(v)
			}
			if match {
				hits = append(hits, hit{parts[0], id, 1, src})
			}
		}
		n.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{
			"took": 1, "timed_out": false,
			"_shards": map[string]int{"total": 1, "successful": 1, "skipped": 0, "failed": 0},
			"hits": map[string]any{
				"total": map[string]any{"value": len(hits), "relation": "eq"},
				"hits":  hits,
			},
		})
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"type":"resource_not_found_exception","reason":"no %s"},"status":404}`, r.URL.Path)
	}
}

// startProxy starts an elasticsearch Server for cfg; see dbtest.StartProxy.
func startProxy(t *testing.T, ca *dbtest.CA, cfg dbproxy.Config) *dbtest.Proxy {
	t.Helper()
	proto, ok := dbproxy.Lookup("elasticsearch")
	if !ok {
		t.Fatal("elasticsearch is not registered")
	}
	cfg.Protocol = proto
	return dbtest.StartProxy(t, ca, cfg)
}

// clientTransport is an HTTP transport as the client would have one: it
// trusts ca, sends sni ("" for none) and verifies verifyName, offers h2,
// and dials every host name at 127.0.0.1, as a resolver would send them
// to leproxy.
func clientTransport(ca *dbtest.CA, sni, verifyName string) *http.Transport {
	cfg := &tls.Config{ServerName: sni, RootCAs: ca.Pool}
	if sni != verifyName {
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: verifyName, Roots: ca.Pool})
			return err
		}
	}
	var d net.Dialer
	return &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}
}

// newClient is a go-elasticsearch client for url over tr, without retries.
func newClient(t *testing.T, url string, tr *http.Transport) *elasticsearch.Client {
	t.Helper()
	t.Cleanup(tr.CloseIdleConnections)
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{url}, Transport: tr, DisableRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// errorJSON is an Elasticsearch-style error body.
type errorJSON struct {
	Error struct {
		RootCause []struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"root_cause"`
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
	Status int `json:"status"`
}

// decodeResponse decodes a client response's JSON body into v and closes it.
func decodeResponse(t *testing.T, res *esapi.Response, err error, wantStatus int, v any) {
	t.Helper()
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != wantStatus {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d (%s), want %d", res.StatusCode, b, wantStatus)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("decoding the body: %v", err)
	}
	// Read to the end, so that the client reuses the connection.
	io.Copy(io.Discard, res.Body)
}

func TestElasticsearchClient(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	_, port, _ := net.SplitHostPort(p.Addr)
	es := newClient(t, "https://es.test:"+port, clientTransport(ca, "es.test", "es.test"))

	var info struct {
		Version struct {
			Number string `json:"number"`
		} `json:"version"`
	}
	res, err := es.Info(es.Info.WithHeader(map[string]string{"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"}))
	decodeResponse(t, res, err, http.StatusOK, &info)
	if info.Version.Number != "8.19.0" {
		t.Errorf("version: got %q, want 8.19.0", info.Version.Number)
	}

	var indexed struct {
		Result string `json:"result"`
	}
	res, err = es.Index("books", strings.NewReader(`{"title":"Dune","year":1965}`), es.Index.WithDocumentID("1"), es.Index.WithRefresh("true"))
	decodeResponse(t, res, err, http.StatusCreated, &indexed)
	res, err = es.Index("books", strings.NewReader(`{"title":"Solaris","year":1961}`), es.Index.WithDocumentID("2"))
	decodeResponse(t, res, err, http.StatusCreated, &indexed)

	var found struct {
		Hits struct {
			Hits []struct {
				ID     string `json:"_id"`
				Source struct {
					Title string `json:"title"`
				} `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	res, err = es.Search(es.Search.WithIndex("books"), es.Search.WithBody(strings.NewReader(`{"query":{"match":{"title":"Dune"}}}`)))
	decodeResponse(t, res, err, http.StatusOK, &found)
	if h := found.Hits.Hits; len(h) != 1 || h[0].ID != "1" || h[0].Source.Title != "Dune" {
		t.Errorf("search: got %+v, want document 1, Dune", h)
	}

	reqs := node.requests()
	if len(reqs) != 4 {
		t.Fatalf("node got %d requests, want 4", len(reqs))
	}
	for i, h := range reqs {
		want := map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Forwarded-Proto": "https",
			"X-Forwarded-Host":  "es.test:" + port,
			"Host":              "es.test:" + port,
			"Forwarded":         "",
		}
		for k, v := range want {
			if got := strings.Join(h.Values(k), ", "); got != v {
				t.Errorf("request %d: %s: got %q, want %q", i, k, got, v)
			}
		}
	}

	if r := p.Srv.Stats().Routes[0]; r.Sessions == 0 || r.BytesIn == 0 || r.BytesOut == 0 {
		t.Errorf("route stats: got %+v, want sessions with bytes both ways", r)
	}
}

// One connection, three requests: one session, one log line.
func TestElasticsearchSessionEnd(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	conn := ca.ClientTLS(p.Dial(t), "es.test", "es.test", "http/1.1")
	br := bufio.NewReader(conn)
	for range 3 {
		dbtest.MustWrite(t, conn, []byte("GET / HTTP/1.1\r\nHost: es.test\r\n\r\n"))
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("response: %v, %v", res, err)
		}
		io.Copy(io.Discard, res.Body)
	}
	if st := p.Srv.Stats(); st.Routes[0].Active != 1 {
		t.Errorf("stats while the session is open: got %+v, want 1 active", st)
	}
	conn.Close()
	dbtest.WaitFor(t, "the session-end log line", func() bool { return len(p.Logs.Records(t, "session end")) == 1 })
	rec := p.Logs.Records(t, "session end")[0]
	if rec["route"] != "es.test" || rec["sni"] != "es.test" || rec["backend"] != node.addr() || rec["requests"] != float64(3) ||
		rec["error"] != nil {
		t.Errorf("session end: got %v, want route, SNI es.test, backend %s, 3 requests, no error", rec, node.addr())
	}
	in, out := rec["bytes_in"].(float64), rec["bytes_out"].(float64)
	if want := float64(3 * len("GET / HTTP/1.1\r\nHost: es.test\r\n\r\n")); in != want || out == 0 {
		t.Errorf("session end: %v bytes in, %v out; want %v in (the requests, inside TLS) and some out", in, out, want)
	}
	// A session is a session, not a connection handled with nothing to
	// pump (a PostgreSQL cancel request); its bytes count once.
	st := p.Srv.Stats()
	if r := st.Routes[0]; r.Sessions != 1 || r.Active != 0 || r.Errors != 0 || st.Handled != 0 ||
		r.BytesIn != uint64(in) || r.BytesOut != uint64(out) {
		t.Errorf("stats: got %+v, want 1 session, none active, none handled, no error, the bytes of the log line", st)
	}
}

func TestElasticsearchALPN(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	tests := []struct {
		name    string
		offer   []string
		want    string
		wantErr bool
	}{
		{"h2 and http/1.1 get http/1.1", []string{"h2", "http/1.1"}, "http/1.1", false},
		{"no ALPN", nil, "", false},
		{"h2 alone is refused", []string{"h2"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := ca.ClientTLS(p.Dial(t), "es.test", "es.test", tt.offer...)
			err := tc.Handshake()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("handshake succeeded with %q, want it refused", tc.ConnectionState().NegotiatedProtocol)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got := tc.ConnectionState().NegotiatedProtocol; got != tt.want {
				t.Errorf("ALPN: got %q, want %q", got, tt.want)
			}
		})
	}
}

// A response streams through as the node sends it.
func TestElasticsearchStreaming(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	c := &http.Client{Transport: clientTransport(ca, "es.test", "es.test")}
	t.Cleanup(c.CloseIdleConnections)
	res, err := c.Get("https://es.test:" + portOf(p.Addr) + "/_stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	// The node holds its second part until the first has been read here.
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("got %q, %v; want the first part before the node sends the rest", line, err)
	}
	node.releaseStream()
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "second\n" {
		t.Fatalf("got %q, %v; want the second part", rest, err)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestElasticsearchRefusals covers the client-facing errors, each with the
// go-elasticsearch client: the JSON body it parses, and no request at the
// node.
func TestElasticsearchRefusals(t *testing.T) {
	tests := []struct {
		name       string
		noDef      bool
		down       bool
		url        string // with PORT for the proxy's port
		sni        string
		wantStatus int
		wantType   string
		wantReason string
	}{{
		name: "plaintext on the TLS port", url: "http://es.test:PORT",
		wantStatus: 400, wantType: "leproxy_tls_required", wantReason: "TLS is required: this port serves HTTPS, use https://es.test:PORT",
	}, {
		name: "unknown server name", url: "https://other.test:PORT", sni: "other.test",
		wantStatus: 421, wantType: "leproxy_misdirected_request", wantReason: `no route for server name "other.test"`,
	}, {
		name: "no SNI, no default route", noDef: true, url: "https://127.0.0.1:PORT",
		wantStatus: 421, wantType: "leproxy_misdirected_request", wantReason: "no route for clients that send no server name (SNI)",
	}, {
		name: "backend down", down: true, url: "https://es.test:PORT", sni: "es.test",
		wantStatus: 502, wantType: "leproxy_backend_unavailable", wantReason: "could not reach the backend of es.test",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			node := startFakeNode(t, nil)
			backend := node.addr()
			if tt.down {
				backend = dbtest.ClosedAddr(t)
			}
			cfg := dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: backend}}, Default: "es.test"}
			if tt.noDef {
				cfg.Default = ""
			}
			p := startProxy(t, ca, cfg)
			port := portOf(p.Addr)
			es := newClient(t, strings.ReplaceAll(tt.url, "PORT", port), clientTransport(ca, tt.sni, "es.test"))
			var body errorJSON
			res, err := es.Info()
			decodeResponse(t, res, err, tt.wantStatus, &body)
			want := strings.ReplaceAll(tt.wantReason, "PORT", port)
			if body.Status != tt.wantStatus || body.Error.Type != tt.wantType || body.Error.Reason != want ||
				len(body.Error.RootCause) != 1 || body.Error.RootCause[0].Type != tt.wantType {
				t.Errorf("body: got %+v, want status %d, type %s, reason %q", body, tt.wantStatus, tt.wantType, want)
			}
			if res.Header.Get("X-Elastic-Product") != "" {
				t.Error("leproxy's error claims to be Elasticsearch")
			}
			if strings.Contains(body.Error.Reason, backend) {
				t.Errorf("reason %q shows the backend address", body.Error.Reason)
			}
			if n := len(node.requests()); n != 0 {
				t.Errorf("node got %d requests, want 0", n)
			}
		})
	}
}

// A node that is down fails each request, not the session: the same
// connection works once the node is back.
func TestElasticsearchBackendComesBack(t *testing.T) {
	ca := dbtest.NewCA(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: addr}}})
	conn := ca.ClientTLS(p.Dial(t), "es.test", "es.test", "http/1.1")
	br := bufio.NewReader(conn)
	get := func() int {
		t.Helper()
		dbtest.MustWrite(t, conn, []byte("GET / HTTP/1.1\r\nHost: es.test\r\n\r\n"))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading response: %v", err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if got := get(); got != http.StatusBadGateway {
		t.Fatalf("node down: got %d, want 502", got)
	}
	node := &fakeNode{docs: map[string]map[string]map[string]any{}, release: make(chan struct{})}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(node.serve)}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	if got := get(); got != http.StatusOK {
		t.Fatalf("node back: got %d, want 200 on the same connection", got)
	}
}

func TestElasticsearchNoSNIGetsDefault(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}, Default: "es.test"})
	es := newClient(t, "https://127.0.0.1:"+portOf(p.Addr), clientTransport(ca, "", "es.test"))
	var info map[string]any
	res, err := es.Info()
	decodeResponse(t, res, err, http.StatusOK, &info)
	if info["tagline"] != "You Know, for Search" {
		t.Errorf("info: got %v", info)
	}
	if n := len(node.requests()); n != 1 {
		t.Errorf("node got %d requests, want 1", n)
	}
}

func TestElasticsearchPlaintext(t *testing.T) {
	t.Run("allowed", func(t *testing.T) {
		ca := dbtest.NewCA(t)
		node := startFakeNode(t, nil)
		p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr(), AllowPlaintext: true}}, Default: "es.test"})
		es := newClient(t, "http://es.test:"+portOf(p.Addr), clientTransport(ca, "", ""))
		var info map[string]any
		res, err := es.Info()
		decodeResponse(t, res, err, http.StatusOK, &info)
		if reqs := node.requests(); len(reqs) != 1 || reqs[0].Get("X-Forwarded-Proto") != "http" {
			t.Errorf("node got %v, want one request forwarded as http", reqs)
		}
	})
	t.Run("not HTTP either", func(t *testing.T) {
		ca := dbtest.NewCA(t)
		node := startFakeNode(t, nil)
		p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
		conn := p.Dial(t)
		dbtest.MustWrite(t, conn, []byte("\x00\x01\x02 not http\r\n\r\n"))
		if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
			t.Fatalf("got %q, %v; want EOF and nothing", b, err)
		}
		dbtest.WaitFor(t, "the session-end log line", func() bool { return len(p.Logs.Records(t, "session end")) == 1 })
		if msg, _ := p.Logs.Records(t, "session end")[0]["error"].(string); !strings.Contains(msg, "no HTTP request") {
			t.Errorf("logged error %q, want it to say the client sent no HTTP", msg)
		}
	})
}

func TestElasticsearchBackendTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	otherCA := dbtest.NewCA(t)
	good, _, _ := ca.Issue(t, "127.0.0.1")
	stranger, _, _ := otherCA.Issue(t, "127.0.0.1")
	tests := []struct {
		name       string
		cert       *tls.Certificate
		wantStatus int
	}{
		{"verified", &good, http.StatusOK},
		{"verification fails", &stranger, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := startFakeNode(t, tt.cert)
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr(), TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}}})
			es := newClient(t, "https://es.test:"+portOf(p.Addr), clientTransport(ca, "es.test", "es.test"))
			var v map[string]any
			res, err := es.Info()
			decodeResponse(t, res, err, tt.wantStatus, &v)
		})
	}
}

// Shutdown lets the request in flight finish, closes idle keep-alive
// sessions, and returns without waiting for the idle timeout.
func TestElasticsearchShutdown(t *testing.T) {
	ca := dbtest.NewCA(t)
	node := startFakeNode(t, nil)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "es.test", Backend: node.addr()}}})
	idle := ca.ClientTLS(p.Dial(t), "es.test", "es.test")
	dbtest.MustWrite(t, idle, []byte("GET / HTTP/1.1\r\nHost: es.test\r\n\r\n"))
	idleBR := bufio.NewReader(idle)
	if res, err := http.ReadResponse(idleBR, nil); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("first request: %v %v", res, err)
	} else {
		io.Copy(io.Discard, res.Body)
	}

	busy := ca.ClientTLS(p.Dial(t), "es.test", "es.test")
	dbtest.MustWrite(t, busy, []byte("GET /_stream HTTP/1.1\r\nHost: es.test\r\n\r\n"))
	busyBR := bufio.NewReader(busy)
	res, err := http.ReadResponse(busyBR, nil)
	if err != nil {
		t.Fatal(err)
	}
	stream := bufio.NewReader(res.Body)
	if line, err := stream.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("stream: got %q, %v", line, err)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- p.Srv.Shutdown(ctx)
	}()
	// The idle session is closed…
	if b, err := io.ReadAll(idleBR); err != nil || len(b) != 0 {
		t.Errorf("idle session: got %q, %v; want EOF", b, err)
	}
	// …the busy one finishes its response first.
	node.releaseStream()
	if rest, err := io.ReadAll(stream); err != nil || string(rest) != "second\n" {
		t.Errorf("in-flight response: got %q, %v; want it completed", rest, err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
