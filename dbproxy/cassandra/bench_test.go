package cassandra

import (
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest/cqltest"
)

// BenchmarkRewritePeers measures the rewrite of a system.peers_v2 result
// (bytes/s of result body, allocs/op).
func BenchmarkRewritePeers(b *testing.B) {
	body := peersV2Result(b)
	w := testRewriter()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		h, err := parseRowsHead(0, body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.rows(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteEvent measures the rewrite of a STATUS_CHANGE event.
func BenchmarkRewriteEvent(b *testing.B) {
	body := eventBody("STATUS_CHANGE", "DOWN", netip.MustParseAddr("127.0.0.2"), 9042)
	w := testRewriter()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := w.event(0, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackendFramerRows measures the backend framer on a stream of
// ordinary row results, which it looks at and passes unchanged: the cost
// every query pays.
func BenchmarkBackendFramerRows(b *testing.B) {
	one := cqltest.Frame{Version: 0x84, Stream: 5, Opcode: cqltest.OpResult, Body: cqltest.RowsFor(b, "SELECT answer FROM leproxy.echo "+string(bytes.Repeat([]byte("x"), 4000)))}.Bytes()
	stream := bytes.Repeat(one, 64)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		c := &backendConn{Conn: &memConn{}, fr: frameReader{r: bytes.NewReader(stream)}, proto: 4, w: testRewriter(), max: DefaultMaxResponseFrame, maxRows: maxSystemRows, fault: new(fault)}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientFramerQueries measures the client framer on a stream of
// QUERY frames, whose skip_metadata flag it clears.
func BenchmarkClientFramerQueries(b *testing.B) {
	stream := bytes.Repeat(cqltest.QueryRequest("SELECT answer FROM leproxy.echo WHERE k = 'some key'"), 256)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		c := &clientConn{Conn: &memConn{}, fr: frameReader{r: bytes.NewReader(stream)}, proto: 4, max: DefaultMaxFrame, fault: new(fault), backend: &memConn{}}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
