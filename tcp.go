package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/config"
)

// tcpServer is one protocol-aware listener of the mapping's tcp section.
type tcpServer struct {
	addr     string // as written in the mapping: the key reloads match on
	line     int
	protocol string
	routes   []string // "host→backend", for the start-up log
	srv      *dbproxy.Server
	ln       net.Listener
}

// checkProtocols reports tcp listeners whose protocol the mapping accepts
// but this build of leproxy does not serve yet.
func checkProtocols(cfg *config.Config) error {
	for _, l := range cfg.TCP {
		if _, ok := dbproxy.Lookup(l.Protocol); !ok {
			return fmt.Errorf("%s:%d: tcp listener %s: protocol %q is not supported by this version of leproxy (supported: %v)",
				cfg.File, l.Line, l.Listen, l.Protocol, dbproxy.Protocols())
		}
	}
	return nil
}

func newTCPServers(cfg *config.Config, cm *certs.Manager, metrics *admin.Metrics, logger *slog.Logger) ([]*tcpServer, error) {
	var out []*tcpServer
	for _, l := range cfg.TCP {
		ts, err := newTCPServer(cfg.File, l, cm, metrics, logger)
		if err != nil {
			return nil, err
		}
		out = append(out, ts)
	}
	return out, nil
}

// dbRoutes translates a listener's routes for dbproxy, loading CA files.
func dbRoutes(file string, l config.Listener) ([]dbproxy.Route, []string, error) {
	var routes []dbproxy.Route
	var names []string
	for _, r := range l.Routes {
		route := dbproxy.Route{
			Host:           r.Host,
			Backend:        r.Backend,
			TLS:            dbproxy.TLSMode(r.TLS),
			AllowPlaintext: r.AllowPlaintext,
		}
		if r.CA != "" {
			pool, err := loadCertPool(r.CA)
			if err != nil {
				return nil, nil, fmt.Errorf("%s:%d: route %s: ca: %w", file, r.Line, r.Host, err)
			}
			route.RootCAs = pool
		}
		routes = append(routes, route)
		names = append(names, r.Host+"→"+r.Backend)
	}
	return routes, names, nil
}

func newTCPServer(file string, l config.Listener, cm *certs.Manager, metrics *admin.Metrics, logger *slog.Logger) (*tcpServer, error) {
	p, ok := dbproxy.Lookup(l.Protocol)
	if !ok {
		return nil, fmt.Errorf("%s:%d: protocol %q not supported", file, l.Line, l.Protocol)
	}
	routes, names, err := dbRoutes(file, l)
	if err != nil {
		return nil, err
	}
	srv, err := dbproxy.New(dbproxy.Config{
		Listen:         l.Listen,
		Protocol:       p,
		Routes:         routes,
		Default:        l.Default,
		GetCertificate: cm.GetCertificate,
		IdleTimeout:    l.IdleTimeout,
		MaxConns:       l.MaxConns,
		Logger:         logger,
		OnTLSHandshake: func(err error) { metrics.TLSHandshake(l.Listen, err) },
	})
	if err != nil {
		return nil, fmt.Errorf("%s:%d: tcp listener %s: %w", file, l.Line, l.Listen, err)
	}
	return &tcpServer{addr: l.Listen, line: l.Line, protocol: l.Protocol, routes: names, srv: srv}, nil
}
