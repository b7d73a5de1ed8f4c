package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits is the mapping's "limits:" section: what every listener's
// per-client limits share, and the HTTPS listener's own.
type Limits struct {
	// TrustedProxies ("trusted_proxies") are the only peers whose
	// X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	// Allow ("allow") lists clients never limited and never blocked.
	Allow []netip.Prefix
	// IPv6Prefix ("ipv6_prefix") groups IPv6 clients; 0 means /64.
	IPv6Prefix int
	// MaxClients ("max_clients") bounds each table of per-client state;
	// 0 means the default.
	MaxClients int
	// HTTPS ("https") limits the HTTPS listener's connections.
	HTTPS ListenerLimits
	Line  int // line of the "limits" key; 0 when there is none
}

// ListenerLimits are a listener's per-client connection limits and block
// policy; zero values limit nothing.
type ListenerLimits struct {
	// ConnRate ("conn_rate", like 5/s) is new connections per second per
	// client; ConnBurst ("conn_burst") how many may come at once above it
	// (0: the rate rounded up).
	ConnRate  float64
	ConnBurst int
	// ConnsPerClient ("conns_per_client") caps a client's open
	// connections.
	ConnsPerClient int
	// Block ("block") blocks a client that fails too often.
	Block Block
}

// Block is a listener's "block:" policy: a client that fails (a TLS
// handshake, the protocol, and with Auth its login) After times within
// Window is blocked For, twice as long on each repeat.
type Block struct {
	After  int
	Window time.Duration // 0: a minute
	For    time.Duration // 0: ten minutes
	Auth   bool
}

// RateLimit is an HTTP host's "rate_limit:": per client, Requests per
// second with Burst above it (0: the rate rounded up), and at most InFlight
// requests at once; zero values limit nothing.
type RateLimit struct {
	Requests float64
	Burst    int
	InFlight int
}

// limitsSection walks the top-level "limits:" section.
func (l *loader) limitsSection(k, v *yaml.Node) {
	const path = "limits"
	lim := Limits{Line: k.Line}
	if !l.is(v, path, yaml.MappingNode, "a mapping of limits") {
		return
	}
	f := l.fields(v, path, "trusted_proxies", "allow", "ipv6_prefix", "max_clients", "https")
	if n := f["trusted_proxies"]; n != nil && !isNull(n) {
		lim.TrustedProxies = l.prefixes(n, path+".trusted_proxies")
	}
	if n := f["allow"]; n != nil && !isNull(n) {
		lim.Allow = l.prefixes(n, path+".allow")
	}
	if n := f["ipv6_prefix"]; n != nil {
		lim.IPv6Prefix = l.positiveInt(n, path+".ipv6_prefix")
		if lim.IPv6Prefix > 128 {
			l.el.add(n.Line, path+".ipv6_prefix", n.Value, fmt.Sprintf("expected a prefix length from 1 to 128, got %q", n.Value))
		}
	}
	if n := f["max_clients"]; n != nil {
		lim.MaxClients = l.positiveInt(n, path+".max_clients")
	}
	if n := f["https"]; n != nil {
		key := path + ".https"
		if l.is(n, key, yaml.MappingNode, "a mapping of connection limits") {
			lim.HTTPS = l.listenerLimits(l.fields(n, key, listenerLimitKeys...), key, false)
		}
	}
	l.cfg.Limits = lim
}

// listenerLimitKeys are the keys of a listener's limits, in a tcp
// listener or limits.https.
var listenerLimitKeys = []string{"conn_rate", "conn_burst", "conns_per_client", "block"}

// listenerLimits reads the listenerLimitKeys of f; auth says whether the
// listener can count authentication failures.
func (l *loader) listenerLimits(f map[string]*yaml.Node, path string, auth bool) ListenerLimits {
	var ll ListenerLimits
	if n := f["conn_rate"]; n != nil {
		ll.ConnRate = l.rate(n, path+".conn_rate")
	}
	if n := f["conn_burst"]; n != nil {
		ll.ConnBurst = l.positiveInt(n, path+".conn_burst")
		if f["conn_rate"] == nil {
			l.el.add(n.Line, path+".conn_burst", n.Value, `conn_burst needs "conn_rate"`)
		}
	}
	if n := f["conns_per_client"]; n != nil {
		ll.ConnsPerClient = l.positiveInt(n, path+".conns_per_client")
	}
	if n := f["block"]; n != nil {
		ll.Block = l.block(n, path+".block", auth)
	}
	return ll
}

// block walks a "block:" policy.
func (l *loader) block(n *yaml.Node, path string, auth bool) Block {
	var b Block
	if !l.is(n, path, yaml.MappingNode, "a mapping with after, window, for and auth") {
		return b
	}
	f := l.fields(n, path, "after", "window", "for", "auth")
	if f["after"] == nil {
		l.el.add(n.Line, path, "", `missing key "after"`)
	} else {
		b.After = l.positiveInt(f["after"], path+".after")
	}
	if v := f["window"]; v != nil {
		b.Window = l.duration(v, path+".window")
	}
	if v := f["for"]; v != nil {
		b.For = l.duration(v, path+".for")
	}
	if v := f["auth"]; v != nil {
		b.Auth, _ = l.bool(v, path+".auth")
		if b.Auth && !auth {
			l.el.add(v.Line, path+".auth", v.Value, "auth failures are counted on tcp listeners only")
		}
	}
	return b
}

// rateLimit walks an HTTP host's "rate_limit:".
func (l *loader) rateLimit(n *yaml.Node, path string) RateLimit {
	var r RateLimit
	if !l.is(n, path, yaml.MappingNode, "a mapping with requests, burst and in_flight") {
		return r
	}
	f := l.fields(n, path, "requests", "burst", "in_flight")
	if v := f["requests"]; v != nil {
		r.Requests = l.rate(v, path+".requests")
	}
	if v := f["burst"]; v != nil {
		r.Burst = l.positiveInt(v, path+".burst")
		if f["requests"] == nil {
			l.el.add(v.Line, path+".burst", v.Value, `burst needs "requests"`)
		}
	}
	if v := f["in_flight"]; v != nil {
		r.InFlight = l.positiveInt(v, path+".in_flight")
	}
	if f["requests"] == nil && f["in_flight"] == nil {
		l.el.add(n.Line, path, "", `expected "requests" or "in_flight"`)
	}
	return r
}

// rate parses a rate "N/s", "N/m" or "N/h" into events per second.
func (l *loader) rate(n *yaml.Node, key string) float64 {
	s, ok := l.string(n, key, "a rate like 10/s")
	if !ok {
		return 0
	}
	r, err := parseRate(s)
	if err != nil {
		l.el.add(n.Line, key, s, fmt.Sprintf("invalid rate %q: %v", s, err))
	}
	return r
}

// parseRate parses "N/s", "N/m" or "N/h" (N a positive number).
func parseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("expected a number per unit, like 10/s, 100/m or 1000/h")
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a positive number", num)
	}
	switch strings.TrimSpace(unit) {
	case "s":
		return v, nil
	case "m":
		return v / 60, nil
	case "h":
		return v / 3600, nil
	}
	return 0, fmt.Errorf("unknown unit %q (known: s, m, h)", unit)
}

// positiveInt returns the scalar n as a positive integer.
func (l *loader) positiveInt(n *yaml.Node, key string) int {
	var v int
	if !l.is(n, key, yaml.ScalarNode, "a positive integer") {
		return 0
	}
	if n.Tag != "!!int" || n.Decode(&v) != nil || v <= 0 {
		l.el.add(n.Line, key, n.Value, fmt.Sprintf("expected a positive integer, got %q", n.Value))
		return 0
	}
	return v
}

// duration returns the scalar n as a positive Go duration.
func (l *loader) duration(n *yaml.Node, key string) time.Duration {
	s, ok := l.string(n, key, "a duration")
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		l.el.add(n.Line, key, s, fmt.Sprintf("expected a positive duration like 30s or 5m, got %q", s))
		return 0
	}
	return d
}
