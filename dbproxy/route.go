package dbproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/leproxy/leproxy/internal/hostname"
)

// TLSMode says how the Server connects to a route's backend.
type TLSMode string

const (
	// TLSNone connects in plaintext; the empty TLSMode means the same.
	TLSNone TLSMode = "none"
	// TLSVerify negotiates TLS with the backend, in the protocol's own way,
	// and verifies its certificate against Route.RootCAs (nil: the system
	// roots) for the backend's host name or IP address.
	TLSVerify TLSMode = "verify"
	// TLSInsecure negotiates TLS with the backend and does not verify its
	// certificate: the link is encrypted, not authenticated.
	TLSInsecure TLSMode = "insecure"
	// TLSStrict starts TLS with the backend from the first byte, for a
	// protocol that has such a mode beside its own upgrade (TDS 8.0,
	// "strict"), and verifies the certificate as TLSVerify does. Only
	// protocols that say so honour it (the mapping allows it on mssql
	// and ldap listeners only: TDS 8.0, LDAPS); BackendTLSConfig treats it
	// as TLSVerify.
	TLSStrict TLSMode = "strict"
)

// Enabled reports whether m asks for TLS to the backend.
func (m TLSMode) Enabled() bool { return m == TLSVerify || m == TLSInsecure || m == TLSStrict }

// ProxyVersion says whether the Server sends a backend the PROXY protocol
// header (HAProxy's, version 1 or 2) that tells it the client's address.
type ProxyVersion string

const (
	// ProxyNone sends no header; the empty ProxyVersion means the same.
	ProxyNone ProxyVersion = "none"
	// ProxyV1 sends the human-readable header, "PROXY TCP4 …\r\n".
	ProxyV1 ProxyVersion = "v1"
	// ProxyV2 sends the binary header.
	ProxyV2 ProxyVersion = "v2"
)

// ErrNoRoute is the error Session.Route wraps when a server name matches no
// route, or when a client sends no server name and there is no default.
var ErrNoRoute = errors.New("dbproxy: no route")

// Route maps one TLS server name of a listener to a backend.
type Route struct {
	// Host is the server name clients ask for with SNI, such as
	// "db.example.com"; matched without regard to case. A wildcard,
	// "*.example.com", serves the names one label under it that no other
	// route names.
	Host string
	// Backend is the backend's address, host:port.
	Backend string
	// TLS is how the backend is reached; "" means TLSNone.
	TLS TLSMode
	// RootCAs verifies the backend's certificate with TLSVerify; nil means
	// the system roots.
	RootCAs *x509.CertPool
	// AllowPlaintext lets clients that do not ask for TLS through. A client
	// without TLS sends no server name, so only the Default route's setting
	// is ever consulted; by default such clients are refused in their
	// protocol.
	AllowPlaintext bool
	// ProxyProtocol, when ProxyV1 or ProxyV2, makes Dial send the backend
	// a PROXY protocol header with the client's address and the
	// listener's, the first bytes on the connection, before the
	// protocol's own and before any TLS with the backend. The backend
	// must expect it (Postfix's smtpd_upstream_proxy_protocol, PostgreSQL
	// behind a proxy-aware pooler…): one that does not reads it as a
	// malformed request. "" means ProxyNone.
	ProxyProtocol ProxyVersion
}

// route is a Route as the Server keeps it: normalised, with its backend TLS
// config built once and its counters.
type route struct {
	Route
	backendTLS *tls.Config // nil for TLSNone
	stats      *routeStats // shared with the route of the same host after SetRoutes
	// finalReported is set, under Server.mu, once Stats has reported a
	// removed route after its last session.
	finalReported bool
}

// router resolves server names to routes.
type router struct {
	byHost   map[string]*route
	ordered  []*route // in Config order, for Stats
	def      *route   // nil when no default
	certName string   // name whose certificate is served for unknown or absent SNI
}

func newRouter(routes []Route, def string, alpn []string) (*router, error) {
	if len(routes) == 0 {
		return nil, errors.New("no routes")
	}
	rt := &router{byHost: make(map[string]*route, len(routes))}
	for i, r := range routes {
		host := hostname.Normalize(r.Host)
		if host == "" {
			return nil, fmt.Errorf("route %d: empty host", i)
		}
		if _, dup := rt.byHost[host]; dup {
			return nil, fmt.Errorf("route %s: duplicate host", host)
		}
		bhost, _, err := net.SplitHostPort(r.Backend)
		if err != nil {
			return nil, fmt.Errorf("route %s: backend %q: %w", host, r.Backend, err)
		}
		r.Host = host
		if r.TLS == "" {
			r.TLS = TLSNone
		}
		if r.TLS != TLSNone && r.TLS != TLSVerify && r.TLS != TLSInsecure && r.TLS != TLSStrict {
			return nil, fmt.Errorf("route %s: tls mode %q is not none, verify, insecure or strict", host, r.TLS)
		}
		switch r.ProxyProtocol {
		case "":
			r.ProxyProtocol = ProxyNone
		case ProxyNone, ProxyV1, ProxyV2:
		default:
			return nil, fmt.Errorf("route %s: proxy protocol %q is not none, v1 or v2", host, r.ProxyProtocol)
		}
		rs := &route{Route: r, backendTLS: backendTLSConfig(r, bhost, alpn), stats: new(routeStats)}
		rt.byHost[host] = rs
		rt.ordered = append(rt.ordered, rs)
	}
	rt.certName = rt.ordered[0].Host
	if def != "" {
		rt.def = rt.byHost[hostname.Normalize(def)]
		if rt.def == nil {
			return nil, fmt.Errorf("default %q is not one of the routes", def)
		}
		rt.certName = rt.def.Host
	}
	return rt, nil
}

// backendTLSConfig is the client TLS config for r's backend, whose host
// part is bhost; nil for TLSNone.
func backendTLSConfig(r Route, bhost string, alpn []string) *tls.Config {
	if !r.TLS.Enabled() {
		return nil
	}
	return &tls.Config{
		ServerName:         bhost,
		RootCAs:            r.RootCAs,
		InsecureSkipVerify: r.TLS == TLSInsecure,
		NextProtos:         alpn,
		MinVersion:         tls.VersionTLS12,
	}
}

// lookup returns the route for a TLS server name; "" is a client that sent
// none and gets the default route.
func (rt *router) lookup(serverName string) (*route, error) {
	if serverName == "" {
		if rt.def == nil {
			return nil, fmt.Errorf("%w for clients that send no server name", ErrNoRoute)
		}
		return rt.def, nil
	}
	if r, _, _ := hostname.Lookup(rt.byHost, hostname.Normalize(serverName)); r != nil {
		return r, nil // exact, else the wildcard route covering it
	}
	return nil, fmt.Errorf("%w for server name %q", ErrNoRoute, serverName)
}

// routes returns copies of the routes in Config order.
func (rt *router) routes() []Route {
	out := make([]Route, len(rt.ordered))
	for i, r := range rt.ordered {
		out[i] = r.Route
	}
	return out
}
