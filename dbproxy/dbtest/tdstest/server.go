package tdstest

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// A Server is a fake SQL Server. Set its fields, then Start it.
type Server struct {
	// Name is the backend's name: queries answer it in their "name"
	// column, Echo sessions prefix their lines with it.
	Name string
	// Users maps logins to passwords; a wrong password gets SQL Server's
	// error 18456. Nil accepts everyone.
	Users map[string]string
	// Cert, when set, makes the server answer PRELOGIN with ENCRYPTION REQ
	// (ON to a client asking ON) and run TLS inside PRELOGIN packets, and
	// accept TDS 8.0 (TLS from the first byte, ALPN tds/8.0). Without it
	// the server answers NOT_SUP and speaks plaintext.
	Cert *tls.Certificate
	// Encryption, when not zero, replaces the ENCRYPTION answer (for
	// tests of a backend that requires encryption without offering it).
	Encryption *byte
	// Echo makes a session echo lines after the login (dbtest.EchoLines),
	// for dbtest.Conformance.
	Echo bool
	// Route, "host:port", adds an ENVCHANGE routing token (type 20) to
	// the login response, as Azure SQL's redirect policy does.
	Route string

	// Addr is the server's address once started.
	Addr string

	mu         sync.Mutex
	logins     []Login
	batches    []string
	attentions int
	resets     int
}

// A Login is one login the server saw.
type Login struct {
	LoginInfo
	SNI  string // TLS server name leproxy sent, "" without TLS
	TLS  bool   // the session was encrypted
	TDS8 bool   // TLS from the first byte
	OK   bool   // the password matched
}

// Start starts s on 127.0.0.1 until the test ends.
func Start(t testing.TB, s *Server) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	dbtest.ServeFake(t, l, 60*time.Second, nil, func(c net.Conn) {
		if err := s.serve(c); err != nil && err != io.EOF {
			t.Logf("tdstest %s: %v", s.Name, err)
		}
	})
	return s
}

// Logins returns the logins seen so far.
func (s *Server) Logins() []Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Login(nil), s.logins...)
}

// Batches returns the SQL batches seen so far.
func (s *Server) Batches() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.batches...)
}

// Attentions is the number of ATTENTION messages seen.
func (s *Server) Attentions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attentions
}

// Resets is the number of messages with RESETCONNECTION seen.
func (s *Server) Resets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resets
}

func (s *Server) serve(raw net.Conn) error {
	var first [1]byte
	if _, err := io.ReadFull(raw, first[:]); err != nil {
		return err
	}
	var conn net.Conn = &prefixed{Conn: raw, b: first[:]}
	var lg Login
	if first[0] == 0x16 {
		if s.Cert == nil {
			return fmt.Errorf("TLS ClientHello without a certificate")
		}
		tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*s.Cert}, NextProtos: []string{"tds/8.0"}})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS 8.0 handshake: %w", err)
		}
		conn, lg.TLS, lg.TDS8, lg.SNI = tc, true, true, tc.ConnectionState().ServerName
	}
	typ, _, pre, err := ReadMessage(conn, 4096)
	if err != nil {
		return err
	}
	if typ != PacketPrelogin {
		return fmt.Errorf("first packet of type 0x%02x", typ)
	}
	opts, err := PreloginOptions(pre)
	if err != nil {
		return err
	}
	if _, ok := opts[optVersion]; !ok {
		return fmt.Errorf("PRELOGIN without VERSION")
	}
	clientEnc := byte(EncryptOff)
	if e := opts[optEncryption]; len(e) == 1 {
		clientEnc = e[0]
	}
	answer := byte(EncryptNotSup)
	switch {
	case lg.TDS8:
		answer = EncryptReq
	case s.Cert != nil && clientEnc == EncryptOn:
		answer = EncryptOn
	case s.Cert != nil:
		answer = EncryptReq
	}
	if s.Encryption != nil {
		answer = *s.Encryption
	}
	reply := Prelogin([]byte{optVersion}, []byte{16, 0, 0x10, 0x7c, 0, 0},
		[]byte{optEncryption}, []byte{answer},
		[]byte{optInstOpt}, []byte{0},
		[]byte{optThreadID}, nil,
		[]byte{optMARS}, []byte{0})
	if _, err := conn.Write(Packets(PacketReply, reply, 4096)); err != nil {
		return err
	}
	if !lg.TDS8 && s.Cert != nil && answer != EncryptNotSup {
		if clientEnc == EncryptNotSup {
			return fmt.Errorf("client cannot encrypt")
		}
		hc := &handshakeConn{Conn: conn}
		tc := tls.Server(hc, &tls.Config{Certificates: []tls.Certificate{*s.Cert}, MaxVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake in PRELOGIN: %w", err)
		}
		if err := hc.finish(); err != nil {
			return err
		}
		conn, lg.TLS, lg.SNI = tc, true, tc.ConnectionState().ServerName
	}
	typ, _, login, err := ReadMessage(conn, 128<<10)
	if err != nil {
		return err
	}
	if typ != PacketLogin7 {
		return fmt.Errorf("packet of type 0x%02x, want LOGIN7", typ)
	}
	if lg.LoginInfo, err = ParseLogin7(login); err != nil {
		return err
	}
	want, known := s.Users[lg.User]
	lg.OK = s.Users == nil || (known && want == lg.Password)
	s.mu.Lock()
	s.logins = append(s.logins, lg)
	s.mu.Unlock()
	if !lg.OK {
		p := ErrorToken(18456, 1, 14, fmt.Sprintf("Login failed for user '%s'.", lg.User), s.Name)
		p = append(p, Done(0x0002, 0, 0)...)
		_, err := conn.Write(Packets(PacketReply, p, 4096))
		return err
	}
	size := int(lg.PacketSize)
	if size < 512 || size > 32767 {
		size = 4096
	}
	p := EnvChange(1, "master", "master")
	p = append(p, EnvChange(4, fmt.Sprint(size), "4096")...)
	if s.Route != "" {
		host, port, _ := net.SplitHostPort(s.Route)
		var n int
		fmt.Sscan(port, &n)
		p = append(p, EnvRouting(host, uint16(n))...)
	}
	p = append(p, LoginAck("FakeTDS")...)
	p = append(p, Done(0, 0, 0)...)
	if _, err := conn.Write(Packets(PacketReply, p, size)); err != nil {
		return err
	}
	if s.Echo {
		dbtest.EchoLines(conn, s.Name)
		return nil
	}
	return s.commands(conn, size)
}

// commands answers SQL batches and attentions until the client goes.
func (s *Server) commands(conn net.Conn, size int) error {
	for {
		typ, status, p, err := ReadMessage(conn, 1<<20)
		if err != nil {
			return err
		}
		if status&StatusResetConnection != 0 {
			s.mu.Lock()
			s.resets++
			s.mu.Unlock()
		}
		switch typ {
		case PacketAttention:
			s.mu.Lock()
			s.attentions++
			s.mu.Unlock()
			if _, err := conn.Write(Packets(PacketReply, Done(0x0020, 0, 0), size)); err != nil {
				return err
			}
		case PacketBatch:
			// ALL_HEADERS: its total length, then the headers.
			if len(p) < 4 || int(binary.LittleEndian.Uint32(p)) > len(p) {
				return fmt.Errorf("SQL_BATCH without ALL_HEADERS")
			}
			q := FromUCS2(p[binary.LittleEndian.Uint32(p):])
			s.mu.Lock()
			s.batches = append(s.batches, q)
			s.mu.Unlock()
			if strings.Contains(strings.ToUpper(q), "WAITFOR") {
				// A long query: the client cancels it with ATTENTION,
				// answered by a DONE with DONE_ATTN.
				typ, _, _, err := ReadMessage(conn, 1<<10)
				if err != nil {
					return err
				}
				if typ != PacketAttention {
					return fmt.Errorf("packet of type 0x%02x during WAITFOR, want ATTENTION", typ)
				}
				s.mu.Lock()
				s.attentions++
				s.mu.Unlock()
				if _, err := conn.Write(Packets(PacketReply, Done(0x0020, 0, 0), size)); err != nil {
					return err
				}
				continue
			}
			name := s.Name
			if strings.Contains(q, "big") {
				name = strings.Repeat(s.Name, 3000/len(s.Name)+1)[:3000]
			}
			if _, err := conn.Write(Packets(PacketReply, ResultSet(name), size)); err != nil {
				return err
			}
		default:
			e := ErrorToken(102, 1, 15, fmt.Sprintf("tdstest: packet type 0x%02x is not supported", typ), s.Name)
			if _, err := conn.Write(Packets(PacketReply, append(e, Done(0x0002, 0, 0)...), size)); err != nil {
				return err
			}
		}
	}
}

// ResultSet is the answer to every query: one row, the columns n (int,
// 1) and name (nvarchar(4000)).
func ResultSet(name string) []byte {
	p := []byte{0x81, 2, 0}                // COLMETADATA, 2 columns
	p = append(p, 0, 0, 0, 0, 0x09, 0)     // UserType, Flags (nullable, updateable unknown)
	p = append(p, 0x26, 4)                 // INTN(4)
	p = append(p, 1)                       // name length
	p = append(p, UCS2("n")...)            //
	p = append(p, 0, 0, 0, 0, 0x09, 0)     // UserType, Flags
	p = append(p, 0xE7, 0x40, 0x1F)        // NVARCHAR(4000): 8000 bytes
	p = append(p, 0x09, 0x04, 0xD0, 0, 52) // collation: Latin1_General_CI_AS
	p = append(p, 4)
	p = append(p, UCS2("name")...)
	p = append(p, 0xD1)          // ROW
	p = append(p, 4, 1, 0, 0, 0) // n = 1
	v := UCS2(name)
	p = binary.LittleEndian.AppendUint16(p, uint16(len(v)))
	p = append(p, v...)
	return append(p, Done(0x0010, 0xC1, 1)...) // DONE_COUNT, SELECT, 1 row
}

// ErrorToken is an ERROR token (TDS 7.2+).
func ErrorToken(number uint32, state, class byte, msg, server string) []byte {
	m, s := UCS2(msg), UCS2(server)
	body := binary.LittleEndian.AppendUint32(nil, number)
	body = append(body, state, class)
	body = binary.LittleEndian.AppendUint16(body, uint16(len(m)/2))
	body = append(body, m...)
	body = append(body, byte(len(s)/2))
	body = append(body, s...)
	body = append(body, 0)
	body = binary.LittleEndian.AppendUint32(body, 1)
	out := []byte{0xAA}
	out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
	return append(out, body...)
}

// Done is a DONE token.
func Done(status, curCmd uint16, rows uint64) []byte {
	out := []byte{0xFD}
	out = binary.LittleEndian.AppendUint16(out, status)
	out = binary.LittleEndian.AppendUint16(out, curCmd)
	return binary.LittleEndian.AppendUint64(out, rows)
}

// EnvChange is an ENVCHANGE token with B_VARCHAR values (database,
// language, packet size…).
func EnvChange(typ byte, newValue, oldValue string) []byte {
	nv, ov := UCS2(newValue), UCS2(oldValue)
	body := []byte{typ, byte(len(nv) / 2)}
	body = append(body, nv...)
	body = append(body, byte(len(ov)/2))
	body = append(body, ov...)
	out := []byte{0xE3}
	out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
	return append(out, body...)
}

// EnvRouting is an ENVCHANGE routing token (type 20) to server:port.
func EnvRouting(server string, port uint16) []byte {
	s := UCS2(server)
	val := []byte{0}
	val = binary.LittleEndian.AppendUint16(val, port)
	val = binary.LittleEndian.AppendUint16(val, uint16(len(s)/2))
	val = append(val, s...)
	body := []byte{20}
	body = binary.LittleEndian.AppendUint16(body, uint16(len(val)))
	body = append(body, val...)
	body = append(body, 0, 0)
	out := []byte{0xE3}
	out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
	return append(out, body...)
}

// LoginAck is a LOGINACK token for TDS 7.4 from a server named prog,
// version 16.0.4220.
func LoginAck(prog string) []byte {
	p := UCS2(prog)
	body := []byte{1, 0x74, 0, 0, 4, byte(len(p) / 2)}
	body = append(body, p...)
	body = append(body, 16, 0, 0x10, 0x7c)
	out := []byte{0xAD}
	out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
	return append(out, body...)
}

// prefixed replays bytes already read from a connection.
type prefixed struct {
	net.Conn
	b []byte
}

func (c *prefixed) Read(p []byte) (int, error) {
	if len(c.b) > 0 {
		n := copy(p, c.b)
		c.b = c.b[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
