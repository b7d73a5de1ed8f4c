// Package postgres is the PostgreSQL protocol of dbproxy, registered as
// "postgres" (alias "postgresql"). The client's SSLRequest (or a
// PostgreSQL 17 direct TLS ClientHello) is answered by leproxy, which
// terminates TLS, reads the StartupMessage, picks the route by SNI,
// connects to the backend (sending its own SSLRequest when the route wants
// TLS), relays authentication and hands over to the byte pump at the first
// ReadyForQuery. Cancel requests go to the backend that issued the key.
//
// Errors leproxy itself reports to clients, as ErrorResponse with severity
// FATAL:
//
//	08P01  protocol violation: malformed startup packet, bytes pipelined
//	       after SSLRequest, a second SSLRequest, direct TLS without ALPN
//	28000  the client did not ask for TLS and the default route does not
//	       allow plaintext ("TLS is required for db.example.com"); the
//	       backend offers SASL only with channel binding, or refuses a
//	       client that supports channel binding (see below)
//	08004  no route for the client's server name
//	0A000  protocol version other than 3.x
//	08001  the route's backend is down or its TLS failed
//	08006  the backend went away during startup
//	53300  too many connections (Config.MaxConns)
//
// Errors from the backend itself (authentication, unknown database) reach
// the client verbatim, but for the channel-binding refusal below.
//
// SCRAM channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point) cannot
// pass through leproxy: the client would bind to the certificate leproxy
// serves and the backend checks its own ("SCRAM channel binding check
// failed"). leproxy drops every mechanism ending in "-PLUS" from the
// backend's AuthenticationSASL, on every route, and refuses the session
// when none other is offered. A client that requires channel binding
// (channel_binding=require) then refuses to go on itself. Over a route to
// a TLS backend, PostgreSQL offered channel binding to leproxy and so
// refuses a client that says it supports binding but was not offered it
// (the gs2 flag "y", which libpq and pgx send by default over TLS): no
// rewrite helps, since the client's SCRAM proof covers that flag, so
// leproxy replaces the backend's "SCRAM channel binding negotiation error"
// with its own, which tells the client to connect with
// channel_binding=disable. Routes to plaintext backends (tls: none) do not
// have that problem: the backend offers no channel binding and accepts
// the flag "y".
package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("postgres", func() dbproxy.Protocol { return new(protocol) }, "postgresql")
}

// alpnProtocol is PostgreSQL's ALPN identifier, required of direct TLS
// clients as PostgreSQL 17 does.
const alpnProtocol = "postgresql"

// protocol is the PostgreSQL Protocol. One value serves one Server and
// keeps its sessions' cancel keys.
type protocol struct {
	cancels cancelTable
}

var (
	_ dbproxy.Protocol = (*protocol)(nil)
	_ dbproxy.Refuser  = (*protocol)(nil)
)

func (*protocol) Name() string   { return "postgres" }
func (*protocol) ALPN() []string { return []string{alpnProtocol} }

// Refuse sends the ErrorResponse PostgreSQL sends when it is full. A client
// reads it in place of its SSLRequest's answer, as it would PostgreSQL's
// own when PostgreSQL cannot start a backend.
func (*protocol) Refuse(client net.Conn, reason error) {
	code, msg := sqlstateProtocolViolation, reason.Error()
	if errors.Is(reason, dbproxy.ErrTooManyConnections) {
		code, msg = sqlstateTooManyConnections, "sorry, too many clients already"
	}
	client.Write(appendErrorResponse(nil, code, msg))
}

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	h := &frontend{raw: client, conn: client}
	pkt, err := h.negotiate(ctx, s)
	if err != nil {
		return nil, nil, h.tell(err)
	}
	if pkt.kind == pktCancel {
		p.forwardCancel(ctx, s, pkt)
		return nil, nil, nil
	}
	s.Logger = s.Logger.With("user", pkt.param("user"), "database", pkt.param("database"))

	var r *dbproxy.Route
	if h.tls == nil {
		r, err = s.Route("")
		if err != nil || !r.AllowPlaintext {
			msg := "TLS is required"
			if r != nil {
				msg += " for " + r.Host
			}
			return nil, nil, h.tell(&wireError{code: sqlstateInvalidAuthSpec, msg: msg})
		}
	} else if r, err = s.Route(h.tls.ConnectionState().ServerName); err != nil {
		msg := "no route for clients that send no server name (SNI)"
		if sni := h.tls.ConnectionState().ServerName; sni != "" {
			msg = "no route for server name " + sni
		}
		return nil, nil, h.tell(&wireError{code: sqlstateRejected, msg: msg, err: err})
	}

	b, err := p.dialBackend(ctx, s, r)
	if err != nil {
		return nil, nil, h.tell(&wireError{code: sqlstateConnectFailed,
			msg: "could not connect to the backend of " + r.Host, err: err})
	}
	if _, err := b.Write(pkt.raw); err != nil {
		return nil, nil, h.tell(&wireError{code: sqlstateConnectionFailure,
			msg: "lost the connection to the backend of " + r.Host, err: err})
	}
	key, err := relayStartupThen(h.conn, b, r.Host, func(code string) {
		if code == sqlstateInvalidPassword {
			s.AuthFailed()
		}
	})
	if err != nil {
		if _, ok := errors.AsType[*backendError](err); ok {
			// The backend refused the login (or, for channel binding,
			// leproxy said why it did).
			s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonRefused)
		}
		return nil, nil, err
	}
	if key != nil {
		s.OnEnd(p.cancels.add(*key, r))
	}
	return watchTerminate(h.conn), b, nil
}

// frontend is the client side of one handshake (a frontend, in
// PostgreSQL's words).
type frontend struct {
	raw  net.Conn  // as accepted
	conn net.Conn  // raw, or TLS over it
	tls  *tls.Conn // nil until TLS is up
}

// negotiate answers SSLRequest, GSSENCRequest and direct TLS until the
// client sends a StartupMessage or a CancelRequest, and returns that.
func (h *frontend) negotiate(ctx context.Context, s *dbproxy.Session) (*startupPacket, error) {
	var hdr [4]byte
	// The first byte tells a direct TLS ClientHello from a packet length,
	// which is below 10000 and so starts with 0.
	if _, err := io.ReadFull(h.raw, hdr[:1]); err != nil {
		return nil, fmt.Errorf("reading startup packet: %w", err)
	}
	have := 1
	// A PostgreSQL 17 client with sslnegotiation=direct starts with a
	// ClientHello.
	if hdr[0] == dbproxy.TLSRecordHandshake {
		if err := h.startTLS(ctx, dbproxy.NewPrefixConn(h.raw, []byte{hdr[0]}), s); err != nil {
			return nil, err
		}
		if h.tls.ConnectionState().NegotiatedProtocol != alpnProtocol {
			return nil, protocolViolation("direct TLS connections must negotiate the ALPN protocol %q", alpnProtocol)
		}
		have = 0
	}
	gssAsked := false
	for {
		if _, err := io.ReadFull(h.conn, hdr[have:]); err != nil {
			return nil, fmt.Errorf("reading startup packet: %w", err)
		}
		have = 0
		pkt, err := readStartupPacket(h.conn, hdr)
		if err != nil {
			return nil, err
		}
		switch pkt.kind {
		case pktSSL:
			if h.tls != nil {
				return nil, protocolViolation("received more than one SSLRequest")
			}
			pending, err := dbproxy.PendingInput(h.raw)
			if err != nil {
				return nil, fmt.Errorf("checking for data after SSLRequest: %w", err)
			}
			if pending {
				return nil, protocolViolation("received unencrypted data after SSL request")
			}
			if _, err := h.raw.Write([]byte{'S'}); err != nil {
				return nil, fmt.Errorf("answering SSLRequest: %w", err)
			}
			if err := h.startTLS(ctx, h.raw, s); err != nil {
				return nil, err
			}
		case pktGSSENC:
			// No GSSAPI encryption here; the client may go on with an
			// SSLRequest. Once, and never inside TLS.
			if h.tls != nil || gssAsked {
				return nil, protocolViolation("unexpected GSSENCRequest")
			}
			gssAsked = true
			if _, err := h.raw.Write([]byte{'N'}); err != nil {
				return nil, fmt.Errorf("answering GSSENCRequest: %w", err)
			}
		default:
			return pkt, nil
		}
	}
}

// startTLS runs the server side of the TLS handshake over conn.
func (h *frontend) startTLS(ctx context.Context, conn net.Conn, s *dbproxy.Session) error {
	tc, herr := s.ServerHandshake(ctx, conn)
	if herr != nil {
		return fmt.Errorf("TLS handshake: %w", herr)
	}
	h.tls, h.conn = tc, tc
	return nil
}

// tell sends err to the client as an ErrorResponse when it is a
// *wireError, and returns err.
func (h *frontend) tell(err error) error {
	if we, ok := errors.AsType[*wireError](err); ok {
		h.conn.Write(appendErrorResponse(nil, we.code, we.msg))
	}
	return err
}

// dialBackend connects to r's backend, over TLS after an SSLRequest when
// the route says so.
func (p *protocol) dialBackend(ctx context.Context, s *dbproxy.Session, r *dbproxy.Route) (net.Conn, error) {
	b, err := s.Dial(ctx, r)
	if err != nil {
		return nil, err
	}
	if !r.TLS.Enabled() {
		return b, nil
	}
	if _, err := b.Write(sslRequestPacket); err != nil {
		return nil, fmt.Errorf("sending SSLRequest to backend %s: %w", r.Backend, err)
	}
	// Read exactly one byte: anything after 'S' must be TLS, or the TLS
	// handshake fails on it.
	var answer [1]byte
	if _, err := io.ReadFull(b, answer[:]); err != nil {
		return nil, fmt.Errorf("reading SSLRequest answer from backend %s: %w", r.Backend, err)
	}
	if answer[0] != 'S' {
		return nil, fmt.Errorf("backend %s refused TLS (answered %q to SSLRequest)", r.Backend, answer[0])
	}
	return s.StartBackendTLS(ctx, b, r)
}

// forwardCancel sends a CancelRequest to the backend that issued its key,
// waits for the backend to close as a client would, and logs the outcome.
// A key no live session owns is dropped, as PostgreSQL drops it: the
// client learns nothing either way.
func (p *protocol) forwardCancel(ctx context.Context, s *dbproxy.Session, pkt *startupPacket) {
	r, ok := p.cancels.lookup(pkt.pid, pkt.key)
	if !ok {
		s.Logger.Info("cancel request dropped", "pid", pkt.pid, "reason", "unknown key")
		return
	}
	err := func() error {
		b, err := p.dialBackend(ctx, s, r)
		if err != nil {
			return err
		}
		defer b.Close()
		if _, err := b.Write(pkt.raw); err != nil {
			return fmt.Errorf("sending cancel request: %w", err)
		}
		_, err = io.Copy(io.Discard, io.LimitReader(b, 1<<10))
		return err
	}()
	s.Logger.Info("cancel request", "pid", pkt.pid, "route", r.Host, "backend", r.Backend, "error", err)
}

// backendError is an ErrorResponse the backend sent during startup; the
// client has it already.
type backendError struct {
	code, msg string
}

func (e *backendError) Error() string {
	return fmt.Sprintf("backend refused the session: SQLSTATE %s: %s", e.code, e.msg)
}

// startupConn is what the startup relay needs of a connection.
type startupConn interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
}

// relayStartup relays the session's startup between client and backend b
// after the StartupMessage: the backend's messages to the client, parsed,
// until the first ReadyForQuery; and, meanwhile, whatever the client sends
// to the backend, unparsed, so that authentication takes as many answers
// as its method needs (SASL, GSS…). It returns the session's cancel key
// from its BackendKeyData (nil if it sent none). When it returns neither
// connection has anything buffered that the other side has not been sent:
// bytes the backend sent behind ReadyForQuery are forwarded, and the
// client's forwarding stops between two reads. A backend ErrorResponse
// is forwarded and returned as a *backendError; a backend that goes away
// is reported to the client. When the client ends the startup first, the
// error says so; when the backend refused first, the client's end that
// follows is not the error. The backend's AuthenticationSASL loses its
// mechanisms with channel binding on the way (see the package doc).
func relayStartup(client, b startupConn, routeHost string) (*cancelKey, error) {
	return relayStartupThen(client, b, routeHost, nil)
}

// relayStartupThen is relayStartup calling refused, when set, with the
// SQLSTATE of a backend ErrorResponse before the client is sent it: a
// client that retries at once then finds the refusal recorded (a wrong
// password counted by the Server).
func relayStartupThen(client, b startupConn, routeHost string, refused func(code string)) (*cancelKey, error) {
	fwd := &clientForwarder{client: client, backend: b, done: make(chan struct{}), refused: refused}
	go fwd.run()
	key, clientFirst, err := relayBackendStartup(client, b, routeHost, fwd)
	if ferr := fwd.stop(); ferr != nil && (err == nil || clientFirst) {
		// The client went first; what the backend did next follows.
		return nil, fmt.Errorf("client ended the startup: %w", ferr)
	}
	return key, err
}

// clientForwarder copies the client's bytes to the backend during
// startup. It is stopped by a read deadline in the past, which interrupts
// a Read without losing bytes: TLS and TCP connections stay usable.
type clientForwarder struct {
	client   startupConn
	backend  io.Writer
	stopping atomic.Bool
	// ended is set when reading from the client failed (its EOF
	// included), before the backend is told.
	ended atomic.Bool
	// claimsBinding is set when the client's first message is a SCRAM
	// SASLInitialResponse with the gs2 flag "y", before it is forwarded.
	claimsBinding atomic.Bool
	// refused, if set, is told the SQLSTATE of the backend's
	// ErrorResponse before the client is (see relayStartupThen).
	refused func(code string)
	done    chan struct{}
	err     error // set before done is closed
}

func (f *clientForwarder) run() {
	defer close(f.done)
	buf := make([]byte, 4096)
	// The first bytes, until they tell whether the client claims
	// channel binding support.
	var head []byte
	looking := true
	for {
		n, err := f.client.Read(buf)
		if n > 0 {
			if looking {
				head = append(head, buf[:min(n, maxSASLInitialHead-len(head))]...)
				decided, claims := gs2ClaimsBinding(head)
				if claims {
					f.claimsBinding.Store(true)
				}
				looking = !decided && len(head) < maxSASLInitialHead
			}
			if _, werr := f.backend.Write(buf[:n]); werr != nil {
				f.err = fmt.Errorf("writing to backend: %w", werr)
				return
			}
		}
		if err != nil {
			if f.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			f.ended.Store(true)
			if err == io.EOF {
				// Pass the client's close on, so the backend ends too.
				dbproxy.CloseWrite(f.backend)
			}
			f.err = fmt.Errorf("reading from client: %w", err)
			return
		}
	}
}

// stop ends the forwarding and returns its error, nil when it was still
// running or the client had nothing more to say. Calling it again returns
// the same.
func (f *clientForwarder) stop() error {
	f.stopping.Store(true)
	f.client.SetReadDeadline(time.Unix(1, 0))
	<-f.done
	return f.err
}

// relayBackendStartup forwards the backend's startup messages to the
// client until ReadyForQuery; see relayStartup. clientFirst is false when
// err comes from the backend's side and the client had not ended the
// startup (fwd.ended) when it came.
func relayBackendStartup(client io.Writer, b io.Reader, routeHost string, fwd *clientForwarder) (key *cancelKey, clientFirst bool, err error) {
	br := bufio.NewReaderSize(b, 4096)
	cw := bufio.NewWriterSize(client, 4096)
	toClient := func(err error) (*cancelKey, bool, error) {
		return nil, true, fmt.Errorf("writing to client: %w", err)
	}
	// refuse ends the startup with leproxy's own ErrorResponse (the
	// client is gone when flushing to it fails).
	refuse := func(we *wireError) (*cancelKey, bool, error) {
		clientFirst := fwd.ended.Load()
		if ferr := cw.Flush(); ferr != nil {
			return toClient(ferr)
		}
		client.Write(appendErrorResponse(nil, we.code, we.msg))
		return nil, clientFirst, we
	}
	// lost reports a failed relay: to the client when the backend side
	// failed.
	lost := func(err error) (*cancelKey, bool, error) {
		we := &wireError{code: sqlstateConnectionFailure, msg: "lost the connection to the backend of " + routeHost, err: err}
		if _, ok := errors.AsType[*wireError](err); ok {
			we.code, we.msg = sqlstateProtocolViolation, "invalid message from the backend of "+routeHost
		}
		return refuse(we)
	}
	var (
		hdr [5]byte
		// droppedBinding: the backend offered channel binding, which the
		// client was not shown; saslContinued: the backend accepted the
		// client's first SASL message.
		droppedBinding, saslContinued bool
	)
	for {
		// The client answers authentication requests: let it see them.
		if br.Buffered() == 0 {
			if err := cw.Flush(); err != nil {
				return toClient(err)
			}
		}
		typ, n, err := readMessageHeader(br, &hdr, maxStartupBackendMessage)
		if err != nil {
			return lost(err)
		}
		if typ == 'R' && n >= 4 {
			req, err := br.Peek(4)
			if err != nil {
				return lost(err)
			}
			switch binary.BigEndian.Uint32(req) {
			case authSASLContinue:
				saslContinued = true
			case authSASL:
				if n-4 > maxAuthSASL {
					return lost(protocolViolation("invalid AuthenticationSASL length %d", n))
				}
				body := make([]byte, n)
				if _, err := io.ReadFull(br, body); err != nil {
					return lost(err)
				}
				msg, dropped, err := rewriteAuthSASL(body)
				if errors.Is(err, errOnlyChannelBinding) {
					return refuse(&wireError{code: sqlstateInvalidAuthSpec, msg: onlyChannelBindingRefusal(routeHost)})
				}
				if err != nil {
					return lost(err)
				}
				droppedBinding = droppedBinding || dropped
				cw.Write(msg)
				continue
			}
		}
		switch typ {
		case 'K':
			body := make([]byte, min(n, 4+maxCancelKey+1))
			if len(body) != n {
				return lost(protocolViolation("invalid BackendKeyData length %d", n))
			}
			if _, err := io.ReadFull(br, body); err != nil {
				return lost(err)
			}
			pid, k, err := parseBackendKeyData(body)
			if err != nil {
				return lost(err)
			}
			key = &cancelKey{pid: pid, key: string(k)}
			cw.Write(hdr[:])
			cw.Write(body)
		case 'E':
			// Whatever the client does after reading this follows it.
			clientFirst := fwd.ended.Load()
			if n > maxErrorParse {
				cw.Write(hdr[:])
				if _, err := io.CopyN(cw, br, int64(n)); err != nil {
					return lost(err)
				}
				cw.Flush()
				return nil, clientFirst, &backendError{msg: "(message too long to log)"}
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return lost(err)
			}
			code, msg := parseErrorFields(body)
			be := &backendError{code: code, msg: msg}
			if fwd.refused != nil {
				fwd.refused(code)
			}
			if droppedBinding && !saslContinued && fwd.claimsBinding.Load() &&
				(code == sqlstateInvalidAuthSpec || code == sqlstateProtocolViolation) {
				// PostgreSQL's "SCRAM channel binding negotiation
				// error" (28000) for a client-first-message with the
				// gs2 flag "y": it offered channel binding over its own
				// TLS, and the client says it supports binding but was
				// not offered it. No rewrite of the client's SCRAM
				// messages helps: its proof covers the flag (c=).
				cw.Write(appendErrorResponse(nil, sqlstateInvalidAuthSpec, channelBindingRefusal(routeHost)))
				cw.Flush()
				return nil, clientFirst, &wireError{code: sqlstateInvalidAuthSpec, msg: channelBindingRefusal(routeHost), err: be}
			}
			cw.Write(hdr[:])
			cw.Write(body)
			cw.Flush()
			return nil, clientFirst, be
		case 'Z':
			cw.Write(hdr[:])
			if _, err := io.CopyN(cw, br, int64(n)); err != nil {
				return lost(err)
			}
			if buffered := br.Buffered(); buffered > 0 {
				rest, _ := br.Peek(buffered)
				cw.Write(rest)
			}
			// The client's forwarding stops before the client can see
			// ReadyForQuery: what it sends once it has is the session's,
			// for the pump to carry and count.
			fwd.stop()
			if err := cw.Flush(); err != nil {
				return toClient(err)
			}
			return key, true, nil
		default:
			cw.Write(hdr[:])
			if _, err := io.CopyN(cw, br, int64(n)); err != nil {
				return lost(err)
			}
		}
	}
}

// onlyChannelBindingRefusal is what a client reads when the backend offers
// SASL mechanisms with channel binding only.
func onlyChannelBindingRefusal(routeHost string) string {
	return "the backend of " + routeHost + " accepts only SASL authentication with channel binding, and channel binding cannot pass through leproxy"
}

// channelBindingRefusal is what a client that supports channel binding
// reads when a TLS backend, which offered channel binding to leproxy,
// refuses it for not using it.
func channelBindingRefusal(routeHost string) string {
	return "the backend of " + routeHost + " refuses clients that support channel binding unless they use it, and channel binding cannot pass through leproxy: connect with channel_binding=disable"
}
