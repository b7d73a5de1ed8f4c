package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/leproxy/leproxy/dbproxy"
	_ "github.com/leproxy/leproxy/dbproxy/all" // every protocol registers itself
	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
)

// tcpServer is one protocol-aware listener of the mapping's tcp section.
type tcpServer struct {
	addr     string // as written in the mapping
	key      string // the address resolved: what reloads match listeners on
	line     int
	protocol string
	routes   []string // "host→backend", for the start-up log
	srv      *dbproxy.Server
	ln       net.Listener
	guard    *clientlimit.Guard // nil when the listener limits nothing
}

// tcpDeps is what the tcp servers take from the rest of leproxy.
type tcpDeps struct {
	getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	metrics        *admin.Metrics // nil: no metrics
	logger         *slog.Logger
	clients        *clientlimit.Clients    // per-client limits; nil: none
	observer       dbproxy.SessionObserver // session spans; nil: tracing off
}

// listenKey is the address a listener binds, for matching the listeners of
// two mappings: ":5432", "0.0.0.0:5432" and "[::]:5432" all bind every
// address, "localhost:5432" binds what localhost resolves to. An address
// that does not resolve is its own key.
func listenKey(addr string) string {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return addr
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if ip = ip.Unmap(); !ok || ip.IsUnspecified() {
		return fmt.Sprintf("*:%d", ta.Port)
	}
	return netip.AddrPortFrom(ip, uint16(ta.Port)).String()
}

// dbRoutes translates a listener's routes for dbproxy.
func dbRoutes(l config.Listener) ([]dbproxy.Route, []string) {
	var routes []dbproxy.Route
	var names []string
	for _, r := range l.Routes {
		routes = append(routes, dbproxy.Route{
			Host:           r.Host,
			Backend:        r.Backend,
			TLS:            r.TLS,
			RootCAs:        r.RootCAs,
			AllowPlaintext: r.AllowPlaintext,
			ProxyProtocol:  r.ProxyProtocol,
		})
		names = append(names, r.Host+"→"+r.Backend)
	}
	return routes, names
}

// newTCPServer makes the server of listener l of the mapping in file; it
// does not bind.
func newTCPServer(file string, l config.Listener, deps tcpDeps) (*tcpServer, error) {
	p, ok := dbproxy.Lookup(l.Protocol)
	if !ok {
		// config.Load knows the same registry: not reached.
		return nil, fmt.Errorf("%s:%d: tcp listener %s: protocol %q is not registered", file, l.Line, l.Listen, l.Protocol)
	}
	routes, names := dbRoutes(l)
	metrics := deps.metrics
	guard := newGuard(deps.clients, l.Listen, l.Limits)
	srv, err := dbproxy.New(dbproxy.Config{
		Guard:          dbGuard(guard),
		Listen:         l.Listen,
		Protocol:       p,
		Routes:         routes,
		Default:        l.Default,
		GetCertificate: deps.getCertificate,
		IdleTimeout:    l.IdleTimeout,
		MaxConns:       l.MaxConns,
		Logger:         deps.logger,
		OnTLSHandshake: func(err error) { metrics.TLSHandshake(l.Listen, err) },
		Options:        l.Options,
		Observer:       deps.observer,
	})
	if err != nil {
		return nil, fmt.Errorf("%s:%d: tcp listener %s: %w", file, l.Line, l.Listen, err)
	}
	return &tcpServer{addr: l.Listen, key: listenKey(l.Listen), line: l.Line, protocol: l.Protocol, routes: names, srv: srv, guard: guard}, nil
}
