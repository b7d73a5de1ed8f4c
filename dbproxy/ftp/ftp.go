// Package ftp is the FTP protocol of dbproxy: FTPS in front of an FTP
// server, registered as "ftp" (explicit TLS: AUTH TLS on the plaintext
// control connection, usually port 21, RFC 4217) and "ftps" (implicit TLS
// from the first byte, usually port 990).
//
// # Control connection
//
// An "ftp" listener greets the client itself (220) and, before TLS,
// answers only FEAT, NOOP, QUIT and AUTH TLS (also spelt TLS-C or SSL);
// anything else gets 530, unless the default route allows plaintext, in
// which case the session goes on in plaintext, control and data, to the
// default route. AUTH TLS is answered 234 and TLS starts; bytes pipelined
// behind the AUTH command are refused (421) before TLS. An "ftps" listener
// runs TLS at once and greets the client after the handshake. The route is
// the one for the TLS server name; leproxy then connects to the backend,
// reads its greeting and, for a route with tls, runs AUTH TLS, PBSZ 0 and
// PROT P with it. Then it relays the client's commands and the backend's
// replies line by line (each line at most 4096 bytes), answering some
// commands itself:
//
//	PBSZ           200 PBSZ=0
//	PROT P         200; PROT C 534 (data must be protected), S and E 536
//	AUTH           503 (TLS is already on)
//	CCC            534 (the control connection stays encrypted)
//	REIN           502 (it would end TLS, RFC 4217 §13)
//	PORT, EPRT,    502: active mode is not supported, so leproxy never
//	LPRT           connects out to an address a client names (no FXP bounce)
//	LPSV, SPSV     502: passive mode is PASV or EPSV (vsftpd's P@SW is not
//	               a verb: 500)
//	PASV, EPSV     see below
//
// # Data connections
//
// PASV and EPSV are asked of the backend (EPSV first, then PASV) and
// answered with a port of leproxy's: one listener per PASV or EPSV, on the
// address the client reached and a free port of the listener's
// passive_ports (default 30000-30099), owned by the session. The 227 reply
// carries passive_address when set, else that address (PASV needs IPv4;
// use EPSV on IPv6). A data connection from any address but the control
// connection's is closed and the listener waits on. leproxy dials the
// backend's data port (on the backend control connection's address; the
// address in the backend's 227 is ignored) at once, since vsftpd sends its
// 150 only once its data connection is there and some clients (lftp) start
// their data TLS only after the 150; when the client connects leproxy runs
// the client's data TLS (the client is the TLS client, RFC 4217 §7), then
// TLS to the backend's data port when the route has tls, resuming the
// backend control connection's session, and pipes the two. Data flows one
// way, so when one side's data ends the other side is closed (after its
// close_notify) and the transfer is over. EPSV naming another address
// family than the control connection's gets 522.
//
// The client's data TLS must resume the TLS session of its own control
// connection: each session's TLS config has session-ticket keys of its
// own, made at random for the session, so only a ticket issued on this
// control connection resumes, which proves the data connection comes
// from the client that logged in. With passive_resumption: prefer a data
// connection that does a full handshake is accepted too, and logged; this
// is what TLS 1.2 curl needs (curl with OpenSSL turns tickets off).
//
// After a transfer's 150 or 125, leproxy holds the backend's final reply
// until the data connection's relay has ended. A data connection that never
// came, was refused or failed gets 425 (522 when it did not resume the
// TLS session) and never the backend's 226: otherwise a refused STOR
// would report success with an empty file. ABOR during a transfer is
// passed on and the data connection closed.
//
// # Options
//
// A listener takes these keys besides the common ones (dbproxy.Optioner):
//
//	passive_ports: 30000-30099    data ports leproxy listens on (one port: "30000")
//	passive_address: 203.0.113.7  IPv4 address the 227 reply advertises (NAT)
//	passive_resumption: require   require (default) or prefer
package ftp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("ftp", func() dbproxy.Protocol { return newProtocol("ftp", false) })
	dbproxy.Register("ftps", func() dbproxy.Protocol { return newProtocol("ftps", true) })
}

// Option keys of an FTP listener.
const (
	optPorts      = "passive_ports"
	optAddress    = "passive_address"
	optResumption = "passive_resumption"
)

// DefaultPassivePorts is the data port range of a listener without
// passive_ports.
const DefaultPassivePorts = "30000-30099" // #nosec G101 -- a port range; "pass" is passive

// Protocol is FTP with explicit TLS ("ftp") or implicit TLS ("ftps").
type Protocol struct {
	name     string
	implicit bool
	opts     atomic.Pointer[options]
}

var (
	_ dbproxy.Protocol = (*Protocol)(nil)
	_ dbproxy.Optioner = (*Protocol)(nil)
	_ dbproxy.Refuser  = (*Protocol)(nil)
)

func newProtocol(name string, implicit bool) *Protocol {
	p := &Protocol{name: name, implicit: implicit}
	o, _ := parseOptions(nil)
	p.opts.Store(o)
	return p
}

// Name is "ftp" or "ftps".
func (p *Protocol) Name() string { return p.name }

// ALPN is none: FTP clients offer none.
func (p *Protocol) ALPN() []string { return nil }

// options are a listener's options, parsed.
type options struct {
	minPort, maxPort int
	public           netip.Addr // the invalid Addr: the address the client reached
	preferResume     bool       // passive_resumption: prefer
}

// OptionKeys lists passive_ports, passive_address and passive_resumption.
func (p *Protocol) OptionKeys() []string { return []string{optPorts, optAddress, optResumption} }

// CheckOption checks one option's value.
func (p *Protocol) CheckOption(key, value string) error {
	_, err := parseOptions(map[string]string{key: value})
	return err
}

// SetOptions applies a listener's options; sessions that begin later use
// them.
func (p *Protocol) SetOptions(opts map[string]string) error {
	o, err := parseOptions(opts)
	if err != nil {
		return err
	}
	p.opts.Store(o)
	return nil
}

func parseOptions(opts map[string]string) (*options, error) {
	o := &options{}
	ports := DefaultPassivePorts
	if s, ok := opts[optPorts]; ok {
		ports = s
	}
	var err error
	if o.minPort, o.maxPort, err = parsePortRange(ports); err != nil {
		return nil, err
	}
	if s, ok := opts[optAddress]; ok && s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Unmap().Is4() || ip.IsUnspecified() {
			return nil, errors.New("expected an IPv4 address (the 227 reply carries no other)")
		}
		o.public = ip.Unmap()
	}
	switch opts[optResumption] {
	case "", "require":
	case "prefer":
		o.preferResume = true
	default:
		return nil, errors.New("expected require or prefer")
	}
	return o, nil
}

// parsePortRange parses "min-max" or one port.
func parsePortRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 1 || hi > math.MaxUint16 || lo > hi {
		return 0, 0, fmt.Errorf("expected a port range like %s, or one port", DefaultPassivePorts)
	}
	return lo, hi, nil
}

// Refuse tells a client beyond MaxConns so: 421, in plaintext on "ftp"
// (a client reads the greeting before anything else), nothing on "ftps",
// where a client expects TLS first.
func (p *Protocol) Refuse(client net.Conn, reason error) {
	if !p.implicit {
		writeLine(client, "421 Too many connections, try again later")
	}
}

// Handshake serves the client's session to its end: see the package
// documentation.
func (p *Protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	sess := newSession(p, s)
	return nil, nil, sess.run(ctx, client)
}
