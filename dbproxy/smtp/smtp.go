// Package smtp is dbproxy's SMTP: "smtp", for submission and relay ports
// (25, 587) with STARTTLS (RFC 3207), and "smtps", for implicit TLS on
// port 465 (RFC 8314).
//
// On an smtp listener the server speaks first, before the client has said
// which host it wants. So leproxy greets the client itself, with the name
// of the listener's default route (the first route when there is no
// default), and answers its EHLO with a list of its own that offers
// STARTTLS. The client's STARTTLS is answered 220 and TLS begins; bytes the
// client pipelined behind STARTTLS were sent in plaintext, possibly by a
// man in the middle (CVE-2011-0411), and the session is refused with a 421
// rather than have them taken for part of the encrypted stream. After TLS
// the client must say EHLO again (RFC 3207 §4.2). leproxy routes by the
// TLS server name, connects the route's backend, consumes its greeting,
// upgrades the backend link with STARTTLS when the route says tls: verify
// or insecure, and sends it the client's EHLO. The backend's reply goes to
// the client, STARTTLS struck from it, so that the client sees the
// backend's real extensions (AUTH among them), and from there on the
// session is piped.
//
// Before TLS, commands other than EHLO, HELO, STARTTLS, NOOP, RSET and
// QUIT are answered "530 5.7.0 Must issue a STARTTLS command first",
// unless the default route says plaintext: allow: then the backend is
// connected as after TLS, the client's EHLO replayed to it (its reply
// discarded: the client has had leproxy's), the command passed on and the
// session piped in plaintext.
//
// The EHLO list before TLS offers, beside STARTTLS, the SIZE, 8BITMIME and
// PIPELINING extensions that the default route's backend offered in its
// last EHLO reply through leproxy, and none of them until a session has
// reached that backend: before TLS they serve only a plaintext session
// (RFC 3207 makes the client forget them once TLS is up), and a client
// must not be told of an extension that the backend may refuse.
//
// On an smtps listener TLS starts at the first byte. leproxy routes by the
// server name, greets the client with the route's name and carries on as
// after STARTTLS: the client's EHLO goes to the backend, connected in
// plaintext or, with tls: verify or insecure, with TLS from the first byte
// (a backend on its own port 465).
//
// Refusals are SMTP replies before the close:
//
//	421 4.7.0  too many connections (Config.MaxConns); commands pipelined
//	           behind STARTTLS; no route for the client's server name
//	421 4.4.1  the route's backend is down, or its TLS failed
//	421 4.3.0  the backend refused the session (its greeting was not 220)
//	           or broke the protocol
//	530 5.7.0  a command that needs TLS before STARTTLS
//	554 5.7.0  a plaintext client on an smtps port
//	500 5.5.2  a line too long, or too many commands before TLS
package smtp

import (
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("smtp", func() dbproxy.Protocol { return &protocol{name: "smtp"} })
	dbproxy.Register("smtps", func() dbproxy.Protocol { return &protocol{name: "smtps", implicit: true} })
}

// protocol is the SMTP Protocol: "smtp" with STARTTLS, "smtps" with
// implicit TLS. One value serves one Server and remembers, for each
// route, the extensions its backend last offered, for the EHLO list
// before TLS.
type protocol struct {
	name     string
	implicit bool // smtps: TLS from the first byte

	mu sync.Mutex
	// exts has an entry for each route of the table RoutesChanged last
	// gave, by host.
	exts map[string]routeExts
}

// routeExts is what leproxy knows of one route's backend.
type routeExts struct {
	backend string   // the route's backend address
	offered []string // EHLO lines to offer before TLS; nil until reached
}

var (
	_ dbproxy.Protocol      = (*protocol)(nil)
	_ dbproxy.Refuser       = (*protocol)(nil)
	_ dbproxy.RoutesWatcher = (*protocol)(nil)
)

// Name implements dbproxy.Protocol.
func (p *protocol) Name() string { return p.name }

// ALPN implements dbproxy.Protocol: SMTP has no ALPN identifier.
func (*protocol) ALPN() []string { return nil }

// Refuse implements dbproxy.Refuser: a 421 in place of the greeting.
func (*protocol) Refuse(client net.Conn, reason error) {
	msg := "leproxy: " + reason.Error()
	if errors.Is(reason, dbproxy.ErrTooManyConnections) {
		msg = "leproxy: too many connections, try again later"
	}
	client.Write(replyBytes(421, "4.7.0 "+msg))
}

// RoutesChanged implements dbproxy.RoutesWatcher: what was learnt of a
// route's backend stays while the route keeps its host and backend.
func (p *protocol) RoutesChanged(routes []dbproxy.Route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	exts := make(map[string]routeExts, len(routes))
	for _, r := range routes {
		e := routeExts{backend: r.Backend}
		if old, ok := p.exts[r.Host]; ok && old.backend == r.Backend {
			e.offered = old.offered
		}
		exts[r.Host] = e
	}
	p.exts = exts
}

// preTLSExtensions are the extensions the EHLO list before TLS offers when
// the backend does.
var preTLSExtensions = []string{"PIPELINING", "SIZE", "8BITMIME"}

// learn records the extensions of preTLSExtensions that r's backend
// offered in its EHLO reply rp.
func (p *protocol) learn(r *dbproxy.Route, rp *reply) {
	kw := rp.keywords()
	offered := []string{}
	for _, ext := range preTLSExtensions {
		if v, ok := kw[ext]; ok {
			offered = append(offered, strings.TrimSpace(ext+" "+v))
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.exts[r.Host]; ok && e.backend == r.Backend {
		e.offered = offered
		p.exts[r.Host] = e
	}
}

// greetingRoute is the route whose name leproxy greets with before the
// client's server name is known: the default, or the first route.
func greetingRoute(s *dbproxy.Session) *dbproxy.Route {
	if r := s.DefaultRoute(); r != nil {
		return r
	}
	return &s.Routes()[0] // a Server has a route at least
}

// ehloReply is leproxy's own reply to EHLO before TLS.
func (p *protocol) ehloReply(s *dbproxy.Session) *reply {
	r := greetingRoute(s)
	p.mu.Lock()
	e, ok := p.exts[r.Host]
	p.mu.Unlock()
	rp := &reply{code: 250, lines: []string{r.Host}}
	if ok && e.backend == r.Backend {
		rp.lines = append(rp.lines, e.offered...)
	}
	rp.lines = append(rp.lines, "STARTTLS")
	return rp
}

// replyBytes is a one-line reply.
func replyBytes(code int, text string) []byte {
	return (&reply{code: code, lines: []string{text}}).bytes()
}
