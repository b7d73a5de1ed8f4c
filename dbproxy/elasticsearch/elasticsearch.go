// Package elasticsearch is the Elasticsearch and OpenSearch protocol of
// dbproxy (registered as "elasticsearch", alias "opensearch"): HTTPS in
// front of a node's HTTP port.
//
// Its handshake reads the client's first three bytes. A TLS handshake
// record starts TLS (ALPN "http/1.1" only: the clients speak HTTP/1.1, and
// h2 is never offered) and the route is picked by SNI; anything else is
// plaintext HTTP, served only when the default route allows plaintext.
// leproxy then serves HTTP/1.1 on the connection itself, each request going
// through a reverse proxy to the route's node: X-Forwarded-For, -Host and
// -Proto set by leproxy (the client's own dropped), responses streamed as
// they come, request bodies passed through. Each client connection has its
// own connection to the node, opened at its first request and kept alive
// with it, so a session costs what a piped session costs.
//
// The byte pump cannot do this: X-Forwarded-For is per request, and a node
// that is down must be reported per request too. So Handshake serves the
// HTTP session to its end with Session.Serve and returns nothing to pump.
// The Server counts the session's bytes (HTTP, inside TLS), logs its
// session-end line (with "requests", the number of requests served) and
// closes it when no byte moves either way for the idle timeout, as it does
// a piped session: within a request, when a client stops sending its body
// or reading its response or the node takes that long to answer; between
// requests the HTTP server's keep-alive timeout, the same, normally closes
// the connection first, cleanly. Connections to the node are dialled with
// Session.Dial, so that a forced shutdown closes them too. A client that
// half-closes is taken for gone, as Go's HTTP server takes it: its request
// is cancelled and it gets no answer.
//
// Shutdown drains: a connection waiting for its next request is closed at
// once; one with a request in flight, even partly received, is closed
// after the response (which says "Connection: close" when the request
// began after the shutdown did); a new connection gets the handshake
// timeout to send its first request.
//
// Counters and errors. A session is one client connection, however many
// requests it carries. A routed session counts on its route (Sessions,
// Active while it is open, BytesIn and BytesOut) and ends with an error,
// logged and counted in the route's Errors, when the node could not be
// reached for one of its requests (a 502 from leproxy: the first such
// error, naming the request), when the Server closed it with a request
// under way (a forced shutdown) or for the idle timeout. A client
// that goes away, even mid-request, is no error, nor are the client's
// mistakes (400, 405) or the node's own answers, which pass through. A
// connection answered 421 (no route for its server name) is unrouted and
// ends with the route lookup's error. A plaintext client that is refused
// counts as the other protocols count theirs: as an error on the default
// route when there is one (the route a client without SNI gets), as
// unrouted when there is none.
//
// Errors leproxy itself sends carry an Elasticsearch-style JSON body,
// {"error":{"root_cause":[…],"type":…,"reason":…},"status":…}, which the
// clients parse into their error types:
//
//	400 leproxy_tls_required         plaintext HTTP on the TLS port, unless
//	                                 the default route allows plaintext;
//	                                 then the connection closes
//	421 leproxy_misdirected_request  no route for the server name (or no
//	                                 SNI and no default route); then the
//	                                 connection closes
//	502 leproxy_backend_unavailable  the node could not be reached; the
//	                                 session goes on
//	400/405 leproxy_bad_request      protocol upgrades and CONNECT, which
//	                                 Elasticsearch does not use
//
// None carries X-Elastic-Product: a client must not take leproxy for the
// node. Sniffing (node discovery) returns the nodes' publish addresses,
// which are backend addresses; see the README.
package elasticsearch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("elasticsearch", func() dbproxy.Protocol { return new(protocol) }, "opensearch")
}

const (
	// alpn is the only ALPN protocol offered: HTTP/1.1.
	alpn = "http/1.1"
	// maxHeaderBytes bounds a request's header; Elasticsearch's own
	// http.max_header_size is 16 KiB.
	maxHeaderBytes = 64 << 10
	// maxPlaintextRequest bounds what is read of a plaintext request
	// before it is refused.
	maxPlaintextRequest = 16 << 10
	// idleConnTimeout closes a session's idle connection to the node.
	idleConnTimeout = 90 * time.Second
	// bufSize is the size of the buffers responses are copied through.
	bufSize = 32 << 10
)

// protocol is the Elasticsearch (and OpenSearch) Protocol. It keeps no
// state: every session has its own HTTP server and transport.
type protocol struct{}

var _ dbproxy.Protocol = (*protocol)(nil)

func (*protocol) Name() string   { return "elasticsearch" }
func (*protocol) ALPN() []string { return []string{alpn} }

// Handshake implements Protocol. It serves the HTTP session to its end
// with s.Serve and returns nil, nil and the session's error.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	wire := &wireConn{Conn: client}
	var first [3]byte
	if _, err := io.ReadFull(wire, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first bytes: %w", err)
	}
	var (
		conn   = dbproxy.NewPrefixConn(wire, first[:])
		secure = dbproxy.LooksLikeTLS(first)
		sni    string
		r      *dbproxy.Route
		err    error
	)
	if secure {
		tc, herr := s.ServerHandshake(ctx, conn)
		if herr != nil {
			return nil, nil, fmt.Errorf("TLS handshake: %w", herr)
		}
		conn, sni = tc, tc.ConnectionState().ServerName
		r, err = s.Route(sni)
	} else {
		r, err = s.Route("")
		if err != nil || !r.AllowPlaintext {
			return nil, nil, refusePlaintext(conn)
		}
	}
	if err != nil {
		reason := "no route for clients that send no server name (SNI)"
		if sni != "" {
			reason = fmt.Sprintf("no route for server name %q", sni)
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusMisdirectedRequest, "leproxy_misdirected_request", reason)
		})
		return nil, nil, s.Serve(conn, func(ctx context.Context, conn net.Conn) error {
			n, _ := serve(ctx, conn, wire, s, h)
			return fmt.Errorf("%w (answered %d requests with 421)", err, n)
		})
	}

	np := newNodeProxy(s, r, secure)
	defer np.transport.CloseIdleConnections()
	return nil, nil, s.Serve(conn, func(ctx context.Context, conn net.Conn) error {
		n, err := serve(ctx, conn, wire, s, np)
		s.AddLogAttrs("requests", n)
		if err != nil {
			return err
		}
		return np.backendError()
	})
}

// refusePlaintext answers a plaintext HTTP request on the TLS port with
// 400 and a JSON body saying TLS is required, as Go's and Elasticsearch's
// own servers answer one. A client that does not send HTTP gets nothing.
// It returns the error for the log.
func refusePlaintext(conn net.Conn) error {
	req, err := http.ReadRequest(bufio.NewReaderSize(io.LimitReader(conn, maxPlaintextRequest), 4096))
	if err != nil {
		return fmt.Errorf("client did not start TLS, and sent no HTTP request either: %w", err)
	}
	reason := "TLS is required: this port serves HTTPS"
	if req.Host != "" {
		reason += ", use https://" + req.Host
	}
	body := errorBody(http.StatusBadRequest, "leproxy_tls_required", reason)
	resp := fmt.Appendf(nil, "HTTP/1.1 400 Bad Request\r\n"+
		"Content-Type: application/json\r\n"+
		"Content-Length: %d\r\n"+
		"Connection: close\r\n\r\n", len(body))
	if _, err := conn.Write(append(resp, body...)); err != nil {
		return fmt.Errorf("client did not start TLS (%s request), and answering it: %w", req.Method, err)
	}
	return fmt.Errorf("client did not start TLS (plaintext HTTP %s request)", req.Method)
}

// writeError answers with an Elasticsearch-style error.
func writeError(w http.ResponseWriter, status int, typ, reason string) {
	body := errorBody(status, typ, reason)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// errorBody is the JSON body of an error, shaped as Elasticsearch's.
func errorBody(status int, typ, reason string) []byte {
	type cause struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	}
	var v struct {
		Error struct {
			RootCause []cause `json:"root_cause"`
			cause
		} `json:"error"`
		Status int `json:"status"`
	}
	v.Error.cause = cause{Type: typ, Reason: reason}
	v.Error.RootCause = []cause{v.Error.cause}
	v.Status = status
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// wantsUpgrade reports whether a request asks for a protocol upgrade.
func wantsUpgrade(h http.Header) bool {
	for _, v := range h.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}
