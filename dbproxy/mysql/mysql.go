// Package mysql is dbproxy's MySQL and MariaDB protocol ("mysql", alias
// "mariadb"). The server speaks first, before the client has said which
// host it wants, and the password exchange is bound to the server's nonce.
// So leproxy greets the client itself (Initial Handshake v10 with
// CLIENT_SSL), answers the client's SSLRequest with TLS (certificate and
// route by SNI, or the default), reads the HandshakeResponse41 and only
// then dials the route's backend (plainly, or with its own SSLRequest and
// TLS when the route says tls: verify or insecure). It sends the backend a
// HandshakeResponse41 with the client's user, database, connection
// attributes and capabilities but naming an authentication plugin no
// server has ("leproxy_auth_relay") and no data, so that the backend
// answers with an AuthSwitchRequest carrying its own nonce and the user's
// real plugin. That request goes to the client, and from there on
// authentication packets are relayed both ways, sequence ids rewritten for
// each side, until the backend's OK or ERR: the backend checks the
// password, never leproxy. mysql_native_password, MariaDB's
// client_ed25519, caching_sha2_password and sha256_password all pass; the
// client's answer to leproxy's own nonce is discarded.
//
// A client on TLS believes its link secure and answers caching_sha2_password
// full authentication (and sha256_password) with its password in
// cleartext. When the link to the backend is plain, leproxy does not pass
// that on: it fetches the backend's RSA public key and sends the password
// encrypted with it, as a client on a plain link does. Plugins that only
// ever send a cleartext password (mysql_clear_password, MariaDB's dialog
// for PAM) are refused on such routes before the client sends anything.
//
// The client is offered the capabilities leproxy can relay: protocol 4.1,
// pluggable authentication, connection attributes, connect-with-database,
// multi-statements and multi-results, LOAD DATA LOCAL, session tracking
// and deprecated EOF. Compression (CLIENT_COMPRESS, zstd) is not offered,
// nor are MariaDB's extended capabilities or MySQL's query attributes and
// optional metadata. A capability the client takes that changes the wire
// format (deprecated EOF, session tracking) must be the backend's too, or
// the session is refused. After authentication packets are relayed as
// they are (multi-statements, LOAD DATA LOCAL, COM_RESET_CONNECTION…),
// except COM_CHANGE_USER, which authenticates again: see cmd.go.
// (libmariadb answers COM_CHANGE_USER to a mysql_native_password account
// with the nonce of its last mysql_native_password exchange whatever the
// server asks; after a login with another plugin that nonce is leproxy's,
// and the change is refused.) The command phase is relayed by packet
// streams rather than spliced, even between plain connections.
//
// The greeting announces a server version and character set, which
// clients adapt their behaviour to (MySQL's or MariaDB's version). It is
// sent before TLS, so before the client's server name says which route it
// wants: leproxy announces those of the listener's default route (the
// first route when there is no default), as that route's backend's own
// greeting last gave them, and "5.5.5-10.11.0-MariaDB-leproxy" with
// utf8mb4_general_ci until leproxy has reached that backend once. A
// backend reached through another route never changes the greeting. What
// leproxy learnt of a route is forgotten when a reload removes the route
// or points it at another backend. The greeting's connection id is 0: the
// id of the backend session is not known yet, so clients that KILL by the
// greeting's id (the mariadb client's Ctrl-C) are refused harmlessly
// rather than killing someone else's query.
//
// Errors leproxy reports, as ERR packets before it closes the connection:
//
//	1040 08004  too many connections (Config.MaxConns)
//	1043 08S01  malformed packet, a second SSLRequest, a client taking
//	            compression or another capability it was not offered
//	1130 HY000  no route for the client's server name
//	1156 08S01  packets out of order
//	1251 08004  a client without pluggable authentication, or a cleartext
//	            plugin on a plain backend link
//	3159 HY000  the client did not ask for TLS and the default route does
//	            not allow plaintext ("TLS is required for db.example.com")
//	2003 HY000  the route's backend is down
//	2013 HY000  the backend went away during authentication
//	2026 HY000  TLS with the backend failed or the backend has none
//	2027 HY000  the backend sent a malformed packet, or lacks a capability
//
// Errors of the backend itself (access denied, unknown database) reach the
// client verbatim.
package mysql

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("mysql", func() dbproxy.Protocol { return new(protocol) }, "mariadb")
}

const (
	// switchPlugin is the authentication plugin leproxy names to the
	// backend: no server knows it, so every server answers with an
	// AuthSwitchRequest for the user's own plugin.
	switchPlugin = "leproxy_auth_relay"
	// greetingPlugin is the plugin of leproxy's own greeting; the
	// client's answer to it is discarded.
	greetingPlugin = "mysql_native_password"
	// fallbackVersion is the version leproxy announces until the
	// backend of the greeting's route has been reached.
	fallbackVersion = "5.5.5-10.11.0-MariaDB-leproxy"
	// fallbackCharset is utf8mb4_general_ci.
	fallbackCharset = 45
)

// Capabilities offered to clients and how they are passed to backends.
const (
	// offeredCaps are the capabilities leproxy's greeting offers: those it
	// can relay. CLIENT_LONG_PASSWORD (CLIENT_MYSQL to MariaDB clients)
	// keeps MariaDB's extended capabilities out of the session.
	offeredCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB |
		capLocalFiles | capIgnoreSpace | capProtocol41 | capInteractive | capSSL |
		capIgnoreSigpipe | capTransactions | capReserved | capSecureConnection |
		capMultiStatements | capMultiResults | capPSMultiResults | capPluginAuth |
		capConnectAttrs | capPluginAuthLenencData | capCanHandleExpiredPasswords |
		capSessionTrack | capDeprecateEOF
	// requiredCaps are the capabilities a client and a backend must have.
	requiredCaps = capProtocol41 | capSecureConnection | capPluginAuth
	// mustMatchCaps are capabilities that change the wire format after
	// authentication: one the client takes must be the backend's too.
	mustMatchCaps = capDeprecateEOF | capSessionTrack
	// refusedCaps are wire-format capabilities leproxy does not offer; a
	// client that takes one anyway is refused.
	refusedCaps = capCompress | capZstdCompression | capOptionalResultsetMetadata |
		capQueryAttributes | capMultiFactorAuth
)

// protocol is the MySQL Protocol ("mysql", alias "mariadb"). One value
// serves one Server and remembers, for each of its routes, what the
// route's backend said of itself, for the greeting.
type protocol struct {
	mu sync.Mutex
	// servers has an entry for each route of the route table
	// RoutesChanged last gave, by host.
	servers map[string]routeServer
}

// routeServer is what leproxy knows of one route's backend.
type routeServer struct {
	backend string      // the route's backend address
	info    *serverInfo // nil until the backend has been reached
}

// serverInfo is what the greeting of a backend said about it.
type serverInfo struct {
	version string
	charset byte
}

var (
	_ dbproxy.Protocol      = (*protocol)(nil)
	_ dbproxy.Refuser       = (*protocol)(nil)
	_ dbproxy.RoutesWatcher = (*protocol)(nil)
)

func (*protocol) Name() string   { return "mysql" }
func (*protocol) ALPN() []string { return nil }

// Refuse sends the ERR packet MySQL sends in place of its greeting when it
// is full.
func (*protocol) Refuse(client net.Conn, reason error) {
	code, state, msg := uint16(erHandshake), stateCommLinkFailure, "leproxy: "+reason.Error()
	if errors.Is(reason, dbproxy.ErrTooManyConnections) {
		code, state, msg = erConCount, stateConnRejected, tooManyConnsText
	}
	writePacket(client, 0, appendERR(nil, code, state, msg))
}

// RoutesChanged implements dbproxy.RoutesWatcher: what was learnt of a
// route's backend stays while the route keeps its host and backend, and is
// forgotten otherwise.
func (p *protocol) RoutesChanged(routes []dbproxy.Route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	servers := make(map[string]routeServer, len(routes))
	for _, r := range routes {
		rs := routeServer{backend: r.Backend}
		if old, ok := p.servers[r.Host]; ok && old.backend == r.Backend {
			rs.info = old.info
		}
		servers[r.Host] = rs
	}
	p.servers = servers
}

// learn records what r's backend said of itself in its greeting. A
// session routed before a reload that removed r, or pointed it elsewhere,
// teaches nothing; nor does one routed by a new route in the moment before
// RoutesChanged hears of it (the next session of the route does).
func (p *protocol) learn(r *dbproxy.Route, info *serverInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rs, ok := p.servers[r.Host]; ok && rs.backend == r.Backend {
		rs.info = info
		p.servers[r.Host] = rs
	}
}

// greetingServer returns what the greeting announces: what the backend of
// the default route (of the first route without a default) said of
// itself, the fallback until it has been reached.
func (p *protocol) greetingServer(s *dbproxy.Session) serverInfo {
	r := s.DefaultRoute()
	if r == nil {
		r = &s.Routes()[0] // a Server has a route at least
	}
	p.mu.Lock()
	rs, ok := p.servers[r.Host]
	p.mu.Unlock()
	// Until RoutesChanged hears of a reload, the entry may still be of
	// the route's former backend.
	if !ok || rs.info == nil || rs.backend != r.Backend {
		return serverInfo{version: fallbackVersion, charset: fallbackCharset}
	}
	return *rs.info
}

// Handshake implements dbproxy.Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	h := &clientSide{raw: client, conn: client}
	first, err := h.negotiate(ctx, p, s)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	r, err := h.route(s)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	resp, err := h.checkResponse(first, r)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	s.Logger = s.Logger.With("user", resp.user, "database", resp.database)

	bk, err := p.connectBackend(ctx, s, r, resp)
	if err != nil {
		markBackendRefusal(s, err)
		return nil, nil, h.tell(err)
	}
	if err := relayAuthThen(h, bk, r, func(err error) { markBackendRefusal(s, err) }); err != nil {
		return nil, nil, err
	}
	c, b := commandConns(h.conn, bk.conn, r, resp.charset, h.tls != nil && !bk.tls)
	return c, b, nil
}

// clientSide is the client side of one MySQL handshake.
type clientSide struct {
	raw  net.Conn  // as accepted
	conn net.Conn  // raw, or TLS over it
	tls  *tls.Conn // nil until TLS is up
	seq  byte      // sequence id of the next packet to the client
}

// read reads the client's next packet, which must have the next sequence
// id, and makes the id after it the next one to send.
func (h *clientSide) read() ([]byte, error) {
	want := h.seq
	pkt, seq, err := readPacket(h.conn, maxHandshakePacket)
	// An answer, ERR included, follows the packet it answers, even one
	// out of order.
	h.seq = seq + 1
	if err != nil {
		if errors.Is(err, errMalformed) {
			return nil, badHandshake("%v", err)
		}
		return nil, fmt.Errorf("reading from client: %w", err)
	}
	if seq != want {
		return nil, &proxyError{code: erPacketsOutOfOrder, state: stateCommLinkFailure,
			msg: fmt.Sprintf("leproxy: got packets out of order (sequence id %d, want %d)", seq, want)}
	}
	return pkt, nil
}

// write sends one packet to the client with the next sequence id.
func (h *clientSide) write(payload []byte) error {
	err := writePacket(h.conn, h.seq, payload)
	h.seq++
	if err != nil {
		return fmt.Errorf("writing to client: %w", err)
	}
	return nil
}

// markBackendRefusal records, for the session-end line, that the backend
// ended the session when err is its own ERR packet (a refused login, too
// many connections), and tells the core of a refused password (ERR 1045).
func markBackendRefusal(s *dbproxy.Session, err error) {
	if be, ok := errors.AsType[*backendError](err); ok {
		s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonRefused)
		if be.code == erAccessDenied {
			s.AuthFailed()
		}
	}
}

// tell sends err to the client as an ERR packet when it is a *proxyError,
// or the backend's own ERR packet when it is a *backendError, and
// returns err.
func (h *clientSide) tell(err error) error {
	if pe, ok := errors.AsType[*proxyError](err); ok {
		writePacket(h.conn, h.seq, appendERR(nil, pe.code, pe.state, pe.msg))
	} else if be, ok := errors.AsType[*backendError](err); ok {
		writePacket(h.conn, h.seq, be.payload)
	}
	return err
}

// makeGreeting returns leproxy's greeting with a fresh nonce.
func (p *protocol) makeGreeting(s *dbproxy.Session) (*greeting, error) {
	info := p.greetingServer(s)
	nonce := make([]byte, scrambleLen)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	// Printable bytes without NUL, as servers make them: some clients
	// treat the scramble as a C string.
	for i := range nonce {
		nonce[i] = nonce[i]%94 + 33
	}
	return &greeting{
		version:  info.version,
		caps:     offeredCaps,
		charset:  info.charset,
		status:   statusAutocommit,
		authData: nonce,
		plugin:   greetingPlugin,
	}, nil
}

// negotiate greets the client, runs TLS if it asks for it and returns its
// HandshakeResponse41, unparsed.
func (h *clientSide) negotiate(ctx context.Context, p *protocol, s *dbproxy.Session) ([]byte, error) {
	g, err := p.makeGreeting(s)
	if err != nil {
		return nil, fmt.Errorf("making greeting: %w", err)
	}
	if err := h.write(g.append(nil)); err != nil {
		return nil, err
	}
	pkt, err := h.read()
	if err != nil {
		return nil, err
	}
	if !isSSLRequest(pkt) {
		if len(pkt) >= 4 && len(pkt) < sslRequestLen && binary.LittleEndian.Uint32(pkt)&capSSL != 0 {
			return nil, badHandshake("SSL request of %d bytes, want %d", len(pkt), sslRequestLen)
		}
		return pkt, nil
	}
	// A MySQL client starts TLS right after its SSLRequest, without an
	// answer: bytes behind it are its ClientHello. Anything else fails
	// the TLS handshake, so nothing sent in plaintext can pass for part
	// of the encrypted stream.
	tc, herr := s.ServerHandshake(ctx, h.raw)
	if herr != nil {
		return nil, fmt.Errorf("TLS handshake: %w", herr)
	}
	h.tls, h.conn = tc, tc
	if pkt, err = h.read(); err != nil {
		return nil, err
	}
	if isSSLRequest(pkt) {
		return nil, badHandshake("received more than one SSL request")
	}
	return pkt, nil
}

// route resolves the session's route: by SNI for a TLS client, the
// default route for a plaintext one, which must allow plaintext.
func (h *clientSide) route(s *dbproxy.Session) (*dbproxy.Route, error) {
	if h.tls == nil {
		r, err := s.Route("")
		if err != nil || !r.AllowPlaintext {
			msg := "leproxy: TLS is required"
			if r != nil {
				msg += " for " + r.Host
			}
			return nil, &proxyError{code: erSecureTransport, state: stateGeneral, msg: msg, err: err}
		}
		return r, nil
	}
	sni := h.tls.ConnectionState().ServerName
	r, err := s.Route(sni)
	if err != nil {
		return nil, &proxyError{code: erHostNotPrivileged, state: stateGeneral, msg: "leproxy: " + dbproxy.NoRouteMessage(sni), err: err}
	}
	return r, nil
}

// checkResponse parses the client's HandshakeResponse41 and checks that
// leproxy can relay the session it asks for.
func (h *clientSide) checkResponse(pkt []byte, r *dbproxy.Route) (*handshakeResponse, error) {
	resp, err := parseHandshakeResponse(pkt)
	if err != nil {
		return nil, badHandshake("route %s: %v", r.Host, err)
	}
	if missing := requiredCaps &^ resp.caps; missing != 0 {
		return nil, &proxyError{code: erNotSupportedAuth, state: stateConnRejected,
			msg: fmt.Sprintf("leproxy: route %s: client does not support authentication protocol requested by server (capabilities %#x missing); consider upgrading the client", r.Host, missing)}
	}
	if refused := resp.caps & refusedCaps; refused != 0 {
		return nil, badHandshake("route %s: client asked for capabilities %#x (compression or other wire formats) that leproxy does not offer", r.Host, refused)
	}
	return resp, nil
}
