package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// PostgreSQL wire protocol codec: the startup packets a client sends
// before and instead of a StartupMessage, the few backend messages the
// proxy must understand during startup, and ErrorResponse. Every read is
// bounded before it allocates.
// https://www.postgresql.org/docs/current/protocol-message-formats.html

const (
	// maxStartupPacket bounds a startup packet, length word included, as
	// PostgreSQL's MAX_STARTUP_PACKET_LENGTH does.
	maxStartupPacket = 10000
	// minCancelKey and maxCancelKey bound a cancel key: 4 bytes in
	// protocol 3.0, up to 256 in 3.2 (PostgreSQL 18).
	minCancelKey = 4
	maxCancelKey = 256
	// maxStartupBackendMessage bounds a backend message body during
	// startup; such messages are streamed, not held, so this only stops a
	// runaway length.
	maxStartupBackendMessage = 1 << 20
	// maxErrorParse bounds the ErrorResponse body parsed for the log; a
	// larger one is forwarded without being read into memory.
	maxErrorParse = 8 << 10
	// maxAuthSASL bounds an AuthenticationSASL body, which leproxy reads
	// whole to rewrite: PostgreSQL's is 38 bytes.
	maxAuthSASL = 1 << 10
	// Authentication request codes of AuthenticationSASL and
	// AuthenticationSASLContinue.
	authSASL         = 10
	authSASLContinue = 11

	sslRequestCode    = 1234<<16 | 5679 // 80877103
	gssEncRequestCode = 1234<<16 | 5680 // 80877104
	cancelRequestCode = 1234<<16 | 5678 // 80877102
)

// SQLSTATE codes leproxy sends in its own ErrorResponses.
const (
	sqlstateProtocolViolation  = "08P01"
	sqlstateConnectFailed      = "08001" // backend down or refusing
	sqlstateConnectionFailure  = "08006" // backend lost during startup
	sqlstateRejected           = "08004" // no route for the server name
	sqlstateInvalidAuthSpec    = "28000" // TLS required, channel binding
	sqlstateFeatureUnsupported = "0A000" // protocol version
	sqlstateTooManyConnections = "53300"
	sqlstateInvalidPassword    = "28P01" // the backend's: password authentication failed
)

// sslRequestPacket is the SSLRequest leproxy sends to TLS backends.
var sslRequestPacket = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), sslRequestCode)

// packetKind says what a startup packet asks for.
type packetKind int

const (
	pktStartup packetKind = iota + 1 // StartupMessage
	pktSSL                           // SSLRequest
	pktGSSENC                        // GSSENCRequest
	pktCancel                        // CancelRequest
)

// startupPacket is one parsed packet of the startup phase.
type startupPacket struct {
	kind packetKind
	raw  []byte // the whole packet, length word included, forwarded verbatim

	// pktStartup: protocol version and parameters in packet order.
	major, minor uint16
	params       []string // name, value, name, value…

	// pktCancel: the backend process and its secret key (aliases raw).
	pid uint32
	key []byte
}

// param returns the value of a StartupMessage parameter, "" if absent.
func (p *startupPacket) param(name string) string {
	for i := 0; i+1 < len(p.params); i += 2 {
		if p.params[i] == name {
			return p.params[i+1]
		}
	}
	return ""
}

// wireError is an error leproxy reports to the client as an ErrorResponse
// with severity FATAL: code is the SQLSTATE, msg what the client reads and
// err, when not nil, the cause that only the log sees.
type wireError struct {
	code string
	msg  string
	err  error
}

func (e *wireError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *wireError) Unwrap() error { return e.err }

func protocolViolation(format string, args ...any) *wireError {
	return &wireError{code: sqlstateProtocolViolation, msg: fmt.Sprintf(format, args...)}
}

// readStartupPacket reads the rest of a startup packet whose four length
// bytes are hdr, checking the length before it allocates, and parses it.
func readStartupPacket(r io.Reader, hdr [4]byte) (*startupPacket, error) {
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartupPacket {
		return nil, protocolViolation("invalid length of startup packet: %d", n)
	}
	buf := make([]byte, n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, fmt.Errorf("reading startup packet: %w", err)
	}
	return parseStartupPacket(buf)
}

// parseStartupPacket parses a whole startup packet, length word included.
// Errors are *wireError, ready for the client.
func parseStartupPacket(b []byte) (*startupPacket, error) {
	if len(b) < 8 || len(b) > maxStartupPacket {
		return nil, protocolViolation("invalid length of startup packet: %d", len(b))
	}
	if n := binary.BigEndian.Uint32(b); n != uint32(len(b)) {
		return nil, protocolViolation("startup packet length %d does not match its %d bytes", n, len(b))
	}
	code := binary.BigEndian.Uint32(b[4:])
	p := &startupPacket{raw: b}
	switch code {
	case sslRequestCode, gssEncRequestCode:
		if len(b) != 8 {
			return nil, protocolViolation("invalid length of SSLRequest or GSSENCRequest: %d", len(b))
		}
		p.kind = pktSSL
		if code == gssEncRequestCode {
			p.kind = pktGSSENC
		}
		return p, nil
	case cancelRequestCode:
		if k := len(b) - 12; k < minCancelKey || k > maxCancelKey {
			return nil, protocolViolation("invalid length of cancel request: %d", len(b))
		}
		p.kind = pktCancel
		p.pid = binary.BigEndian.Uint32(b[8:])
		p.key = b[12:]
		return p, nil
	}
	p.major, p.minor = uint16(code>>16), uint16(code)
	if p.major != 3 {
		// 1234.x are request codes; anything else is a version.
		if p.major == 1234 {
			return nil, protocolViolation("unsupported startup request code %d.%d", p.major, p.minor)
		}
		return nil, &wireError{code: sqlstateFeatureUnsupported,
			msg: fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.2", p.major, p.minor)}
	}
	// Protocol 3.x: name\0value\0…\0. Minor versions past the backend's
	// are the backend's to negotiate down (NegotiateProtocolVersion).
	p.kind = pktStartup
	rest := b[8:]
	if len(rest) == 0 || rest[len(rest)-1] != 0 {
		return nil, protocolViolation("invalid startup packet layout: expected terminator as last byte")
	}
	rest = rest[:len(rest)-1]
	for len(rest) > 0 {
		name, after, ok := bytes.Cut(rest, []byte{0})
		if !ok || len(name) == 0 {
			return nil, protocolViolation("invalid startup packet layout: empty or unterminated parameter name")
		}
		value, after, ok := bytes.Cut(after, []byte{0})
		if !ok {
			return nil, protocolViolation("invalid startup packet layout: missing value for parameter %q", name)
		}
		p.params = append(p.params, string(name), string(value))
		rest = after
	}
	return p, nil
}

// readMessageHeader reads a message's type byte and length word and
// returns the type and the body length, refusing bodies over limit.
func readMessageHeader(r io.Reader, hdr *[5]byte, limit int) (typ byte, n int, err error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, err
	}
	l := binary.BigEndian.Uint32(hdr[1:])
	if l < 4 || l-4 > uint32(limit) {
		return 0, 0, protocolViolation("invalid length %d of message type %q", l, hdr[0])
	}
	return hdr[0], int(l - 4), nil
}

// parseBackendKeyData parses the body of a BackendKeyData ('K') message:
// the process ID and a secret key of 4 to 256 bytes. key aliases body.
func parseBackendKeyData(body []byte) (pid uint32, key []byte, err error) {
	if k := len(body) - 4; k < minCancelKey || k > maxCancelKey {
		return 0, nil, protocolViolation("invalid BackendKeyData length %d", len(body))
	}
	return binary.BigEndian.Uint32(body), body[4:], nil
}

// parseErrorFields returns the SQLSTATE and message of an ErrorResponse
// or NoticeResponse body; missing or malformed fields are "".
func parseErrorFields(body []byte) (code, msg string) {
	for len(body) > 0 && body[0] != 0 {
		typ := body[0]
		value, rest, ok := bytes.Cut(body[1:], []byte{0})
		if !ok {
			break
		}
		switch typ {
		case 'C':
			code = string(value)
		case 'M':
			msg = string(value)
		}
		body = rest
	}
	return code, msg
}

// appendErrorResponse appends an ErrorResponse with severity FATAL.
func appendErrorResponse(dst []byte, code, msg string) []byte {
	start := len(dst)
	dst = append(dst, 'E', 0, 0, 0, 0)
	dst = append(dst, 'S')
	dst = append(dst, "FATAL\x00"...)
	dst = append(dst, 'V')
	dst = append(dst, "FATAL\x00"...)
	dst = append(dst, 'C')
	dst = append(dst, code...)
	dst = append(dst, 0, 'M')
	dst = append(dst, bytes.ReplaceAll([]byte(msg), []byte{0}, nil)...)
	dst = append(dst, 0, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// channelBindingSuffix ends the name of every SASL mechanism with channel
// binding (RFC 5802's SCRAM-SHA-256-PLUS and its kin).
const channelBindingSuffix = "-PLUS"

// dropChannelBinding rewrites the mechanism list of an AuthenticationSASL
// message (its body after the int32 10: NUL-terminated names ending with
// an empty one) without the mechanisms whose name ends in "-PLUS", in
// either case. It returns the new list, which aliases none of list, and
// how many mechanisms it dropped and kept. A list that is not exactly
// such names and the empty one is a *wireError.
func dropChannelBinding(list []byte) (out []byte, dropped, kept int, err error) {
	out = make([]byte, 0, len(list))
	rest := list
	for {
		name, after, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			return nil, 0, 0, protocolViolation("invalid AuthenticationSASL message: unterminated mechanism list")
		}
		if len(name) == 0 {
			if len(after) != 0 {
				return nil, 0, 0, protocolViolation("invalid AuthenticationSASL message: %d bytes after the mechanism list", len(after))
			}
			return append(out, 0), dropped, kept, nil
		}
		if len(name) >= len(channelBindingSuffix) &&
			bytes.EqualFold(name[len(name)-len(channelBindingSuffix):], []byte(channelBindingSuffix)) {
			dropped++
		} else {
			kept++
			out = append(append(out, name...), 0)
		}
		rest = after
	}
}

// errOnlyChannelBinding is rewriteAuthSASL's error for a backend that
// offers no SASL mechanism but ones with channel binding.
var errOnlyChannelBinding = errors.New("the backend offers only SASL mechanisms with channel binding")

// rewriteAuthSASL returns the AuthenticationSASL message to send the
// client in place of the backend's whose body (after the length word) is
// body: the same without the mechanisms with channel binding (see
// dropChannelBinding). dropped says whether there were any. It fails with
// errOnlyChannelBinding when nothing would remain, and with a *wireError
// for a body that is not an AuthenticationSASL or is over maxAuthSASL.
func rewriteAuthSASL(body []byte) (msg []byte, dropped bool, err error) {
	if len(body) < 4 || binary.BigEndian.Uint32(body) != authSASL {
		return nil, false, protocolViolation("not an AuthenticationSASL message")
	}
	if len(body)-4 > maxAuthSASL {
		return nil, false, protocolViolation("invalid AuthenticationSASL length %d", len(body))
	}
	list, n, kept, err := dropChannelBinding(body[4:])
	if err != nil {
		return nil, false, err
	}
	if n > 0 && kept == 0 {
		return nil, true, errOnlyChannelBinding
	}
	msg = make([]byte, 0, 5+4+len(list))
	msg = append(msg, 'R')
	msg = binary.BigEndian.AppendUint32(msg, uint32(4+4+len(list)))
	msg = binary.BigEndian.AppendUint32(msg, authSASL)
	return append(msg, list...), n > 0, nil
}

// maxSASLInitialHead bounds what is read of a client's first message to
// find its SCRAM gs2 channel-binding flag: type, length, a mechanism name
// and its NUL, the data length and two bytes of data.
const maxSASLInitialHead = 5 + 64 + 1 + 4 + 2

// gs2ClaimsBinding looks at head, the first bytes the client sent after
// its StartupMessage. claims is true when they begin a SASLInitialResponse
// whose SCRAM client-first-message has the gs2 flag "y": the client
// supports channel binding and believes the server does not (RFC 5802,
// section 6). decided is false while head is too short to tell; callers
// stop looking at maxSASLInitialHead bytes.
func gs2ClaimsBinding(head []byte) (decided, claims bool) {
	if len(head) < 5 {
		return false, false
	}
	l := binary.BigEndian.Uint32(head[1:])
	if head[0] != 'p' || l < 4 {
		return true, false
	}
	body := head[5:]
	whole := uint64(len(body)) >= uint64(l)-4
	if whole {
		body = body[:l-4]
	}
	_, data, ok := bytes.Cut(body, []byte{0})
	if !ok || len(data) < 6 {
		return whole, false
	}
	n := int32(binary.BigEndian.Uint32(data))
	return true, n >= 2 && data[4] == 'y' && data[5] == ','
}
