package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/hostname"
	"gopkg.in/yaml.v3"
)

// maxCAFileSize bounds a backend CA file; a full system bundle is ~200 KiB.
const maxCAFileSize = 4 << 20

// tlsModes lists the valid values of a route's "tls" key.
var tlsModes = []TLSMode{TLSNone, TLSVerify, TLSInsecure, TLSStrict}

// proxyVersions lists the valid values of a route's "proxy_protocol" key.
var proxyVersions = []ProxyVersion{ProxyNone, ProxyV1, ProxyV2}

// strictProtocols are the protocols whose backends may be reached with
// "tls: strict": TLS from the first byte beside the protocol's own
// upgrade, verified as "verify". Each maps to what its protocol calls
// that, for messages and the summary.
var strictProtocols = map[string]string{
	"mssql": "TDS 8.0 strict TLS",
	"ldap":  "LDAPS",
}

// namedRouteProtocols are the protocols that tell clients a route's name
// itself, so that a route there cannot be a wildcard; each says why.
var namedRouteProtocols = map[string]string{
	"kafka": "each route is one broker, whose name is advertised to clients",
	"smtp":  "the route's name is the server's name in its greeting and EHLO reply",
	"smtps": "the route's name is the server's name in its greeting and EHLO reply",
}

// strictProtocolList lists strictProtocols for an error message, sorted:
// "ldap (LDAPS), mssql (TDS 8.0 strict TLS)".
func strictProtocolList() string {
	var l []string
	for p, what := range strictProtocols {
		l = append(l, p+" ("+what+")")
	}
	slices.Sort(l)
	return strings.Join(l, ", ")
}

// tcpSection walks the "tcp:" list of listeners.
func (l *loader) tcpSection(v *yaml.Node) {
	if isNull(v) {
		return // "tcp:" with every listener commented out
	}
	if !l.is(v, "tcp", yaml.SequenceNode, "a list of listeners") {
		return
	}
	var addrs []listenAddr
	for i, item := range v.Content {
		path := fmt.Sprintf("tcp[%d]", i)
		if !l.is(item, path, yaml.MappingNode, "a listener (a mapping with listen, protocol and routes)") {
			continue
		}
		if a, ok := l.listener(item, path); ok {
			addrs = append(addrs, a)
		}
	}
	l.checkListenConflicts(addrs)
}

// listenAddr is a valid listen address of the tcp section.
type listenAddr struct {
	path string // "tcp[N]"
	addr string // as written
	line int    // line of the address
	host string // "" for all addresses, else lower case, IPs canonical
	port int
}

// listener walks one listener of the tcp section and returns its listen
// address if that is valid.
func (l *loader) listener(m *yaml.Node, path string) (addr listenAddr, addrOK bool) {
	ln := Listener{Line: m.Line}
	known := []string{"listen", "protocol", "default", "max_conns", "idle_timeout", "routes"}
	known = append(known, listenerLimitKeys...)
	optionKeys := dbproxy.OptionKeys(protocolOf(m))
	f := l.fields(m, path, append(known, optionKeys...)...)
	ln.Limits = l.listenerLimits(f, path, true)
	for _, req := range []string{"listen", "protocol", "routes"} {
		if f[req] == nil {
			l.el.add(m.Line, path, "", fmt.Sprintf("missing key %q", req))
		}
	}
	if n := f["listen"]; n != nil {
		key := path + ".listen"
		if s, ok := l.string(n, key, "a listen address"); ok {
			if err := checkHostPort(s); err != nil {
				l.el.add(n.Line, key, s, fmt.Sprintf("invalid listen address %q: %v", s, err))
			} else {
				addr, addrOK = newListenAddr(path, s, n.Line), true
			}
			ln.Listen = s
		}
	}
	if n := f["protocol"]; n != nil {
		key := path + ".protocol"
		if s, ok := l.string(n, key, "a protocol name"); ok {
			if p, ok := canonicalProtocol(s); ok {
				ln.Protocol = p
			} else {
				l.el.add(n.Line, key, s, fmt.Sprintf("unknown protocol %q (known: %s)", s, knownProtocols()))
			}
		}
	}
	if n := f["max_conns"]; n != nil {
		key := path + ".max_conns"
		var v int
		if l.is(n, key, yaml.ScalarNode, "a positive integer") {
			if n.Tag != "!!int" || n.Decode(&v) != nil || v <= 0 {
				l.el.add(n.Line, key, n.Value, fmt.Sprintf("expected a positive integer, got %q", n.Value))
			}
			ln.MaxConns = v
		}
	}
	if n := f["idle_timeout"]; n != nil {
		key := path + ".idle_timeout"
		if s, ok := l.string(n, key, "a duration"); ok {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				l.el.add(n.Line, key, s, fmt.Sprintf("expected a positive duration like 30s or 5m, got %q", s))
			}
			ln.IdleTimeout = d
		}
	}
	for _, k := range optionKeys {
		n := f[k]
		if n == nil || ln.Protocol == "" {
			continue
		}
		key := path + "." + k
		if s, ok := l.string(n, key, "a string"); ok {
			if err := dbproxy.CheckOption(ln.Protocol, k, s); err != nil {
				l.el.add(n.Line, key, s, fmt.Sprintf("invalid %s %q: %v", k, s, err))
				continue
			}
			if ln.Options == nil {
				ln.Options = make(map[string]string)
			}
			ln.Options[k] = s
		}
	}
	if n := f["routes"]; n != nil {
		ln.Routes = l.routes(n, path+".routes")
		for _, r := range ln.Routes {
			if why, ok := namedRouteProtocols[ln.Protocol]; ok && hostname.IsWildcard(r.Host) {
				l.el.add(r.Line, path+".routes", r.Host, fmt.Sprintf("a %s route cannot be a wildcard: %s", ln.Protocol, why))
			}
			if _, ok := strictProtocols[ln.Protocol]; r.TLS == TLSStrict && ln.Protocol != "" && !ok {
				l.el.add(r.Line, path+".routes["+r.Host+"].tls", string(r.TLS),
					fmt.Sprintf(`tls mode "strict" (TLS from the first byte) is for %s listeners, not %s: use verify`, strictProtocolList(), ln.Protocol))
			}
		}
	}
	if n := f["default"]; n != nil {
		key := path + ".default"
		if s, ok := l.string(n, key, "a hostname"); ok {
			name, err := normalizeHostname(s)
			switch {
			case err != nil:
				l.el.add(n.Line, key, s, fmt.Sprintf("invalid hostname %q: %v", s, err))
			case !slices.ContainsFunc(ln.Routes, func(r Route) bool { return r.Host == name }):
				l.el.add(n.Line, key, s, fmt.Sprintf("default %q is not one of this listener's routes", s))
			}
			ln.Default = name
		}
	}
	l.cfg.TCP = append(l.cfg.TCP, ln)
	return addr, addrOK
}

// routes walks the routes of a listener: SNI hostname → backend.
func (l *loader) routes(m *yaml.Node, path string) []Route {
	if !l.is(m, path, yaml.MappingNode, "a mapping of hostnames to backends") {
		return nil
	}
	if len(m.Content) == 0 {
		l.el.add(m.Line, path, "", "no routes")
		return nil
	}
	var routes []Route
	lines := make(map[string]int)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if !l.is(k, path, yaml.ScalarNode, "a hostname") {
			continue
		}
		r := Route{Line: k.Line, TLS: TLSNone, ProxyProtocol: ProxyNone}
		if name, ok := l.hostname(k, path); ok {
			r.Host = name
			if first := lines[name]; first > 0 {
				l.el.add(k.Line, path, k.Value, duplicateMsg("route", k.Value, name, first))
			} else {
				lines[name] = k.Line
			}
		}
		l.route(&r, k, v, path+"["+k.Value+"]")
		routes = append(routes, r)
	}
	return routes
}

// route walks one route's value, short form (a backend) or long form.
func (l *loader) route(r *Route, k, v *yaml.Node, path string) {
	backend, key := v, path
	switch v.Kind {
	case yaml.ScalarNode:
	case yaml.MappingNode:
		f := l.fields(v, path, "backend", "tls", "ca", "plaintext", "proxy_protocol")
		backend, key = f["backend"], path+".backend"
		if backend == nil {
			l.el.add(k.Line, path, "", `missing key "backend"`)
		}
		if n := f["tls"]; n != nil {
			if s, ok := l.string(n, path+".tls", "a TLS mode"); ok {
				if !slices.Contains(tlsModes, TLSMode(s)) {
					l.el.add(n.Line, path+".tls", s, fmt.Sprintf("unknown tls mode %q (known: none, verify, insecure, strict)", s))
				} else {
					r.TLS = TLSMode(s)
				}
			}
		}
		if n := f["ca"]; n != nil {
			l.ca(r, n, path+".ca")
		}
		if n := f["plaintext"]; n != nil {
			if s, ok := l.string(n, path+".plaintext", "allow or refuse"); ok {
				switch s {
				case "allow":
					r.AllowPlaintext = true
				case "refuse":
				default:
					l.el.add(n.Line, path+".plaintext", s, fmt.Sprintf("expected allow or refuse, got %q", s))
				}
			}
		}
		if n := f["proxy_protocol"]; n != nil {
			if s, ok := l.string(n, path+".proxy_protocol", "a PROXY protocol version"); ok {
				if !slices.Contains(proxyVersions, ProxyVersion(s)) {
					l.el.add(n.Line, path+".proxy_protocol", s, fmt.Sprintf("unknown proxy_protocol %q (known: none, v1, v2)", s))
				} else {
					r.ProxyProtocol = ProxyVersion(s)
				}
			}
		}
	default:
		l.is(v, path, yaml.ScalarNode, "a backend or a mapping of route options")
		return
	}
	if backend == nil {
		return
	}
	s, ok := l.string(backend, key, "a backend host:port")
	if !ok {
		return
	}
	if s == "" {
		l.el.add(backend.Line, key, "", "missing backend")
		return
	}
	if err := checkRouteBackend(s); err != nil {
		l.el.add(backend.Line, key, s, fmt.Sprintf("invalid backend %q: %v", s, err))
		return
	}
	r.Backend = s
}

// ca checks a route's "ca" key; r.TLS must be known already.
func (l *loader) ca(r *Route, n *yaml.Node, key string) {
	s, ok := l.string(n, key, "a PEM file path")
	if !ok {
		return
	}
	if r.TLS != TLSVerify && r.TLS != TLSStrict {
		l.el.add(n.Line, key, s, fmt.Sprintf(`ca %q needs "tls: verify" or "tls: strict" (tls is %q)`, s, r.TLS))
		return
	}
	pool, err := loadCAFile(s)
	if err != nil {
		l.el.add(n.Line, key, s, fmt.Sprintf("invalid ca %q: %v", s, err)).Err = err
		return
	}
	r.CA, r.RootCAs = s, pool
}

// loadCAFile loads the certificates of path, a regular file holding at
// least one PEM certificate, every one of which must parse.
func loadCAFile(path string) (*x509.CertPool, error) {
	if !filepath.IsAbs(path) {
		return nil, errors.New("relative path; write an absolute path")
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, causeError{fmt.Sprintf("%s does not exist", path), err}
	case err != nil:
		return nil, fmt.Errorf("checking CA file: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", path)
	case fi.Size() > maxCAFileSize:
		return nil, fmt.Errorf("%s is larger than %d MiB", path, maxCAFileSize>>20)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCAFileSize))
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	certs := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d in %s: %w", certs+1, path, err)
		}
		pool.AddCert(cert)
		certs++
	}
	if certs == 0 {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}

// protocolOf returns the canonical protocol name of listener m, "" when
// its protocol key is missing or names no registered protocol (which the
// walk reports).
func protocolOf(m *yaml.Node) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k, v := m.Content[i], m.Content[i+1]; k.Value == "protocol" && v.Kind == yaml.ScalarNode {
			p, _ := canonicalProtocol(v.Value)
			return p
		}
	}
	return ""
}

// canonicalProtocol returns the canonical name of protocol name s, any
// case, alias or not, as the protocol packages registered it.
func canonicalProtocol(s string) (string, bool) { return dbproxy.Canonical(s) }

// knownProtocols lists the registered names and aliases for an error.
func knownProtocols() string {
	names := dbproxy.Protocols()
	aliases := dbproxy.Aliases()
	for i, n := range names {
		var as []string
		for a, c := range aliases {
			if c == n {
				as = append(as, a)
			}
		}
		if len(as) > 0 {
			slices.Sort(as)
			names[i] = n + " (" + strings.Join(as, ", ") + ")"
		}
	}
	return strings.Join(names, ", ")
}

// newListenAddr describes the valid listen address addr of listener path.
func newListenAddr(path, addr string, line int) listenAddr {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
		if ip.IsUnspecified() {
			host = ""
		}
	}
	return listenAddr{path: path, addr: addr, line: line, host: strings.ToLower(host), port: p}
}

// checkListenConflicts reports listen addresses that cannot all be bound:
// the same port on the same host, or on any host when one of them listens
// on all addresses.
func (l *loader) checkListenConflicts(addrs []listenAddr) {
	for i, a := range addrs {
		for _, b := range addrs[:i] {
			if a.port == b.port && (a.host == b.host || a.host == "" || b.host == "") {
				l.el.add(a.line, a.path+".listen", a.addr,
					fmt.Sprintf("listen address %q conflicts with %q of %s at line %d", a.addr, b.addr, b.path, b.line))
				break
			}
		}
	}
}
