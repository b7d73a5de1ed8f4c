// Package tdstest is Microsoft SQL Server test support for dbproxy's
// tests: an in-process TDS server (no SQL Server runs here) that speaks
// PRELOGIN, TLS inside PRELOGIN packets and TDS 8.0, LOGIN7 with a user
// and password check, SQL_BATCH with a small result set and ATTENTION,
// answering with the token streams MS-TDS documents; and the client side
// of the login, byte by byte, for tests that need to see the wire. It is
// written apart from dbproxy/mssql, so that the two check each other.
package tdstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"unicode/utf16"
)

// Packet types, PRELOGIN options and ENCRYPTION values (MS-TDS 2.2.3.1,
// 2.2.6.5).
const (
	PacketBatch     = 0x01
	PacketRPC       = 0x03
	PacketReply     = 0x04
	PacketAttention = 0x06
	PacketLogin7    = 0x10
	PacketPrelogin  = 0x12

	StatusEOM             = 0x01
	StatusResetConnection = 0x08

	EncryptOff    = 0x00
	EncryptOn     = 0x01
	EncryptNotSup = 0x02
	EncryptReq    = 0x03

	optVersion    = 0x00
	optEncryption = 0x01
	optInstOpt    = 0x02
	optThreadID   = 0x03
	optMARS       = 0x04
)

// Packet is one TDS packet's header fields and payload.
type Packet struct {
	Type, Status byte
	Payload      []byte
}

// ReadPacket reads one packet, refusing one longer than 32767 bytes.
func ReadPacket(r io.Reader) (Packet, error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Packet{}, err
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if n < 8 {
		return Packet{}, fmt.Errorf("tdstest: packet length %d", n)
	}
	p := Packet{Type: h[0], Status: h[1], Payload: make([]byte, n-8)}
	if _, err := io.ReadFull(r, p.Payload); err != nil {
		return Packet{}, err
	}
	return p, nil
}

// ReadMessage reads packets up to EOM, at most max payload bytes, and
// returns the first packet's type and status and the joined payload.
func ReadMessage(r io.Reader, max int) (typ, status byte, payload []byte, err error) {
	for first := true; ; first = false {
		p, err := ReadPacket(r)
		if err != nil {
			return 0, 0, nil, err
		}
		if first {
			typ, status = p.Type, p.Status
		}
		if len(payload)+len(p.Payload) > max {
			return 0, 0, nil, fmt.Errorf("tdstest: message longer than %d bytes", max)
		}
		payload = append(payload, p.Payload...)
		if p.Status&StatusEOM != 0 {
			return typ, status, payload, nil
		}
	}
}

// Packets splits payload into a message of type typ in packets of at most
// size bytes.
func Packets(typ byte, payload []byte, size int) []byte {
	var out []byte
	id := byte(1)
	for {
		n := min(len(payload), size-8)
		st := byte(0)
		if n == len(payload) {
			st = StatusEOM
		}
		out = append(out, typ, st, byte((n+8)>>8), byte(n+8), 0, 0, id, 0)
		out = append(out, payload[:n]...)
		payload = payload[n:]
		id++
		if st == StatusEOM {
			return out
		}
	}
}

// Prelogin builds a PRELOGIN payload from option tokens and their data,
// in the order given (pairs: token, data).
func Prelogin(opts ...[]byte) []byte {
	// opts alternate: a one-byte token slice, then its data.
	table := 5*(len(opts)/2) + 1
	var head, data []byte
	for i := 0; i+1 < len(opts); i += 2 {
		off := table + len(data)
		head = append(head, opts[i][0], byte(off>>8), byte(off), byte(len(opts[i+1])>>8), byte(len(opts[i+1])))
		data = append(data, opts[i+1]...)
	}
	head = append(head, 0xFF)
	return append(head, data...)
}

// PreloginOptions parses a PRELOGIN payload into its options.
func PreloginOptions(b []byte) (map[byte][]byte, error) {
	m := make(map[byte][]byte)
	for i := 0; ; i += 5 {
		if i >= len(b) {
			return nil, errors.New("tdstest: PRELOGIN without terminator")
		}
		if b[i] == 0xFF {
			return m, nil
		}
		if i+5 > len(b) {
			return nil, errors.New("tdstest: PRELOGIN table cut short")
		}
		off, n := int(binary.BigEndian.Uint16(b[i+1:])), int(binary.BigEndian.Uint16(b[i+3:]))
		if off+n > len(b) {
			return nil, errors.New("tdstest: PRELOGIN option outside the payload")
		}
		m[b[i]] = b[off : off+n]
	}
}

// UCS2 encodes s as UTF-16LE.
func UCS2(s string) []byte {
	var b []byte
	for _, c := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}

// FromUCS2 decodes UTF-16LE.
func FromUCS2(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// A LoginInfo is what a LOGIN7 says.
type LoginInfo struct {
	TDSVersion uint32
	PacketSize uint32
	User       string
	Password   string
	ServerName string
	Database   string
	AppName    string
}

// Login7 builds a LOGIN7 payload for SQL Server authentication.
func Login7(li LoginInfo) []byte {
	fields := []string{"tdstest-host", li.User, "", li.AppName, li.ServerName, "", "tdstest", "", li.Database}
	fixed := make([]byte, 94)
	binary.LittleEndian.PutUint32(fixed[4:], li.TDSVersion)
	binary.LittleEndian.PutUint32(fixed[8:], li.PacketSize)
	fixed[24] = 0xE0 // OptionFlags1: USE_DB, INIT_DB_FATAL, SET_LANG
	fixed[25] = 0x03 // OptionFlags2: INIT_LANG_FATAL, ODBC
	var data []byte
	for i, f := range fields {
		enc := UCS2(f)
		if i == 2 {
			enc = obfuscate(UCS2(li.Password))
		}
		at := 36 + 4*i
		binary.LittleEndian.PutUint16(fixed[at:], uint16(94+len(data)))
		binary.LittleEndian.PutUint16(fixed[at+2:], uint16(len(enc)/2))
		data = append(data, enc...)
	}
	b := append(fixed, data...)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	return b
}

// ParseLogin7 reads a LOGIN7 payload, the password de-obfuscated.
func ParseLogin7(b []byte) (LoginInfo, error) {
	if len(b) < 94 {
		return LoginInfo{}, errors.New("tdstest: short LOGIN7")
	}
	str := func(at int) (string, []byte, error) {
		off, n := int(binary.LittleEndian.Uint16(b[at:])), 2*int(binary.LittleEndian.Uint16(b[at+2:]))
		if off+n > len(b) {
			return "", nil, errors.New("tdstest: LOGIN7 field outside the payload")
		}
		return FromUCS2(b[off : off+n]), b[off : off+n], nil
	}
	li := LoginInfo{TDSVersion: binary.LittleEndian.Uint32(b[4:]), PacketSize: binary.LittleEndian.Uint32(b[8:])}
	var err error
	var pw []byte
	if li.User, _, err = str(40); err != nil {
		return li, err
	}
	if _, pw, err = str(44); err != nil {
		return li, err
	}
	li.Password = FromUCS2(deobfuscate(pw))
	if li.AppName, _, err = str(48); err != nil {
		return li, err
	}
	if li.ServerName, _, err = str(52); err != nil {
		return li, err
	}
	if li.Database, _, err = str(68); err != nil {
		return li, err
	}
	return li, nil
}

// obfuscate is LOGIN7's password encoding: swap each byte's nibbles, then
// XOR with 0xA5 (MS-TDS 2.2.6.4).
func obfuscate(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = (c<<4 | c>>4) ^ 0xA5
	}
	return out
}

func deobfuscate(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		c ^= 0xA5
		out[i] = c<<4 | c>>4
	}
	return out
}

// ServerError is an ERROR token a server sent.
type ServerError struct {
	Number       uint32
	State, Class byte
	Message      string
	Server       string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server error %d (state %d, class %d) from %s: %s", e.Number, e.State, e.Class, e.Server, e.Message)
}

// FirstError returns the first ERROR token of a token stream that starts
// with one, or nil.
func FirstError(p []byte) *ServerError {
	if len(p) < 3 || p[0] != 0xAA {
		return nil
	}
	n := int(binary.LittleEndian.Uint16(p[1:]))
	b := p[3:]
	if n > len(b) || n < 8 {
		return nil
	}
	b = b[:n]
	e := &ServerError{Number: binary.LittleEndian.Uint32(b), State: b[4], Class: b[5]}
	m := 2 * int(binary.LittleEndian.Uint16(b[6:]))
	if 8+m >= len(b) {
		return e
	}
	e.Message = FromUCS2(b[8 : 8+m])
	rest := b[8+m:]
	if s := 2 * int(rest[0]); 1+s <= len(rest) {
		e.Server = FromUCS2(rest[1 : 1+s])
	}
	return e
}

// handshakeConn carries TLS records inside PRELOGIN packets for the
// handshake (both sides: it reads PRELOGIN or reply packets and writes
// PRELOGIN ones, a flight per message), then raw once done is set.
type handshakeConn struct {
	net.Conn
	done bool
	left int
	out  []byte
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if c.done {
		return c.Conn.Read(b)
	}
	if len(c.out) > 0 {
		if _, err := c.Conn.Write(Packets(PacketPrelogin, c.out, 4096)); err != nil {
			return 0, err
		}
		c.out = nil
	}
	for c.left == 0 {
		var h [8]byte
		if _, err := io.ReadFull(c.Conn, h[:]); err != nil {
			return 0, err
		}
		if h[0] != PacketPrelogin && h[0] != PacketReply {
			return 0, fmt.Errorf("tdstest: packet type 0x%02x during the TLS handshake", h[0])
		}
		c.left = int(binary.BigEndian.Uint16(h[2:])) - 8
	}
	n, err := c.Conn.Read(b[:min(len(b), c.left)])
	c.left -= n
	return n, err
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if c.done {
		return c.Conn.Write(b)
	}
	c.out = append(c.out, b...)
	return len(b), nil
}

// finish flushes the last flight and switches to raw records.
func (c *handshakeConn) finish() error {
	if len(c.out) > 0 {
		if _, err := c.Conn.Write(Packets(PacketPrelogin, c.out, 4096)); err != nil {
			return err
		}
		c.out = nil
	}
	c.done = true
	return nil
}

// CloseWrite half-closes the connection underneath.
func (c *handshakeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
