package mssql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest/tdstest"
)

// preloginSeeds are PRELOGIN payloads: go-mssqldb's shape and the proxy
// answer of the research notes.
func preloginSeeds() [][]byte {
	return [][]byte{
		tdstest.Prelogin([]byte{0}, []byte{11, 0, 0, 0, 0, 0}, []byte{1}, []byte{0}, []byte{2}, []byte{0}, []byte{3}, []byte{0, 0, 0, 1}, []byte{4}, []byte{0}),
		{0x00, 0x00, 0x1a, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00, 0x01, 0x03, 0x00, 0x22, 0x00, 0x00, 0x04, 0x00, 0x22, 0x00, 0x01, 0xff, 0x10, 0x00, 0x10, 0x7c, 0x00, 0x00, 0x01, 0x00, 0x00},
		{0xff},
		{0x01, 0xff, 0xff, 0x00, 0x01, 0xff},
	}
}

// FuzzPrelogin: parsing never panics or reads outside the payload, and
// what parses survives a round trip through appendPrelogin.
func FuzzPrelogin(f *testing.F) {
	for _, s := range preloginSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		opts, err := parsePrelogin(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		again, err := parsePrelogin(appendPrelogin(nil, opts))
		if err != nil {
			t.Fatalf("re-encoded PRELOGIN does not parse: %v", err)
		}
		if len(again) != len(opts) {
			t.Fatalf("round trip: %d options, want %d", len(again), len(opts))
		}
		for i := range opts {
			if again[i].token != opts[i].token || !bytes.Equal(again[i].data, opts[i].data) {
				t.Fatalf("round trip: option %d = %+v, want %+v", i, again[i], opts[i])
			}
		}
	})
}

// FuzzReadMessage: readMessage never allocates past its limit, and what
// it returns is the stream's prefix, exactly.
func FuzzReadMessage(f *testing.F) {
	f.Add(tdstest.Packets(pktPrelogin, preloginSeeds()[0], 512))
	f.Add(tdstest.Packets(pktLogin7, tdstest.Login7(tdstest.LoginInfo{User: "u", Password: "p"}), 64))
	f.Add([]byte{0x12, 0x00, 0xff, 0xff, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1000
		r := bytes.NewReader(b)
		m, err := readMessage(r, limit)
		if err != nil {
			return
		}
		if len(m.payload) > limit {
			t.Fatalf("payload of %d bytes, limit %d", len(m.payload), limit)
		}
		if !bytes.Equal(m.raw, b[:len(m.raw)]) || int(r.Size())-r.Len() != len(m.raw) {
			t.Fatalf("raw is not the %d bytes read", len(m.raw))
		}
	})
}

// scriptConn is a net.Conn that reads a script and discards writes.
type scriptConn struct {
	net.Conn // nil: only what the wrapper calls is implemented
	r        io.Reader
	written  bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *scriptConn) SetDeadline(time.Time) error { return nil }

// FuzzWrappedHandshake: the TDS 7.x handshake reader returns exactly the
// payloads of the PRELOGIN packets in front, whatever the read sizes,
// and fails on anything else; what it writes is PRELOGIN packets that
// carry exactly what was written.
func FuzzWrappedHandshake(f *testing.F) {
	hello := bytes.Repeat([]byte{0x16, 3, 1}, 200)
	f.Add(tdstest.Packets(pktPrelogin, hello, 512), uint8(7), []byte("flight"))
	f.Add(append(tdstest.Packets(pktPrelogin, hello[:10], 512), 0x10, 1, 0, 8, 0, 0, 1, 0), uint8(1), []byte{})
	f.Add([]byte{0x12, 1, 0, 3}, uint8(200), bytes.Repeat([]byte{1}, 5000))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, flight []byte) {
		// The reference: payloads of the leading PRELOGIN packets.
		var want []byte
		for rest := in; len(rest) >= headerLen && rest[0] == pktPrelogin; {
			n := int(binary.BigEndian.Uint16(rest[2:]))
			if n < headerLen {
				break
			}
			want = append(want, rest[headerLen:min(n, len(rest))]...)
			if n > len(rest) {
				break
			}
			rest = rest[n:]
		}
		sc := &scriptConn{r: bytes.NewReader(in)}
		w := newWrapConn(sc, false, clientPacketLen)
		if _, err := w.Write(flight); err != nil && len(flight) <= maxFlight {
			t.Fatalf("Write of a %d-byte flight: %v", len(flight), err)
		}
		var got []byte
		buf := make([]byte, int(chunk)+1)
		for {
			n, err := w.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, want the %d bytes of the PRELOGIN payloads", len(got), len(want))
		}
		// The flight went out, before the first read, as PRELOGIN packets.
		var sent []byte
		for out := sc.written.Bytes(); len(out) > 0; {
			typ, status, payload, err := tdstest.ReadMessage(bytes.NewReader(out), 1<<20)
			if err != nil || typ != pktPrelogin {
				t.Fatalf("written: type 0x%02x, status %d, %v", typ, status, err)
			}
			sent = append(sent, payload...)
			out = out[len(tdstest.Packets(pktPrelogin, payload, clientPacketLen)):]
		}
		if len(flight) <= maxFlight && !bytes.Equal(sent, flight) {
			t.Fatalf("sent %d bytes, want the %d-byte flight", len(sent), len(flight))
		}
	})
}

// FuzzLogin7: parsing never panics, and a LOGIN7 the test client builds
// parses to what it says.
func FuzzLogin7(f *testing.F) {
	f.Add(tdstest.Login7(tdstest.LoginInfo{TDSVersion: tdsVersion74, PacketSize: 4096, User: "app", Password: "pw", ServerName: `db.example.com\inst`, Database: "shop"}), "app", "db.example.com")
	f.Add(tdstest.Login7(tdstest.LoginInfo{User: "ü", ServerName: "x.test,1433"}), "ü", "x.test")
	f.Fuzz(func(t *testing.T, b []byte, user, server string) {
		if l, err := parseLogin7(b); err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
		} else if len(l.user)+len(l.serverName)+len(l.database) > 3*len(b) {
			t.Fatalf("decoded more than the packet holds")
		}
		if len(user) > 100 || len(server) > 100 {
			return
		}
		li := tdstest.LoginInfo{User: user, ServerName: server, TDSVersion: tdsVersion80}
		l, err := parseLogin7(tdstest.Login7(li))
		if err != nil {
			t.Fatalf("parsing a built LOGIN7: %v", err)
		}
		// Strings round-trip through UTF-16 as valid UTF-8.
		if l.user != decodeUCS2(tdstest.UCS2(user)) || l.serverName != decodeUCS2(tdstest.UCS2(server)) || l.tdsVersion != tdsVersion80 || l.integrated {
			t.Fatalf("parsed %+v from %+v", l, li)
		}
	})
}

// FuzzLoginReply: scanning the backend's login answer never panics, and a
// rewritten routing token scans back to the target.
func FuzzLoginReply(f *testing.F) {
	ok := slices.Concat(tdstest.EnvChange(1, "master", "master"), tdstest.EnvRouting("10.0.0.9", 11001), tdstest.LoginAck("x"), tdstest.Done(0, 0, 0))
	f.Add(ok)
	f.Add(slices.Concat(tdstest.ErrorToken(18456, 1, 14, "Login failed", "srv"), tdstest.Done(2, 0, 0)))
	f.Add([]byte{0xAE, 0x01, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, p []byte) {
		lr, err := scanLoginReply(p)
		if err != nil || lr.routing == nil {
			return
		}
		rt := lr.routing
		if rt.start < 0 || rt.end > len(p) || rt.start >= rt.end {
			t.Fatalf("routing token at [%d,%d) of %d bytes", rt.start, rt.end, len(p))
		}
		out := slices.Concat(p[:rt.start], appendEnvRouting(nil, "b.example.com", 1433), p[rt.end:])
		again, err := scanLoginReply(out)
		if err != nil || again.routing == nil {
			t.Fatalf("rewritten answer: %+v, %v", again, err)
		}
		if again.routing.server != "b.example.com" || again.routing.port != 1433 {
			t.Fatalf("rewritten routing %+v", again.routing)
		}
	})
}
