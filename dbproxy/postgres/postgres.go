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
//	       allow plaintext ("TLS is required for db.example.com")
//	08004  no route for the client's server name
//	0A000  protocol version other than 3.x
//	08001  the route's backend is down or its TLS failed
//	08006  the backend went away during startup
//	53300  too many connections (Config.MaxConns)
//
// Errors from the backend itself (authentication, unknown database) reach
// the client verbatim.
package postgres

import (
	"bufio"
	"context"
	"crypto/tls"
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
	key, err := relayStartup(h.conn, b, r.Host)
	if err != nil {
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
// is reported to the client.
func relayStartup(client, b startupConn, routeHost string) (*cancelKey, error) {
	fwd := &clientForwarder{client: client, backend: b, done: make(chan struct{})}
	go fwd.run()
	key, err := relayBackendStartup(client, b, routeHost)
	if ferr := fwd.stop(); ferr != nil {
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
	done     chan struct{}
	err      error // set before done is closed
}

func (f *clientForwarder) run() {
	defer close(f.done)
	buf := make([]byte, 4096)
	for {
		n, err := f.client.Read(buf)
		if n > 0 {
			if _, werr := f.backend.Write(buf[:n]); werr != nil {
				f.err = fmt.Errorf("writing to backend: %w", werr)
				return
			}
		}
		if err != nil {
			if f.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
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
// running or the client had nothing more to say.
func (f *clientForwarder) stop() error {
	f.stopping.Store(true)
	f.client.SetReadDeadline(time.Unix(1, 0))
	<-f.done
	return f.err
}

// relayBackendStartup forwards the backend's startup messages to the
// client until ReadyForQuery; see relayStartup.
func relayBackendStartup(client io.Writer, b io.Reader, routeHost string) (*cancelKey, error) {
	br := bufio.NewReaderSize(b, 4096)
	cw := bufio.NewWriterSize(client, 4096)
	// lost reports a failed relay: to the client when the backend side
	// failed (the client is gone when flushing to it fails).
	lost := func(err error) error {
		if ferr := cw.Flush(); ferr != nil {
			return fmt.Errorf("writing to client: %w", ferr)
		}
		we := &wireError{code: sqlstateConnectionFailure, msg: "lost the connection to the backend of " + routeHost, err: err}
		if _, ok := errors.AsType[*wireError](err); ok {
			we.code, we.msg = sqlstateProtocolViolation, "invalid message from the backend of "+routeHost
		}
		client.Write(appendErrorResponse(nil, we.code, we.msg))
		return we
	}
	var (
		hdr [5]byte
		key *cancelKey
	)
	for {
		// The client answers authentication requests: let it see them.
		if br.Buffered() == 0 {
			if err := cw.Flush(); err != nil {
				return nil, fmt.Errorf("writing to client: %w", err)
			}
		}
		typ, n, err := readMessageHeader(br, &hdr, maxStartupBackendMessage)
		if err != nil {
			return nil, lost(err)
		}
		cw.Write(hdr[:])
		switch typ {
		case 'K':
			body := make([]byte, min(n, 4+maxCancelKey+1))
			if len(body) != n {
				return nil, lost(protocolViolation("invalid BackendKeyData length %d", n))
			}
			if _, err := io.ReadFull(br, body); err != nil {
				return nil, lost(err)
			}
			pid, k, err := parseBackendKeyData(body)
			if err != nil {
				return nil, lost(err)
			}
			key = &cancelKey{pid: pid, key: string(k)}
			cw.Write(body)
		case 'E':
			if n > maxErrorParse {
				if _, err := io.CopyN(cw, br, int64(n)); err != nil {
					return nil, lost(err)
				}
				cw.Flush()
				return nil, &backendError{msg: "(message too long to log)"}
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return nil, lost(err)
			}
			cw.Write(body)
			cw.Flush()
			code, msg := parseErrorFields(body)
			return nil, &backendError{code: code, msg: msg}
		case 'Z':
			if _, err := io.CopyN(cw, br, int64(n)); err != nil {
				return nil, lost(err)
			}
			if buffered := br.Buffered(); buffered > 0 {
				rest, _ := br.Peek(buffered)
				cw.Write(rest)
			}
			if err := cw.Flush(); err != nil {
				return nil, fmt.Errorf("writing to client: %w", err)
			}
			return key, nil
		default:
			if _, err := io.CopyN(cw, br, int64(n)); err != nil {
				return nil, lost(err)
			}
		}
	}
}
