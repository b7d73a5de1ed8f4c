// Package mssql is the Microsoft SQL Server (TDS) protocol of dbproxy,
// registered as "mssql" (alias "sqlserver").
//
// TDS 7.x clients start with a PRELOGIN message. leproxy answers it itself
// and forces full encryption: a client that offers encryption (ON or REQ)
// is answered ON, one that has it available but off (OFF, which would
// otherwise encrypt the login packet only) is answered REQ. The TLS
// handshake then travels as the payload of PRELOGIN packets (capped at TLS
// 1.2, as FreeTDS hangs on a wrapped TLS 1.3 handshake), after which raw
// TLS records carry TDS. A client that says it cannot encrypt (NOT_SUP) is
// answered NOT_SUP, so that it sends its LOGIN7 and reads why it is
// refused, unless the default route has plaintext: allow. TDS 8.0
// ("strict") clients start TLS with their first byte (ALPN tds/8.0, TLS
// 1.3 allowed) and send their PRELOGIN inside it, which leproxy answers.
//
// The route is the TLS server name's (SNI); for clients that send none
// (FreeTDS), the LOGIN7 ServerName's when it names a route, else the
// listener's default. leproxy then sends the backend a PRELOGIN of its
// own: encryption NOT_SUP to a plain backend; ON and the TLS handshake
// wrapped the same way for tls: verify|insecure; TLS from the first byte
// (TDS 8.0) for tls: strict. It relays the client's LOGIN7 unchanged (but
// for its TDS version when one hop is 8.0 and the other 7.x), so the
// backend checks the password, and relays the backend's answer: a login
// error reaches the client as the backend sent it. Then bytes are pumped
// verbatim, so packet-size negotiation, ATTENTION (cancel),
// RESETCONNECTION and MARS work as they do on a direct connection.
//
// An ENVCHANGE routing token (type 20: Azure SQL's redirect policy, an
// availability group's read-only routing) in the login response names a
// server for the client to connect to instead. leproxy rewrites it to the
// route whose backend is that address, at this listener's port, so the
// client comes back through leproxy; an address no route has is refused
// with an error naming it, since the client would bypass leproxy.
//
// Errors leproxy reports itself are a reply with an ERROR token (class
// 20, server name "leproxy") and a DONE with its error bit, then the
// close:
//
//	40532  no route for the server name
//	40613  the route's backend is down, or its PRELOGIN or TLS failed
//	50000  state 1: TLS is required (the client asked for no encryption)
//	       state 2: malformed or unexpected packet
//	       state 3: Windows (integrated) authentication, which cannot
//	                pass through a TLS terminator
//	       state 4: a redirect to a server that is no route
//	       state 5: too many connections
package mssql

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/hostname"
)

func init() {
	dbproxy.Register("mssql", func() dbproxy.Protocol { return new(protocol) }, "sqlserver")
}

// alpnTDS8 is TDS 8.0's ALPN identifier.
const alpnTDS8 = "tds/8.0"

// protocol is the MSSQL Protocol. It keeps the two client TLS configs
// derived from the Server's.
type protocol struct {
	once       sync.Once
	tds7, tds8 *tls.Config
}

var (
	_ dbproxy.Protocol = (*protocol)(nil)
	_ dbproxy.Refuser  = (*protocol)(nil)
)

func (*protocol) Name() string { return "mssql" }

// ALPN is empty: TDS 7.x clients offer none inside their wrapped
// handshake, and the TDS 8.0 config adds tds/8.0 itself.
func (*protocol) ALPN() []string { return nil }

// Refuse answers a client over MaxConns with a TDS error, which it reads
// in place of its PRELOGIN answer.
func (*protocol) Refuse(client net.Conn, reason error) {
	msg := reason.Error()
	if errors.Is(reason, dbproxy.ErrTooManyConnections) {
		msg = "too many connections (leproxy)"
	}
	client.Write(errorReply(errRefused, 5, msg))
}

// configs returns the client TLS configs: TDS 7.x's (TLS 1.2 at most) and
// TDS 8.0's (ALPN tds/8.0).
func (p *protocol) configs(s *dbproxy.Session) (tds7, tds8 *tls.Config) {
	p.once.Do(func() {
		p.tds7 = s.TLSConfig().Clone()
		p.tds7.MaxVersion = tls.VersionTLS12 // #nosec G402 -- TDS 7.x wraps the handshake in PRELOGIN packets, where FreeTDS hangs on TLS 1.3; TLS 1.2 is the policy minimum anyway, AEAD suites only
		p.tds7.NextProtos = nil
		p.tds8 = s.TLSConfig().Clone()
		p.tds8.NextProtos = []string{alpnTDS8}
	})
	return p.tds7, p.tds8
}

// A wireError is a refusal the client is told as a TDS error.
type wireError struct {
	number uint32
	state  byte
	msg    string
	err    error
}

func (e *wireError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *wireError) Unwrap() error { return e.err }

// A backendError is the backend's refusal of the login; the client has it.
type backendError struct {
	number uint32
	msg    string
}

func (e *backendError) Error() string {
	return fmt.Sprintf("backend refused the login: error %d: %s", e.number, e.msg)
}

// frontend is the client side of one handshake.
type frontend struct {
	raw    net.Conn  // as accepted
	conn   net.Conn  // raw, or TLS over it
	tls    *tls.Conn // nil without TLS
	strict bool      // TDS 8.0
	mars   byte      // the client's PRELOGIN MARS
}

// tell sends err to the client as a TDS error when it is a *wireError,
// and returns err.
func (h *frontend) tell(err error) error {
	if we, ok := errors.AsType[*wireError](err); ok {
		h.conn.Write(errorReply(we.number, we.state, we.msg+" (leproxy)"))
	}
	return err
}

// protocolViolation is a refusal of bytes that break TDS; the client is
// told what was wrong.
func protocolViolation(err error) error {
	msg := "protocol violation: " + strings.TrimPrefix(err.Error(), errMalformed.Error()+": ")
	return &wireError{number: errRefused, state: 2, msg: msg, err: errMalformed}
}

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	h := &frontend{raw: client, conn: client}
	plaintext, err := p.negotiate(ctx, h, s)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	login, err := readMessage(h.conn, maxLoginLen)
	if err != nil {
		if errors.Is(err, errMalformed) {
			err = protocolViolation(err)
		}
		return nil, nil, h.tell(fmt.Errorf("reading LOGIN7: %w", err))
	}
	if login.typ != pktLogin7 {
		return nil, nil, h.tell(protocolViolation(fmt.Errorf("%w: packet of type 0x%02x, want LOGIN7", errMalformed, login.typ)))
	}
	if plaintext {
		if d := s.DefaultRoute(); d == nil || !d.AllowPlaintext {
			msg := "TLS is required: connect with encryption (go-mssqldb encrypt=true, FreeTDS encryption = require)"
			if d != nil {
				msg = "TLS is required for " + d.Host + ": connect with encryption (go-mssqldb encrypt=true, FreeTDS encryption = require)"
			}
			return nil, nil, h.tell(&wireError{number: errRefused, state: 1, msg: msg})
		}
	}
	l, err := parseLogin7(login.payload)
	if err != nil {
		return nil, nil, h.tell(protocolViolation(err))
	}
	s.Logger = s.Logger.With("user", l.user, "database", l.database)
	if l.integrated {
		return nil, nil, h.tell(&wireError{number: errRefused, state: 3,
			msg: "Windows authentication cannot pass through a TLS terminator: log in with a SQL Server login"})
	}
	r, err := p.route(h, s, l)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	b, backendStrict, err := p.dialBackend(ctx, s, r, h.mars)
	if err != nil {
		return nil, nil, h.tell(&wireError{number: errUnreachable, state: 1,
			msg: "could not connect to the backend of " + r.Host, err: err})
	}
	raw := login.raw
	if v := tdsVersionFor(l.tdsVersion, h.strict, backendStrict); v != l.tdsVersion {
		raw = bytes.Clone(raw)
		binary.LittleEndian.PutUint32(raw[loginTDSVersionB:], v)
	}
	if _, err := b.Write(raw); err != nil {
		return nil, nil, h.tell(&wireError{number: errUnreachable, state: 2,
			msg: "lost the connection to the backend of " + r.Host, err: err})
	}
	if err := p.relayLoginReply(h, b, s, r); err != nil {
		return nil, nil, err
	}
	return h.conn, b, nil
}

// negotiate reads the client's PRELOGIN (after TLS for TDS 8.0), answers
// it and, for TDS 7.x, runs the wrapped TLS handshake. plaintext is set
// for a client that asked for no encryption and was answered NOT_SUP.
func (p *protocol) negotiate(ctx context.Context, h *frontend, s *dbproxy.Session) (plaintext bool, err error) {
	tds7, tds8 := p.configs(s)
	var first [1]byte
	if _, err := io.ReadFull(h.raw, first[:]); err != nil {
		return false, fmt.Errorf("reading PRELOGIN: %w", err)
	}
	var r io.Reader = io.MultiReader(bytes.NewReader(first[:]), h.raw)
	if first[0] == dbproxy.TLSRecordHandshake {
		tc, err := s.ServerHandshakeConfig(ctx, dbproxy.NewPrefixConn(h.raw, first[:]), tds8)
		if err != nil {
			return false, fmt.Errorf("TLS handshake (TDS 8.0): %w", err)
		}
		h.tls, h.conn, h.strict = tc, tc, true
		r = tc
		s.AddLogAttrs("tds", "8.0")
	}
	pre, err := readMessage(r, maxPreloginLen)
	if err != nil {
		if errors.Is(err, errMalformed) {
			err = protocolViolation(err)
		}
		return false, fmt.Errorf("reading PRELOGIN: %w", err)
	}
	if pre.typ != pktPrelogin {
		return false, protocolViolation(fmt.Errorf("%w: first packet of type 0x%02x, want PRELOGIN (0x12)", errMalformed, pre.typ))
	}
	opts, err := parsePrelogin(pre.payload)
	if err != nil {
		return false, protocolViolation(err)
	}
	if m, ok := preloginValue(opts, plMARS); ok && len(m) == 1 {
		h.mars = m[0]
	}
	enc := byte(encOff)
	if e, ok := preloginValue(opts, plEncryption); ok && len(e) == 1 {
		enc = e[0]
	}
	if !h.strict {
		// The client must wait for the answer: bytes behind its PRELOGIN
		// were sent before it knew whether they would be encrypted.
		pending, err := dbproxy.PendingInput(h.raw)
		if err != nil {
			return false, fmt.Errorf("checking for data after PRELOGIN: %w", err)
		}
		if pending {
			return false, protocolViolation(errors.New("received data after PRELOGIN before its answer"))
		}
	}
	answer := byte(encOn)
	switch {
	case h.strict:
		answer = encReq // TDS 8.0 clients ignore it: TLS is up already
	case enc&^encClientCert == encNotSup:
		answer, plaintext = encNotSup, true
	case enc&^encClientCert == encOff:
		answer = encReq // never login-only encryption
	}
	reply := appendPrelogin(nil, []preloginOption{
		{plVersion, proxyVersion},
		{plEncryption, []byte{answer}},
		{plInstOpt, []byte{0}},
		{plThreadID, nil},
		{plMARS, []byte{h.mars}},
	})
	if _, err := h.conn.Write(appendPackets(nil, pktReply, reply, clientPacketLen)); err != nil {
		return false, fmt.Errorf("answering PRELOGIN: %w", err)
	}
	if h.strict || plaintext {
		if plaintext {
			s.AddLogAttrs("tds", "7.x", "encryption", "none")
		}
		return plaintext, nil
	}
	w := newWrapConn(h.raw, false, clientPacketLen)
	tc, err := s.ServerHandshakeConfig(ctx, w, tds7)
	if err != nil {
		w.flush() // the alert, if crypto/tls wrote one
		return false, fmt.Errorf("TLS handshake (TDS 7.x, inside PRELOGIN packets): %w", err)
	}
	if err := w.finish(); err != nil {
		return false, fmt.Errorf("TLS handshake (TDS 7.x): %w", err)
	}
	h.tls, h.conn = tc, tc
	s.AddLogAttrs("tds", "7.x")
	return false, nil
}

// route picks the session's route: by SNI; for a client that sent none,
// by the LOGIN7 ServerName when that names a route, else the default.
func (p *protocol) route(h *frontend, s *dbproxy.Session, l *login7) (*dbproxy.Route, error) {
	name := ""
	if h.tls != nil {
		name = h.tls.ConnectionState().ServerName
	}
	if name == "" && h.tls != nil {
		if n := hostname.Normalize(routeName(l.serverName)); n != "" {
			for _, r := range s.Routes() {
				if r.Host == n {
					name = n
					break
				}
			}
		}
	}
	r, err := s.Route(name)
	if err != nil {
		msg := "no route for clients that send no server name (SNI)"
		if name != "" {
			msg = "no route for server name " + name
		}
		return nil, &wireError{number: errNoRoute, state: 1, msg: msg, err: err}
	}
	return r, nil
}

// tdsVersionFor is the LOGIN7 TDS version to send the backend: a client's
// 8.0 becomes 7.4 toward a TDS 7.x backend, a 7.x client's becomes 8.0
// toward a strict one.
func tdsVersionFor(v uint32, clientStrict, backendStrict bool) uint32 {
	switch {
	case clientStrict && !backendStrict && v == tdsVersion80:
		return tdsVersion74
	case !clientStrict && backendStrict:
		return tdsVersion80
	}
	return v
}

// relayLoginReply reads the backend's answer to LOGIN7 and sends it to
// the client, its routing token rewritten (or refused). A login the
// backend refused is the session's error.
func (p *protocol) relayLoginReply(h *frontend, b net.Conn, s *dbproxy.Session, r *dbproxy.Route) error {
	reply, err := readMessage(b, maxLoginReply)
	if err != nil {
		return h.tell(&wireError{number: errUnreachable, state: 2,
			msg: "lost the connection to the backend of " + r.Host, err: err})
	}
	if reply.typ != pktReply {
		return h.tell(&wireError{number: errUnreachable, state: 3,
			msg: "invalid answer to the login from the backend of " + r.Host,
			err: fmt.Errorf("%w: packet of type 0x%02x", errMalformed, reply.typ)})
	}
	lr, err := scanLoginReply(reply.payload)
	if err != nil {
		return h.tell(&wireError{number: errUnreachable, state: 3,
			msg: "invalid answer to the login from the backend of " + r.Host, err: err})
	}
	out := reply.raw
	if !lr.complete {
		// A token leproxy does not know: relayed as it is, and a routing
		// token behind it would not be seen.
		s.AddLogAttrs("login_reply", "unparsed tokens")
	}
	if rt := lr.routing; rt != nil {
		target, err := p.redirect(s, rt)
		if err != nil {
			return h.tell(&wireError{number: errRefused, state: 4,
				msg: "the backend of " + r.Host + " redirects the client to a server that is not a route of this listener",
				err: fmt.Errorf("redirect to %s:%d: %w", rt.server, rt.port, err)})
		}
		payload := slicesConcat(reply.payload[:rt.start], appendEnvRouting(nil, target.host, target.port), reply.payload[rt.end:])
		out = appendPackets(nil, pktReply, payload, max(reply.maxPacket, clientPacketLen))
		s.AddLogAttrs("redirect", fmt.Sprintf("%s:%d", rt.server, rt.port), "redirect_route", target.host)
	}
	if _, err := h.conn.Write(out); err != nil {
		return fmt.Errorf("writing the login answer to the client: %w", err)
	}
	if !lr.ack && lr.errSeen {
		s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonRefused)
		return &backendError{number: lr.errNum, msg: lr.errMsg}
	}
	return nil
}

func slicesConcat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// A redirectTarget is where leproxy tells a redirected client to go.
type redirectTarget struct {
	host string
	port uint16
}

// redirect maps a routing token's server to the route whose backend it
// is, at the listener's port.
func (p *protocol) redirect(s *dbproxy.Session, rt *envRoutingToken) (redirectTarget, error) {
	port := s.ListenerPort()
	if port <= 0 || port > 0xFFFF {
		return redirectTarget{}, errors.New("the listener has no port to redirect to")
	}
	want := strings.ToLower(net.JoinHostPort(strings.TrimSuffix(rt.server, "."), strconv.Itoa(int(rt.port))))
	for _, route := range s.Routes() {
		if strings.ToLower(route.Backend) == want {
			return redirectTarget{route.Host, uint16(port)}, nil
		}
	}
	return redirectTarget{}, fmt.Errorf("no route has the backend %s", want)
}
