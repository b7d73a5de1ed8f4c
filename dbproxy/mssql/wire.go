package mssql

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// TDS packet types (MS-TDS 2.2.3.1.1) and the status bit this package
// looks at.
const (
	pktBatch     = 0x01
	pktReply     = 0x04 // tabular result: every server→client message
	pktAttention = 0x06
	pktLogin7    = 0x10
	pktSSPI      = 0x11
	pktPrelogin  = 0x12

	statusEOM = 0x01 // last packet of a message

	headerLen = 8
	// clientPacketLen is the size of the packets leproxy writes to clients
	// itself: the smallest packet size, since a client reads with the
	// packet size it asks for in LOGIN7 (go-mssqldb fails on larger
	// packets during the handshake), which leproxy has not seen yet.
	clientPacketLen = 512
	// backendPacketLen is the size of the packets leproxy writes to
	// backends itself: the default packet size, which servers accept
	// before negotiation.
	backendPacketLen = 4096
)

// Bounds on the messages leproxy reads whole.
const (
	maxPreloginLen = 4096      // a PRELOGIN is a few dozen bytes
	maxLoginLen    = 128 << 10 // MS-TDS: LOGIN7 "MUST NOT exceed 128K"
	maxLoginReply  = 1 << 20   // the backend's answer to LOGIN7
)

// PRELOGIN option tokens (MS-TDS 2.2.6.5).
const (
	plVersion    = 0x00
	plEncryption = 0x01
	plInstOpt    = 0x02
	plThreadID   = 0x03
	plMARS       = 0x04
	plTerminator = 0xFF
)

// ENCRYPTION values of PRELOGIN.
const (
	encOff    = 0x00
	encOn     = 0x01
	encNotSup = 0x02
	encReq    = 0x03
	encStrict = 0x04 // what go-mssqldb sends inside TDS 8.0
	// encClientCert is the flag of a client that offers a certificate.
	encClientCert = 0x80
)

// errMalformed is wrapped by every error about bytes that break TDS.
var errMalformed = errors.New("malformed TDS")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// A message is one TDS message: the payloads of its packets, joined, and
// the packets as they came, for forwarding verbatim.
type message struct {
	typ     byte
	status  byte // of the first packet (RESETCONNECTION bits)
	payload []byte
	raw     []byte
	// maxPacket is the length of its longest packet.
	maxPacket int
}

// readMessage reads the packets of one message, up to the one with EOM,
// exactly (nothing after it), refusing a message whose payload would pass
// limit bytes before it allocates for it and packets of another type
// than the first's.
func readMessage(r io.Reader, limit int) (*message, error) {
	var m message
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if m.raw != nil && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[2:4]))
		if n < headerLen {
			return nil, malformed("packet length %d is shorter than its header", n)
		}
		if m.raw == nil {
			m.typ, m.status = hdr[0], hdr[1]
		} else if hdr[0] != m.typ {
			return nil, malformed("packet of type 0x%02x inside a message of type 0x%02x", hdr[0], m.typ)
		}
		if len(m.payload)+n-headerLen > limit {
			return nil, malformed("message of type 0x%02x longer than %d bytes", m.typ, limit)
		}
		start := len(m.raw)
		m.maxPacket = max(m.maxPacket, n)
		m.raw = append(m.raw, hdr[:]...)
		m.raw = append(m.raw, make([]byte, n-headerLen)...)
		if _, err := io.ReadFull(r, m.raw[start+headerLen:]); err != nil {
			return nil, fmt.Errorf("reading a packet of type 0x%02x: %w", m.typ, noEOF(err))
		}
		m.payload = append(m.payload, m.raw[start+headerLen:]...)
		if hdr[1]&statusEOM != 0 {
			return &m, nil
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendPackets appends payload as a message of type typ, in packets of
// at most size bytes numbered from 1, EOM on the last.
func appendPackets(dst []byte, typ byte, payload []byte, size int) []byte {
	chunk := size - headerLen
	id := byte(1)
	for {
		n := min(len(payload), chunk)
		status := byte(0)
		if n == len(payload) {
			status = statusEOM
		}
		dst = append(dst, typ, status, 0, 0, 0, 0, id, 0)
		binary.BigEndian.PutUint16(dst[len(dst)-6:], uint16(n+headerLen))
		dst = append(dst, payload[:n]...)
		payload = payload[n:]
		id++
		if status == statusEOM {
			return dst
		}
	}
}

// A preloginOption is one option of a PRELOGIN message.
type preloginOption struct {
	token byte
	data  []byte
}

// maxPreloginOptions bounds the option table; MS-TDS defines nine.
const maxPreloginOptions = 32

// parsePrelogin parses a PRELOGIN payload (a client's or a server's): the
// option table up to its terminator, each option's data inside the
// payload. An option given twice is an error.
func parsePrelogin(b []byte) ([]preloginOption, error) {
	var opts []preloginOption
	for i := 0; ; i += 5 {
		if i >= len(b) {
			return nil, malformed("PRELOGIN option table without its terminator")
		}
		if b[i] == plTerminator {
			return opts, nil
		}
		if len(opts) == maxPreloginOptions {
			return nil, malformed("PRELOGIN with more than %d options", maxPreloginOptions)
		}
		if i+5 > len(b) {
			return nil, malformed("PRELOGIN option table cut short")
		}
		tok := b[i]
		off := int(binary.BigEndian.Uint16(b[i+1:]))
		n := int(binary.BigEndian.Uint16(b[i+3:]))
		if off+n > len(b) {
			return nil, malformed("PRELOGIN option 0x%02x (offset %d, length %d) outside its %d bytes", tok, off, n, len(b))
		}
		for _, o := range opts {
			if o.token == tok {
				return nil, malformed("PRELOGIN option 0x%02x given twice", tok)
			}
		}
		opts = append(opts, preloginOption{tok, b[off : off+n]})
	}
}

// preloginValue returns the data of option tok, and whether it is there.
func preloginValue(opts []preloginOption, tok byte) ([]byte, bool) {
	for _, o := range opts {
		if o.token == tok {
			return o.data, true
		}
	}
	return nil, false
}

// appendPrelogin appends a PRELOGIN payload with opts in their order.
func appendPrelogin(dst []byte, opts []preloginOption) []byte {
	off := 5*len(opts) + 1
	for _, o := range opts {
		dst = append(dst, o.token, byte(off>>8), byte(off), byte(len(o.data)>>8), byte(len(o.data)))
		off += len(o.data)
	}
	dst = append(dst, plTerminator)
	for _, o := range opts {
		dst = append(dst, o.data...)
	}
	return dst
}

// proxyVersion is the VERSION leproxy answers a client's PRELOGIN with:
// SQL Server 2022's (16.0.4220), which clients only log.
var proxyVersion = []byte{0x10, 0x00, 0x10, 0x7c, 0x00, 0x00}

// LOGIN7 (MS-TDS 2.2.6.4): the fixed part, 94 bytes, and the fields of it
// this package reads.
const (
	login7FixedLen   = 94
	loginTDSVersion  = 4
	loginPacketSize  = 8
	loginOptFlags2   = 25
	loginUserName    = 40
	loginServerName  = 52
	loginDatabase    = 68
	loginSSPI        = 78
	loginSSPILong    = 90
	optIntSecurity   = 0x80 // OptionFlags2 fIntSecurity: Windows authentication
	tdsVersion74     = 0x74000004
	tdsVersion80     = 0x08000000
	loginTDSVersionB = headerLen + loginTDSVersion // in the first packet's raw bytes
)

// A login7 is what leproxy reads of a client's LOGIN7; the password is
// never decoded.
type login7 struct {
	tdsVersion uint32
	packetSize uint32
	integrated bool // Windows (SSPI) authentication
	user       string
	serverName string
	database   string
}

// parseLogin7 parses a LOGIN7 payload.
func parseLogin7(b []byte) (*login7, error) {
	if len(b) < login7FixedLen {
		return nil, malformed("LOGIN7 of %d bytes, shorter than its fixed part", len(b))
	}
	if n := binary.LittleEndian.Uint32(b); int64(n) != int64(len(b)) {
		return nil, malformed("LOGIN7 says it has %d bytes and has %d", n, len(b))
	}
	l := &login7{
		tdsVersion: binary.LittleEndian.Uint32(b[loginTDSVersion:]),
		packetSize: binary.LittleEndian.Uint32(b[loginPacketSize:]),
		integrated: b[loginOptFlags2]&optIntSecurity != 0,
	}
	if binary.LittleEndian.Uint16(b[loginSSPI+2:]) != 0 || binary.LittleEndian.Uint32(b[loginSSPILong:]) != 0 {
		l.integrated = true
	}
	var err error
	if l.user, err = loginString(b, loginUserName, "UserName"); err != nil {
		return nil, err
	}
	if l.serverName, err = loginString(b, loginServerName, "ServerName"); err != nil {
		return nil, err
	}
	if l.database, err = loginString(b, loginDatabase, "Database"); err != nil {
		return nil, err
	}
	return l, nil
}

// loginString decodes the UCS-2 string whose offset and length (in
// characters) are at b[at:].
func loginString(b []byte, at int, name string) (string, error) {
	off := int(binary.LittleEndian.Uint16(b[at:]))
	n := 2 * int(binary.LittleEndian.Uint16(b[at+2:]))
	if n == 0 {
		return "", nil
	}
	if off < login7FixedLen || off+n > len(b) {
		return "", malformed("LOGIN7 %s (offset %d, %d bytes) outside its %d bytes", name, off, n, len(b))
	}
	return decodeUCS2(b[off : off+n]), nil
}

func decodeUCS2(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func appendUCS2(dst []byte, s string) []byte {
	for _, c := range utf16.Encode([]rune(s)) {
		dst = binary.LittleEndian.AppendUint16(dst, c)
	}
	return dst
}

// routeName is the host part of a LOGIN7 ServerName: what the client was
// told to connect to, without an instance ("host\instance") or port
// ("host,1433").
func routeName(serverName string) string {
	s := serverName
	if i := strings.IndexAny(s, `\,`); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// Tokens of the tabular stream (MS-TDS 2.2.7) that a login response may
// hold.
const (
	tokError         = 0xAA
	tokInfo          = 0xAB
	tokLoginAck      = 0xAD
	tokFeatureExtAck = 0xAE
	tokEnvChange     = 0xE3
	tokSessionState  = 0xE4
	tokSSPI          = 0xED
	tokFedAuthInfo   = 0xEE
	tokDone          = 0xFD
	tokDoneProc      = 0xFE
	tokDoneInProc    = 0xFF

	envRouting = 20 // ENVCHANGE type: Azure / availability group redirection

	doneError = 0x0002
	doneAttn  = 0x0020
	doneLen   = 12 // Status, CurCmd, DoneRowCount (TDS 7.2+)
)

// Error numbers of leproxy's own errors. The first two are Azure SQL's
// for the same situations, so that tools that know them react alike.
const (
	errNoRoute     = 40532 // "Cannot open server … requested by the login"
	errUnreachable = 40613 // "… is not currently available"
	errRefused     = 50000 // leproxy's other refusals (TLS required, malformed…)
	errClassFatal  = 20    // the connection ends
)

// appendError appends an ERROR token (TDS 7.2+ layout).
func appendError(dst []byte, number uint32, state, class byte, msg, server string) []byte {
	msg16 := appendUCS2(nil, truncateRunes(msg, 2000))
	srv16 := appendUCS2(nil, truncateRunes(server, 128))
	n := 4 + 1 + 1 + 2 + len(msg16) + 1 + len(srv16) + 1 + 4
	dst = append(dst, tokError)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	dst = binary.LittleEndian.AppendUint32(dst, number)
	dst = append(dst, state, class)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msg16)/2))
	dst = append(dst, msg16...)
	dst = append(dst, byte(len(srv16)/2))
	dst = append(dst, srv16...)
	dst = append(dst, 0)                           // ProcName
	dst = binary.LittleEndian.AppendUint32(dst, 1) // LineNumber
	return dst
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		r = r[:n]
	}
	return string(r)
}

// appendDone appends a DONE token.
func appendDone(dst []byte, status uint16) []byte {
	dst = append(dst, tokDone)
	dst = binary.LittleEndian.AppendUint16(dst, status)
	dst = append(dst, 0, 0)                // CurCmd
	return append(dst, make([]byte, 8)...) // DoneRowCount
}

// errorReply is a whole reply message carrying one ERROR and a final
// DONE that says so: what a server sends to refuse a login.
func errorReply(number uint32, state byte, msg string) []byte {
	p := appendError(nil, number, state, errClassFatal, msg, "leproxy")
	p = appendDone(p, doneError)
	return appendPackets(nil, pktReply, p, clientPacketLen)
}

// A loginReply is what leproxy learns from the backend's answer to LOGIN7.
type loginReply struct {
	ack     bool   // LOGINACK: the login succeeded
	errNum  uint32 // the first ERROR's number and message
	errMsg  string
	errSeen bool
	// routing is the ENVCHANGE routing token, nil when there is none.
	routing *envRoutingToken
	// complete is set when the stream parsed to its end; a stream with a
	// token leproxy does not know is relayed as it is.
	complete bool
}

// An envRoutingToken is an ENVCHANGE of type 20: the backend tells the
// client to connect to another server.
type envRoutingToken struct {
	start, end int // the token's bytes in the payload
	protocol   byte
	port       uint16
	server     string
}

// scanLoginReply walks the tokens of a login response payload.
func scanLoginReply(p []byte) (*loginReply, error) {
	lr := new(loginReply)
	for i := 0; i < len(p); {
		tok := p[i]
		start := i
		i++
		need := func(n int) error {
			if i+n > len(p) {
				return malformed("token 0x%02x cut short", tok)
			}
			return nil
		}
		switch tok {
		case tokError, tokInfo, tokLoginAck, tokEnvChange, tokSSPI:
			if err := need(2); err != nil {
				return nil, err
			}
			n := int(binary.LittleEndian.Uint16(p[i:]))
			i += 2
			if err := need(n); err != nil {
				return nil, err
			}
			body := p[i : i+n]
			i += n
			switch tok {
			case tokLoginAck:
				lr.ack = true
			case tokError:
				if !lr.errSeen && len(body) >= 8 {
					lr.errSeen = true
					lr.errNum = binary.LittleEndian.Uint32(body)
					if m := 2 * int(binary.LittleEndian.Uint16(body[6:])); 8+m <= len(body) {
						lr.errMsg = decodeUCS2(body[8 : 8+m])
					}
				}
			case tokEnvChange:
				if len(body) > 0 && body[0] == envRouting {
					if lr.routing != nil {
						return nil, malformed("two ENVCHANGE routing tokens")
					}
					rt, err := parseEnvRouting(body)
					if err != nil {
						return nil, err
					}
					rt.start, rt.end = start, i
					lr.routing = rt
				}
			}
		case tokSessionState, tokFedAuthInfo:
			if err := need(4); err != nil {
				return nil, err
			}
			n := int(binary.LittleEndian.Uint32(p[i:]))
			i += 4
			if n < 0 || n > len(p)-i {
				return nil, malformed("token 0x%02x cut short", tok)
			}
			i += n
		case tokFeatureExtAck:
			for {
				if err := need(1); err != nil {
					return nil, err
				}
				id := p[i]
				i++
				if id == 0xFF {
					break
				}
				if err := need(4); err != nil {
					return nil, err
				}
				n := int(binary.LittleEndian.Uint32(p[i:]))
				i += 4
				if n < 0 || n > len(p)-i {
					return nil, malformed("FEATUREEXTACK cut short")
				}
				i += n
			}
		case tokDone, tokDoneProc, tokDoneInProc:
			if err := need(doneLen); err != nil {
				return nil, err
			}
			i += doneLen
		default:
			return lr, nil // not a login token: relayed untouched
		}
	}
	lr.complete = true
	return lr, nil
}

// parseEnvRouting parses the body of an ENVCHANGE routing token (after its
// length): Type, RoutingDataValueLength, Protocol, ProtocolProperty
// (port), AlternateServer (US_VARCHAR), then the old value (0x0000).
func parseEnvRouting(b []byte) (*envRoutingToken, error) {
	if len(b) < 1+2+1+2+2 {
		return nil, malformed("ENVCHANGE routing token of %d bytes", len(b))
	}
	vlen := int(binary.LittleEndian.Uint16(b[1:]))
	if 3+vlen > len(b) || vlen < 5 {
		return nil, malformed("ENVCHANGE routing value of %d bytes in a token of %d", vlen, len(b))
	}
	v := b[3 : 3+vlen]
	rt := &envRoutingToken{protocol: v[0], port: binary.LittleEndian.Uint16(v[1:])}
	n := 2 * int(binary.LittleEndian.Uint16(v[3:]))
	if 5+n > len(v) {
		return nil, malformed("ENVCHANGE routing server name of %d bytes in a value of %d", n, len(v))
	}
	rt.server = decodeUCS2(v[5 : 5+n])
	return rt, nil
}

// appendEnvRouting appends an ENVCHANGE routing token to server:port.
func appendEnvRouting(dst []byte, server string, port uint16) []byte {
	s16 := appendUCS2(nil, server)
	vlen := 1 + 2 + 2 + len(s16)
	dst = append(dst, tokEnvChange)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(1+2+vlen+2))
	dst = append(dst, envRouting)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(vlen))
	dst = append(dst, 0) // protocol: TCP
	dst = binary.LittleEndian.AppendUint16(dst, port)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s16)/2))
	dst = append(dst, s16...)
	return append(dst, 0, 0) // old value
}
