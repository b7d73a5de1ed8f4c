package mongodb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// The MongoDB wire protocol, as far as leproxy speaks it: the header of a
// client's first message, the command name inside it for the log, and an
// error reply. Every integer is little-endian.
//
//	header:  int32 messageLength, int32 requestID, int32 responseTo, int32 opCode
//	OP_MSG:  uint32 flagBits, sections (kind 0: one BSON document; kind 1:
//	         int32 size, cstring identifier, documents), [uint32 checksum]
//	OP_QUERY: int32 flags, cstring fullCollectionName, int32 numberToSkip,
//	         int32 numberToReturn, BSON query, [BSON fields]
//	OP_REPLY: int32 responseFlags, int64 cursorID, int32 startingFrom,
//	         int32 numberReturned, BSON documents

const (
	headerLen = 16

	opReply = 1
	opQuery = 2004
	opMsg   = 2013

	// maxMessage is mongod's maxMessageSizeBytes; a header that
	// announces more is not MongoDB.
	maxMessage = 48_000_000
	// maxFirstMessage bounds the first message leproxy reads itself,
	// to answer it with an error. A client's first message is a hello (or
	// legacy isMaster) with at most 512 bytes of client metadata,
	// compressors, SASL mechanisms and a speculative authentication: a few
	// KiB. A longer one is answered from its header alone.
	maxFirstMessage = 16 << 10
	// minDocument is the length of an empty BSON document.
	minDocument = 5

	// msgChecksumPresent is the OP_MSG flag bit of a trailing CRC-32C.
	msgChecksumPresent = 1 << 0
)

// MongoDB error codes leproxy answers with (src/mongo/base/error_codes.yml).
const (
	codeHostUnreachable = 6
	codeHostNotFound    = 7
	codeUnauthorized    = 13
)

// codeName is the codeName of the codes above, "" for others.
func codeName(code int32) string {
	switch code {
	case codeHostUnreachable:
		return "HostUnreachable"
	case codeHostNotFound:
		return "HostNotFound"
	case codeUnauthorized:
		return "Unauthorized"
	}
	return ""
}

// errNotMongo is the error for bytes that cannot start a MongoDB client's
// first message.
var errNotMongo = errors.New("not a MongoDB message")

// msgHeader is a message header.
type msgHeader struct {
	length     int32
	requestID  int32
	responseTo int32
	opCode     int32
}

// parseHeader parses the header of a client's first message: a length
// between the shortest OP_MSG or OP_QUERY and maxMessage, no
// responseTo, and one of the two opcodes a client may open with (never
// OP_COMPRESSED: compression is negotiated by that first message).
func parseHeader(b []byte) (msgHeader, error) {
	if len(b) < headerLen {
		return msgHeader{}, fmt.Errorf("%w: header of %d bytes", errNotMongo, len(b))
	}
	h := msgHeader{
		length:     int32(binary.LittleEndian.Uint32(b)),
		requestID:  int32(binary.LittleEndian.Uint32(b[4:])),
		responseTo: int32(binary.LittleEndian.Uint32(b[8:])),
		opCode:     int32(binary.LittleEndian.Uint32(b[12:])),
	}
	if h.opCode != opMsg && h.opCode != opQuery {
		return h, fmt.Errorf("%w: opcode %d", errNotMongo, h.opCode)
	}
	if h.length < headerLen+4+1+minDocument || h.length > maxMessage {
		return h, fmt.Errorf("%w: message length %d", errNotMongo, h.length)
	}
	if h.responseTo != 0 {
		return h, fmt.Errorf("%w: request with responseTo %d", errNotMongo, h.responseTo)
	}
	return h, nil
}

// readFirstMessage reads a client's first message, of which the
// first len(start) bytes were read already (at most a header's worth). It
// returns the header and the command name: the first key of the command
// document, such as "hello" or "isMaster". A message longer than
// maxFirstMessage is not read beyond its header and has no command
// name; neither has one whose body does not parse.
func readFirstMessage(r io.Reader, start []byte) (msgHeader, string, error) {
	var hdr [headerLen]byte
	n := copy(hdr[:], start)
	if _, err := io.ReadFull(r, hdr[n:]); err != nil {
		return msgHeader{}, "", fmt.Errorf("reading message header: %w", err)
	}
	h, err := parseHeader(hdr[:])
	if err != nil {
		return h, "", err
	}
	if h.length > maxFirstMessage {
		return h, "", nil
	}
	body := make([]byte, h.length-headerLen)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, "", fmt.Errorf("reading message body: %w", err)
	}
	cmd, _ := commandName(h.opCode, body)
	return h, cmd, nil
}

// commandName returns the command name of an OP_MSG or OP_QUERY body
// (the message after its header).
func commandName(opCode int32, body []byte) (string, error) {
	switch opCode {
	case opMsg:
		if len(body) < 4 {
			return "", fmt.Errorf("%w: OP_MSG without flags", errNotMongo)
		}
		flags := binary.LittleEndian.Uint32(body)
		body = body[4:]
		if flags&msgChecksumPresent != 0 {
			if len(body) < 4 {
				return "", fmt.Errorf("%w: OP_MSG without its checksum", errNotMongo)
			}
			body = body[:len(body)-4]
		}
		// The command is the one kind 0 section; kind 1 sections (document
		// sequences) may come first.
		for len(body) > 0 {
			kind := body[0]
			body = body[1:]
			switch kind {
			case 0:
				return bsonFirstKey(body)
			case 1:
				if len(body) < 4 {
					return "", fmt.Errorf("%w: truncated OP_MSG section", errNotMongo)
				}
				size := binary.LittleEndian.Uint32(body)
				if size < 4 || uint64(size) > uint64(len(body)) {
					return "", fmt.Errorf("%w: OP_MSG section of %d bytes", errNotMongo, size)
				}
				body = body[size:]
			default:
				return "", fmt.Errorf("%w: OP_MSG section kind %d", errNotMongo, kind)
			}
		}
		return "", fmt.Errorf("%w: OP_MSG without a command", errNotMongo)
	case opQuery:
		if len(body) < 4 {
			return "", fmt.Errorf("%w: OP_QUERY without flags", errNotMongo)
		}
		body = body[4:]
		end := cstringEnd(body)
		if end < 0 {
			return "", fmt.Errorf("%w: OP_QUERY collection name", errNotMongo)
		}
		body = body[end+1:]
		if len(body) < 8 {
			return "", fmt.Errorf("%w: truncated OP_QUERY", errNotMongo)
		}
		return bsonFirstKey(body[8:])
	}
	return "", fmt.Errorf("%w: opcode %d", errNotMongo, opCode)
}

// bsonFirstKey returns the key of the first element of the BSON document
// at the start of b.
func bsonFirstKey(b []byte) (string, error) {
	if len(b) < minDocument {
		return "", fmt.Errorf("%w: truncated document", errNotMongo)
	}
	size := binary.LittleEndian.Uint32(b)
	if size < minDocument || uint64(size) > uint64(len(b)) || b[size-1] != 0 {
		return "", fmt.Errorf("%w: document of %d bytes", errNotMongo, size)
	}
	doc := b[4 : size-1] // elements
	if len(doc) == 0 {
		return "", fmt.Errorf("%w: empty command document", errNotMongo)
	}
	end := cstringEnd(doc[1:])
	if end < 0 {
		return "", fmt.Errorf("%w: element name", errNotMongo)
	}
	return string(doc[1 : 1+end]), nil
}

// cstringEnd is the index of the NUL that ends the cstring at the start of
// b, or -1.
func cstringEnd(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// appendError appends the reply to req that MongoDB sends for a
// failed command: {ok: 0.0, errmsg, code, codeName}, as an OP_MSG to an
// OP_MSG and as an OP_REPLY to a legacy OP_QUERY, with requestID as its
// own id.
func appendError(dst []byte, req msgHeader, requestID, code int32, msg string) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // length, set below
	dst = binary.LittleEndian.AppendUint32(dst, uint32(requestID))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(req.requestID))
	if req.opCode == opQuery {
		dst = binary.LittleEndian.AppendUint32(dst, opReply)
		dst = binary.LittleEndian.AppendUint32(dst, 0) // responseFlags
		dst = binary.LittleEndian.AppendUint64(dst, 0) // cursorID
		dst = binary.LittleEndian.AppendUint32(dst, 0) // startingFrom
		dst = binary.LittleEndian.AppendUint32(dst, 1) // numberReturned
	} else {
		dst = binary.LittleEndian.AppendUint32(dst, opMsg)
		dst = binary.LittleEndian.AppendUint32(dst, 0) // flagBits
		dst = append(dst, 0)                           // section kind 0
	}
	dst = appendErrorDoc(dst, code, msg)
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// appendErrorDoc appends the BSON document
// {ok: 0.0, errmsg: msg, code: code, codeName: …}.
func appendErrorDoc(dst []byte, code int32, msg string) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // length, set below
	dst = append(dst, 0x01)                        // double
	dst = append(dst, "ok\x00"...)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(0))
	dst = appendBSONString(dst, "errmsg", msg)
	dst = append(dst, 0x10) // int32
	dst = append(dst, "code\x00"...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(code))
	if name := codeName(code); name != "" {
		dst = appendBSONString(dst, "codeName", name)
	}
	dst = append(dst, 0)
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// appendBSONString appends a string element. BSON strings are UTF-8; s is
// made valid UTF-8 and loses any NUL, which would end a key. key must be
// valid.
func appendBSONString(dst []byte, key, s string) []byte {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	dst = append(dst, 0x02)
	dst = append(dst, key...)
	dst = append(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)+1))
	dst = append(dst, s...)
	return append(dst, 0)
}
