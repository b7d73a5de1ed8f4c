package kafka

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// nodeMap maps broker addresses (host:port, as a broker advertises them)
// to the route hosts that serve them, for one Server: a broker is
// recognised by its advertised address being a route's backend, literally
// or after resolving a backend hostname (the first route wins when two
// share a backend). It is built from the Server's routes at the first
// session after the Server starts or its routes change (invalidate), and
// rebuilt every nodesTTL when a backend is named by hostname, whose
// addresses may change. Safe for concurrent use. (The same scheme as
// Redis Cluster's node map in dbproxy/redis.)
type nodeMap struct {
	mu      sync.Mutex
	m       map[string]string // nil: to be built
	expires time.Time         // zero: never
	// gen counts invalidations, so that a map built from routes that
	// were replaced meanwhile is not kept.
	gen uint64
}

const (
	nodesTTL     = time.Minute
	resolveLimit = 2 * time.Second
)

// get returns the current map, built from routes() (Session.Routes) when
// there is none.
func (n *nodeMap) get(ctx context.Context, routes func() []dbproxy.Route) map[string]string {
	n.mu.Lock()
	m, expires, gen := n.m, n.expires, n.gen
	n.mu.Unlock()
	if m != nil && (expires.IsZero() || time.Now().Before(expires)) {
		return m
	}
	m, named := buildNodes(ctx, routes())
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen == gen {
		n.m, n.expires = m, time.Time{}
		if named {
			n.expires = time.Now().Add(nodesTTL)
		}
	}
	return m
}

// invalidate drops the map: the Server's routes changed.
func (n *nodeMap) invalidate() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m, n.expires = nil, time.Time{}
	n.gen++
}

// buildNodes maps each route's backend address, and the addresses a
// backend hostname resolves to, to the route's host; named reports
// whether any backend is a hostname.
func buildNodes(ctx context.Context, routes []dbproxy.Route) (m map[string]string, named bool) {
	m = make(map[string]string, len(routes))
	add := func(host, port, routeHost string) {
		k := nodeKey(host, port)
		if _, dup := m[k]; !dup {
			m[k] = routeHost
		}
	}
	for _, r := range routes {
		host, port, err := net.SplitHostPort(r.Backend)
		if err != nil {
			continue
		}
		add(host, port, r.Host)
		if net.ParseIP(host) != nil {
			continue
		}
		named = true
		rctx, cancel := context.WithTimeout(ctx, resolveLimit)
		addrs, err := net.DefaultResolver.LookupHost(rctx, host)
		cancel()
		if err == nil {
			for _, a := range addrs {
				add(a, port, r.Host)
			}
		}
	}
	return m, named
}

// nodeKey normalises a broker address: host lower case without a
// trailing dot or brackets, IP addresses in canonical form, the port as a
// decimal number.
func nodeKey(host, port string) string {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	if p, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(p)
	}
	return net.JoinHostPort(host, port)
}
