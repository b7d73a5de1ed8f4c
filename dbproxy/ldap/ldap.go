// Package ldap is the LDAP protocol of dbproxy, registered as "ldap"
// (alias "ldaps").
//
// A client asks for TLS with the StartTLS extended operation (RFC 4511
// section 4.14, OID 1.3.6.1.4.1.1466.20037) as its first request; leproxy
// answers it itself with a success ExtendedResponse carrying the request's
// messageID and runs the TLS handshake, which picks the certificate and
// the route by the client's server name (SNI), the listener's default for
// clients that send none. A client whose first byte is a TLS handshake
// record (0x16) speaks LDAPS, TLS from the first byte, on the same port.
// leproxy then connects the route's backend: in plaintext (tls: none), with
// a StartTLS of its own (tls: verify or insecure) or with LDAPS (tls:
// strict, TLS from the first byte, verified as verify), and pipes the
// session's bytes verbatim, so that binds, searches and their referrals
// are the backend's.
//
// leproxy reads one message before TLS, bounded, and nothing after it.
// Refusals are LDAP results: the response to the client's request, with
// its messageID, or a Notice of Disconnection (messageID 0, OID
// 1.3.6.1.4.1.1466.20036) when there is no request to answer. Then the
// connection closes.
//
//	13 confidentialityRequired  an operation other than StartTLS before
//	                            TLS, unless the default route has
//	                            plaintext: allow (then the session is
//	                            piped in plaintext to its backend)
//	 2 protocolError            bytes that are not LDAP, a malformed
//	                            StartTLS, bytes sent behind the StartTLS
//	                            request before the TLS handshake
//	52 unavailable              no route for the server name; the route's
//	                            backend is down or refused its StartTLS or
//	                            TLS handshake
//	51 busy                     too many connections (Config.MaxConns)
//
// What TLS termination costs: the backend sees leproxy's TLS, not the
// client's, so SASL EXTERNAL with a client certificate and channel-bound
// binds (Active Directory's LDAP channel binding, tls-server-end-point)
// cannot pass; referrals and search continuations name the backend's
// hosts, which clients then contact directly.
package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("ldap", func() dbproxy.Protocol { return protocol{} }, "ldaps")
}

// maxFirstMessage bounds the ExtendedRequest read before TLS to see
// whether it is StartTLS, whose own bytes are a few dozen.
const maxFirstMessage = 4 << 10

// protocol is the LDAP Protocol. It keeps no state.
type protocol struct{}

var (
	_ dbproxy.Protocol = protocol{}
	_ dbproxy.Refuser  = protocol{}
)

func (protocol) Name() string { return "ldap" }

// ALPN is empty: LDAP has no ALPN identifier and its clients send none.
func (protocol) ALPN() []string { return nil }

// Refuse tells a client over MaxConns with a Notice of Disconnection; a
// client reads it in place of the answer to its first request.
func (protocol) Refuse(client net.Conn, reason error) {
	code, msg := resultUnavailable, "leproxy: "+reason.Error()
	if errors.Is(reason, dbproxy.ErrTooManyConnections) {
		code, msg = resultBusy, "leproxy: too many connections"
	}
	client.Write(appendNotice(nil, code, msg))
}

// A refusal is an error the client is told as an LDAP result.
type refusal struct {
	code int
	msg  string // the diagnosticMessage, without "leproxy: "
	err  error  // the cause, for the log; may be nil
}

func (e *refusal) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *refusal) Unwrap() error { return e.err }

// Handshake implements Protocol.
func (protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(client, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first byte: %w", err)
	}
	raw := dbproxy.NewPrefixConn(client, first[:])
	if first[0] == dbproxy.TLSRecordHandshake {
		return overTLS(ctx, raw, s)
	}
	// From here on raw has replayed its byte: client is the stream.
	h, err := readHeader(raw)
	if err != nil {
		return nil, nil, tellNotice(client, protocolError(err))
	}
	if h.id == noticeMessageID {
		return nil, nil, tellNotice(client, protocolError(fmt.Errorf("%w: %s with messageID 0, which is for notifications", errMalformed, opName(h.op))))
	}
	// A StartTLS request is a few dozen bytes: a longer ExtendedRequest is
	// some other operation, not read here.
	if h.op == extendedRequestOpTag && h.rest <= maxFirstMessage {
		body, err := readBody(client, h, maxFirstMessage)
		if err != nil {
			return nil, nil, tell(client, h, protocolError(err))
		}
		name, hasValue, err := parseExtendedRequest(h, body)
		if err != nil {
			return nil, nil, tell(client, h, protocolError(err))
		}
		if name == oidStartTLS {
			if hasValue {
				return nil, nil, tell(client, h, &refusal{code: resultProtocolError, msg: "StartTLS request with a requestValue"})
			}
			return startTLS(ctx, client, h, s)
		}
		return plaintext(ctx, client, h, body, s, "ExtendedRequest "+dbproxy.PrintableWord([]byte(name), maxRequestNameLen))
	}
	return plaintext(ctx, client, h, nil, s, opName(h.op))
}

// startTLS answers the StartTLS request of header h on the client
// connection, runs TLS and connects the route's backend.
func startTLS(ctx context.Context, client net.Conn, h *header, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	pending, err := dbproxy.PendingInput(client)
	if err != nil {
		return nil, nil, fmt.Errorf("checking for data after StartTLS: %w", err)
	}
	if pending {
		return nil, nil, tell(client, h, &refusal{code: resultProtocolError,
			msg: "unencrypted data after the StartTLS request, before the TLS handshake"})
	}
	if _, err := client.Write(appendResult(nil, h.id, extendedResponseOpTag, resultSuccess, "", oidStartTLS)); err != nil {
		return nil, nil, fmt.Errorf("answering StartTLS: %w", err)
	}
	return overTLS(ctx, client, s)
}

// overTLS runs the TLS handshake on conn, routes by the server name and
// connects the backend. A refused client is told when it sends its next
// request.
func overTLS(ctx context.Context, conn net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	tc, err := s.ServerHandshake(ctx, conn)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	sni := tc.ConnectionState().ServerName
	r, err := s.Route(sni)
	if err != nil {
		return nil, nil, tellNext(ctx, tc, &refusal{code: resultUnavailable, msg: dbproxy.NoRouteMessage(sni), err: err})
	}
	b, err := dialBackend(ctx, s, r)
	if err != nil {
		return nil, nil, tellNext(ctx, tc, &refusal{code: resultUnavailable,
			msg: "could not connect to the backend of " + r.Host, err: err})
	}
	return tc, b, nil
}

// plaintext serves a client whose first request, of header h (and body,
// when it was read), is not StartTLS: refused, unless the default route
// allows plaintext clients.
func plaintext(ctx context.Context, client net.Conn, h *header, body []byte, s *dbproxy.Session, what string) (net.Conn, net.Conn, error) {
	r, err := s.Route("")
	if err != nil || !r.AllowPlaintext {
		msg := "TLS is required: use StartTLS (ldapsearch -ZZ) or LDAPS"
		if r != nil {
			msg = "TLS is required for " + r.Host + ": use StartTLS (ldapsearch -ZZ) or LDAPS"
		}
		return nil, nil, tell(client, h, &refusal{code: resultConfidentiality, msg: msg,
			err: fmt.Errorf("%s before StartTLS", what)})
	}
	b, err := dialBackend(ctx, s, r)
	if err != nil {
		return nil, nil, tell(client, h, &refusal{code: resultUnavailable,
			msg: "could not connect to the backend of " + r.Host, err: err})
	}
	// The request goes on as the client sent it: what was read of it, then
	// the pump carries the rest.
	if _, err := b.Write(append(h.raw, body...)); err != nil {
		return nil, nil, tell(client, h, &refusal{code: resultUnavailable,
			msg: "lost the connection to the backend of " + r.Host, err: err})
	}
	return client, b, nil
}

// protocolError is the refusal of bytes that are not LDAP; a read that
// failed (the client went away, the deadline passed) is returned as it is,
// with nothing to tell.
func protocolError(err error) error {
	if !errors.Is(err, errMalformed) {
		return err
	}
	return &refusal{code: resultProtocolError, msg: "protocol error", err: err}
}

// tell answers the request of header h with the refusal err, when it is a
// *refusal: the request's own response type, or a Notice of Disconnection
// for requests that have none. It returns err.
func tell(conn net.Conn, h *header, err error) error {
	var rf *refusal
	if !errors.As(err, &rf) {
		return err
	}
	op, ok := responseOp(h.app())
	if !ok || h.id == noticeMessageID {
		return tellNotice(conn, err)
	}
	conn.Write(appendResult(nil, h.id, op, rf.code, diagnostic(rf), ""))
	return err
}

// tellNotice sends the refusal err, when it is a *refusal, as a Notice of
// Disconnection. It returns err.
func tellNotice(conn net.Conn, err error) error {
	var rf *refusal
	if errors.As(err, &rf) {
		conn.Write(appendNotice(nil, rf.code, diagnostic(rf)))
	}
	return err
}

// tellNext tells a TLS client about the refusal err in answer to its next
// request, read under a short deadline (a Notice of Disconnection when
// none comes, or it is no request), then sends close_notify. It returns
// err.
func tellNext(ctx context.Context, tc *tls.Conn, err error) error {
	tc.SetReadDeadline(dbproxy.PeekDeadline(ctx))
	if h, herr := readHeader(tc); herr == nil {
		tell(tc, h, err)
	} else {
		tellNotice(tc, err)
	}
	tc.CloseWrite()
	return err
}

// diagnostic is the diagnosticMessage of a refusal, naming leproxy.
func diagnostic(rf *refusal) string {
	msg := "leproxy: " + rf.msg
	if rf.code == resultProtocolError && rf.err != nil {
		msg += ": " + rf.err.Error()
	}
	return msg
}
