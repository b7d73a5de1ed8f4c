package amqp

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "amqp",
		// The session is piped verbatim after TLS.
		StartBackend: func(t testing.TB, name string) string {
			return dbtest.StartEcho(t, name, nil).Addr
		},
		// Like a real client, it hangs up on an error.
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c, err := connect(conn, cfg)
			if err != nil {
				conn.Close()
				return nil, err
			}
			return c, nil
		},
	}.Run(t)
}

const (
	methodStartOk = 11
	methodCloseOk = 51
)

// startOk is the Connection.Start-Ok frame of a client logging in as
// guest with PLAIN.
func startOk() []byte {
	args := binary.BigEndian.AppendUint32(nil, 0) // client-properties: an empty table
	args = appendShortString(args, "PLAIN")
	args = appendLongString(args, "\x00guest\x00guest")
	args = appendShortString(args, "en_US")
	return appendMethodFrame(nil, classConnection, methodStartOk, args)
}

// connect sets up a conformance session over conn: TLS with cfg (none when
// nil), then the opening of an AMQP connection and a first line in one
// write: the protocol header, the Connection.Start-Ok a client sends once
// it has read the server's Connection.Start, and a newline. A refusing
// proxy answers the header with Connection.Start, reads the Start-Ok and
// closes the connection with Connection.Close, whose reply text says why;
// the proxy refusing a plaintext client answers with its protocol header;
// the echo backend behind a session that is up answers each line of what
// was sent with its name, a colon and the line.
func connect(conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	c := conn
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sent := slices.Concat(protocolHeader, startOk(), []byte("\n"))
	if _, err := c.Write(sent); err != nil {
		return nil, err
	}
	var first [8]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return nil, fmt.Errorf("reading the answer to the protocol header: %w", err)
	}
	r := io.MultiReader(bytes.NewReader(first[:]), c)
	switch {
	case bytes.Equal(first[:], protocolHeader):
		if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("after the protocol header the server sent %q (%v), want the close", rest, err)
		}
		// AMQP 0-9-1 says no more: this is the test client's reading of
		// a header answered with the same header on a plaintext
		// connection.
		return nil, errors.New("the server answered the protocol header with its own and closed: AMQP 0-9-1 is not served in plaintext here (TLS required)")
	case first[0] == frameMethod:
		return nil, readRefusal(c, r)
	}
	if err := readEcho(r, sent); err != nil {
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// readRefusal reads the frames of a refused connection from r, which
// replays what was read of c, up to Connection.Close, answers it with
// Close-Ok, and returns the error the close says.
func readRefusal(c net.Conn, r io.Reader) error {
	for range 2 {
		class, method, args, err := readMethod(r)
		if err != nil {
			return err
		}
		switch {
		case class == classConnection && method == methodStart:
			continue
		case class == classConnection && method == methodClose:
			if len(args) < 3 || len(args) < 3+int(args[2]) {
				return fmt.Errorf("short Connection.Close arguments % x", args)
			}
			code, text := binary.BigEndian.Uint16(args), string(args[3:3+int(args[2])])
			c.Write(appendMethodFrame(nil, classConnection, methodCloseOk, nil))
			return fmt.Errorf("connection closed by the server: %d %s", code, text)
		default:
			return fmt.Errorf("unexpected method %d.%d", class, method)
		}
	}
	return errors.New("no Connection.Close after Connection.Start")
}

// readMethod reads a method frame and returns its class, method and
// arguments.
func readMethod(r io.Reader) (class, method uint16, args []byte, err error) {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, nil, fmt.Errorf("reading frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(h[3:])
	if h[0] != frameMethod || size < 4 || size > maxFrame {
		return 0, 0, nil, fmt.Errorf("frame header % x, want a method frame", h)
	}
	payload := make([]byte, size+1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, fmt.Errorf("reading frame: %w", err)
	}
	if payload[size] != frameEnd {
		return 0, 0, nil, fmt.Errorf("frame end %#02x, want %#02x", payload[size], frameEnd)
	}
	return binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]), payload[4:size], nil
}

// readEcho reads the echo backend's answer to sent from r: each line of
// sent after the backend's name and a colon. It reads a byte at a time, so
// that nothing after the answer is consumed.
func readEcho(r io.Reader, sent []byte) error {
	var name []byte
	for line := range bytes.Lines(sent) {
		var got []byte
		var b [1]byte
		for len(got) < len(name)+1+len(line) {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return fmt.Errorf("reading the echo of the first exchange: %w (got %q)", err, got)
			}
			got = append(got, b[0])
			if name == nil && b[0] == ':' {
				name = bytes.TrimSuffix(got, []byte(":"))
			}
		}
		if want := slices.Concat(name, []byte(":"), line); !bytes.Equal(got, want) {
			return fmt.Errorf("first exchange: got %q, want %q", got, want)
		}
	}
	return nil
}
