package clientlimit

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// Policy is what every listener's limits share, from the mapping's
// limits section.
type Policy struct {
	// TrustedProxies are the only peers whose X-Forwarded-For (HTTP) is
	// believed: the client is the address they forwarded for.
	TrustedProxies []netip.Prefix
	// Allow lists clients never limited, never counted and never blocked.
	Allow []netip.Prefix
	// IPv6Prefix groups IPv6 clients; 0 means DefaultIPv6Prefix.
	IPv6Prefix int
	// MaxClients bounds each table of per-client state; 0 means
	// DefaultMaxClients.
	MaxClients int
}

// Equal reports whether p and q are the same policy.
func (p Policy) Equal(q Policy) bool {
	return slices.Equal(p.TrustedProxies, q.TrustedProxies) && slices.Equal(p.Allow, q.Allow) &&
		p.IPv6Prefix == q.IPv6Prefix && p.MaxClients == q.MaxClients
}

// Options configures New. The zero value is usable.
type Options struct {
	// Blocks is the block list shared by every listener; nil makes one.
	Blocks *Blocklist
	// Clock is the time source; nil means time.Now.
	Clock Clock
	// OnLimited, if set, is called for each connection or request refused
	// with what refused it: "rate", "concurrency" or "blocked".
	OnLimited func(kind string)
}

// Clients is the per-client machinery of one leproxy: the Policy, which
// a reload may change, the Blocklist, and the Guards and Limiters made
// from it.
type Clients struct {
	opts   Options
	blocks *Blocklist
	policy atomic.Pointer[Policy]
}

// New returns the Clients of p.
func New(p Policy, opts Options) *Clients {
	c := &Clients{opts: opts, blocks: opts.Blocks}
	if c.blocks == nil {
		c.blocks = NewBlocklist(BlocklistOptions{Clock: opts.Clock})
	}
	c.SetPolicy(p)
	return c
}

// SetPolicy replaces the policy, for a reload; state is kept.
func (c *Clients) SetPolicy(p Policy) { c.policy.Store(&p) }

// Policy returns the policy in force.
func (c *Clients) Policy() Policy { return *c.policy.Load() }

// Blocks is the shared block list.
func (c *Clients) Blocks() *Blocklist { return c.blocks }

// Key is the Key of addr under the policy's IPv6 prefix.
func (c *Clients) Key(addr netip.Addr) Key { return KeyOf(addr, c.policy.Load().IPv6Prefix) }

// Exempt reports whether addr is on the policy's allow list.
func (c *Clients) Exempt(addr netip.Addr) bool { return contains(c.policy.Load().Allow, addr) }

// Trusted reports whether addr is one of the policy's trusted proxies.
func (c *Clients) Trusted(addr netip.Addr) bool {
	return contains(c.policy.Load().TrustedProxies, addr)
}

// Limiter returns a Limiter of l with the policy's bound, to be kept as
// long as l stays the same.
func (c *Clients) Limiter(l Limits) *Limiter {
	return NewLimiter(l, LimiterOptions{MaxClients: c.policy.Load().MaxClients, Clock: c.opts.Clock})
}

func (c *Clients) limited(kind string) {
	if c.opts.OnLimited != nil {
		c.opts.OnLimited(kind)
	}
}

func (c *Clients) now() time.Time { return c.opts.Clock.now() }

// Client is the client of a request from peer carrying the
// X-Forwarded-For values xff: see ForwardedFor, with the policy's trusted
// proxies.
func (c *Clients) Client(peer netip.Addr, xff []string) netip.Addr {
	return ForwardedFor(peer, xff, c.Trusted)
}
