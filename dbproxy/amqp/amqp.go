package dbproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
)

// AMQP 0-9-1 over TLS from the first byte (the amqps convention, port
// 5671, as RabbitMQ serves it). No ALPN: RabbitMQ neither offers nor
// requires one.
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
// amqp091-go reports it as `Exception (530) Reason: "NOT_ALLOWED - …"`. A client whose header is not AMQP
// 0-9-1's gets the protocol header instead.

func init() {
	Register("amqp", func() Protocol { return newAMQP() })
}

// amqpHeader is the AMQP 0-9-1 protocol header.
var amqpHeader = []byte{'A', 'M', 'Q', 'P', 0, 0, 9, 1}

const (
	amqpFrameMethod = 1
	amqpFrameEnd    = 0xce

	amqpClassConnection = 10
	amqpMethodStart     = 10
	amqpMethodClose     = 50

	amqpReplyConnectionForced = 320
	amqpReplyNotAllowed       = 530

	// maxAMQPFrame bounds the client frame (its Connection.Start-Ok) that
	// leproxy reads before refusing it; the spec's minimum frame-max is
	// 4096 and client properties are small.
	maxAMQPFrame = 64 << 10
)

// amqp is the AMQP 0-9-1 Protocol.
type amqp struct {
	tf tlsFirst
}

var _ Protocol = (*amqp)(nil)

func newAMQP() *amqp {
	p := &amqp{}
	p.tf = tlsFirst{
		plaintext: func(_ context.Context, conn net.Conn) string {
			got, _ := readAMQPHeader(conn)
			conn.Write(amqpHeader)
			return "protocol header " + strconv.QuoteToASCII(string(got))
		},
		refuse: func(_ context.Context, conn net.Conn, kind refusalKind, msg string) {
			code, name := uint16(amqpReplyNotAllowed), "NOT_ALLOWED"
			if kind == refuseBackend {
				code, name = amqpReplyConnectionForced, "CONNECTION_FORCED"
			}
			refuseAMQP(conn, code, name+" - "+msg+" (leproxy)")
		},
	}
	return p
}

func (*amqp) Name() string   { return "amqp" }
func (*amqp) ALPN() []string { return nil }

// Handshake implements Protocol.
func (p *amqp) Handshake(ctx context.Context, client net.Conn, s *Session) (net.Conn, net.Conn, error) {
	return p.tf.handshake(ctx, client, s)
}

// readAMQPHeader reads a client's protocol header, 8 bytes, and returns
// what it got of them.
func readAMQPHeader(r io.Reader) ([]byte, error) {
	var h [8]byte
	n, err := io.ReadFull(r, h[:])
	if err != nil {
		return h[:n], fmt.Errorf("reading AMQP protocol header: %w", err)
	}
	return h[:], nil
}

// refuseAMQP runs the opening of an AMQP connection up to the point where
// the server may close it, and closes it with code and text: protocol
// header, Connection.Start, Connection.Start-Ok, Connection.Close.
func refuseAMQP(rw io.ReadWriter, code uint16, text string) error {
	h, err := readAMQPHeader(rw)
	if err != nil {
		return err
	}
	if !bytes.Equal(h, amqpHeader) {
		_, err := rw.Write(amqpHeader)
		return err
	}
	if _, err := rw.Write(appendAMQPConnectionStart(nil)); err != nil {
		return fmt.Errorf("writing Connection.Start: %w", err)
	}
	if err := skipAMQPFrame(rw); err != nil {
		return err
	}
	if _, err := rw.Write(appendAMQPConnectionClose(nil, code, text)); err != nil {
		return fmt.Errorf("writing Connection.Close: %w", err)
	}
	return nil
}

// skipAMQPFrame reads one frame of at most maxAMQPFrame payload bytes and
// discards it.
func skipAMQPFrame(r io.Reader) error {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("reading AMQP frame header: %w", err)
	}
	size := binary.BigEndian.Uint32(h[3:])
	if size > maxAMQPFrame {
		return fmt.Errorf("AMQP frame of %d bytes exceeds the limit of %d", size, maxAMQPFrame)
	}
	if _, err := io.CopyN(io.Discard, r, int64(size)+1); err != nil {
		return fmt.Errorf("reading AMQP frame: %w", err)
	}
	return nil
}

// appendAMQPMethodFrame appends a method frame on channel 0 whose payload
// is class, method and args.
func appendAMQPMethodFrame(dst []byte, class, method uint16, args []byte) []byte {
	dst = append(dst, amqpFrameMethod, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(args)))
	dst = binary.BigEndian.AppendUint16(dst, class)
	dst = binary.BigEndian.AppendUint16(dst, method)
	dst = append(dst, args...)
	return append(dst, amqpFrameEnd)
}

// appendAMQPConnectionStart appends a Connection.Start for version 0-9
// with server property product=leproxy and the PLAIN and AMQPLAIN
// mechanisms, so that any 0-9-1 client answers with Start-Ok.
func appendAMQPConnectionStart(dst []byte) []byte {
	var props []byte
	props = appendAMQPShortString(props, "product")
	props = append(props, 'S')
	props = appendAMQPLongString(props, "leproxy")
	args := []byte{0, 9}
	args = binary.BigEndian.AppendUint32(args, uint32(len(props)))
	args = append(args, props...)
	args = appendAMQPLongString(args, "PLAIN AMQPLAIN")
	args = appendAMQPLongString(args, "en_US")
	return appendAMQPMethodFrame(dst, amqpClassConnection, amqpMethodStart, args)
}

// appendAMQPConnectionClose appends a Connection.Close with code and text
// (cut to the 255 bytes of a short string), naming no failed method.
func appendAMQPConnectionClose(dst []byte, code uint16, text string) []byte {
	args := binary.BigEndian.AppendUint16(nil, code)
	args = appendAMQPShortString(args, text)
	args = append(args, 0, 0, 0, 0)
	return appendAMQPMethodFrame(dst, amqpClassConnection, amqpMethodClose, args)
}

func appendAMQPShortString(dst []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

func appendAMQPLongString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}
