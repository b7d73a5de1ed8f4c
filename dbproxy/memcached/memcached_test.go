package memcached

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// binaryGet is a binary GET request for key with the given opaque.
func binaryGet(key string, opaque uint32) []byte {
	var h [headerLen]byte
	h[0] = binaryRequest
	h[1] = 0x00 // GET
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	binary.BigEndian.PutUint32(h[8:], uint32(len(key)))
	binary.BigEndian.PutUint32(h[12:], opaque)
	return append(h[:], key...)
}

// binaryResp is a parsed binary response.
type binaryResp struct {
	magic, opcode byte
	status        uint16
	opaque        uint32
	body          string
}

func readBinaryResponse(t testing.TB, r io.Reader) binaryResp {
	t.Helper()
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("reading binary response header: %v", err)
	}
	n := binary.BigEndian.Uint32(h[8:])
	if n > 1<<20 {
		t.Fatalf("binary response body of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading binary response body: %v", err)
	}
	return binaryResp{magic: h[0], opcode: h[1], status: binary.BigEndian.Uint16(h[6:]),
		opaque: binary.BigEndian.Uint32(h[12:]), body: string(body)}
}

func TestMemcachedRoutes(t *testing.T) {
	ca := dbtest.NewCA(t)
	a := dbtest.StartEcho(t, "a", nil)
	b := dbtest.StartEcho(t, "b", nil)
	p := dbtest.StartProtocol(t, ca, "memcached", "a.test", dbproxy.Route{Host: "a.test", Backend: a.Addr}, dbproxy.Route{Host: "b.test", Backend: b.Addr})
	for _, tt := range []struct{ sni, verify, want string }{
		{"b.test", "b.test", "b:version"},
		{"", "a.test", "a:version"}, // no SNI: the default
	} {
		tc := p.DialTLS(t, tt.sni, tt.verify)
		if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
			t.Errorf("negotiated ALPN %q, want none", got)
		}
		if got := dbtest.EchoLine(t, tc, "version"); got != tt.want {
			t.Errorf("sni %q: got %q, want %q", tt.sni, got, tt.want)
		}
	}
}

func TestMemcachedRefusals(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	down := dbtest.ClosedAddr(t)
	plain := func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.Dial(t) }
	unknown := func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.DialTLS(t, "c.test", "a.test") }
	secure := func(t *testing.T, p *dbtest.Proxy) net.Conn { return p.DialTLS(t, "a.test", "a.test") }
	tests := []struct {
		name       string
		backend    string
		dial       func(t *testing.T, p *dbtest.Proxy) net.Conn
		binary     bool
		wantText   string // text: what the client reads
		wantStatus uint16 // binary: the response's status…
		wantBody   string // …and message
		wantErr    string // in the session's log line
	}{
		{name: "plaintext text", backend: echo.Addr, dial: plain,
			wantText: "SERVER_ERROR TLS is required on this port\r\n",
			wantErr:  "not a TLS handshake (first byte 0x67, memcached command get)"},
		{name: "plaintext binary", backend: echo.Addr, dial: plain, binary: true,
			wantStatus: 0x0020, wantBody: "TLS is required on this port",
			wantErr: "not a TLS handshake (first byte 0x80, memcached binary opcode 0x00)"},
		{name: "unknown server name text", backend: echo.Addr, dial: unknown,
			wantText: "SERVER_ERROR no route for server name c.test\r\n",
			wantErr:  `no route for server name "c.test"`},
		{name: "unknown server name binary", backend: echo.Addr, dial: unknown, binary: true,
			wantStatus: 0x0020, wantBody: "no route for server name c.test",
			wantErr: `no route for server name "c.test"`},
		{name: "backend down text", backend: down, dial: secure,
			wantText: "SERVER_ERROR could not connect to the backend of a.test\r\n",
			wantErr:  "dialing backend"},
		{name: "backend down binary", backend: down, dial: secure, binary: true,
			wantStatus: 0x0086, wantBody: "could not connect to the backend of a.test",
			wantErr: "dialing backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "memcached", "a.test", dbproxy.Route{Host: "a.test", Backend: tt.backend})
			c := tt.dial(t, p)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if tt.binary {
				dbtest.MustWrite(t, c, binaryGet("key", 0xfeedf00d))
				r := readBinaryResponse(t, c)
				want := binaryResp{magic: 0x81, opcode: 0x00, status: tt.wantStatus, opaque: 0xfeedf00d, body: tt.wantBody}
				if r != want {
					t.Errorf("got response %+v, want %+v", r, want)
				}
			} else {
				io.WriteString(c, "get key\r\n")
				got := make([]byte, len(tt.wantText))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != tt.wantText {
					t.Errorf("got %q (%v), want %q", got, err, tt.wantText)
				}
			}
			rest, err := dbtest.ReadAll(t, c)
			c.Close()
			if rest != "" {
				t.Errorf("client read %q after the error, want nothing", rest)
			}
			if _, isTLS := c.(*tls.Conn); isTLS && err != nil {
				t.Errorf("read error %v, want a clean close_notify EOF", err)
			}
			if msg := p.SessionError(t); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestMemcachedBinaryErrorEncoding(t *testing.T) {
	var req [headerLen]byte
	copy(req[:], binaryGet("k", 0x01020304))
	req[1] = 0x01 // SET
	got := appendBinaryError(nil, req, 0x0086, "down")
	want := []byte{
		0x81, 0x01, 0, 0, // magic, opcode, key length
		0, 0, 0x00, 0x86, // extras length, data type, status
		0, 0, 0, 4, // total body length
		1, 2, 3, 4, // opaque
		0, 0, 0, 0, 0, 0, 0, 0, // CAS
		'd', 'o', 'w', 'n',
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got % x, want % x", got, want)
	}
}

func TestMemcachedReadRequest(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  bool
		want     string // String
	}{
		{"text command", "get a b\r\n", false, "memcached command get"},
		{"binary header", string(binaryGet("k", 1)), false, "memcached binary opcode 0x00"},
		{"nothing", "", true, ""},
		{"partial binary header", "\x80\x01", true, "memcached binary request"},
		{"command line cut short", "stats", true, "memcached command stats"},
		{"command line too long", strings.Repeat("x", 2*maxLine) + "\n", true, "memcached command " + strings.Repeat("x", 32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := readRequest(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want one: %t", err, tt.wantErr)
			}
			if got := req.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

// A refused TLS client that never sends a request speaks no known
// protocol: it is closed without an answer.
func TestMemcachedRefusalSilentClient(t *testing.T) {
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "memcached", "a.test", dbproxy.Route{Host: "a.test", Backend: dbtest.ClosedAddr(t)})
	tc := p.DialTLS(t, "c.test", "a.test")
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := dbtest.ReadAll(t, tc)
	tc.Close()
	if got != "" || err != nil {
		t.Errorf("got %q (%v), want a clean close and nothing else", got, err)
	}
	if msg := p.SessionError(t); !strings.Contains(msg, `no route for server name "c.test"`) {
		t.Errorf("session error %q, want the no route error", msg)
	}
}

// FuzzMemcachedRequest checks that reading a client's first request never
// panics, never reads more than a binary header or a bounded line, and
// answers in the protocol the first byte says.
func FuzzMemcachedRequest(f *testing.F) {
	f.Add(binaryGet("key", 7))
	f.Add([]byte("get a b c\r\n"))
	f.Add([]byte{0x80, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		cr := &countingReader{r: bytes.NewReader(in)}
		req, _ := readRequest(cr)
		if cr.n > maxLine {
			t.Fatalf("read %d bytes, limit %d", cr.n, maxLine)
		}
		var out bytes.Buffer
		writeError(&out, req, statusAuthError, "m")
		switch {
		case len(in) == 0:
		case in[0] == binaryRequest:
			if out.Len() != headerLen+1 || out.Bytes()[0] != binaryResponse {
				t.Fatalf("binary request got % x", out.Bytes())
			}
		default:
			if out.String() != "SERVER_ERROR m\r\n" {
				t.Fatalf("text request got %q", out.String())
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
