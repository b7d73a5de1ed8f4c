package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// The backend side of a MySQL handshake and the relay of authentication
// between client and backend; see mysql.go.

// Authentication plugins the relay knows by name.
const (
	pluginCachingSHA2 = "caching_sha2_password"
	pluginSHA256      = "sha256_password"
)

// Bytes of caching_sha2_password and sha256_password exchanges.
const (
	cachingSHA2FastAuthOK = 0x03 // AuthMoreData: the scramble matched the cache
	cachingSHA2FullAuth   = 0x04 // AuthMoreData: send the password
	cachingSHA2RequestKey = 0x02 // client: send me your RSA public key
	sha256RequestKey      = 0x01 // client, sha256_password: the same
)

// maxPasswordForRSA bounds a cleartext password leproxy takes to encrypt
// for a backend.
const maxPasswordForRSA = 1024

// cleartextRefusal is the message of the ERR packet that refuses a
// cleartext-only plugin, given the route's host and the plugin.
const cleartextRefusal = "leproxy: route %s: the backend asks for authentication plugin %s, which sends the password in cleartext, and the link to the backend is not encrypted; set tls: verify on the route"

// cleartextPlugins send the user's password as it is. leproxy refuses
// them when the client has TLS and the backend link has not.
var cleartextPlugins = map[string]bool{
	"mysql_clear_password": true,
	"dialog":               true, // MariaDB's PAM plugin asks and is answered in cleartext
}

// backendError is an ERR packet from the backend, which the client gets
// verbatim (with its own sequence id).
type backendError struct {
	payload []byte
	code    uint16
	state   string
	msg     string
}

func (e *backendError) Error() string {
	return fmt.Sprintf("backend refused the session: error %d (%s): %s", e.code, e.state, e.msg)
}

func newBackendError(pkt []byte) *backendError {
	code, state, msg, _ := parseERR(pkt)
	return &backendError{payload: pkt, code: code, state: state, msg: msg}
}

// backendSide is the backend side of one MySQL handshake.
type backendSide struct {
	conn  net.Conn // as dialled, or TLS over it
	tls   bool
	seq   byte // sequence id of the next packet to the backend
	route *dbproxy.Route
}

// lost is the error for a backend that went away.
func (b *backendSide) lost(err error) *proxyError {
	return &proxyError{code: crServerLost, state: stateGeneral,
		msg: "leproxy: lost the connection to the backend of route " + b.route.Host + " during authentication", err: err}
}

// invalid is the error for a backend that broke the protocol.
func (b *backendSide) invalid(err error) *proxyError {
	return &proxyError{code: crMalformedPacket, state: stateGeneral,
		msg: "leproxy: invalid handshake from the backend of route " + b.route.Host, err: err}
}

// read reads the backend's next packet, which must have the next
// sequence id.
func (b *backendSide) read() ([]byte, error) {
	pkt, seq, err := readPacket(b.conn, maxHandshakePacket)
	switch {
	case errors.Is(err, errMalformed):
		return nil, b.invalid(err)
	case err != nil:
		return nil, b.lost(err)
	case seq != b.seq:
		return nil, b.invalid(fmt.Errorf("packet with sequence id %d, want %d", seq, b.seq))
	case len(pkt) == 0:
		return nil, b.invalid(fmt.Errorf("%w: empty packet", errMalformed))
	}
	b.seq++
	return pkt, nil
}

// write sends one packet to the backend with the next sequence id.
func (b *backendSide) write(payload []byte) error {
	err := writePacket(b.conn, b.seq, payload)
	b.seq++
	if err != nil {
		return b.lost(err)
	}
	return nil
}

// connectBackend dials r's backend, reads its greeting, starts TLS when
// the route says so and sends the HandshakeResponse41 that makes the
// backend ask the client for authentication itself.
func (p *protocol) connectBackend(ctx context.Context, s *dbproxy.Session, r *dbproxy.Route, resp *handshakeResponse) (*backendSide, error) {
	conn, err := s.Dial(ctx, r)
	if err != nil {
		return nil, &proxyError{code: crConnHostError, state: stateGeneral,
			msg: "leproxy: backend for route " + r.Host + " unavailable", err: err}
	}
	b := &backendSide{conn: conn, route: r}
	pkt, err := b.read()
	if err != nil {
		return nil, err
	}
	if pkt[0] == headerERR {
		// Too many connections, host blocked…: the backend's own words.
		return nil, newBackendError(pkt)
	}
	g, err := parseGreeting(pkt)
	if err != nil {
		return nil, b.invalid(err)
	}
	p.learn(r, &serverInfo{version: g.version, charset: g.charset})

	if missing := requiredCaps &^ g.caps; missing != 0 {
		return nil, b.invalid(fmt.Errorf("backend lacks capabilities %#x (protocol 4.1 with pluggable authentication)", missing))
	}
	need := resp.caps & mustMatchCaps
	if resp.database != "" {
		need |= capConnectWithDB
	}
	if missing := need &^ g.caps; missing != 0 {
		return nil, &proxyError{code: crMalformedPacket, state: stateGeneral,
			msg: fmt.Sprintf("leproxy: the backend of route %s lacks capabilities %#x that the client uses", r.Host, missing)}
	}
	out := &handshakeResponse{
		// CLIENT_LONG_PASSWORD is CLIENT_MYSQL to MariaDB: no extended
		// capabilities, which the client was not offered.
		caps:      resp.caps&offeredCaps&g.caps&^capSSL | capLongPassword | requiredCaps,
		maxPacket: resp.maxPacket,
		charset:   resp.charset,
		user:      resp.user,
		database:  resp.database,
		plugin:    switchPlugin,
		attrs:     resp.attrs,
	}
	if r.TLS.Enabled() {
		if g.caps&capSSL == 0 {
			return nil, &proxyError{code: crSSLConnectionError, state: stateGeneral,
				msg: "leproxy: the backend of route " + r.Host + " does not support TLS"}
		}
		out.caps |= capSSL
		if err := b.write(out.appendSSLRequest(nil)); err != nil {
			return nil, err
		}
		tc, err := s.StartBackendTLS(ctx, b.conn, r)
		if err != nil {
			return nil, &proxyError{code: crSSLConnectionError, state: stateGeneral,
				msg: "leproxy: TLS with the backend of route " + r.Host + " failed", err: err}
		}
		b.conn, b.tls = tc, true
	}
	if err := b.write(out.append(nil)); err != nil {
		return nil, err
	}
	return b, nil
}

// relayAuth relays authentication packets between the client and the
// backend until the backend's OK, which it forwards, or ERR, which goes
// to the client and ends the session. Sequence ids are each side's own.
// Errors are reported to the client.
func relayAuth(h *clientSide, b *backendSide, r *dbproxy.Route) error {
	return relayAuthThen(h, b, r, nil)
}

// relayAuthThen is relayAuth calling failed, when set, with the error
// before the client is told it: a client that retries at once then finds
// what failed recorded (a refused password counted by the Server).
func relayAuthThen(h *clientSide, b *backendSide, r *dbproxy.Route, failed func(error)) error {
	a := &authRelay{h: h, b: b, route: r}
	err := a.run()
	if err != nil && failed != nil {
		failed(err)
	}
	return h.tell(err)
}

// authRelay is the state of one authentication relay.
type authRelay struct {
	h      *clientSide
	b      *backendSide
	route  *dbproxy.Route
	plugin string // the plugin of the backend's last AuthSwitchRequest
	nonce  []byte // and its nonce
}

// secureOnlyToClient reports whether the client's link is encrypted and
// the backend's is not: the client may then send secrets in cleartext
// that must not go on as they are.
func (a *authRelay) secureOnlyToClient() bool {
	return a.h.tls != nil && !a.b.tls
}

func (a *authRelay) run() error {
	for {
		pkt, err := a.b.read()
		if err != nil {
			return err
		}
		switch pkt[0] {
		case headerOK:
			return a.h.write(pkt)
		case headerERR:
			return newBackendError(pkt)
		case headerAuthSwitch:
			sw, err := parseAuthSwitch(pkt)
			if err != nil {
				return a.b.invalid(err)
			}
			a.plugin, a.nonce = sw.plugin, sw.nonce()
			if a.secureOnlyToClient() && cleartextPlugins[a.plugin] {
				return &proxyError{code: erNotSupportedAuth, state: stateConnRejected,
					msg: fmt.Sprintf(cleartextRefusal, a.route.Host, a.plugin)}
			}
			if err := a.exchange(pkt, a.plugin == pluginSHA256, sha256RequestKey); err != nil {
				return err
			}
		case headerAuthMoreData:
			if a.plugin == pluginCachingSHA2 && len(pkt) == 2 && pkt[1] == cachingSHA2FastAuthOK {
				// The backend's OK follows; the client says nothing.
				if err := a.h.write(pkt); err != nil {
					return err
				}
				continue
			}
			full := a.plugin == pluginCachingSHA2 && len(pkt) == 2 && pkt[1] == cachingSHA2FullAuth
			if err := a.exchange(pkt, full, cachingSHA2RequestKey); err != nil {
				return err
			}
		default:
			return a.b.invalid(fmt.Errorf("%w: packet type %#02x during authentication", errMalformed, pkt[0]))
		}
	}
}

// exchange forwards a backend packet to the client and the client's answer
// to the backend. When cleartext says the answer may be the password in
// cleartext (caching_sha2_password full authentication, sha256_password)
// and only the client's link is encrypted, the password goes to the
// backend RSA-encrypted instead, after a key request with requestKey.
func (a *authRelay) exchange(pkt []byte, cleartext bool, requestKey byte) error {
	if err := a.h.write(pkt); err != nil {
		return err
	}
	reply, err := a.h.read()
	if err != nil {
		return err
	}
	if cleartext && a.secureOnlyToClient() && !isKeyRequestOrEmpty(reply, requestKey) {
		return a.sendEncrypted(reply, requestKey)
	}
	return a.b.write(reply)
}

// isKeyRequestOrEmpty reports whether a client's answer is a public
// key request (a client doing RSA itself) or an empty password: nothing
// secret, passed on as it is.
func isKeyRequestOrEmpty(reply []byte, requestKey byte) bool {
	return len(reply) == 0 || len(reply) == 1 && (reply[0] == requestKey || reply[0] == 0)
}

// sendEncrypted sends the client's cleartext password to the backend
// encrypted with the backend's RSA public key, as MySQL clients do on an
// unencrypted link: it asks for the key with requestKey, encrypts the
// password (with its NUL) XOR the nonce with RSA-OAEP (SHA-1) and sends
// that. The backend's answer to it is relayed by the caller.
func (a *authRelay) sendEncrypted(reply []byte, requestKey byte) error {
	password := append(bytes.Clone(bytes.TrimSuffix(reply, []byte{0})), 0)
	defer clear(password)
	clear(reply)
	if len(password) > maxPasswordForRSA {
		return badHandshake("route %s: password of %d bytes", a.route.Host, len(password))
	}
	if len(a.nonce) == 0 {
		return a.b.invalid(errors.New("no nonce for RSA password encryption"))
	}
	if err := a.b.write([]byte{requestKey}); err != nil {
		return err
	}
	pkt, err := a.b.read()
	if err != nil {
		return err
	}
	if pkt[0] == headerERR {
		return newBackendError(pkt)
	}
	pub, err := parsePublicKey(pkt)
	if err != nil {
		return a.b.invalid(err)
	}
	enc, err := encryptPassword(password, a.nonce, pub)
	if err != nil {
		return &proxyError{code: crMalformedPacket, state: stateGeneral,
			msg: "leproxy: cannot encrypt the password for the backend of route " + a.route.Host, err: err}
	}
	return a.b.write(enc)
}

// parsePublicKey parses the RSA public key a server sends in answer to
// a key request: AuthMoreData (0x01) followed by a PEM "PUBLIC KEY" (PKIX)
// or "RSA PUBLIC KEY" (PKCS #1) block.
func parsePublicKey(pkt []byte) (*rsa.PublicKey, error) {
	if len(pkt) > 0 && pkt[0] == headerAuthMoreData {
		pkt = pkt[1:]
	}
	block, _ := pem.Decode(pkt)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM public key in the answer to a key request", errMalformed)
	}
	if block.Type == "RSA PUBLIC KEY" {
		return x509.ParsePKCS1PublicKey(block.Bytes)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is a %T, not RSA", key)
	}
	return pub, nil
}

// encryptPassword encrypts a NUL-terminated password for
// caching_sha2_password and sha256_password: RSA-OAEP with SHA-1 of the
// password XOR the nonce, repeated.
func encryptPassword(password, nonce []byte, pub *rsa.PublicKey) ([]byte, error) {
	x := make([]byte, len(password))
	defer clear(x)
	for i := range password {
		x[i] = password[i] ^ nonce[i%len(nonce)]
	}
	return rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, x, nil)
}
