package certs

import (
	"net"
	"slices"
	"strings"

	"github.com/leproxy/leproxy/internal/hostname"
)

// hostSet is an immutable allow-list of normalized host names.
type hostSet map[string]struct{}

// newHostSet normalizes names (see hostname.Normalize) into a hostSet; empty
// names are dropped.
func newHostSet(names []string) hostSet {
	s := make(hostSet, len(names))
	for _, n := range names {
		if n = hostname.Normalize(n); n != "" {
			s[n] = struct{}{}
		}
	}
	return s
}

// sorted returns the names in s in order.
func (s hostSet) sorted() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// stripPort returns the host part of an HTTP Host header value
// ("example.com:8080" → "example.com"); a value without a port is
// returned unchanged.
func stripPort(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}

// isLocalhostName reports whether name is localhost or under .localhost
// (RFC 6761): names that always get their certificate from the local CA.
func isLocalhostName(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// SetHosts replaces the allow-list: the names, HTTP and tcp, for which the
// Manager serves certificates. Names are compared case-insensitively. It is
// safe to call while handshakes are running.
func (m *Manager) SetHosts(names []string) {
	s := newHostSet(names)
	m.setMu.Lock()
	defer m.setMu.Unlock()
	m.hosts.Store(&s)
	m.ca.forgetExcept(s)
	m.status.forgetExcept(s)
	m.forgetExcept(s)
	m.poke()
}

// forgetExcept drops the certificates of hosts no longer allowed and
// cancels their orders in flight: they are renewed no more.
func (m *Manager) forgetExcept(allowed hostSet) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if _, ok := allowed[k.host]; ok {
			continue
		}
		if e.flight != nil {
			e.flight.cancel()
		}
		delete(m.entries, k)
	}
}

// Allowed reports whether name gets a certificate: it is on the
// allow-list, or a wildcard on it covers name.
func (m *Manager) Allowed(name string) bool {
	return m.certName(hostname.Normalize(name)) != ""
}

// certName returns the allow-list's name whose certificate serves the
// normalised name: name itself, else the wildcard covering it (an exact
// name beats a wildcard); "" if none.
func (m *Manager) certName(name string) string {
	s := m.hosts.Load()
	if s == nil {
		return ""
	}
	_, key, _ := hostname.Lookup(*s, name)
	return key
}
