package mysql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MySQL client/server protocol codec for the connection phase: packet
// framing, the Initial Handshake v10, SSLRequest and HandshakeResponse41,
// AuthSwitchRequest, OK and ERR. Every read is bounded before it allocates.
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html
// https://mariadb.com/kb/en/connection/

// Capability flags (CLIENT_*).
const (
	// capLongPassword is CLIENT_LONG_PASSWORD; MariaDB calls it
	// CLIENT_MYSQL: a server that clears it has MariaDB extended
	// capabilities in its greeting's reserved bytes.
	capLongPassword uint32 = 1 << iota
	capFoundRows
	capLongFlag
	capConnectWithDB
	capNoSchema
	capCompress
	capODBC
	capLocalFiles
	capIgnoreSpace
	capProtocol41
	capInteractive
	capSSL
	capIgnoreSigpipe
	capTransactions
	capReserved
	capSecureConnection
	capMultiStatements
	capMultiResults
	capPSMultiResults
	capPluginAuth
	capConnectAttrs
	capPluginAuthLenencData
	capCanHandleExpiredPasswords
	capSessionTrack
	capDeprecateEOF
	capOptionalResultsetMetadata
	capZstdCompression
	capQueryAttributes
	capMultiFactorAuth
	capCapabilityExtension
	capSSLVerifyServerCert
	capRememberOptions
)

const (
	// maxHandshakePacket bounds every packet leproxy reads before the
	// byte pump: greetings, handshake responses (connection attributes
	// included, which MySQL caps at 64 KiB) and authentication exchanges.
	maxHandshakePacket = 64<<10 + 1024
	// sslRequestLen is the payload length of an SSLRequest.
	sslRequestLen = 32
	// maxPayload is the largest payload of one packet; a payload of
	// exactly this length continues in the next packet.
	maxPayload = 1<<24 - 1
	// scrambleLen is the length of a MySQL nonce (scramble).
	scrambleLen = 20

	protocolVersion = 10
	// Packet headers of the connection phase.
	headerOK           = 0x00
	headerAuthMoreData = 0x01
	headerAuthSwitch   = 0xfe
	headerERR          = 0xff
	statusAutocommit   = 0x0002
)

// proxyError is an error leproxy reports to a MySQL client as an ERR packet:
// code and state (SQLSTATE) as MySQL defines them, msg what the client
// reads and err, when not nil, the cause that only the log sees.
type proxyError struct {
	code  uint16
	state string
	msg   string
	err   error
}

func (e *proxyError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *proxyError) Unwrap() error { return e.err }

// Error numbers and SQLSTATEs of the ERR packets leproxy sends.
const (
	erConCount           = 1040 // ER_CON_COUNT_ERROR, 08004
	erHandshake          = 1043 // ER_HANDSHAKE_ERROR, 08S01
	erAccessDenied       = 1045 // ER_ACCESS_DENIED_ERROR, 28000: the backend's, for Session.AuthFailed
	erHostNotPrivileged  = 1130 // ER_HOST_NOT_PRIVILEGED, HY000
	erPacketsOutOfOrder  = 1156 // ER_NET_PACKETS_OUT_OF_ORDER, 08S01
	erNotSupportedAuth   = 1251 // ER_NOT_SUPPORTED_AUTH_MODE, 08004
	erSecureTransport    = 3159 // ER_SECURE_TRANSPORT_REQUIRED, HY000
	crConnHostError      = 2003 // CR_CONN_HOST_ERROR
	crServerLost         = 2013 // CR_SERVER_LOST
	crSSLConnectionError = 2026 // CR_SSL_CONNECTION_ERROR
	crMalformedPacket    = 2027 // CR_MALFORMED_PACKET
	stateGeneral         = "HY000"
	stateConnRejected    = "08004"
	stateCommLinkFailure = "08S01"
	tooManyConnsText     = "Too many connections"
)

// badHandshake is a malformed packet from a client.
func badHandshake(format string, args ...any) *proxyError {
	return &proxyError{code: erHandshake, state: stateCommLinkFailure, msg: "leproxy: bad handshake: " + fmt.Sprintf(format, args...)}
}

// errMalformed is the cause of every parse failure.
var errMalformed = errors.New("malformed packet")

// readPacket reads one packet, refusing payloads over limit before it
// allocates. limit must be below maxPayload: the connection phase has
// no multi-packet payloads.
func readPacket(r io.Reader, limit int) (payload []byte, seq byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n > limit {
		return nil, hdr[3], fmt.Errorf("%w: packet of %d bytes exceeds the limit of %d", errMalformed, n, limit)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, hdr[3], err
	}
	return payload, hdr[3], nil
}

// appendPacket appends payload as one packet with sequence id seq. The
// payload must be shorter than maxPayload.
func appendPacket(dst []byte, seq byte, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, byte(n), byte(n>>8), byte(n>>16), seq)
	return append(dst, payload...)
}

// writePacket writes payload as one packet in a single Write.
func writePacket(w io.Writer, seq byte, payload []byte) error {
	_, err := w.Write(appendPacket(make([]byte, 0, 4+len(payload)), seq, payload))
	return err
}

// appendLenencInt appends a length-encoded integer.
func appendLenencInt(dst []byte, v uint64) []byte {
	switch {
	case v < 251:
		return append(dst, byte(v))
	case v < 1<<16:
		return append(dst, 0xfc, byte(v), byte(v>>8))
	case v < 1<<24:
		return append(dst, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	return binary.LittleEndian.AppendUint64(append(dst, 0xfe), v)
}

// readLenencInt decodes a length-encoded integer at the start of b and
// returns it and the bytes after it.
func readLenencInt(b []byte) (v uint64, rest []byte, err error) {
	if len(b) == 0 {
		return 0, nil, errMalformed
	}
	switch b[0] {
	case 0xfb, 0xff:
		return 0, nil, errMalformed
	case 0xfc:
		if len(b) < 3 {
			return 0, nil, errMalformed
		}
		return uint64(binary.LittleEndian.Uint16(b[1:])), b[3:], nil
	case 0xfd:
		if len(b) < 4 {
			return 0, nil, errMalformed
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, b[4:], nil
	case 0xfe:
		if len(b) < 9 {
			return 0, nil, errMalformed
		}
		return binary.LittleEndian.Uint64(b[1:]), b[9:], nil
	}
	return uint64(b[0]), b[1:], nil
}

// readLenencBytes decodes a length-encoded string at the start of b.
// The result aliases b.
func readLenencBytes(b []byte) (s, rest []byte, err error) {
	n, rest, err := readLenencInt(b)
	if err != nil {
		return nil, nil, err
	}
	if n > uint64(len(rest)) {
		return nil, nil, errMalformed
	}
	return rest[:n], rest[n:], nil
}

// readNulString returns the bytes of b before the first NUL and those
// after it; ok is false when there is no NUL.
func readNulString(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// greeting is an Initial Handshake Packet, protocol version 10.
type greeting struct {
	version  string
	connID   uint32
	caps     uint32
	charset  byte
	status   uint16
	authData []byte // the whole scramble, without the NUL that ends it
	plugin   string // "" when the server does not name one
}

// append appends the greeting's payload.
func (g *greeting) append(dst []byte) []byte {
	dst = append(dst, protocolVersion)
	dst = append(dst, g.version...)
	dst = append(dst, 0)
	dst = binary.LittleEndian.AppendUint32(dst, g.connID)
	part1 := make([]byte, 8)
	copy(part1, g.authData)
	dst = append(dst, part1...)
	dst = append(dst, 0)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(g.caps))
	dst = append(dst, g.charset)
	dst = binary.LittleEndian.AppendUint16(dst, g.status)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(g.caps>>16))
	if g.caps&capPluginAuth != 0 {
		dst = append(dst, byte(len(g.authData)+1))
	} else {
		dst = append(dst, 0)
	}
	dst = append(dst, make([]byte, 10)...)
	if g.caps&capSecureConnection != 0 {
		var part2 []byte
		if len(g.authData) > 8 {
			part2 = g.authData[8:]
		}
		part2 = append(bytes.Clone(part2), 0)
		for len(part2) < 13 {
			part2 = append(part2, 0)
		}
		dst = append(dst, part2...)
	}
	if g.caps&capPluginAuth != 0 {
		dst = append(dst, g.plugin...)
		dst = append(dst, 0)
	}
	return dst
}

// parseGreeting parses an Initial Handshake Packet v10 as clients do:
// the fields after the lower capability flags, and the plugin name's NUL,
// may be missing.
func parseGreeting(b []byte) (*greeting, error) {
	if len(b) == 0 || b[0] != protocolVersion {
		if len(b) > 0 {
			return nil, fmt.Errorf("%w: handshake protocol version %d, want 10", errMalformed, b[0])
		}
		return nil, fmt.Errorf("%w: empty handshake", errMalformed)
	}
	version, rest, ok := readNulString(b[1:])
	if !ok || len(rest) < 4+8+1+2 {
		return nil, fmt.Errorf("%w: short handshake", errMalformed)
	}
	g := &greeting{version: string(version)}
	g.connID = binary.LittleEndian.Uint32(rest)
	g.authData = bytes.Clone(rest[4:12])
	g.caps = uint32(binary.LittleEndian.Uint16(rest[13:]))
	rest = rest[15:]
	if len(rest) == 0 {
		return g, nil
	}
	if len(rest) < 1+2+2+1+10 {
		return nil, fmt.Errorf("%w: short handshake", errMalformed)
	}
	g.charset = rest[0]
	g.status = binary.LittleEndian.Uint16(rest[1:])
	g.caps |= uint32(binary.LittleEndian.Uint16(rest[3:])) << 16
	authLen := int(rest[5])
	rest = rest[16:]
	if g.caps&capSecureConnection != 0 {
		n := max(13, authLen-8)
		if len(rest) < n {
			return nil, fmt.Errorf("%w: short scramble in handshake", errMalformed)
		}
		part2 := rest[:n]
		if i := bytes.IndexByte(part2, 0); i >= 0 {
			part2 = part2[:i]
		}
		g.authData = append(g.authData, part2...)
		rest = rest[n:]
	}
	if g.caps&capPluginAuth != 0 {
		name, _, ok := readNulString(rest)
		if !ok {
			name = rest
		}
		g.plugin = string(name)
	}
	return g, nil
}

// handshakeResponse is a HandshakeResponse41 (or, with only the fixed
// part, an SSLRequest).
type handshakeResponse struct {
	caps      uint32
	maxPacket uint32
	charset   byte
	user      string
	authResp  []byte
	database  string
	plugin    string
	attrs     []byte // connection attributes, without their length; nil for none
	zstdLevel byte   // with capZstdCompression
}

// isSSLRequest reports whether the first packet a client sent is an
// SSLRequest: the fixed part of a HandshakeResponse41 alone, CLIENT_SSL set.
func isSSLRequest(b []byte) bool {
	return len(b) == sslRequestLen && binary.LittleEndian.Uint32(b)&capSSL != 0
}

// parseHandshakeResponse parses a HandshakeResponse41.
func parseHandshakeResponse(b []byte) (*handshakeResponse, error) {
	if len(b) >= 4 && binary.LittleEndian.Uint32(b)&capProtocol41 == 0 {
		// A HandshakeResponse320, from a client before MySQL 4.1.
		return nil, fmt.Errorf("%w: handshake response without CLIENT_PROTOCOL_41", errMalformed)
	}
	if len(b) < sslRequestLen+1 {
		return nil, fmt.Errorf("%w: handshake response of %d bytes", errMalformed, len(b))
	}
	h := &handshakeResponse{
		caps:      binary.LittleEndian.Uint32(b),
		maxPacket: binary.LittleEndian.Uint32(b[4:]),
		charset:   b[8],
	}
	user, rest, ok := readNulString(b[sslRequestLen:])
	if !ok {
		return nil, fmt.Errorf("%w: unterminated user name", errMalformed)
	}
	h.user = string(user)
	var err error
	switch {
	case h.caps&capPluginAuthLenencData != 0:
		h.authResp, rest, err = readLenencBytes(rest)
		if err != nil {
			return nil, fmt.Errorf("%w: bad authentication response length", errMalformed)
		}
	case h.caps&capSecureConnection != 0:
		if len(rest) == 0 || int(rest[0]) > len(rest)-1 {
			return nil, fmt.Errorf("%w: bad authentication response length", errMalformed)
		}
		h.authResp, rest = rest[1:1+int(rest[0])], rest[1+int(rest[0]):]
	default:
		h.authResp, rest, ok = readNulString(rest)
		if !ok {
			return nil, fmt.Errorf("%w: unterminated authentication response", errMalformed)
		}
	}
	h.authResp = bytes.Clone(h.authResp)
	// Clients that set a flag but end the packet early are common enough
	// (a database flag with no name, an unterminated plugin name) that
	// MySQL accepts them; so does leproxy.
	if h.caps&capConnectWithDB != 0 && len(rest) > 0 {
		db, after, ok := readNulString(rest)
		if !ok {
			return nil, fmt.Errorf("%w: unterminated database name", errMalformed)
		}
		h.database, rest = string(db), after
	}
	if h.caps&capPluginAuth != 0 && len(rest) > 0 {
		name, after, ok := readNulString(rest)
		if !ok {
			name, after = rest, nil
		}
		h.plugin, rest = string(name), after
	}
	if h.caps&capConnectAttrs != 0 && len(rest) > 0 {
		attrs, after, err := readLenencBytes(rest)
		if err != nil {
			return nil, fmt.Errorf("%w: bad connection attributes length", errMalformed)
		}
		if err := checkAttrs(attrs); err != nil {
			return nil, err
		}
		h.attrs, rest = bytes.Clone(attrs), after
	}
	if h.caps&capZstdCompression != 0 && len(rest) > 0 {
		h.zstdLevel = rest[0]
	}
	return h, nil
}

// checkAttrs checks that a connection attribute block is a sequence of
// length-encoded key and value strings.
func checkAttrs(b []byte) error {
	for len(b) > 0 {
		var err error
		for range 2 {
			if _, b, err = readLenencBytes(b); err != nil {
				return fmt.Errorf("%w: bad connection attribute", errMalformed)
			}
		}
	}
	return nil
}

// appendSSLRequest appends the payload of an SSLRequest: the fixed part
// of a HandshakeResponse41.
func (h *handshakeResponse) appendSSLRequest(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, h.caps)
	dst = binary.LittleEndian.AppendUint32(dst, h.maxPacket)
	dst = append(dst, h.charset)
	return append(dst, make([]byte, 23)...)
}

// append appends the payload of the HandshakeResponse41, encoding each
// field as its capability flags say.
func (h *handshakeResponse) append(dst []byte) []byte {
	dst = h.appendSSLRequest(dst)
	dst = append(dst, h.user...)
	dst = append(dst, 0)
	switch {
	case h.caps&capPluginAuthLenencData != 0:
		dst = appendLenencInt(dst, uint64(len(h.authResp)))
		dst = append(dst, h.authResp...)
	case h.caps&capSecureConnection != 0:
		dst = append(dst, byte(len(h.authResp)))
		dst = append(dst, h.authResp...)
	default:
		dst = append(dst, h.authResp...)
		dst = append(dst, 0)
	}
	if h.caps&capConnectWithDB != 0 {
		dst = append(dst, h.database...)
		dst = append(dst, 0)
	}
	if h.caps&capPluginAuth != 0 {
		dst = append(dst, h.plugin...)
		dst = append(dst, 0)
	}
	if h.caps&capConnectAttrs != 0 {
		dst = appendLenencInt(dst, uint64(len(h.attrs)))
		dst = append(dst, h.attrs...)
	}
	if h.caps&capZstdCompression != 0 {
		dst = append(dst, h.zstdLevel)
	}
	return dst
}

// authSwitchRequest is an AuthSwitchRequest: the server asks the client
// to authenticate with another plugin, giving it the plugin's first data
// (usually a nonce).
type authSwitchRequest struct {
	plugin string
	data   []byte
}

// parseAuthSwitch parses an AuthSwitchRequest packet, 0xFE included.
// The old one-byte form (switch to old_password) is refused.
func parseAuthSwitch(b []byte) (*authSwitchRequest, error) {
	if len(b) < 2 || b[0] != headerAuthSwitch {
		return nil, fmt.Errorf("%w: not an AuthSwitchRequest", errMalformed)
	}
	name, data, ok := readNulString(b[1:])
	if !ok || len(name) == 0 {
		return nil, fmt.Errorf("%w: AuthSwitchRequest without a plugin name", errMalformed)
	}
	return &authSwitchRequest{plugin: string(name), data: bytes.Clone(data)}, nil
}

// nonce is the scramble of the request's data: MySQL's 20 bytes without
// the NUL that servers end them with; other plugins' data as it is.
func (a *authSwitchRequest) nonce() []byte {
	if len(a.data) == scrambleLen+1 && a.data[scrambleLen] == 0 {
		return a.data[:scrambleLen]
	}
	return a.data
}

// appendERR appends the payload of an ERR packet in the protocol 4.1
// form: error number, SQLSTATE and message.
func appendERR(dst []byte, code uint16, state, msg string) []byte {
	dst = append(dst, headerERR)
	dst = binary.LittleEndian.AppendUint16(dst, code)
	dst = append(dst, '#')
	st := []byte(state + "HY000")[:5]
	dst = append(dst, st...)
	return append(dst, msg...)
}

// parseERR returns the error number, SQLSTATE ("" when absent) and
// message of an ERR packet, 0xFF included.
func parseERR(b []byte) (code uint16, state, msg string, err error) {
	if len(b) < 3 || b[0] != headerERR {
		return 0, "", "", fmt.Errorf("%w: not an ERR packet", errMalformed)
	}
	code = binary.LittleEndian.Uint16(b[1:])
	rest := b[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		state, rest = string(rest[1:6]), rest[6:]
	}
	return code, state, string(rest), nil
}
