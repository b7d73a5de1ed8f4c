package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/httpproxy"
)

// live is the part of a running leproxy that a reload replaces: the HTTP
// handler, the certificate allow-list and the tcp listeners. Requests and
// sessions in flight keep what they started with.
type live struct {
	mapFile string
	opts    httpproxy.Options
	cm      *certs.Manager
	metrics *admin.Metrics
	logger  *slog.Logger
	g       *group
	// stopCtx ends when leproxy stops: removed listeners draining in the
	// background give up then.
	stopCtx context.Context

	handler  atomic.Pointer[httpproxy.Handler]
	backends atomic.Pointer[map[string]string] // HTTP host → backend as written, for the access log

	mu       sync.Mutex // serializes reloads and guards the fields below
	cfg      *config.Config
	tcp      []*tcpServer
	drained  map[*tcpServer]bool // removed listeners still draining
	draining sync.WaitGroup
}

// setBackends records cfg's HTTP hosts for backendOf.
func (l *live) setBackends(cfg *config.Config) {
	m := make(map[string]string, len(cfg.Hosts))
	for _, h := range cfg.Hosts {
		m[h.Name] = h.Backend.Raw
	}
	l.backends.Store(&m)
}

// backendOf returns the backend of an HTTP host of the current mapping.
func (l *live) backendOf(host string) string { return (*l.backends.Load())[host] }

// tcpStats returns the counters of every tcp listener, those draining
// after a reload included.
func (l *live) tcpStats() []admin.TCPListenerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []admin.TCPListenerStats
	add := func(ts *tcpServer) {
		out = append(out, admin.TCPListenerStats{Listen: ts.addr, Protocol: ts.protocol, Stats: ts.srv.Stats()})
	}
	for _, ts := range l.tcp {
		add(ts)
	}
	for ts := range l.drained {
		add(ts)
	}
	return out
}

// ServeHTTP serves a request with the current mapping's handler.
func (l *live) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.handler.Load().ServeHTTP(w, r)
}

// Known reports whether host is an HTTP host of the current mapping.
func (l *live) Known(host string) bool { return l.handler.Load().Known(host) }

// current returns the mapping being served and its tcp listeners.
func (l *live) current() (*config.Config, []*tcpServer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg, append([]*tcpServer(nil), l.tcp...)
}

// reload re-reads the mapping file and switches to it. A mapping with an
// error, or a new listener that cannot bind, changes nothing: the error is
// returned and the old mapping keeps serving.
func (l *live) reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cfg, err := config.Load(l.mapFile)
	if err != nil {
		return err
	}
	if err := checkProtocols(cfg); err != nil {
		return err
	}
	handler, err := httpproxy.New(cfg.Hosts, l.opts)
	if err != nil {
		return err
	}

	// Prepare every tcp change before making any, so that a failure
	// leaves the old set untouched.
	old := make(map[string]*tcpServer, len(l.tcp))
	for _, ts := range l.tcp {
		old[ts.addr] = ts
	}
	type update struct {
		ts     *tcpServer
		cfg    config.Listener
		routes []dbproxy.Route
		names  []string
	}
	var updates []update
	var added []*tcpServer
	undo := func() {
		for _, ts := range added {
			ts.ln.Close()
		}
	}
	var keep []*tcpServer
	for _, lc := range cfg.TCP {
		if ts, ok := old[lc.Listen]; ok {
			if ts.protocol != lc.Protocol {
				undo()
				return fmt.Errorf("%s:%d: tcp listener %s: changing its protocol from %s to %s needs a restart",
					cfg.File, lc.Line, lc.Listen, ts.protocol, lc.Protocol)
			}
			routes, names, err := dbRoutes(cfg.File, lc)
			if err == nil {
				err = ts.srv.CheckRoutes(routes, lc.Default)
			}
			if err != nil {
				undo()
				return fmt.Errorf("%s:%d: tcp listener %s: %w", cfg.File, lc.Line, lc.Listen, err)
			}
			updates = append(updates, update{ts, lc, routes, names})
			delete(old, lc.Listen)
			continue
		}
		ts, err := newTCPServer(cfg.File, lc, l.cm, l.metrics, l.logger)
		if err == nil {
			ts.ln, err = net.Listen("tcp", lc.Listen)
			if err != nil {
				err = fmt.Errorf("%s:%d: tcp listener %s: %w", cfg.File, lc.Line, lc.Listen, err)
			}
		}
		if err != nil {
			undo()
			return err
		}
		added = append(added, ts)
	}

	// Commit. New names join the allow-list before anything serves them.
	l.cm.SetHosts(cfg.Hostnames())
	if prev := l.handler.Swap(handler); prev != nil {
		prev.Close()
	}
	l.setBackends(cfg)
	for _, u := range updates {
		if err := u.ts.srv.SetRoutes(u.routes, u.cfg.Default); err != nil {
			// CheckRoutes accepted the same routes a moment ago.
			l.logger.Error("updating tcp routes", "listener", u.ts.addr, "error", err)
		}
		u.ts.routes, u.ts.line = u.names, u.cfg.Line
		keep = append(keep, u.ts)
	}
	for _, ts := range added {
		l.g.goServe("tcp "+ts.addr, func() error { return ts.srv.Serve(ts.ln) })
		l.logger.Info("listening", "proto", ts.protocol, "addr", ts.ln.Addr().String())
		keep = append(keep, ts)
	}
	for _, ts := range old {
		l.logger.Info("tcp listener removed: draining", "addr", ts.addr, "proto", ts.protocol)
		if l.drained == nil {
			l.drained = make(map[*tcpServer]bool)
		}
		l.drained[ts] = true
		l.draining.Add(1)
		go func() {
			defer l.draining.Done()
			if err := ts.srv.Shutdown(l.stopCtx); err != nil {
				l.logger.Warn("tcp listener drain cut short", "addr", ts.addr, "error", err)
			}
			l.mu.Lock()
			delete(l.drained, ts)
			l.mu.Unlock()
		}()
	}
	l.cfg, l.tcp = cfg, keep
	return nil
}

// watchFile calls onChange whenever the content of file changes, checking
// every interval until ctx ends. Polling keeps it dependency-free and works
// with editors that replace the file and with configuration management
// that rewrites it in place.
func watchFile(ctx context.Context, file string, interval time.Duration, onChange func()) {
	sum := func() []byte {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil // a missing file is a change when it comes back
		}
		h := sha256.Sum256(b)
		return h[:]
	}
	last := sum()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := sum(); s != nil && !bytes.Equal(s, last) {
				last = s
				onChange()
			}
		}
	}
}

var errNoMapFile = errors.New("the embedded demo has no mapping file to reload")
