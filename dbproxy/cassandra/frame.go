package cassandra

import (
	"encoding/binary"
	"errors"
)

// The CQL native protocol's frame (v3 and v4): a 9-byte header, then
// the body.
//
//	version (1)  0x03/0x04 for requests, with 0x80 set for responses
//	flags   (1)  0x01 compression, 0x02 tracing, 0x04 custom payload,
//	             0x08 warning, 0x10 beta
//	stream  (2)  signed; -1 on EVENT frames
//	opcode  (1)
//	length  (4)  of the body
const headerLen = 9

// Opcodes.
const (
	opError        = 0x00
	opStartup      = 0x01
	opReady        = 0x02
	opAuthenticate = 0x03
	opOptions      = 0x05
	opSupported    = 0x06
	opQuery        = 0x07
	opResult       = 0x08
	opPrepare      = 0x09
	opExecute      = 0x0a
	opRegister     = 0x0b
	opEvent        = 0x0c
	opBatch        = 0x0d
	opAuthResponse = 0x0f
)

// Header flags.
const (
	flagCompression = 0x01
	flagTracing     = 0x02
	flagPayload     = 0x04
	flagWarning     = 0x08
)

// responseBit marks a response's version byte.
const responseBit = 0x80

// ERROR codes leproxy sends.
const (
	errServer      = 0x0000
	errProtocol    = 0x000a
	errConfig      = 0x2300
	errOverloaded  = 0x1001
	errUnavailable = 0x1000
)

// header is a frame header.
type header struct {
	version byte // with the response bit
	flags   byte
	stream  int16
	opcode  byte
	length  uint32
}

// proto is the header's protocol version without the response bit.
func (h header) proto() byte { return h.version &^ responseBit }

func parseHeader(b []byte) header {
	return header{
		version: b[0],
		flags:   b[1],
		stream:  int16(binary.BigEndian.Uint16(b[2:4])), // #nosec G115 -- the stream id is a signed 16-bit field
		opcode:  b[4],
		length:  binary.BigEndian.Uint32(b[5:9]),
	}
}

func (h header) appendTo(b []byte) []byte {
	b = append(b, h.version, h.flags)
	b = binary.BigEndian.AppendUint16(b, uint16(h.stream)) // #nosec G115 -- the stream id is a signed 16-bit field
	b = append(b, h.opcode)
	return binary.BigEndian.AppendUint32(b, h.length)
}

// errFrameTooLarge is wrapped by the error of a frame whose body is over
// the reader's limit.
var errFrameTooLarge = errors.New("frame too large")

// appendFrame appends a frame with header h (its length set from body)
// and body to b.
func appendFrame(b []byte, h header, body []byte) []byte {
	h.length = uint32(len(body)) // #nosec G115 -- bodies leproxy builds are bounded by the frame limits
	return append(h.appendTo(b), body...)
}

// errorFrame is an ERROR response on stream with protocol version proto:
// code and message, marked as leproxy's.
func errorFrame(proto byte, stream int16, code uint32, msg string) []byte {
	body := binary.BigEndian.AppendUint32(nil, code)
	body = appendString(body, msg+" (leproxy)")
	return appendFrame(nil, header{version: proto | responseBit, stream: stream, opcode: opError}, body)
}

// appendString appends a [string]: a short length and the bytes,
// truncated to what a short can say.
func appendString(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s))) // #nosec G115 -- bounded just above
	return append(b, s...)
}
