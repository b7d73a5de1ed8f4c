// Package amqp is leproxy's AMQP 0-9-1 protocol: TLS from the first byte
// (the amqps convention, port 5671, as RabbitMQ serves it), then the
// session piped verbatim. No ALPN: RabbitMQ neither offers nor requires
// one.
//
// A plaintext client on the TLS port, whose first bytes are a protocol
// header such as "AMQP\x00\x00\x09\x01", gets the protocol header of the
// protocol leproxy serves there, "AMQP\x00\x00\x09\x01", and the
// connection is closed: the answer AMQP 0-9-1 (section 4.2.2) prescribes
// to a client whose protocol the server does not accept. Clients report it
// as a protocol mismatch; leproxy's log says "not a TLS handshake".
//
// A TLS client that leproxy cannot serve (no route for its server name,
// backend down) is told why the way RabbitMQ tells a client it refuses:
// after the client's protocol header leproxy sends Connection.Start,
// reads the client's Connection.Start-Ok (and throws its credentials away
// unread) and answers with Connection.Close, reply code 530 (NOT_ALLOWED)
// for no route or 320 (CONNECTION_FORCED, "try again later") for a
// backend that is down, and the reason as reply text in RabbitMQ's style
// ("NOT_ALLOWED - no route for server name x.example.com (leproxy)").
// amqp091-go reports it as `Exception (530) Reason: "NOT_ALLOWED - …"`. A
// client whose header is not AMQP 0-9-1's gets the protocol header
// instead.
package amqp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("amqp", func() dbproxy.Protocol { return newProtocol() })
}

// protocolHeader is the AMQP 0-9-1 protocol header.
var protocolHeader = []byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

const (
	frameMethod = 1
	frameEnd    = 0xce

	classConnection = 10
	methodStart     = 10
	methodClose     = 50

	replyConnectionForced = 320
	replyNotAllowed       = 530

	// maxFrame bounds the client frame (its Connection.Start-Ok) that
	// leproxy reads before refusing it; the spec's minimum frame-max is
	// 4096 and client properties are small.
	maxFrame = 64 << 10
)

// protocol is the AMQP 0-9-1 Protocol.
type protocol struct {
	tf dbproxy.TLSFirst
}

var _ dbproxy.Protocol = (*protocol)(nil)

func newProtocol() *protocol {
	p := &protocol{}
	p.tf = dbproxy.TLSFirst{
		Plaintext: func(_ context.Context, conn net.Conn) string {
			got, _ := readProtocolHeader(conn)
			conn.Write(protocolHeader)
			return "protocol header " + strconv.QuoteToASCII(string(got))
		},
		Refuse: func(_ context.Context, conn net.Conn, kind dbproxy.RefusalKind, msg string) {
			code, name := uint16(replyNotAllowed), "NOT_ALLOWED"
			if kind == dbproxy.RefuseBackend {
				code, name = replyConnectionForced, "CONNECTION_FORCED"
			}
			refuseConnection(conn, code, name+" - "+msg+" (leproxy)")
		},
	}
	return p
}

func (*protocol) Name() string   { return "amqp" }
func (*protocol) ALPN() []string { return nil }

// Handshake implements dbproxy.Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	return p.tf.Handshake(ctx, client, s)
}

// readProtocolHeader reads a client's protocol header, 8 bytes, and returns
// what it got of them.
func readProtocolHeader(r io.Reader) ([]byte, error) {
	var h [8]byte
	n, err := io.ReadFull(r, h[:])
	if err != nil {
		return h[:n], fmt.Errorf("reading AMQP protocol header: %w", err)
	}
	return h[:], nil
}

// refuseConnection runs the opening of an AMQP connection up to the point
// where the server may close it, and closes it with code and text:
// protocol header, Connection.Start, Connection.Start-Ok,
// Connection.Close.
func refuseConnection(rw io.ReadWriter, code uint16, text string) error {
	h, err := readProtocolHeader(rw)
	if err != nil {
		return err
	}
	if !bytes.Equal(h, protocolHeader) {
		_, err := rw.Write(protocolHeader)
		return err
	}
	if _, err := rw.Write(appendConnectionStart(nil)); err != nil {
		return fmt.Errorf("writing Connection.Start: %w", err)
	}
	if err := skipFrame(rw); err != nil {
		return err
	}
	if _, err := rw.Write(appendConnectionClose(nil, code, text)); err != nil {
		return fmt.Errorf("writing Connection.Close: %w", err)
	}
	return nil
}

// skipFrame reads one frame of at most maxFrame payload bytes and
// discards it.
func skipFrame(r io.Reader) error {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("reading AMQP frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(h[3:])
	if size > maxFrame {
		return fmt.Errorf("AMQP frame of %d bytes exceeds the limit of %d", size, maxFrame)
	}
	if _, err := io.CopyN(io.Discard, r, int64(size)+1); err != nil {
		return fmt.Errorf("reading AMQP frame: %w", err)
	}
	return nil
}

// appendMethodFrame appends a method frame on channel 0 whose payload
// is class, method and args.
func appendMethodFrame(dst []byte, class, method uint16, args []byte) []byte {
	dst = append(dst, frameMethod, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(args)))
	dst = binary.BigEndian.AppendUint16(dst, class)
	dst = binary.BigEndian.AppendUint16(dst, method)
	dst = append(dst, args...)
	return append(dst, frameEnd)
}

// appendConnectionStart appends a Connection.Start for version 0-9
// with server property product=leproxy and the PLAIN and AMQPLAIN
// mechanisms, so that any 0-9-1 client answers with Start-Ok.
func appendConnectionStart(dst []byte) []byte {
	var props []byte
	props = appendShortString(props, "product")
	props = append(props, 'S')
	props = appendLongString(props, "leproxy")
	args := []byte{0, 9}
	args = binary.BigEndian.AppendUint32(args, uint32(len(props)))
	args = append(args, props...)
	args = appendLongString(args, "PLAIN AMQPLAIN")
	args = appendLongString(args, "en_US")
	return appendMethodFrame(dst, classConnection, methodStart, args)
}

// appendConnectionClose appends a Connection.Close with code and text
// (cut to the 255 bytes of a short string), naming no failed method.
func appendConnectionClose(dst []byte, code uint16, text string) []byte {
	args := binary.BigEndian.AppendUint16(nil, code)
	args = appendShortString(args, text)
	args = append(args, 0, 0, 0, 0)
	return appendMethodFrame(dst, classConnection, methodClose, args)
}

func appendShortString(dst []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

func appendLongString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}
