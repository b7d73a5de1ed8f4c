package ftp

// One client's session up to the control loop: the greeting, AUTH TLS
// (or implicit TLS), the route, and the backend's greeting and TLS.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// maxPreTLSCommands bounds the commands a client may send before AUTH TLS.
const maxPreTLSCommands = 16

// greeting is leproxy's 220; it says nothing of the backend, which is not
// chosen yet when an "ftp" listener greets.
const greeting = "220 FTP service ready (leproxy)"

// features is leproxy's answer to FEAT before TLS.
var features = []string{"211-Features:", " AUTH TLS", " PBSZ", " PROT", " EPSV", " PASV", " UTF8", "211 End"}

// session is one client's FTP session.
type session struct {
	p    *Protocol
	s    *dbproxy.Session
	opts *options

	tls     bool        // the client's control connection is TLS
	tlsCfg  *tls.Config // the client side's, with this session's ticket keys
	btlsCfg *tls.Config // the backend side's, nil for a plaintext backend
	route   *dbproxy.Route

	raw     net.Conn // the client's connection as accepted
	backend net.Conn // the backend's control connection
	br      *bufio.Reader
}

func newSession(p *Protocol, s *dbproxy.Session) *session {
	return &session{p: p, s: s, opts: p.opts.Load()}
}

// sessionTLSConfig is the Server's TLS config with session tickets on,
// sealed with a key of this session's only: a data connection that resumes
// proves it comes from the client of this control connection.
func sessionTLSConfig(base *tls.Config) (*tls.Config, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("making session ticket key: %w", err)
	}
	cfg := base.Clone()
	cfg.SessionTicketsDisabled = false
	cfg.WrapSession, cfg.UnwrapSession = nil, nil
	cfg.SetSessionTicketKeys([][32]byte{key})
	return cfg, nil
}

// run serves the session from the client's first byte to its end.
func (ss *session) run(ctx context.Context, client net.Conn) error {
	ss.raw = client
	cfg, err := sessionTLSConfig(ss.s.TLSConfig())
	if err != nil {
		writeLine(client, "421 Service not available")
		return err
	}
	ss.tlsCfg = cfg
	var conn net.Conn
	if ss.p.implicit {
		tc, err := ss.s.ServerHandshakeConfig(ctx, client, cfg)
		if err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		ss.tls, conn = true, tc
	} else if conn, err = ss.explicit(ctx, client); err != nil || conn == nil {
		return err
	}
	sni := ""
	if tc, ok := conn.(*tls.Conn); ok {
		sni = tc.ConnectionState().ServerName
	}
	r, err := ss.s.Route(sni)
	if err != nil {
		writeLine(conn, "421 "+dbproxy.NoRouteMessage(sni))
		return err
	}
	ss.route = r
	if err := ss.login(ctx); err != nil {
		writeLine(conn, "421 Service not available: the backend could not be reached or refused the connection")
		return err
	}
	if ss.p.implicit {
		if err := writeLine(conn, greeting); err != nil {
			return err
		}
	}
	return ss.s.Serve(conn, ss.serve)
}

// explicit runs an "ftp" listener's exchange before TLS and returns the
// TLS connection, or the plaintext one when the default route allows
// plaintext and the client does not ask for TLS; nil, nil when the client
// quit.
func (ss *session) explicit(ctx context.Context, client net.Conn) (net.Conn, error) {
	if err := writeLine(client, greeting); err != nil {
		return nil, err
	}
	r := newReader(client)
	refused := false
	for range maxPreTLSCommands {
		line, err := readLine(r)
		if errors.Is(err, errLineTooLong) {
			writeLine(client, "500 Command line too long")
			return nil, fmt.Errorf("reading command: %w", err)
		}
		if err != nil && refused {
			ss.s.SetEnd(dbproxy.ByLeproxy, dbproxy.ReasonRefused)
			return nil, errors.New("client refused: TLS required")
		}
		if err != nil {
			return nil, fmt.Errorf("reading command: %w", err)
		}
		cmd, err := parseCommand(line)
		if err != nil {
			writeLine(client, "500 "+err.Error())
			continue
		}
		switch cmd.verb {
		case "AUTH":
			switch strings.ToUpper(cmd.arg) {
			case "TLS", "TLS-C", "SSL":
			default:
				writeLine(client, "504 Security mechanism not understood: use AUTH TLS")
				continue
			}
			pending, err := dbproxy.PendingInput(client)
			if r.Buffered() > 0 || pending || err != nil {
				writeLine(client, "421 Bytes sent after AUTH TLS before the TLS handshake are refused")
				return nil, errors.New("bytes pipelined after AUTH TLS")
			}
			if err := writeLine(client, "234 Proceed with TLS negotiation"); err != nil {
				return nil, err
			}
			tc, err := ss.s.ServerHandshakeConfig(ctx, client, ss.tlsCfg)
			if err != nil {
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			ss.tls = true
			return tc, nil
		case "FEAT":
			if err := writeLines(client, features...); err != nil {
				return nil, err
			}
		case "NOOP":
			writeLine(client, "200 NOOP ok")
		case "QUIT":
			writeLine(client, "221 Goodbye")
			ss.s.SetEnd(dbproxy.ByClient, dbproxy.ReasonClosed)
			return nil, nil
		default:
			if d := ss.s.DefaultRoute(); d != nil && d.AllowPlaintext {
				// The command goes to the backend once it is logged in.
				prefix := append([]byte(line+"\r\n"), peekBuffered(r)...)
				return dbproxy.NewPrefixConn(client, prefix), nil
			}
			writeLine(client, "530 TLS required: use AUTH TLS first")
			refused = true
		}
	}
	writeLine(client, "421 Too many commands without AUTH TLS")
	return nil, errors.New("too many commands before AUTH TLS")
}

// peekBuffered returns what r has buffered.
func peekBuffered(r *bufio.Reader) []byte {
	b, _ := r.Peek(r.Buffered())
	return append([]byte(nil), b...)
}

// login connects to the route's backend, reads its greeting and, for a TLS
// route, runs AUTH TLS, PBSZ 0 and PROT P with it. Its refusals reach the
// client later, at the greeting's place: the client is told 421.
func (ss *session) login(ctx context.Context) error {
	bc, err := ss.s.Dial(ctx, ss.route)
	if err != nil {
		return err
	}
	ss.backend, ss.br = bc, newReader(bc)
	rep, err := ss.backendGreeting()
	if err != nil {
		return fmt.Errorf("backend %s greeting: %w", ss.route.Backend, err)
	}
	if rep.code != 220 {
		ss.s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonRefused)
		return fmt.Errorf("backend %s refused the connection: %s", ss.route.Backend, rep.lines[len(rep.lines)-1])
	}
	if cfg := ss.s.BackendTLSConfig(ss.route); cfg != nil {
		cfg = cfg.Clone()
		// One session cache for the session's connections to the backend,
		// and a fixed server name, so that data connections, whose ports
		// differ, resume the control connection's session (vsftpd's
		// require_ssl_reuse).
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		ss.btlsCfg = cfg
		if rep, err := ss.backendCommand("AUTH TLS"); err != nil || rep.code != 234 {
			return backendRefused(ss.route, "AUTH TLS", rep, err)
		}
		if ss.br.Buffered() > 0 {
			return fmt.Errorf("backend %s: bytes after its 234 reply", ss.route.Backend)
		}
		tc := tls.Client(bc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			ss.s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonUnreachable)
			return fmt.Errorf("backend %s tls handshake: %w", ss.route.Backend, err)
		}
		ss.backend, ss.br = tc, newReader(tc)
		for _, c := range []string{"PBSZ 0", "PROT P"} {
			if rep, err := ss.backendCommand(c); err != nil || rep.code != 200 {
				return backendRefused(ss.route, c, rep, err)
			}
		}
	}
	return bc.SetDeadline(time.Time{})
}

// backendGreeting reads the backend's greeting, skipping a 120 ("ready in
// a moment").
func (ss *session) backendGreeting() (reply, error) {
	for {
		rep, err := readReply(ss.br, nil, true)
		if err != nil || rep.code != 120 {
			return rep, err
		}
	}
}

// backendCommand sends one command of leproxy's own to the backend and
// reads the reply.
func (ss *session) backendCommand(c string) (reply, error) {
	if err := writeLine(ss.backend, c); err != nil {
		return reply{}, err
	}
	return readReply(ss.br, nil, true)
}

func backendRefused(r *dbproxy.Route, c string, rep reply, err error) error {
	if err != nil {
		return fmt.Errorf("backend %s: %s: %w", r.Backend, c, err)
	}
	return fmt.Errorf("backend %s refused %s: %s", r.Backend, c, rep.lines[len(rep.lines)-1])
}

// writeLine writes one line and its CRLF.
func writeLine(w net.Conn, line string) error {
	_, err := w.Write([]byte(line + "\r\n"))
	return err
}

// writeLines writes lines, each with its CRLF, in one write.
func writeLines(w net.Conn, lines ...string) error {
	_, err := w.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
	return err
}
