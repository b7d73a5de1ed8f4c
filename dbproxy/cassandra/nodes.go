package cassandra

import (
	"context"
	"crypto/sha256"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// A Cassandra cluster through leproxy: one hostname per node, each a
// route of the same cassandra listener whose backend is that node's
// native transport address. Drivers learn the nodes from the cluster
// (system.local, system.peers, system.peers_v2, topology and status
// events), and those name backend addresses. leproxy replaces each
// address of a node that a route serves with the node's stand-in: an
// address in 240.0.0.0/4 (reserved, routed nowhere) derived from the
// route's host name, the same for every session and every restart while
// the routes stay. Ports become the listener's. A node no route serves is
// left out: its peers rows are dropped, its events are not passed on.
//
// A stand-in keeps nodes apart in the driver (its host table, the events
// that name a node) and leads nowhere: a driver reaches each node through
// leproxy by dialling leproxy's address with the node's route host as the
// TLS server name, the SNI endpoint model of DataStax's drivers. The
// README shows the gocql HostDialer that does it.

// standInNet is the reserved block stand-ins are taken from.
var standInNet = netip.MustParsePrefix("240.0.0.0/4")

// node is what leproxy knows of one cluster node: the route that serves
// it and its stand-in address.
type node struct {
	route   string     // the route's host
	standIn netip.Addr // in standInNet
}

// nodes maps backend addresses (host:port, normalised by nodeKey) to the
// nodes routes serve.
type nodes map[string]node

// nodeMap holds a Server's nodes, built from its routes at the first
// session after the Server starts or its routes change (invalidate), and
// rebuilt every nodesTTL when a backend is named by hostname, whose
// addresses may change. Safe for concurrent use.
type nodeMap struct {
	mu      sync.Mutex
	m       nodes
	expires time.Time // zero: never
	gen     uint64    // counts invalidations
}

const (
	nodesTTL     = time.Minute
	resolveLimit = 2 * time.Second
)

// get returns the current nodes, built from routes() when there are none.
func (n *nodeMap) get(ctx context.Context, routes func() []dbproxy.Route) nodes {
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

// invalidate drops the nodes: the Server's routes changed.
func (n *nodeMap) invalidate() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m, n.expires = nil, time.Time{}
	n.gen++
}

// buildNodes maps each route's backend address, and the addresses a
// backend hostname resolves to, to the route (the first one when routes
// share a backend); named reports whether any backend is a hostname.
func buildNodes(ctx context.Context, routes []dbproxy.Route) (m nodes, named bool) {
	m = make(nodes, len(routes))
	standIns := assignStandIns(routes)
	add := func(host, port string, r *dbproxy.Route) {
		k := nodeKey(host, port)
		if _, dup := m[k]; !dup {
			m[k] = node{route: r.Host, standIn: standIns[r.Backend]}
		}
	}
	for i := range routes {
		r := &routes[i]
		host, port, err := net.SplitHostPort(r.Backend)
		if err != nil {
			continue
		}
		add(host, port, r)
		if net.ParseIP(host) != nil {
			continue
		}
		named = true
		rctx, cancel := context.WithTimeout(ctx, resolveLimit)
		addrs, err := net.DefaultResolver.LookupHost(rctx, host)
		cancel()
		if err == nil {
			for _, a := range addrs {
				add(a, port, r)
			}
		}
	}
	return m, named
}

// assignStandIns gives each distinct backend the stand-in of the first
// route serving it: 240.0.0.0/4 plus 28 bits of the SHA-256 of the
// route's host. Hosts are taken in sorted order and a stand-in already
// taken moves to the next free address, so that the same routes always
// give the same stand-ins.
func assignStandIns(routes []dbproxy.Route) map[string]netip.Addr {
	first := make(map[string]string) // backend → first route host
	for _, r := range routes {
		if _, ok := first[r.Backend]; !ok {
			first[r.Backend] = r.Host
		}
	}
	backends := make([]string, 0, len(first))
	for b := range first {
		backends = append(backends, b)
	}
	slices.SortFunc(backends, func(a, b string) int { return strings.Compare(first[a], first[b]) })
	taken := make(map[netip.Addr]bool)
	out := make(map[string]netip.Addr, len(backends))
	for _, b := range backends {
		a := standIn(first[b])
		for taken[a] {
			a = a.Next()
			if !standInNet.Contains(a) {
				a = standInNet.Addr()
			}
		}
		taken[a] = true
		out[b] = a
	}
	return out
}

// standIn is a route host's preferred stand-in address.
func standIn(host string) netip.Addr {
	h := sha256.Sum256([]byte(host))
	return netip.AddrFrom4([4]byte{0xf0 | h[0]&0x0f, h[1], h[2], h[3]})
}

// nodeKey normalises a node address: host lower case without a trailing
// dot or brackets, IP addresses in canonical form (IPv4-mapped IPv6 as
// IPv4), the port as a decimal number.
func nodeKey(host, port string) string {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	if p, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(p)
	}
	return net.JoinHostPort(host, port)
}

// ipKey is nodeKey for an address read from the wire.
func ipKey(ip netip.Addr, port int) string {
	return net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(port))
}
