package main

import (
	"golang.org/x/time/rate"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
)

// policyOf is the clientlimit policy of the mapping's limits section.
func policyOf(l config.Limits) clientlimit.Policy {
	return clientlimit.Policy{TrustedProxies: l.TrustedProxies, Allow: l.Allow, IPv6Prefix: l.IPv6Prefix, MaxClients: l.MaxClients}
}

// guardConfig is the clientlimit form of a listener's limits.
func guardConfig(name string, l config.ListenerLimits) clientlimit.GuardConfig {
	return clientlimit.GuardConfig{
		Listener: name,
		Conns:    clientlimit.Limits{Rate: rate.Limit(l.ConnRate), Burst: l.ConnBurst, Concurrent: l.ConnsPerClient},
		Block:    clientlimit.BlockPolicy{After: l.Block.After, Window: l.Block.Window, For: l.Block.For, Auth: l.Block.Auth},
	}
}

// newGuard is the guard of a listener's limits. A listener without limits
// has one too: a client blocked on one listener is refused on all.
func newGuard(clients *clientlimit.Clients, name string, l config.ListenerLimits) *clientlimit.Guard {
	if clients == nil {
		return nil
	}
	return clients.Guard(guardConfig(name, l))
}

// keepGuard returns cur when it applies the same limits as l, so that a
// reload keeps its clients' state, and a new guard otherwise.
func keepGuard(clients *clientlimit.Clients, cur *clientlimit.Guard, name string, l config.ListenerLimits) *clientlimit.Guard {
	if cur != nil && cur.Config() == guardConfig(name, l) {
		return cur
	}
	return newGuard(clients, name, l)
}

// dbGuard is g as a dbproxy.ClientGuard (nil for nil).
func dbGuard(g *clientlimit.Guard) dbproxy.ClientGuard {
	if g == nil {
		return nil
	}
	return clientlimit.NetGuard{Guard: g}
}
