package cassandra

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest/cqltest"
)

// Seeds: what the fake cluster sends, built with its own codec.

func peersV2Result(t testing.TB) []byte {
	return cqltest.RowsFor(t, "SELECT * FROM system.peers_v2")
}

func testRewriter() *rewriter {
	routes := map[string]node{
		ipKey(netip.MustParseAddr("127.0.0.2"), 9042): {route: "n1", standIn: standIn("n1")},
		ipKey(netip.MustParseAddr("127.0.0.3"), 9042): {route: "n2", standIn: standIn("n2")},
	}
	return &rewriter{nodes: routes, self: routes[ipKey(netip.MustParseAddr("127.0.0.2"), 9042)], port: 19042, backendPort: 9042}
}

// FuzzRows feeds RESULT bodies to the rows head parser and the system
// table rewriter: no panic, and a rewrite keeps the body's shape.
func FuzzRows(f *testing.F) {
	f.Add(byte(0), peersV2Result(f))
	f.Add(byte(0), cqltest.RowsFor(f, "SELECT * FROM system.peers"))
	f.Add(byte(0), cqltest.RowsFor(f, "SELECT * FROM system.local WHERE key='local'"))
	f.Add(byte(flagWarning|flagTracing), append(make([]byte, 16), append([]byte{0, 1, 0, 1, 'w'}, peersV2Result(f)...)...))
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		h, err := parseRowsHead(flags, body)
		if err != nil || h.table == tableNone {
			return
		}
		out, err := testRewriter().rows(h, body)
		if err != nil || out == nil {
			return
		}
		if h2, err := parseRowsHead(flags, out); err != nil || h2.table != h.table || len(h2.cols) != len(h.cols) {
			t.Fatalf("rewritten head %+v, %v; was %+v", h2, err, h)
		}
	})
}

func eventBody(typ, change string, ip netip.Addr, port int) []byte {
	b := appendString(nil, typ)
	b = appendString(b, change)
	a := ip.AsSlice()
	b = append(b, byte(len(a)))
	b = append(b, a...)
	return binary.BigEndian.AppendUint32(b, uint32(port)) // #nosec G115 -- test ports
}

// FuzzEvent feeds EVENT bodies to the event rewriter.
func FuzzEvent(f *testing.F) {
	f.Add(byte(0), eventBody("STATUS_CHANGE", "DOWN", netip.MustParseAddr("127.0.0.2"), 9042))
	f.Add(byte(0), eventBody("TOPOLOGY_CHANGE", "NEW_NODE", netip.MustParseAddr("::1"), 9042))
	f.Add(byte(0), eventBody("SCHEMA_CHANGE", "CREATED", netip.MustParseAddr("127.0.0.9"), 1))
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		out, drop, err := testRewriter().event(flags, body)
		if err == nil && !drop && out != nil {
			if _, _, err := testRewriter().event(flags, out); err != nil {
				t.Fatalf("the rewritten event does not read back: %v", err)
			}
		}
	})
}

// FuzzSupported feeds SUPPORTED bodies to its rewriter.
func FuzzSupported(f *testing.F) {
	f.Add(byte(0), cqltest.SupportedBody())
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		out, err := supported(flags, body)
		if err != nil {
			return
		}
		if again, err := supported(flags, out); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("rewriting SUPPORTED twice: %q, %v; want %q", again, err, out)
		}
	})
}

// memConn is a net.Conn that reads from r and discards what is
// written, for the framers.
type memConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzClientFramer feeds a client's bytes after STARTUP to the client
// framer, in small reads: no panic, and what it passes on is whole
// frames.
func FuzzClientFramer(f *testing.F) {
	f.Add(cqltest.QueryRequest("SELECT * FROM system.peers"))
	f.Add(append(cqltest.Request(1, cqltest.OpExecute, []byte{0, 2, 1, 2, 0, 1, 2}), cqltest.Request(2, cqltest.OpRegister, nil)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &clientConn{Conn: &memConn{}, fr: frameReader{r: &oneByte{bytes.NewReader(in)}}, proto: 4, max: 4096, fault: new(fault), backend: &memConn{}}
		out, _ := io.ReadAll(c)
		checkFrames(t, out, 4096)
	})
}

// FuzzBackendFramer feeds a node's bytes after STARTUP to the backend
// framer.
func FuzzBackendFramer(f *testing.F) {
	f.Add(cqltest.Frame{Version: 0x84, Opcode: cqltest.OpResult, Body: peersV2Result(f)}.Bytes())
	f.Add(cqltest.Frame{Version: 0x84, Stream: -1, Opcode: cqltest.OpEvent, Body: eventBody("STATUS_CHANGE", "UP", netip.MustParseAddr("127.0.0.3"), 9042)}.Bytes())
	f.Add(cqltest.Frame{Version: 0x84, Opcode: cqltest.OpSupported, Body: cqltest.SupportedBody()}.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &backendConn{Conn: &memConn{}, fr: frameReader{r: &oneByte{bytes.NewReader(in)}}, proto: 4, w: testRewriter(), max: 1 << 16, maxRows: 1 << 16, fault: new(fault)}
		io.ReadAll(c)
	})
}

// FuzzStartup feeds a client's first frames, and a node's answers, to
// the exchange before STARTUP.
func FuzzStartup(f *testing.F) {
	f.Add(append(cqltest.Frame{Version: 5, Opcode: cqltest.OpOptions}.Bytes(), cqltest.Request(0, cqltest.OpOptions, nil)...),
		cqltest.Frame{Version: 0x84, Opcode: cqltest.OpSupported, Body: cqltest.SupportedBody()}.Bytes())
	f.Add(cqltest.Request(1, cqltest.OpStartup, cqltest.StartupBody(map[string]string{"CQL_VERSION": "3.0.0"})), []byte(nil))
	f.Fuzz(func(t *testing.T, client, backend []byte) {
		p := New(Options{MaxFrame: 1 << 16}).(*protocol)
		p.startup(&memConn{r: bytes.NewReader(client)}, &memConn{r: bytes.NewReader(backend)})
	})
}

// oneByte reads at most 3 bytes at a time, so that frames arrive split.
type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 3)]) }

// checkFrames fails unless b is whole frames of at most max bytes each,
// except for a protocol ERROR leproxy appended.
func checkFrames(t *testing.T, b []byte, max int) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < headerLen {
			t.Fatalf("%d bytes left, not a frame header", len(b))
		}
		h := parseHeader(b)
		if int(h.length) > max || len(b) < headerLen+int(h.length) {
			t.Fatalf("frame %+v passed with %d bytes left", h, len(b))
		}
		b = b[headerLen+int(h.length):]
	}
}
