package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/httpproxy"
)

// A generation is what one mapping makes of leproxy, prepared next to the
// one serving and not yet serving itself: the HTTP handler, the tcp
// listeners that stay (with their new routes, limits and options), those to open
// (already bound, so that a port in use fails the generation and not half
// of it) and those to close. Start-up prepares one next to nothing and
// commits it; a reload prepares one next to the current listeners and
// commits it only when everything is ready.
type generation struct {
	cfg        *config.Config
	challenges []certs.ChallengeRule // of cfg's certificates section
	handler    *httpproxy.Handler
	updates    []tcpUpdate
	added      []*tcpServer
	removed    []*tcpServer
}

// tcpUpdate is a listener that stays, with what changes.
type tcpUpdate struct {
	ts     *tcpServer
	cfg    config.Listener
	routes []dbproxy.Route
	names  []string
}

// prepare builds the generation of cfg next to the tcp listeners current,
// changing nothing that serves. Listeners are matched by the address they
// bind (listenKey), so a respelling of an address keeps its listener. On
// error every listener it bound is closed again.
func prepare(cfg *config.Config, current []*tcpServer, opts httpproxy.Options, deps tcpDeps) (_ *generation, err error) {
	handler, err := httpproxy.New(cfg.Hosts, opts)
	if err != nil {
		return nil, err
	}
	g := &generation{cfg: cfg, handler: handler}
	if g.challenges, err = challengeRules(cfg); err != nil {
		handler.Close()
		return nil, err
	}
	defer func() {
		if err != nil {
			g.abort()
		}
	}()
	old := make(map[string]*tcpServer, len(current))
	for _, ts := range current {
		old[ts.key] = ts
	}
	for _, lc := range cfg.TCP {
		key := listenKey(lc.Listen)
		ts, ok := old[key]
		if !ok {
			ts, err := newTCPServer(cfg.File, lc, deps)
			if err != nil {
				return nil, err
			}
			if ts.ln, err = net.Listen("tcp", lc.Listen); err != nil {
				return nil, fmt.Errorf("%s:%d: tcp listener %s: %w", cfg.File, lc.Line, lc.Listen, err)
			}
			g.added = append(g.added, ts)
			continue
		}
		delete(old, key)
		if ts.protocol != lc.Protocol {
			return nil, fmt.Errorf("%s:%d: tcp listener %s: changing its protocol from %s to %s needs a restart",
				cfg.File, lc.Line, lc.Listen, ts.protocol, lc.Protocol)
		}
		routes, names := dbRoutes(lc)
		if err := ts.srv.CheckRoutes(routes, lc.Default); err != nil {
			return nil, fmt.Errorf("%s:%d: tcp listener %s: %w", cfg.File, lc.Line, lc.Listen, err)
		}
		if err := ts.srv.CheckOptions(lc.Options); err != nil {
			return nil, fmt.Errorf("%s:%d: tcp listener %s: %w", cfg.File, lc.Line, lc.Listen, err)
		}
		g.updates = append(g.updates, tcpUpdate{ts, lc, routes, names})
	}
	for _, ts := range current {
		if old[ts.key] == ts {
			g.removed = append(g.removed, ts)
		}
	}
	return g, nil
}

// abort closes what prepare opened, for a generation that is not
// committed.
func (g *generation) abort() {
	for _, ts := range g.added {
		if ts.ln != nil {
			ts.ln.Close()
		}
	}
	if g.handler != nil {
		g.handler.Close()
	}
}

// commit makes g the serving generation: new names join the certificate
// allow-list before anything serves them, the HTTP handler is swapped
// (requests in flight finish on the old one), the tcp listeners that stay
// take their new routes and limits (sessions in flight keep theirs), new
// listeners serve and removed ones stop accepting and drain for at most
// drainTimeout. It cannot fail.
func (l *live) commit(g *generation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The challenge rules first: a new wildcard is never ordered without
	// its dns-01 rule.
	if err := l.cm.SetChallenges(g.challenges); err != nil {
		// challengeRules built them from a valid mapping a moment ago.
		l.logger.Error("setting certificate challenges", "error", err)
	}
	l.cm.SetHosts(g.cfg.Hostnames())
	if c := l.deps.clients; c != nil {
		c.SetPolicy(policyOf(g.cfg.Limits))
		l.httpsGuard.Store(keepGuard(c, l.httpsGuard.Load(), "https", g.cfg.Limits.HTTPS))
	}
	if prev := l.handler.Swap(g.handler); prev != nil {
		prev.Close()
	}
	l.setBackends(g.cfg)
	var tcp []*tcpServer
	for _, u := range g.updates {
		if err := u.ts.srv.SetRoutes(u.routes, u.cfg.Default); err != nil {
			// CheckRoutes accepted the same routes a moment ago.
			l.logger.Error("updating tcp routes", "listener", u.ts.addr, "error", err)
		}
		u.ts.srv.SetLimits(u.cfg.MaxConns, u.cfg.IdleTimeout)
		if err := u.ts.srv.SetOptions(u.cfg.Options); err != nil {
			// CheckOptions accepted the same options a moment ago.
			l.logger.Error("updating tcp listener options", "listener", u.ts.addr, "error", err)
		}
		if g := keepGuard(l.deps.clients, u.ts.guard, u.cfg.Listen, u.cfg.Limits); g != u.ts.guard {
			u.ts.guard = g
			u.ts.srv.SetGuard(dbGuard(g))
		}
		u.ts.addr, u.ts.routes, u.ts.line = u.cfg.Listen, u.names, u.cfg.Line
		tcp = append(tcp, u.ts)
	}
	for _, ts := range g.added {
		l.g.goServe("tcp "+ts.addr, func() error { return ts.srv.Serve(ts.ln) })
		if l.cfg != nil { // start-up logs its listeners itself
			l.logger.Info("listening", "proto", ts.protocol, "addr", ts.ln.Addr().String())
		}
		tcp = append(tcp, ts)
	}
	for _, ts := range g.removed {
		l.logger.Info("tcp listener removed: draining", "addr", ts.addr, "proto", ts.protocol)
		if l.drained == nil {
			l.drained = make(map[*tcpServer]bool)
		}
		l.drained[ts] = true
		l.draining.Add(1)
		go func() {
			defer l.draining.Done()
			ctx, cancel := context.WithTimeout(l.stopCtx, l.drainTimeout)
			defer cancel()
			if err := ts.srv.Shutdown(ctx); err != nil {
				l.logger.Warn("tcp listener drain cut short", "addr", ts.addr, "error", err)
			}
			l.mu.Lock()
			delete(l.drained, ts)
			l.mu.Unlock()
		}()
	}
	l.cfg, l.tcp = g.cfg, tcp
}

// drainTimeout bounds how long a stopping leproxy waits for in-flight
// requests and sessions, and how long a listener a reload removed drains.
// A variable for the tests.
var drainTimeout = 15 * time.Second
