// Package cassandra is the Cassandra protocol of dbproxy: TLS from the
// first byte (as a node's client_encryption_options give it), then the
// CQL native protocol, versions 3 and 4, relayed frame by frame, with the
// node addresses in system.local, system.peers and system.peers_v2 rows
// and in topology and status events replaced by stand-ins, so that a
// driver with host discovery on learns only nodes leproxy serves and
// reaches each one through leproxy (nodes.go).
//
// Its handshake is dbproxy's TLS-first one: the client's first byte must
// start a TLS handshake; the server name chooses the route, whose backend
// is dialled (over TLS when the route says so). Then, until STARTUP,
// leproxy reads every client frame itself: OPTIONS is passed on and its
// SUPPORTED answer loses COMPRESSION (leproxy reads the frames it
// rewrites, so none may be compressed); a frame of protocol version 5 or
// above is answered with the protocol ERROR a node that does not speak
// it sends, on which drivers retry with version 4; STARTUP is passed on
// and the relay begins (relay.go). Authentication (PasswordAuthenticator's
// SASL exchange) passes through as it is.
//
// A client refused on the way (plaintext, an unknown server name, a
// backend down) is answered with an ERROR frame on the stream of its
// first frame.
package cassandra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/leproxy/leproxy/dbproxy"
)

func init() {
	dbproxy.Register("cassandra", func() dbproxy.Protocol { return New(Options{}) }, "cql")
}

// Limits, the defaults of Options.
const (
	// DefaultMaxFrame is a Cassandra 4 node's own limit on a client's
	// frame (native_transport_max_frame_size).
	DefaultMaxFrame = 16 << 20
	// DefaultMaxResponseFrame is gocql's and the DataStax drivers' limit
	// on a frame from a node.
	DefaultMaxResponseFrame = 256 << 20
)

// maxSystemRows bounds a system table's rows, which leproxy reads whole
// to rewrite: a thousand-node cluster's system.peers is far smaller.
const maxSystemRows = 16 << 20

// Options are a cassandra listener's limits; zero values mean the
// defaults.
type Options struct {
	// MaxFrame bounds the body of a frame from a client; a larger one is
	// refused with a protocol ERROR. Default DefaultMaxFrame.
	MaxFrame uint32
	// MaxResponseFrame bounds the body of a frame from a node; a larger
	// one ends the session with a server ERROR. Default
	// DefaultMaxResponseFrame.
	MaxResponseFrame uint32
}

// protocol is the Cassandra Protocol. One value serves one Server and
// keeps its node map, which RoutesChanged invalidates.
type protocol struct {
	// opts are the limits in force; SetOptions swaps them while sessions
	// run (the listener's max_frame and max_response_frame).
	opts  atomic.Pointer[Options]
	base  Options // New's, the defaults SetOptions starts from
	tf    dbproxy.TLSFirst
	nodes nodeMap
}

var (
	_ dbproxy.Protocol      = (*protocol)(nil)
	_ dbproxy.RoutesWatcher = (*protocol)(nil)
	_ dbproxy.Optioner      = (*protocol)(nil)
)

// New returns a Cassandra Protocol with the limits of o, for a Server of
// its own.
func New(o Options) dbproxy.Protocol {
	if o.MaxFrame == 0 {
		o.MaxFrame = DefaultMaxFrame
	}
	if o.MaxResponseFrame == 0 {
		o.MaxResponseFrame = DefaultMaxResponseFrame
	}
	p := &protocol{base: o}
	p.opts.Store(&o)
	p.tf = dbproxy.TLSFirst{
		Plaintext: func(ctx context.Context, conn net.Conn) string {
			return refuse(ctx, conn, errConfig, tlsRequired)
		},
		Refuse: func(ctx context.Context, conn net.Conn, kind dbproxy.RefusalKind, msg string) {
			code := uint32(errConfig)
			if kind == dbproxy.RefuseBackend {
				code = errOverloaded
			}
			refuse(ctx, conn, code, msg)
		},
	}
	return p
}

const tlsRequired = "TLS is required on this port"

func (*protocol) Name() string   { return "cassandra" }
func (*protocol) ALPN() []string { return nil }

// RoutesChanged implements dbproxy.RoutesWatcher: after a reload, the
// next session builds the node map from the new routes.
func (p *protocol) RoutesChanged([]dbproxy.Route) { p.nodes.invalidate() }

// Handshake implements Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	c, b, err := p.tf.Handshake(ctx, client, s)
	if err != nil {
		return c, b, err
	}
	st, err := p.startup(c, b)
	if errors.Is(err, errVersionRefused) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	nodes := p.nodes.get(ctx, s.Routes)
	bhost, bport, _ := net.SplitHostPort(s.Routed().Backend)
	backendPort, _ := strconv.Atoi(bport)
	w := &rewriter{
		nodes:       nodes,
		self:        nodes[nodeKey(bhost, bport)],
		port:        s.ListenerPort(),
		backendPort: backendPort,
		logger:      s.Logger,
	}
	f := new(fault)
	cc := &clientConn{Conn: c, fr: st.client, proto: st.proto, max: st.opts.MaxFrame, fault: f, backend: b}
	bc := &backendConn{Conn: b, fr: st.backend, proto: st.proto, w: w, max: st.opts.MaxResponseFrame, maxRows: maxSystemRows, fault: f}
	return cc, bc, nil
}

// maxPeek bounds what a refused client's first frame is read for.
const maxPeek = 64 << 10

// refuse answers a refused client's first frame with an ERROR of code
// and msg on its stream, and describes the frame for the log.
func refuse(ctx context.Context, conn net.Conn, code uint32, msg string) string {
	conn.SetReadDeadline(dbproxy.PeekDeadline(ctx))
	fr := frameReader{r: conn}
	proto, stream, what := byte(4), int16(0), ""
	if err := fr.need(headerLen); err == nil {
		h := parseHeader(fr.peek(headerLen))
		if v := h.proto(); v >= 3 && v <= 5 {
			proto = v
		}
		stream = h.stream
		what = fmt.Sprintf("cql opcode %#02x", h.opcode)
		if h.length <= maxPeek {
			fr.need(headerLen + int(h.length))
		}
	}
	conn.Write(errorFrame(proto, stream, code, msg))
	return what
}
