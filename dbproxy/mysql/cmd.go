package mysql

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/leproxy/leproxy/dbproxy"
)

// The command phase of a MySQL session: after authentication the byte
// pump relays it, through two packet streams that follow the packet
// framing and step in for COM_CHANGE_USER only, the one command that
// authenticates again.
//
// leproxy's greeting nonce is not the backend's, so a client's answer in
// COM_CHANGE_USER would be made for the wrong nonce whenever the client
// kept the greeting's (as libmariadb does after client_ed25519, and MySQL's
// client after caching_sha2_password): refused, or worse, taken by MySQL 8
// for a cache miss that asks for the password in cleartext. So the client
// stream rewrites COM_CHANGE_USER the way the handshake is rewritten:
// plugin leproxy_auth_relay, no data; the backend answers with an
// AuthSwitchRequest carrying its nonce. The exchange that follows is
// watched on both streams, and where the client's link is encrypted and
// the backend's is not, a cleartext password is sent on RSA-encrypted
// (the key request goes in its place, the key is kept from the client,
// sequence ids are shifted back) and cleartext-only plugins are refused
// with an ERR packet that ends the session, exactly as during the
// handshake.
//
// Commands are told from other packets by their sequence id 0, except in
// the continuation of a payload of 16 MiB or more and in the contents of a
// LOAD DATA LOCAL INFILE file, whose ids wrap around. Clients do not
// pipeline COM_CHANGE_USER behind commands whose results are still
// coming, which the backend stream assumes when it takes the packets after
// a COM_CHANGE_USER for its answer.

// Commands the client stream recognises.
const (
	comQuery      = 0x03
	comChangeUser = 0x11
)

// commandPhase is the state the two streams of one session share.
type commandPhase struct {
	route   *dbproxy.Route
	charset byte // the client's, for a COM_CHANGE_USER that names none
	// intercept is set when the client's link is encrypted and the
	// backend's is not.
	intercept bool
	backend   net.Conn // the backend link, for the encrypted password

	mu       sync.Mutex
	changing bool   // a COM_CHANGE_USER exchange is under way
	plugin   string // the plugin of its last AuthSwitchRequest
	nonce    []byte
	expect   byte   // a key request byte: the client's next packet may be its password
	password []byte // a cleartext password from the client, waiting for the backend's key
	shift    byte   // backend sequence ids are this far ahead of the client's
}

// commandConns returns the client and backend connections of a session
// whose authentication has ended, for the byte pump.
func commandConns(client, backend net.Conn, r *dbproxy.Route, charset byte, intercept bool) (net.Conn, net.Conn) {
	ph := &commandPhase{route: r, charset: charset, intercept: intercept, backend: backend}
	return &packetStream{Conn: client, filter: &clientFilter{ph: ph}},
		&packetStream{Conn: backend, filter: &backendFilter{ph: ph}}
}

// comQuit is COM_QUIT, a client's goodbye; the server closes on it.
const comQuit = 0x01

// SessionEnd implements dbproxy.EndReporter: a client that sent COM_QUIT
// quit, even when the server's close reached leproxy first.
func (s *packetStream) SessionEnd() (dbproxy.End, bool) {
	if f, ok := s.filter.(*clientFilter); ok && f.quit.Load() {
		return dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed}, true
	}
	return dbproxy.End{}, false
}

// packetFilter decides, packet by packet, what a packetStream passes
// on.
type packetFilter interface {
	// header sees a packet's payload length, sequence id and first
	// payload byte (-1 for an empty payload) and says whether the filter
	// wants the whole packet; if not, it passes on as it is.
	header(n int, seq byte, first int) (whole bool)
	// packet gets a whole packet (payload aliases the stream's buffer)
	// and returns the bytes that go on in its place, and whether the
	// stream ends after them.
	packet(seq byte, payload []byte) (out []byte, end bool, err error)
}

// packetStream is one direction of a MySQL session: reading it reads
// the connection's packets, as they are or as the filter replaces them.
// Payloads the filter does not want whole go straight through, without
// being held.
type packetStream struct {
	net.Conn
	filter packetFilter

	in        []byte // read, not yet passed on
	inBuf     []byte // in's backing array
	out       []byte // to return before anything else
	outBuf    []byte // out's backing array
	remaining int    // payload bytes of the current packet to pass on as they are
	whole     bool   // the filter wants the packet at the head of in whole
	done      bool   // the filter ended the stream
}

// errStreamTooLarge ends a session whose filtered packet is larger than
// leproxy holds.
var errStreamTooLarge = errors.New("mysql: packet during COM_CHANGE_USER too large")

// Read fills p with as much as it can without waiting, so that a result
// of many small packets goes on in few writes.
func (s *packetStream) Read(p []byte) (int, error) {
	n := 0
	// more reads the connection when nothing is ready for the caller,
	// and says to return what is ready otherwise.
	more := func() (wait bool, err error) {
		if n > 0 {
			return true, nil
		}
		return false, s.fill()
	}
	for n < len(p) {
		if len(s.out) > 0 {
			k := copy(p[n:], s.out)
			s.out, n = s.out[k:], n+k
			continue
		}
		if s.done {
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		if s.remaining > 0 {
			if len(s.in) > 0 {
				k := copy(p[n:n+min(len(p)-n, s.remaining)], s.in)
				s.in, s.remaining, n = s.in[k:], s.remaining-k, n+k
				continue
			}
			if n > 0 {
				return n, nil
			}
			if s.remaining >= 4<<10 {
				// A large payload goes straight through.
				k, err := s.Conn.Read(p[:min(len(p), s.remaining)])
				s.remaining -= k
				return k, err
			}
			if err := s.fill(); err != nil {
				return 0, err
			}
			continue
		}
		// At a packet boundary: its header and first payload byte.
		if len(s.in) < 4 || len(s.in) < 5 && s.in[0]|s.in[1]|s.in[2] != 0 {
			if wait, err := more(); wait || err != nil {
				return n, err
			}
			continue
		}
		size := int(s.in[0]) | int(s.in[1])<<8 | int(s.in[2])<<16
		seq, first := s.in[3], -1
		if size > 0 {
			first = int(s.in[4])
		}
		// The filter sees each header once; a packet it wants whole
		// may take more reads.
		if !s.whole {
			if !s.filter.header(size, seq, first) {
				s.setOut(s.in[:4])
				s.in, s.remaining = s.in[4:], size
				continue
			}
			if size > maxHandshakePacket {
				return n, errStreamTooLarge
			}
			s.whole = true
		}
		if len(s.in) < 4+size {
			if wait, err := more(); wait || err != nil {
				return n, err
			}
			continue
		}
		out, end, err := s.filter.packet(seq, s.in[4:4+size])
		s.in, s.whole = s.in[4+size:], false
		s.setOut(out)
		s.done = end
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// setOut makes b, copied, the next bytes Read returns.
func (s *packetStream) setOut(b []byte) {
	s.outBuf = append(s.outBuf[:0], b...)
	s.out = s.outBuf
}

// fill reads more of the connection into s.in. An end of stream inside a
// packet is an unexpected one.
func (s *packetStream) fill() error {
	if len(s.in) == 0 {
		s.in = s.inBuf[:0]
	}
	if cap(s.in)-len(s.in) < 4<<10 {
		// Grow, or move to the front what a wanted packet has so far.
		in := s.inBuf[:0]
		if cap(in) < len(s.in)+16<<10 {
			in = make([]byte, 0, max(2*cap(s.inBuf), len(s.in)+16<<10))
		}
		s.in = append(in, s.in...)
		s.inBuf = s.in[:0]
	}
	n, err := s.Conn.Read(s.in[len(s.in):cap(s.in)])
	s.in = s.in[:len(s.in)+n]
	switch {
	case n > 0:
		return nil
	case err == io.EOF && len(s.in) > 0:
		return io.ErrUnexpectedEOF
	case err == nil:
		return io.ErrNoProgress
	}
	return err
}

// CloseWrite half-closes the connection, as the byte pump does at the end
// of a direction.
func (s *packetStream) CloseWrite() error { return dbproxy.CloseWrite(s.Conn) }

// clientFilter follows the client's packets: it rewrites
// COM_CHANGE_USER and takes a cleartext password the exchange must not
// pass on as it is.
type clientFilter struct {
	ph      *commandPhase
	quit    atomic.Bool // the client sent COM_QUIT
	cont    bool        // the last payload was 16 MiB - 1 bytes: this packet continues it
	infile  bool        // LOAD DATA LOCAL INFILE contents are coming, up to an empty packet
	lastCmd int
	want    int // what the wanted packet is: wantChangeUser or wantReply
}

const (
	wantChangeUser = iota + 1
	wantReply
)

func (f *clientFilter) header(n int, seq byte, first int) bool {
	cont := f.cont
	f.cont, f.want = n == maxPayload, 0
	switch {
	case cont:
	case f.infile:
		f.infile = n > 0
	case seq == 0:
		f.lastCmd = first
		if first == comQuit {
			f.quit.Store(true)
		}
		if first == comChangeUser && !f.cont {
			f.want = wantChangeUser
		}
	case f.lastCmd == comQuery:
		// The server asked for a local file: its contents follow.
		f.infile = n > 0
	case f.ph.expecting():
		f.want = wantReply
	}
	return f.want != 0
}

func (f *clientFilter) packet(seq byte, payload []byte) ([]byte, bool, error) {
	switch f.want {
	case wantChangeUser:
		if rewritten, ok := rewriteChangeUser(payload, f.ph.charset); ok {
			f.ph.startChangeUser()
			return appendPacket(nil, seq, rewritten), false, nil
		}
	case wantReply:
		req, err := f.ph.takePassword(payload)
		if err != nil {
			return nil, false, err
		}
		if req != 0 {
			return appendPacket(nil, seq, []byte{req}), false, nil
		}
	}
	return appendPacket(nil, seq, payload), false, nil
}

// backendFilter follows the backend's packets and takes those of a
// COM_CHANGE_USER exchange whole.
type backendFilter struct {
	ph   *commandPhase
	cont bool
}

func (f *backendFilter) header(n int, seq byte, first int) bool {
	cont := f.cont
	f.cont = n == maxPayload
	return !cont && f.ph.inChangeUser()
}

func (f *backendFilter) packet(seq byte, payload []byte) ([]byte, bool, error) {
	return f.ph.backendPacket(seq, payload)
}

// rewriteChangeUser returns COM_CHANGE_USER b naming the plugin
// leproxy_auth_relay with no authentication data, so that the backend
// answers with an AuthSwitchRequest; false when b is malformed. The
// database, character set and connection attributes stay.
func rewriteChangeUser(b []byte, charset byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != comChangeUser {
		return nil, false
	}
	user, rest, ok := readNulString(b[1:])
	if !ok || len(rest) == 0 || int(rest[0]) > len(rest)-1 {
		return nil, false
	}
	db, rest, ok := readNulString(rest[1+int(rest[0]):])
	if !ok {
		return nil, false
	}
	cs, attrs := []byte{charset, 0}, []byte(nil)
	if len(rest) >= 2 {
		cs, rest = rest[:2], rest[2:]
		if len(rest) > 0 {
			if _, attrs, ok = readNulString(rest); !ok {
				return nil, false
			}
		}
	}
	out := append([]byte{comChangeUser}, user...)
	out = append(out, 0, 0) // no authentication data
	out = append(out, db...)
	out = append(out, 0)
	out = append(out, cs...)
	out = append(out, switchPlugin...)
	out = append(out, 0)
	return append(out, attrs...), true
}

func (ph *commandPhase) startChangeUser() {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	ph.changing, ph.plugin, ph.nonce, ph.expect, ph.shift = true, "", nil, 0, 0
	clear(ph.password)
	ph.password = nil
}

func (ph *commandPhase) inChangeUser() bool {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.changing
}

func (ph *commandPhase) expecting() bool {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.changing && ph.expect != 0
}

// takePassword looks at the client's answer where a cleartext password
// may come. It returns the key request to send in its place when it took
// the password, or 0 for an answer to pass on (a key request, an empty
// password).
func (ph *commandPhase) takePassword(payload []byte) (byte, error) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	req := ph.expect
	ph.expect = 0
	if req == 0 || isKeyRequestOrEmpty(payload, req) {
		return 0, nil
	}
	if len(payload) > maxPasswordForRSA {
		return 0, fmt.Errorf("mysql: COM_CHANGE_USER password of %d bytes", len(payload))
	}
	ph.password = append(bytes.Clone(bytes.TrimSuffix(payload, []byte{0})), 0)
	clear(payload)
	return req, nil
}

// backendPacket handles a packet of the backend's answer to
// COM_CHANGE_USER; see the package comment above.
func (ph *commandPhase) backendPacket(seq byte, payload []byte) ([]byte, bool, error) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	cseq := seq - ph.shift
	fail := func(code uint16, state, msg string) ([]byte, bool, error) {
		ph.changing = false
		return appendPacket(nil, cseq, appendERR(nil, code, state, msg)), true, nil
	}
	if len(payload) == 0 {
		return appendPacket(nil, cseq, payload), false, nil
	}
	switch payload[0] {
	case headerOK, headerERR:
		ph.changing, ph.shift = false, 0
	case headerAuthSwitch:
		sw, err := parseAuthSwitch(payload)
		if err != nil {
			break
		}
		ph.plugin, ph.nonce = sw.plugin, bytes.Clone(sw.nonce())
		if ph.intercept && cleartextPlugins[ph.plugin] {
			return fail(erNotSupportedAuth, stateConnRejected, fmt.Sprintf(cleartextRefusal, ph.route.Host, ph.plugin))
		}
		if ph.intercept && ph.plugin == pluginSHA256 {
			ph.expect = sha256RequestKey
		}
	case headerAuthMoreData:
		if ph.password != nil {
			// The key leproxy asked for: the client never sees it.
			defer func() { clear(ph.password); ph.password = nil }()
			pub, err := parsePublicKey(payload)
			if err != nil || len(ph.nonce) == 0 {
				return fail(crMalformedPacket, stateGeneral, "leproxy: invalid handshake from the backend of route "+ph.route.Host)
			}
			enc, err := encryptPassword(ph.password, ph.nonce, pub)
			if err != nil {
				return fail(crMalformedPacket, stateGeneral, "leproxy: cannot encrypt the password for the backend of route "+ph.route.Host)
			}
			if _, err := ph.backend.Write(appendPacket(nil, seq+1, enc)); err != nil {
				return nil, false, fmt.Errorf("writing to backend: %w", err)
			}
			ph.shift += 2
			return nil, false, nil
		}
		if ph.intercept && ph.plugin == pluginCachingSHA2 && len(payload) == 2 && payload[1] == cachingSHA2FullAuth {
			ph.expect = cachingSHA2RequestKey
		}
	}
	return appendPacket(nil, cseq, payload), false, nil
}
