// Package kafka is the Kafka protocol of dbproxy: TLS from the first
// byte, as a Kafka SSL or SASL_SSL listener, then Kafka's framed requests
// and responses piped to the broker, with every broker address the
// cluster hands out rewritten to leproxy's routes.
//
// Each broker of a cluster is a route of one kafka listener: its own
// hostname, whose backend is that broker. Clients connect to one
// (bootstrap) and learn the others from the cluster itself; leproxy
// rewrites the broker addresses in the responses that carry them to
// route-host:listener-port, so that the client's next connection comes
// back through leproxy, to the right broker by its server name:
//
//   - Metadata (v0–v13): the broker list;
//   - FindCoordinator (v0–v6, single and batched): the coordinator;
//   - DescribeCluster (v0–v2): the broker list;
//   - Produce (v10–v13) and Fetch (v16–v18): KIP-951's NodeEndpoints,
//     the new leaders named after NOT_LEADER_OR_FOLLOWER;
//   - ShareFetch and ShareAcknowledge (KIP-932): their NodeEndpoints.
//
// A broker is recognised by its advertised address (host:port) being a
// route's backend, literally or after resolving a backend hostname. A
// broker that no route serves keeps its node id and gets the host
// broker-<id>.no-route.invalid, which never resolves (RFC 6761): a client
// fails to reach that broker, naming it, and never goes around leproxy; a
// coordinator no route serves becomes COORDINATOR_NOT_AVAILABLE, which
// clients retry. Each is logged once per session.
//
// Responses to other requests pass through as framed bytes, unread past
// their correlation id. The ApiVersions response is rewritten so that the
// versions it advertises for the api keys above go no higher than leproxy
// can decode; a client that sends a newer version anyway is disconnected
// rather than answered unrewritten (as is one whose ApiVersions version the
// broker answers but kmsg does not know). SASL (PLAIN, SCRAM, OAUTHBEARER,
// GSSAPI) passes through untouched in SaslAuthenticate requests;
// SaslHandshake v0, after which SASL tokens travel outside Kafka's
// framing, is withdrawn from ApiVersions and refused.
//
// A client refused on the way (plaintext, an unknown server name, a broker
// down) gets, in answer to its first request when that is ApiVersions (as
// every current client's is), an ApiVersions response with error
// BROKER_NOT_AVAILABLE; leproxy's log says why.
package kafka

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("kafka", func() dbproxy.Protocol { return newProtocol() })
}

// maxRefuseRead bounds the first request read from a refused client.
const maxRefuseRead = 64 << 10

// protocol is the Kafka Protocol. One value serves one Server and keeps
// its broker map, which RoutesChanged invalidates.
type protocol struct {
	tf    dbproxy.TLSFirst
	nodes nodeMap
	// limits bound frames (the listener's max_request and max_response);
	// SetOptions swaps it while sessions run.
	limits atomic.Pointer[frameLimits]
}

// frameLimits are a listener's frame bounds; see DefaultMaxRequest and
// DefaultMaxResponse.
type frameLimits struct {
	maxRequest, maxResponse int
}

var (
	_ dbproxy.Protocol      = (*protocol)(nil)
	_ dbproxy.RoutesWatcher = (*protocol)(nil)
	_ dbproxy.Optioner      = (*protocol)(nil)
)

func newProtocol() *protocol {
	p := &protocol{}
	p.limits.Store(&frameLimits{maxRequest: DefaultMaxRequest, maxResponse: DefaultMaxResponse})
	p.tf = dbproxy.TLSFirst{
		Plaintext: func(ctx context.Context, conn net.Conn) string {
			return refuse(ctx, conn)
		},
		Refuse: func(ctx context.Context, conn net.Conn, _ dbproxy.RefusalKind, _ string) {
			refuse(ctx, conn)
		},
	}
	return p
}

func (*protocol) Name() string { return "kafka" }

// ALPN implements Protocol: none. Kafka clients offer none.
func (*protocol) ALPN() []string { return nil }

// RoutesChanged implements dbproxy.RoutesWatcher: after a reload, the
// next session builds the broker map from the new routes.
func (p *protocol) RoutesChanged([]dbproxy.Route) { p.nodes.invalidate() }

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	c, b, err := p.tf.Handshake(ctx, client, s)
	if err != nil {
		return c, b, err
	}
	routes := s.Routes()
	hosts := make(map[string]bool, len(routes))
	for _, r := range routes {
		hosts[strings.ToLower(r.Host)] = true
	}
	w := &rewriter{
		nodes:  p.nodes.get(ctx, func() []dbproxy.Route { return routes }),
		hosts:  hosts,
		port:   int32(s.ListenerPort()), // #nosec G115 -- a port fits
		logger: s.Logger,
	}
	pend := new(pending)
	lim := p.limits.Load()
	return &clientConn{Conn: c, scan: reqScanner{max: lim.maxRequest, track: pend.push}},
		&backendConn{Conn: b, pend: pend, w: w, max: lim.maxResponse}, nil
}

// refuse reads the client's first request, bounded and under conn's
// deadline (PeekDeadline), answers it when it is ApiVersions with
// BROKER_NOT_AVAILABLE, and returns its name for the log.
func refuse(ctx context.Context, conn net.Conn) string {
	conn.SetReadDeadline(dbproxy.PeekDeadline(ctx))
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return ""
	}
	n := int(int32(binary.BigEndian.Uint32(size[:])))
	if n < 10 || n > maxRefuseRead {
		return ""
	}
	content := make([]byte, n)
	if _, err := io.ReadFull(conn, content); err != nil {
		return ""
	}
	h, err := parseRequestHeader(content)
	if err != nil {
		return ""
	}
	name := "kafka " + keyName(h.key) + " v" + strconv.Itoa(int(h.version))
	if h.key != keyApiVersions {
		return name
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(min(h.version, maxVersion(keyApiVersions)))
	if h.version > maxVersion(keyApiVersions) {
		resp.SetVersion(0)
	}
	resp.ErrorCode = errCodeBrokerNotAvailable
	out := binary.BigEndian.AppendUint32(make([]byte, 4, 64), uint32(h.corr)) // #nosec G115 -- bit pattern kept
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4)) // #nosec G115 -- small
	conn.Write(out)
	return name
}

// keyName names an api key for errors and the log.
func keyName(key int16) string {
	if n := kmsg.NameForKey(key); n != "" {
		return n
	}
	return "api key " + strconv.Itoa(int(key))
}
