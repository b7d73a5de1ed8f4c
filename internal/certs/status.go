package certs

import (
	"context"
	"crypto/x509"
	"sync"
	"time"
)

// failureLogInterval is how often an unchanged certificate failure for one
// host is logged again; a test seam.
var failureLogInterval = time.Minute

// Status describes the certificate of one allowed host.
type Status struct {
	// Host is the name, as on the allow-list.
	Host string
	// Issuer is the common name (or full name) of the issuer of the
	// certificate being served; empty if none is known yet.
	Issuer string
	// NotAfter is the expiry of that certificate; zero if none is known.
	NotAfter time.Time
	// NotBefore is the start of that certificate's validity, so that
	// NotAfter-NotBefore is its lifetime; zero if none is known.
	NotBefore time.Time
	// CA names the ACME issuer (IssuerConfig.Name) that issued the
	// certificate being served, or "local" for the local CA; empty if
	// unknown (a certificate from a cache without its schedule).
	CA string
	// Local reports that the certificate comes from the local CA.
	Local bool
	// LastError is the last error obtaining a certificate, cleared when
	// one is obtained.
	LastError string
	// LastAttempt is when a certificate was last obtained or failed to be.
	LastAttempt time.Time
	// NextAttempt is when the Manager will next order a certificate by
	// itself: the renewal time of the one served, or the end of the
	// backoff after a failure. Zero for the local CA, while an order is in
	// flight, and for a name without a certificate that has not failed
	// (its first handshake orders it).
	NextAttempt time.Time
	// Failures counts the failed orders since the last success.
	Failures int
}

// statusBook records per host what the Manager knows about certificates;
// safe for concurrent use.
type statusBook struct {
	mu    sync.Mutex
	hosts map[string]*hostStatus
}

type hostStatus struct {
	leaf        *x509.Certificate // being served, or last obtained
	local       bool
	lastErr     string
	lastAttempt time.Time
	loggedErr   string    // last failure logged
	loggedAt    time.Time // when it was logged
}

func (b *statusBook) get(host string) *hostStatus {
	if b.hosts == nil {
		b.hosts = make(map[string]*hostStatus)
	}
	h := b.hosts[host]
	if h == nil {
		h = &hostStatus{}
		b.hosts[host] = h
	}
	return h
}

// obtained records a certificate newly obtained for host at time at.
func (b *statusBook) obtained(host string, leaf *x509.Certificate, local bool, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.get(host)
	h.leaf, h.local = leaf, local
	h.lastErr, h.loggedErr = "", ""
	h.lastAttempt = at
}

// failed records a failure for host at time at and reports whether it
// should be logged: it differs from the last one logged, or that was logged
// failureLogInterval ago or more.
func (b *statusBook) failed(host, msg string, at time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.get(host)
	h.lastErr, h.lastAttempt = msg, at
	if msg == h.loggedErr && at.Sub(h.loggedAt) < failureLogInterval {
		return false
	}
	h.loggedErr, h.loggedAt = msg, at
	return true
}

// status returns what is known about host.
func (b *statusBook) status(host string) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Status{Host: host}
	h := b.hosts[host]
	if h == nil {
		return s
	}
	if h.leaf != nil {
		s.Issuer = issuerName(h.leaf)
		s.NotAfter = h.leaf.NotAfter
		s.NotBefore = h.leaf.NotBefore
	}
	s.Local = h.local
	if h.local && h.leaf != nil {
		s.CA = "local"
	}
	s.LastError = h.lastErr
	s.LastAttempt = h.lastAttempt
	return s
}

// forgetExcept drops hosts no longer allowed.
func (b *statusBook) forgetExcept(allowed hostSet) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for host := range b.hosts {
		if _, ok := allowed[host]; !ok {
			delete(b.hosts, host)
		}
	}
}

// issuerName returns the issuer's common name, or its full name when it has
// none.
func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

// Status returns what is known about the certificate of each allowed host,
// sorted by host. A certificate in Storage that was not served yet is
// loaded (and then kept for renewal).
func (m *Manager) Status() []Status {
	hosts := m.hosts.Load().sorted()
	out := make([]Status, 0, len(hosts))
	for _, host := range hosts {
		if m.local || isLocalhostName(host) {
			out = append(out, m.status.status(host))
			continue
		}
		ecdsaKey, rsaKey := certKey{host: host}, certKey{host: host, rsa: true}
		ctx, cancel := context.WithTimeout(m.ctx, storageTimeout)
		m.load(ctx, ecdsaKey)
		m.load(ctx, rsaKey)
		cancel()
		m.mu.Lock()
		out = append(out, statusOf(host, m.entries[ecdsaKey], m.entries[rsaKey]))
		m.mu.Unlock()
	}
	return out
}

// statusOf merges the entries of a host's ECDSA and RSA certificates (either
// may be nil): the ECDSA certificate if there is one, the latest attempt,
// the earliest next attempt. m.mu is held.
func statusOf(host string, entries ...*entry) Status {
	s := Status{Host: host}
	var served *x509.Certificate
	for _, e := range entries {
		if e == nil {
			continue
		}
		if served == nil && e.cert != nil {
			served = e.cert.Leaf
			if e.issuedBy != nil {
				s.CA = e.issuedBy.name
			}
		}
		if e.lastAttempt.After(s.LastAttempt) {
			s.LastAttempt, s.LastError, s.Failures = e.lastAttempt, e.lastErr, e.failures
		}
		if t := nextAttemptLocked(e); !t.IsZero() && (s.NextAttempt.IsZero() || t.Before(s.NextAttempt)) {
			s.NextAttempt = t
		}
	}
	if served != nil {
		s.Issuer = issuerName(served)
		s.NotAfter = served.NotAfter
		s.NotBefore = served.NotBefore
	}
	return s
}
