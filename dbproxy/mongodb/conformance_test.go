package mongodb

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestConformance runs the shared suite. Once TLS is up the proxy pipes a
// MongoDB session verbatim, but it tells a client why it is refused only
// in answer to the client's first message, as a driver reads it. So the
// client does what a driver does first: the TLS handshake, then a hello,
// whose answer is a MongoDB reply either way: the proxy's error document
// on a refusal, or the backend's hello reply once the session is through.
// The backend answers that hello and then echoes lines. Everything before
// the line exchange is length-framed MongoDB: a bare line echo would hold
// the binary hello, which has no newline, and prepend it to the first
// line it echoes.
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol:     "mongodb",
		StartBackend: startHelloEcho,
		Connect:      connectHello,
	}.Run(t)
}

// startHelloEcho starts a backend named name that answers a client's
// first message, a hello, with {isWritablePrimary: true, ok: 1} and then
// echoes lines (dbtest.EchoLines).
func startHelloEcho(t testing.TB, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	doc := bsonDoc(t, bson.D{
		{Key: "isWritablePrimary", Value: true},
		{Key: "maxWireVersion", Value: int32(21)},
		{Key: "ok", Value: 1.0},
	})
	dbtest.ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) {
		h, cmd, err := readFirstMessage(c, nil)
		if err != nil || cmd != "hello" {
			return
		}
		if _, err := c.Write(buildOpMsgReply(h.requestID, doc)); err != nil {
			return
		}
		dbtest.EchoLines(c, name)
	})
	return l.Addr().String()
}

// helloID is the request id of connectHello's hello.
const helloID = 1

// connectHello sets up a session over conn as a driver does: TLS with cfg
// (none when cfg is nil), then an OP_MSG hello. A reply with ok 0 is the
// proxy's refusal, returned as the driver reports it: "(codeName) errmsg".
// On an error conn is closed, as a driver closes a connection it gives up
// on, so that the proxy's session ends without waiting out its linger.
func connectHello(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	c, err := sendHello(t, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// sendHello is connectHello but for the close on error.
func sendHello(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	c := conn
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	msg := buildOpMsg(helloID, bsonDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "$db", Value: "admin"}}), "", false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	reply, err := readMessage(c)
	if err != nil {
		return nil, fmt.Errorf("reading the hello reply: %w", err)
	}
	got := decodeReply(t, reply)
	if got.responseTo != helloID {
		return nil, fmt.Errorf("the hello reply answers request %d, want %d", got.responseTo, helloID)
	}
	if got.OK != 1 {
		return nil, fmt.Errorf("(%s) %s", got.CodeName, got.Errmsg)
	}
	return c, nil
}

// readMessage reads one whole MongoDB message from r.
func readMessage(r io.Reader) ([]byte, error) {
	msg := make([]byte, headerLen)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(msg)
	if n < headerLen || n > maxFirstMessage {
		return nil, fmt.Errorf("message length %d", n)
	}
	msg = append(msg, make([]byte, n-headerLen)...)
	if _, err := io.ReadFull(r, msg[headerLen:]); err != nil {
		return nil, err
	}
	return msg, nil
}
