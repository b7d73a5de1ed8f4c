package amqp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// dialTLS connects amqp091-go to the proxy over TLS with server name
// sni ("" for none), verifying the certificate for verifyName.
func dialTLS(p *dbtest.Proxy, sni, verifyName string) (*amqp091.Connection, error) {
	return amqp091.DialConfig("amqp://guest:guest@"+p.Addr+"/", amqp091.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, 5*time.Second)
			if err != nil {
				return nil, err
			}
			tc := p.CA.ClientTLS(c, sni, verifyName)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				c.Close()
				return nil, err
			}
			tc.SetDeadline(time.Time{})
			return tc, nil
		},
	})
}

func TestAMQPPlaintext(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	p := dbtest.StartProtocol(t, ca, "amqp", "a.test", dbproxy.Route{Host: "a.test", Backend: echo.Addr})
	tests := []struct {
		name, send, wantErr string
	}{
		{"AMQP 0-9-1 header", "AMQP\x00\x00\x09\x01", `not a TLS handshake (first byte 0x41, protocol header "AMQP\x00\x00\t\x01")`},
		{"AMQP 1.0 header", "AMQP\x00\x01\x00\x00", `protocol header "AMQP\x00\x01\x00\x00"`},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n", `protocol header "GET / HT"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := p.Dial(t)
			dbtest.MustWrite(t, c, []byte(tt.send))
			got, _ := dbtest.ReadAll(t, c)
			c.Close()
			if got != string(protocolHeader) {
				t.Errorf("got %q, want the protocol header %q and the close", got, protocolHeader)
			}
			var recs []map[string]any
			dbtest.WaitFor(t, "session end log line", func() bool {
				recs = p.Logs.Records(t, "session end")
				return len(recs) > i
			})
			if msg, _ := recs[i]["error"].(string); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
	// What amqp091-go makes of it.
	_, err := amqp091.Dial("amqp://guest:guest@" + p.Addr + "/")
	if err == nil {
		t.Error("amqp091-go connected in plaintext to the TLS port")
	}
}

func TestAMQPRefusals(t *testing.T) {
	ca := dbtest.NewCA(t)
	echo := dbtest.StartEcho(t, "a", nil)
	tests := []struct {
		name     string
		backend  string
		sni      string
		wantCode int
		wantText string
		wantErr  string // in the session's log line
	}{
		{"unknown server name", echo.Addr, "c.test", 530, "NOT_ALLOWED - no route for server name c.test (leproxy)", `no route for server name "c.test"`},
		{"backend down", dbtest.ClosedAddr(t), "a.test", 320, "CONNECTION_FORCED - could not connect to the backend of a.test (leproxy)", "dialing backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "amqp", "a.test", dbproxy.Route{Host: "a.test", Backend: tt.backend})
			conn, err := dialTLS(p, tt.sni, "a.test")
			if err == nil {
				conn.Close()
				t.Fatal("connected, want a refusal")
			}
			var ae *amqp091.Error
			if !errors.As(err, &ae) || ae.Code != tt.wantCode || ae.Reason != tt.wantText {
				t.Errorf("got error %v, want AMQP error %d %q", err, tt.wantCode, tt.wantText)
			}
			if msg := p.SessionError(t); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestAMQPRefusalWrongHeaderInsideTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "amqp", "a.test", dbproxy.Route{Host: "a.test", Backend: dbtest.ClosedAddr(t)})
	tc := p.DialTLS(t, "a.test", "a.test")
	dbtest.MustWrite(t, tc, []byte("AMQP\x00\x01\x00\x00"))
	got, err := dbtest.ReadAll(t, tc)
	if got != string(protocolHeader) || err != nil {
		t.Errorf("got %q (%v), want %q and a clean close", got, err, protocolHeader)
	}
}

func TestAMQPRoutes(t *testing.T) {
	ca := dbtest.NewCA(t)
	a := dbtest.StartEcho(t, "a", nil)
	b := dbtest.StartEcho(t, "b", nil)
	p := dbtest.StartProtocol(t, ca, "amqp", "a.test", dbproxy.Route{Host: "a.test", Backend: a.Addr}, dbproxy.Route{Host: "b.test", Backend: b.Addr})
	for _, tt := range []struct{ sni, verify, want string }{
		{"b.test", "b.test", "b:x"},
		{"", "a.test", "a:x"}, // no SNI: the default
	} {
		tc := p.DialTLS(t, tt.sni, tt.verify)
		if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
			t.Errorf("negotiated ALPN %q, want none", got)
		}
		if got := dbtest.EchoLine(t, tc, "x"); got != tt.want {
			t.Errorf("sni %q: got %q, want %q", tt.sni, got, tt.want)
		}
	}
}

func TestAMQPFrames(t *testing.T) {
	// Connection.Close 530 "x": class 10, method 50.
	got := appendConnectionClose(nil, 530, "x")
	want := []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 50, 0x02, 0x12, 1, 'x', 0, 0, 0, 0, 0xce}
	if !bytes.Equal(got, want) {
		t.Errorf("Connection.Close: got % x, want % x", got, want)
	}
	long := appendConnectionClose(nil, 320, strings.Repeat("y", 300))
	if n := long[13]; n != 255 {
		t.Errorf("long reply text: short string length %d, want 255", n)
	}
	start := appendConnectionStart(nil)
	if start[0] != 1 || start[len(start)-1] != 0xce || !bytes.Contains(start, []byte("PLAIN AMQPLAIN")) {
		t.Errorf("Connection.Start frame % x", start)
	}
}

func TestAMQPRefuseErrors(t *testing.T) {
	header := string(protocolHeader)
	heartbeat := "\x08\x00\x00\x00\x00\x00\x00\xce"
	tests := []struct {
		name, in   string
		failWrites bool
		wantErr    string
	}{
		{"short protocol header", "AMQ", false, "reading AMQP protocol header"},
		{"no frame after the header", header, false, "reading AMQP frame header"},
		{"frame cut short", header + "\x01\x00\x00\x00\x00\x00\x04ab", false, "reading AMQP frame"},
		{"frame too large", header + "\x01\x00\x00\x00\x01\x00\x01", false, "exceeds the limit"},
		{"Connection.Start not written", header, true, "writing Connection.Start"},
		{"wrong protocol header not written", "AMQP\x00\x01\x00\x00", true, "closed pipe"},
		{"complete", header + heartbeat, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w io.Writer = io.Discard
			if tt.failWrites {
				w = &failingWriter{}
			}
			rw := &struct {
				io.Reader
				io.Writer
			}{strings.NewReader(tt.in), w}
			err := refuseConnection(rw, 530, "x")
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// The Connection.Close is the second write.
	rw := &struct {
		io.Reader
		io.Writer
	}{strings.NewReader(header + heartbeat), &failingWriter{ok: 1}}
	if err := refuseConnection(rw, 530, "x"); err == nil || !strings.Contains(err.Error(), "writing Connection.Close") {
		t.Errorf("got error %v, want the Connection.Close write error", err)
	}
}

// failingWriter fails every write after the first ok.
type failingWriter struct{ ok int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.ok == 0 {
		return 0, io.ErrClosedPipe
	}
	f.ok--
	return len(p), nil
}

// FuzzAMQPRefuse checks that refusing a client never panics and reads a
// bounded amount whatever it sends.
func FuzzAMQPRefuse(f *testing.F) {
	f.Add([]byte("AMQP\x00\x00\x09\x01\x01\x00\x00\x00\x00\x00\x04abcd\xce"))
	f.Add([]byte("AMQP\x00\x00\x09\x01\x01\x00\x00\xff\xff\xff\xff"))
	f.Add([]byte("AMQ"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rw := &struct {
			io.Reader
			io.Writer
		}{&countingReader{r: bytes.NewReader(in)}, io.Discard}
		refuseConnection(rw, 530, "x")
		if n := rw.Reader.(*countingReader).n; n > 8+7+maxFrame+1 {
			t.Fatalf("read %d bytes", n)
		}
	})
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
