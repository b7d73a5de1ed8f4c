package dbproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// amqpDialTLS connects amqp091-go to the proxy over TLS with server name
// sni ("" for none), verifying the certificate for verifyName.
func amqpDialTLS(p *testProxy, sni, verifyName string) (*amqp091.Connection, error) {
	return amqp091.DialConfig("amqp://guest:guest@"+p.addr+"/", amqp091.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, 5*time.Second)
			if err != nil {
				return nil, err
			}
			tc := clientTLS(c, p.ca, sni, verifyName)
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
	ca := newTestCA(t)
	echo := tfStartEcho(t, "a", nil)
	p := tfProxy(t, ca, "amqp", "a.test", Route{Host: "a.test", Backend: echo.addr})
	tests := []struct {
		name, send, wantErr string
	}{
		{"AMQP 0-9-1 header", "AMQP\x00\x00\x09\x01", `not a TLS handshake (first byte 0x41, protocol header "AMQP\x00\x00\t\x01")`},
		{"AMQP 1.0 header", "AMQP\x00\x01\x00\x00", `protocol header "AMQP\x00\x01\x00\x00"`},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n", `protocol header "GET / HT"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := p.dial(t)
			mustWrite(t, c, []byte(tt.send))
			got, _ := tfReadAll(t, c)
			c.Close()
			if got != string(amqpHeader) {
				t.Errorf("got %q, want the protocol header %q and the close", got, amqpHeader)
			}
			var recs []map[string]any
			waitFor(t, "session end log line", func() bool {
				recs = p.logs.records(t, "session end")
				return len(recs) > i
			})
			if msg, _ := recs[i]["error"].(string); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
	// What amqp091-go makes of it.
	_, err := amqp091.Dial("amqp://guest:guest@" + p.addr + "/")
	if err == nil {
		t.Error("amqp091-go connected in plaintext to the TLS port")
	}
}

func TestAMQPRefusals(t *testing.T) {
	ca := newTestCA(t)
	echo := tfStartEcho(t, "a", nil)
	tests := []struct {
		name     string
		backend  string
		sni      string
		wantCode int
		wantText string
		wantErr  string // in the session's log line
	}{
		{"unknown server name", echo.addr, "c.test", 530, "NOT_ALLOWED - no route for server name c.test (leproxy)", `no route for server name "c.test"`},
		{"backend down", tfClosedAddr(t), "a.test", 320, "CONNECTION_FORCED - could not connect to the backend of a.test (leproxy)", "dialing backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tfProxy(t, ca, "amqp", "a.test", Route{Host: "a.test", Backend: tt.backend})
			conn, err := amqpDialTLS(p, tt.sni, "a.test")
			if err == nil {
				conn.Close()
				t.Fatal("connected, want a refusal")
			}
			var ae *amqp091.Error
			if !errors.As(err, &ae) || ae.Code != tt.wantCode || ae.Reason != tt.wantText {
				t.Errorf("got error %v, want AMQP error %d %q", err, tt.wantCode, tt.wantText)
			}
			if msg := tfSessionError(t, p); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("session error %q, want it to contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestAMQPRefusalWrongHeaderInsideTLS(t *testing.T) {
	ca := newTestCA(t)
	p := tfProxy(t, ca, "amqp", "a.test", Route{Host: "a.test", Backend: tfClosedAddr(t)})
	tc := tfDialTLS(t, p, "a.test", "a.test")
	mustWrite(t, tc, []byte("AMQP\x00\x01\x00\x00"))
	got, err := tfReadAll(t, tc)
	if got != string(amqpHeader) || err != nil {
		t.Errorf("got %q (%v), want %q and a clean close", got, err, amqpHeader)
	}
}

func TestAMQPRoutes(t *testing.T) {
	ca := newTestCA(t)
	a := tfStartEcho(t, "a", nil)
	b := tfStartEcho(t, "b", nil)
	p := tfProxy(t, ca, "amqp", "a.test", Route{Host: "a.test", Backend: a.addr}, Route{Host: "b.test", Backend: b.addr})
	for _, tt := range []struct{ sni, verify, want string }{
		{"b.test", "b.test", "b:x"},
		{"", "a.test", "a:x"}, // no SNI: the default
	} {
		tc := tfDialTLS(t, p, tt.sni, tt.verify)
		if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
			t.Errorf("negotiated ALPN %q, want none", got)
		}
		if got := tfEchoLine(t, tc, "x"); got != tt.want {
			t.Errorf("sni %q: got %q, want %q", tt.sni, got, tt.want)
		}
	}
}

func TestAMQPFrames(t *testing.T) {
	// Connection.Close 530 "x": class 10, method 50.
	got := appendAMQPConnectionClose(nil, 530, "x")
	want := []byte{1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 50, 0x02, 0x12, 1, 'x', 0, 0, 0, 0, 0xce}
	if !bytes.Equal(got, want) {
		t.Errorf("Connection.Close: got % x, want % x", got, want)
	}
	long := appendAMQPConnectionClose(nil, 320, strings.Repeat("y", 300))
	if n := long[13]; n != 255 {
		t.Errorf("long reply text: short string length %d, want 255", n)
	}
	start := appendAMQPConnectionStart(nil)
	if start[0] != 1 || start[len(start)-1] != 0xce || !bytes.Contains(start, []byte("PLAIN AMQPLAIN")) {
		t.Errorf("Connection.Start frame % x", start)
	}
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
		}{&mcCountingReader{r: bytes.NewReader(in)}, io.Discard}
		refuseAMQP(rw, 530, "x")
		if n := rw.Reader.(*mcCountingReader).n; n > 8+7+maxAMQPFrame+1 {
			t.Fatalf("read %d bytes", n)
		}
	})
}
