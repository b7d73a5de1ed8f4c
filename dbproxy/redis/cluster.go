package redis

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// Redis Cluster through leproxy: one hostname per cluster node, each a
// route of the same redis listener whose backend is that node. Cluster
// clients learn node addresses from the cluster itself, and those name
// the backends, which a client outside cannot or must not reach; so the
// redis protocol rewrites every node address it recognises in replies to
// the address leproxy serves that node on: the route's hostname and the
// listener's port. A node is recognised by its address (host:port) being a
// route's backend, literally or after resolving a backend hostname (first
// route wins when two share a backend). What is rewritten:
//
//   - -MOVED and -ASK errors, anywhere in any reply: "MOVED 3999
//     10.0.0.7:6379" becomes "MOVED 3999 node2.example.com:6380"; an
//     empty host (cluster-preferred-endpoint-type unknown-endpoint) means
//     the node the session's own backend runs on. A redirection to a node
//     that no route serves becomes an -ERR naming it, rather than sending
//     the client around leproxy.
//   - The reply to CLUSTER SLOTS: each node's endpoint and port, and a
//     "hostname" in its metadata.
//   - The reply to CLUSTER SHARDS: each node's "endpoint" and "hostname",
//     and its "port" and "tls-port" when present and not 0.
//   - The replies to CLUSTER NODES, REPLICAS and SLAVES: each line's
//     ip:port (and ",hostname"); the @cport cluster bus port stays.
//
// Not rewritten: fields that claim to hold an IP address ("ip" in SLOTS
// metadata and in SHARDS), addresses of nodes no route serves (left as
// they are, with a warning in the log), CLUSTER replies inside an EXEC
// array or a Lua script's reply, replies over 4 MiB, and CLUSTER replies on
// a connection after a command that breaks one-reply-per-command pairing
// (SUBSCRIBE and friends, MONITOR, CLIENT REPLY). The listener's port is
// the one the connection arrived on; behind a port mapping the rewritten
// port is the inside one.

// nodeMap maps backend addresses to the route hosts that serve them, for
// one Server. It is built from the Server's routes at the first session
// after the Server starts or its routes change (invalidate), and rebuilt
// every nodesTTL when a backend is named by hostname, whose addresses may
// change. Safe for concurrent use.
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

// get returns the current map, built from routes() (the Server's current
// routes, Session.Routes) when there is none.
func (n *nodeMap) get(ctx context.Context, routes func() []dbproxy.Route) map[string]string {
	n.mu.Lock()
	m, expires, gen := n.m, n.expires, n.gen
	n.mu.Unlock()
	if m != nil && (expires.IsZero() || time.Now().Before(expires)) {
		return m
	}
	// gen is read before the routes: if they change after, invalidate
	// bumps gen and the map built here serves this session only.
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

// nodeKey normalises a node address: host lower case without a
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

// maxWarned bounds the unrouted node addresses one session warns about.
const maxWarned = 16

// rewrite rewrites the node addresses of one session's replies.
type rewrite struct {
	nodes       map[string]string // backend address → route host
	port        string            // the listener's port
	backendHost string            // the session backend's host
	logger      *slog.Logger
	warned      map[string]bool
}

// target returns the route host serving the node at host:port.
func (w *rewrite) target(host, port string) (string, bool) {
	if host == "" || port == "" {
		return "", false
	}
	rh, ok := w.nodes[nodeKey(host, port)]
	return rh, ok
}

// unrouted logs, once per address, a node no route serves.
func (w *rewrite) unrouted(addr, where string) {
	if w.warned[addr] || len(w.warned) >= maxWarned || w.logger == nil {
		return
	}
	if w.warned == nil {
		w.warned = make(map[string]bool)
	}
	w.warned[addr] = true
	w.logger.Warn("redis cluster node has no route on this listener", "node", addr, "message", where)
}

// errorLine rewrites a MOVED or ASK error's content; see respReplies.
func (w *rewrite) errorLine(line []byte) []byte {
	kind, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || (string(kind) != "MOVED" && string(kind) != "ASK") {
		return nil
	}
	slot, addr, ok := bytes.Cut(rest, []byte(" "))
	if !ok || !isDigits(slot) {
		return nil
	}
	i := bytes.LastIndexByte(addr, ':')
	if i < 0 || !isDigits(addr[i+1:]) {
		return nil
	}
	host, port := string(addr[:i]), string(addr[i+1:])
	if host == "" {
		host = w.backendHost
	}
	rh, ok := w.target(host, port)
	if !ok {
		w.unrouted(string(addr), string(kind))
		return []byte("-ERR leproxy has no route to cluster node " + string(addr) + " (" + string(kind) + " " + string(slot) + ")\r\n")
	}
	return []byte("-" + string(kind) + " " + string(slot) + " " + rh + ":" + w.port + "\r\n")
}

// cluster rewrites a whole reply to a CLUSTER command; see respReplies.
// A reply that does not parse, or has nothing to rewrite, is kept.
func (w *rewrite) cluster(kind clusterReply, reply []byte) []byte {
	v, rest, err := parseRESP(reply)
	if err != nil || len(rest) != 0 {
		return nil
	}
	var changed bool
	switch kind {
	case clusterSlots:
		changed = w.slots(v)
	case clusterShards:
		changed = w.shards(v)
	case clusterNodes:
		changed = w.nodesText(v)
	case clusterReplicas:
		if v.typ == '*' {
			for _, e := range v.elems {
				changed = w.nodesText(e) || changed
			}
		}
	}
	if !changed {
		return nil
	}
	return appendRESP(make([]byte, 0, len(reply)+64), v)
}

// slots rewrites a CLUSTER SLOTS reply: ranges of [start, end, node…],
// each node [endpoint, port, id, metadata].
func (w *rewrite) slots(v *respValue) bool {
	if v.typ != '*' {
		return false
	}
	changed := false
	for _, rng := range v.elems {
		if rng.typ != '*' || len(rng.elems) < 3 {
			continue
		}
		for _, node := range rng.elems[2:] {
			if node.typ != '*' || len(node.elems) < 2 {
				continue
			}
			host, ok := node.elems[0].str()
			port, ok2 := node.elems[1].int()
			if !ok || !ok2 || host == "" || host == "?" {
				continue
			}
			p := strconv.FormatInt(port, 10)
			rh, ok := w.target(host, p)
			if !ok {
				w.unrouted(net.JoinHostPort(host, p), "CLUSTER SLOTS")
				continue
			}
			node.elems[0].text = []byte(rh)
			node.elems[1].text = []byte(w.port)
			if len(node.elems) > 3 {
				if h := node.elems[3].fields()["hostname"]; h != nil {
					if _, ok := h.str(); ok {
						h.text = []byte(rh)
					}
				}
			}
			changed = true
		}
	}
	return changed
}

// shards rewrites a CLUSTER SHARDS reply: shards as maps whose "nodes" is
// an array of node maps.
func (w *rewrite) shards(v *respValue) bool {
	if v.typ != '*' {
		return false
	}
	changed := false
	for _, shard := range v.elems {
		nodes := shard.fields()["nodes"]
		if nodes == nil || nodes.typ != '*' {
			continue
		}
		for _, node := range nodes.elems {
			f := node.fields()
			if f == nil {
				continue
			}
			var rh, addr string
		search:
			for _, hk := range []string{"endpoint", "ip", "hostname"} {
				host, ok := f[hk].str()
				if !ok || host == "" || host == "?" {
					continue
				}
				for _, pk := range []string{"port", "tls-port"} {
					port, ok := f[pk].int()
					if !ok || port == 0 {
						continue
					}
					p := strconv.FormatInt(port, 10)
					if addr == "" {
						addr = net.JoinHostPort(host, p)
					}
					if h, ok := w.target(host, p); ok {
						rh = h
						break search
					}
				}
			}
			if rh == "" {
				if addr != "" {
					w.unrouted(addr, "CLUSTER SHARDS")
				}
				continue
			}
			for _, hk := range []string{"endpoint", "hostname"} {
				if _, ok := f[hk].str(); ok {
					f[hk].text = []byte(rh)
				}
			}
			for _, pk := range []string{"port", "tls-port"} {
				if port, ok := f[pk].int(); ok && port != 0 {
					f[pk].text = []byte(w.port)
				}
			}
			changed = true
		}
	}
	return changed
}

// nodesText rewrites CLUSTER NODES text (a bulk or verbatim string) line
// by line: "<id> <ip:port@cport[,hostname]> <flags> …".
func (w *rewrite) nodesText(v *respValue) bool {
	if v.null || (v.typ != '$' && v.typ != '=') {
		return false
	}
	text, prefix := v.text, []byte(nil)
	if v.typ == '=' {
		// A verbatim string starts with its format: "txt:".
		if len(text) < 4 || text[3] != ':' {
			return false
		}
		prefix, text = text[:4], text[4:]
	}
	lines := bytes.Split(text, []byte("\n"))
	changed := false
	for i, line := range lines {
		f := bytes.Split(line, []byte(" "))
		if len(f) < 3 {
			continue
		}
		if repl, ok := w.nodeAddr(string(f[1])); ok {
			f[1] = []byte(repl)
			lines[i] = bytes.Join(f, []byte(" "))
			changed = true
		}
	}
	if changed {
		v.text = append(append([]byte(nil), prefix...), bytes.Join(lines, []byte("\n"))...)
	}
	return changed
}

// nodeAddr rewrites a CLUSTER NODES address field,
// "ip:port@cport[,hostname]".
func (w *rewrite) nodeAddr(field string) (string, bool) {
	addr, bus, hasBus := strings.Cut(field, "@")
	hostname, hasName := "", false
	if hasBus {
		bus, hostname, hasName = strings.Cut(bus, ",")
	}
	i := strings.LastIndexByte(addr, ':')
	if i < 0 || !isDigits([]byte(addr[i+1:])) {
		return "", false
	}
	host, port := addr[:i], addr[i+1:]
	rh, ok := w.target(host, port)
	if !ok {
		rh, ok = w.target(hostname, port)
	}
	if !ok {
		if host != "" && port != "0" {
			w.unrouted(addr, "CLUSTER NODES")
		}
		return "", false
	}
	out := rh + ":" + w.port
	if hasBus {
		out += "@" + bus
	}
	if hasName {
		if hostname != "" {
			hostname = rh
		}
		out += "," + hostname
	}
	return out, true
}

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
