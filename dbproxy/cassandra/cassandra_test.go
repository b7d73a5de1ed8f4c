package cassandra

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/cqltest"
)

// startOne starts a one-node fake behind a proxy with route a.test and
// protocol p (nil: the registered one).
// startOne runs a one-node fake cluster behind p (nil: New's defaults),
// with the listener options opts, if any.
func startOne(t *testing.T, p dbproxy.Protocol, opts ...map[string]string) (*cqltest.Cluster, *dbtest.Proxy) {
	t.Helper()
	fake := cqltest.Start(t, cqltest.Config{Nodes: []cqltest.Node{{
		Name: "a", Addr: netip.MustParseAddrPort("127.0.0.1:0"), HostID: hostIDs[0],
	}}})
	if p == nil {
		p = New(Options{})
	}
	cfg := dbproxy.Config{
		Protocol: p,
		Routes:   []dbproxy.Route{{Host: "a.test", Backend: fake.Addr(0)}},
	}
	if len(opts) > 0 {
		cfg.Options = opts[0]
	}
	return fake, dbtest.StartProxy(t, dbtest.NewCA(t), cfg)
}

func wantError(t *testing.T, c net.Conn, stream int16, code int32, text string) {
	t.Helper()
	f, err := cqltest.ReadFrame(c)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if f.Opcode != cqltest.OpError || f.Stream != stream {
		t.Fatalf("got opcode %#x on stream %d, want an ERROR on stream %d", f.Opcode, f.Stream, stream)
	}
	e := cqltest.ParseError(f.Body)
	if e.Code != code || !strings.Contains(e.Message, text) {
		t.Fatalf("got %v, want code %#x with %q", e, code, text)
	}
}

func TestVersion5RefusedThenVersion4(t *testing.T) {
	fake, proxy := startOne(t, nil)
	c := proxy.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, c, cqltest.Frame{Version: 5, Stream: 3, Opcode: cqltest.OpOptions}.Bytes())
	f, err := cqltest.ReadFrame(c)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 0x85 || f.Opcode != cqltest.OpError {
		t.Fatalf("got version %#x opcode %#x, want a v5 ERROR", f.Version, f.Opcode)
	}
	if e := cqltest.ParseError(f.Body); e.Code != 0x000a || !strings.Contains(e.Message, "Invalid or unsupported protocol version (5)") {
		t.Fatalf("got %v, want the protocol error drivers downgrade on", e)
	}
	// The same connection then speaks v4, and COMPRESSION is not offered.
	dbtest.MustWrite(t, c, cqltest.Request(0, cqltest.OpOptions, nil))
	f, err = cqltest.Expect(c, 0, cqltest.OpSupported)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(f.Body), "COMPRESSION") || strings.Contains(string(f.Body), "5/v5") {
		t.Errorf("SUPPORTED still offers compression or v5: %q", f.Body)
	}
	if !strings.Contains(string(f.Body), "CQL_VERSION") || !strings.Contains(string(f.Body), "4/v4") {
		t.Errorf("SUPPORTED lost CQL_VERSION or 4/v4: %q", f.Body)
	}
	dbtest.MustWrite(t, c, cqltest.Request(1, cqltest.OpStartup, cqltest.StartupBody(map[string]string{"CQL_VERSION": "3.0.0"})))
	if _, err := cqltest.Expect(c, 1, cqltest.OpReady); err != nil {
		t.Fatal(err)
	}
	dbtest.MustWrite(t, c, cqltest.QueryRequest("hello"))
	if got, err := cqltest.ReadAnswer(c); err != nil || got != "a:hello" {
		t.Fatalf("query: %q, %v", got, err)
	}
	if st := fake.Stats(); st.V5Frames != 0 {
		t.Errorf("the node saw %d v5 frames", st.V5Frames)
	}
}

func TestCompressionRefused(t *testing.T) {
	_, proxy := startOne(t, nil)
	c := proxy.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, c, cqltest.Request(1, cqltest.OpStartup, cqltest.StartupBody(map[string]string{"CQL_VERSION": "3.0.0", "COMPRESSION": "lz4"})))
	wantError(t, c, 1, 0x000a, "compression lz4 is not supported")
	if e := proxy.SessionError(t); !strings.Contains(e, "compression") {
		t.Errorf("session error %q", e)
	}
}

// session sets up a v4 session with the proxy behind name.
func session(t *testing.T, proxy *dbtest.Proxy, name string) *tls.Conn {
	t.Helper()
	c := proxy.DialTLS(t, name, name)
	if err := cqltest.Handshake(c); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c
}

func TestClientViolationsAfterStartup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		text  string
	}{
		{"too large", cqltest.Request(7, cqltest.OpQuery, cqltest.QueryBody(strings.Repeat("x", 2000), 0)), "exceeds leproxy's limit of 1024"},
		{"compressed", cqltest.Frame{Version: 4, Flags: 0x01, Stream: 7, Opcode: cqltest.OpQuery, Body: []byte{1, 2, 3}}.Bytes(), "compressed frame"},
		{"other version", cqltest.Frame{Version: 3, Stream: 7, Opcode: cqltest.OpOptions}.Bytes(), "protocol version"},
		{"second STARTUP", cqltest.Request(7, cqltest.OpStartup, cqltest.StartupBody(nil)), "STARTUP after STARTUP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The limit set the way a mapping's max_frame is.
			_, proxy := startOne(t, nil, map[string]string{optMaxFrame: "1KiB"})
			c := session(t, proxy, "a.test")
			dbtest.MustWrite(t, c, tc.frame)
			wantError(t, c, 7, 0x000a, tc.text)
			if rest, err := dbtest.ReadAll(t, c); err != nil || len(rest) != 0 {
				t.Errorf("after the ERROR: %q, %v; want the end", rest, err)
			}
		})
	}
}

func TestBackendDown(t *testing.T) {
	proxy := dbtest.StartProtocol(t, dbtest.NewCA(t), "cassandra", "", dbproxy.Route{Host: "a.test", Backend: dbtest.ClosedAddr(t)})
	c := proxy.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, c, cqltest.Request(0, cqltest.OpOptions, nil))
	wantError(t, c, 0, 0x1001, "could not connect to the backend of a.test")
}

func TestPlaintextRefused(t *testing.T) {
	_, proxy := startOne(t, nil)
	c := proxy.Dial(t)
	dbtest.MustWrite(t, c, cqltest.Frame{Version: 5, Stream: 9, Opcode: cqltest.OpOptions}.Bytes())
	wantError(t, c, 9, 0x2300, "TLS is required on this port")
}

// peers queries system.peers_v2 with a raw client and returns the rows.
func peers(t *testing.T, c net.Conn) cqltest.ParsedRows {
	t.Helper()
	// skip_metadata asked for: leproxy must clear it.
	dbtest.MustWrite(t, c, cqltest.Request(2, cqltest.OpQuery, cqltest.QueryBody("SELECT * FROM system.peers_v2", 0x02)))
	f, err := cqltest.Expect(c, 2, cqltest.OpResult)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cqltest.ParseRows(f.Body)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPeersRewriteAndReload(t *testing.T) {
	cl := startCluster(t, "4.1.3", "", "")
	c := session(t, cl.proxy, contactName)
	p := peers(t, c)
	if len(p.Rows) != 2 {
		t.Fatalf("%d peers, want 2", len(p.Rows))
	}
	listenerPort := netip.MustParseAddrPort(cl.proxy.Addr).Port()
	standIns := map[netip.Addr]bool{}
	for i := range p.Rows {
		for _, col := range []string{"peer", "native_address"} {
			v, _ := p.Value(i, col)
			a, _ := netip.AddrFromSlice(v)
			if !standInNet.Contains(a) {
				t.Errorf("row %d %s = %v, want a stand-in", i, col, a)
			}
			standIns[a] = true
		}
		if v, _ := p.Value(i, "native_port"); len(v) != 4 || int(v[2])<<8|int(v[3]) != int(listenerPort) {
			t.Errorf("row %d native_port = %v, want the listener's %d", i, v, listenerPort)
		}
		if v, _ := p.Value(i, "peer_port"); len(v) != 4 || int(v[2])<<8|int(v[3]) != 7000 {
			t.Errorf("row %d peer_port = %v, want 7000 untouched", i, v)
		}
	}
	if len(standIns) != 2 {
		t.Errorf("stand-ins %v, want one per node", standIns)
	}

	// A reload that drops node 3's route drops its row from new sessions.
	var routes []dbproxy.Route
	for _, r := range cl.proxy.Srv.Stats().Routes {
		if r.Host != nodeName(hostIDs[2]) {
			routes = append(routes, dbproxy.Route{Host: r.Host, Backend: r.Backend})
		}
	}
	if err := cl.proxy.Srv.SetRoutes(routes, ""); err != nil {
		t.Fatal(err)
	}
	c2 := session(t, cl.proxy, contactName)
	if p := peers(t, c2); len(p.Rows) != 1 {
		t.Errorf("after the reload: %d peers, want 1", len(p.Rows))
	}
}

func TestStandInsStable(t *testing.T) {
	routes := []dbproxy.Route{{Host: "b.test", Backend: "10.0.0.2:9042"}, {Host: "a.test", Backend: "10.0.0.1:9042"}, {Host: "c.test", Backend: "10.0.0.1:9042"}}
	m1, _ := buildNodes(context.Background(), routes)
	m2, _ := buildNodes(context.Background(), []dbproxy.Route{routes[1], routes[0], routes[2]})
	if m1[nodeKey("10.0.0.1", "9042")] != m2[nodeKey("10.0.0.1", "9042")] || m1[nodeKey("10.0.0.2", "9042")] != m2[nodeKey("10.0.0.2", "9042")] {
		t.Errorf("stand-ins depend on route order: %v %v", m1, m2)
	}
	if n := m1[nodeKey("10.0.0.1", "9042")]; n.route != "a.test" || n.standIn != standIn("a.test") || !standInNet.Contains(n.standIn) {
		t.Errorf("node 10.0.0.1 = %+v", n)
	}
	// Collisions move to the next free address.
	got := assignStandIns(nil)
	if len(got) != 0 {
		t.Errorf("no routes: %v", got)
	}
}

func TestLocalAndEventsRewritten(t *testing.T) {
	cl := startCluster(t, "4.1.3", "", "")
	c := session(t, cl.proxy, nodeName(hostIDs[1]))
	listenerPort := netip.MustParseAddrPort(cl.proxy.Addr).Port()

	dbtest.MustWrite(t, c, cqltest.Request(2, cqltest.OpQuery, cqltest.QueryBody("SELECT * FROM system.local WHERE key='local'", 0)))
	f, err := cqltest.Expect(c, 2, cqltest.OpResult)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cqltest.ParseRows(f.Body)
	if err != nil || len(p.Rows) != 1 {
		t.Fatalf("system.local: %+v, %v", p, err)
	}
	want := standIn(nodeName(hostIDs[1]))
	for _, col := range []string{"broadcast_address", "listen_address", "rpc_address"} {
		v, _ := p.Value(0, col)
		if a, _ := netip.AddrFromSlice(v); a != want {
			t.Errorf("system.local %s = %v, want node 2's stand-in %v", col, a, want)
		}
	}
	if v, _ := p.Value(0, "rpc_port"); len(v) != 4 || int(v[2])<<8|int(v[3]) != int(listenerPort) {
		t.Errorf("system.local rpc_port = %v, want %d", v, listenerPort)
	}
	if v, _ := p.Value(0, "host_id"); len(v) != 16 {
		t.Errorf("system.local host_id = %v", v)
	}

	body := []byte{0, 2}
	for _, s := range []string{"TOPOLOGY_CHANGE", "STATUS_CHANGE"} {
		body = append(body, 0, byte(len(s)))
		body = append(body, s...)
	}
	dbtest.MustWrite(t, c, cqltest.Request(3, cqltest.OpRegister, body))
	if _, err := cqltest.Expect(c, 3, cqltest.OpReady); err != nil {
		t.Fatal(err)
	}
	// Node 4's event is dropped; node 3's arrives with its stand-in and
	// the listener's port.
	if n := cl.fake.Event("TOPOLOGY_CHANGE", "NEW_NODE", 3); n != 1 {
		t.Fatalf("the event went to %d connections, want 1", n)
	}
	cl.fake.Event("STATUS_CHANGE", "UP", 2)
	f, err = cqltest.Expect(c, -1, cqltest.OpEvent)
	if err != nil {
		t.Fatal(err)
	}
	wantBody := eventBody("STATUS_CHANGE", "UP", standIn(nodeName(hostIDs[2])), int(listenerPort))
	if string(f.Body) != string(wantBody) {
		t.Errorf("event body %q, want %q", f.Body, wantBody)
	}
}
