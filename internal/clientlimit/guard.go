package clientlimit

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// ErrBlocked is why Admit refuses a client on the block list.
var ErrBlocked = errors.New("clientlimit: client blocked")

// Failure kinds, for Guard.Failed and Block.Reason.
const (
	FailTLS      = "tls"      // a failed TLS handshake
	FailProtocol = "protocol" // malformed protocol before the session began
	FailAuth     = "auth"     // the backend refused the client's credentials
)

// BlockPolicy says when a listener blocks a client. The zero value never
// blocks.
type BlockPolicy struct {
	// After is the number of failures within Window that blocks; 0 never
	// blocks.
	After int
	// Window is the span failures are counted over; 0 means a minute.
	Window time.Duration
	// For is the first block's length, doubled on each repeat; 0 means
	// DefaultBlockFor.
	For time.Duration
	// Auth counts authentication failures the backend reports (for a tcp
	// listener whose protocol reads them); TLS and protocol failures
	// always count.
	Auth bool
}

func (p BlockPolicy) window() time.Duration {
	if p.Window > 0 {
		return p.Window
	}
	return time.Minute
}

// GuardConfig is one listener's per-client limits.
type GuardConfig struct {
	// Listener names the listener in logs and blocks.
	Listener string
	// Conns limits new connections per client (Rate, Burst) and open
	// connections per client (Concurrent).
	Conns Limits
	// Block says when a client's failures block it.
	Block BlockPolicy
}

// A Guard admits or refuses each new connection of one listener and
// counts its clients' failures.
type Guard struct {
	cfg GuardConfig
	c   *Clients
	lim *Limiter
}

// Guard returns the Guard of one listener, to be kept as long as cfg
// stays the same.
func (c *Clients) Guard(cfg GuardConfig) *Guard {
	return &Guard{cfg: cfg, c: c, lim: c.Limiter(cfg.Conns)}
}

// Config is what g was made of.
func (g *Guard) Config() GuardConfig { return g.cfg }

// Len is the number of clients g holds state for.
func (g *Guard) Len() int { return g.lim.Len() }

// Admit decides whether a new connection from addr is taken: not when
// the client is blocked (ErrBlocked), over its connection rate (ErrRate)
// or at its connection cap (ErrConcurrency). A taken connection's
// release must be called once when it closes. A client on the allow list
// is always taken.
func (g *Guard) Admit(addr netip.Addr) (release func(), err error) {
	if g.c.Exempt(addr) {
		return func() {}, nil
	}
	k := g.c.Key(addr)
	if _, blocked := g.c.blocks.Blocked(k); blocked {
		g.c.limited("blocked")
		return nil, ErrBlocked
	}
	if g.cfg.Conns.IsZero() {
		return func() {}, nil
	}
	release, _, err = g.lim.Acquire(k)
	switch {
	case errors.Is(err, ErrRate):
		g.c.limited("rate")
	case errors.Is(err, ErrConcurrency):
		g.c.limited("concurrency")
	}
	return release, err
}

// Failed counts a failure of kind (FailTLS, FailProtocol, FailAuth) by
// addr, and blocks the client when it reaches the policy's After within
// its Window. Authentication failures count only when the policy's Auth
// is set; a client on the allow list is never counted.
func (g *Guard) Failed(addr netip.Addr, kind string) {
	p := g.cfg.Block
	if p.After <= 0 || kind == FailAuth && !p.Auth || g.c.Exempt(addr) {
		return
	}
	k := g.c.Key(addr)
	now := g.c.now()
	t := g.lim.t
	t.mu.Lock()
	s := t.get(k, now, g.lim.fresh)
	if s.fails == 0 || now.Sub(s.failStart) > p.window() {
		s.fails, s.failStart = 0, now
	}
	s.fails++
	block := s.fails >= p.After
	if block {
		s.fails = 0
	}
	t.mu.Unlock()
	if block {
		g.c.blocks.Add(k, g.cfg.Listener, kind, p.For)
	}
}

// NetGuard is a Guard that takes the net.Addr of a connection, as a
// dbproxy.ClientGuard does.
type NetGuard struct{ *Guard }

// Admit is Guard.Admit for a connection's remote address.
func (n NetGuard) Admit(client net.Addr) (release func(), err error) {
	return n.Guard.Admit(AddrOf(client))
}

// Failed is Guard.Failed for a connection's remote address.
func (n NetGuard) Failed(client net.Addr, kind string) { n.Guard.Failed(AddrOf(client), kind) }

// Active is the number of open connections g took from addr's client.
func (g *Guard) Active(addr netip.Addr) int { return g.lim.Active(g.c.Key(addr)) }
