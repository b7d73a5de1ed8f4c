package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/httpproxy"
)

// live is the part of a running leproxy that a reload replaces: the HTTP
// handler, the certificate allow-list and the tcp listeners. Requests and
// sessions in flight keep what they started with.
type live struct {
	mapFile string
	// load, if set, reads the mapping instead of config.Load(mapFile):
	// the fleet's mapping in the store.
	load   func() (*config.Config, error)
	opts   httpproxy.Options
	deps   tcpDeps
	cm     *certs.Manager
	logger *slog.Logger
	g      *group
	// stopCtx ends when leproxy stops: removed listeners draining in the
	// background give up then.
	stopCtx      context.Context
	drainTimeout time.Duration

	handler atomic.Pointer[httpproxy.Handler]
	// httpsGuard applies the mapping's limits.https; nil for none.
	httpsGuard atomic.Pointer[clientlimit.Guard]
	backends   atomic.Pointer[map[string]string] // HTTP host → backend as written, for the access log

	reloading sync.Mutex     // serializes reloads
	mu        sync.Mutex     // guards the fields below
	cfg       *config.Config // nil until the first commit
	tcp       []*tcpServer
	drained   map[*tcpServer]bool // removed listeners still draining
	draining  sync.WaitGroup
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
	l.reloading.Lock()
	defer l.reloading.Unlock()
	var cfg *config.Config
	var err error
	if l.load != nil {
		cfg, err = l.load()
	} else {
		cfg, err = config.Load(l.mapFile)
	}
	if err != nil {
		return err
	}
	_, current := l.current()
	opts := l.opts
	opts.Previous = l.handler.Load() // hosts with an unchanged rate_limit keep their state
	g, err := prepare(cfg, current, opts, l.deps)
	if err != nil {
		return err
	}
	l.commit(g)
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
