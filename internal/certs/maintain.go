package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/rand/v2"
	"time"
)

// Renewal and retry schedule.
const (
	// maintenanceInterval is the longest the maintenance loop sleeps, so a
	// jump of the wall clock is noticed.
	maintenanceInterval = 10 * time.Minute
	// Failed orders are retried after backoffMin, doubling up to
	// backoffMax, less up to a quarter of jitter.
	backoffMin = time.Minute
	backoffMax = 6 * time.Hour
)

// backoff returns how long to wait after the n-th consecutive failure
// (n ≥ 1): backoffMin·2ⁿ⁻¹ up to backoffMax, less a random quarter, never
// under backoffMin.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 20 {
		d = min(backoffMin<<(max(n, 1)-1), backoffMax)
	}
	d -= rand.N(d/4 + 1) // #nosec G404 -- jitter, not a secret
	return max(d, backoffMin)
}

// renewAt returns when c is due for renewal: when a third of its lifetime
// is left, but not before a tenth of its lifetime has passed since
// obtainedAt (zero if unknown), so that a clock or a CA that makes a new
// certificate due at once cannot cause a loop of orders.
func renewAt(c *tls.Certificate, obtainedAt time.Time) time.Time {
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	t := c.Leaf.NotAfter.Add(-life / 3)
	if !obtainedAt.IsZero() {
		if floor := obtainedAt.Add(life / 10); t.Before(floor) {
			t = floor
		}
	}
	return t
}

// emergencyLine returns when a tenth of c's lifetime is left: past it, c
// is renewed whatever ARI says.
func emergencyLine(c *tls.Certificate) time.Time {
	return c.Leaf.NotAfter.Add(-c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 10)
}

// nextAttemptLocked returns when the Manager will next order e's
// certificate by itself: its renewal time (the time selected in the CA's
// ARI window, else when a third of its lifetime is left, and never past
// the emergency line at a tenth), or the end of the backoff after
// a failure; zero if never (no certificate and no failure: the next
// handshake orders it) or an order is in flight. m.mu is held.
func nextAttemptLocked(e *entry) time.Time {
	if e.flight != nil {
		return time.Time{}
	}
	if e.cert == nil {
		if e.failures > 0 {
			return e.retryAt
		}
		return time.Time{}
	}
	t := renewAt(e.cert, e.obtainedAt)
	if a := e.ari; a != nil && !a.selected.IsZero() {
		t = a.selected
	}
	if line := emergencyLine(e.cert); t.After(line) {
		t = line
	}
	// Whatever the schedule says, a certificate this process just
	// obtained is not replaced at once: no loop of orders.
	if !e.obtainedAt.IsZero() {
		life := e.cert.Leaf.NotAfter.Sub(e.cert.Leaf.NotBefore)
		if floor := e.obtainedAt.Add(min(life/10, ariMinAge)); t.Before(floor) {
			t = floor
		}
	}
	if e.failures > 0 && e.retryAt.After(t) {
		t = e.retryAt
	}
	return t
}

// maintain is the maintenance loop: it renews certificates when due and
// retries failed orders after their backoff, until Close. It runs as one
// goroutine owned by the Manager.
func (m *Manager) maintain() {
	for {
		next := m.maintainPass()
		m.passes.Add(1)
		now := m.clock.Now()
		if limit := now.Add(maintenanceInterval); next.IsZero() || next.After(limit) {
			next = limit
		}
		ch, stop := m.clock.At(next)
		select {
		case <-m.ctx.Done():
			stop()
			return
		case <-ch:
		case <-m.wake:
		}
		stop()
	}
}

// maintainPass renews the local CA's leaves that are due, loads the
// stored certificates of allowed names, starts the orders that are due
// and returns the earliest next attempt (zero if none).
func (m *Manager) maintainPass() time.Time {
	next := m.renewLocal()
	var keys []certKey
	for _, host := range m.hosts.Load().sorted() {
		if m.UsesLocalCA(host) {
			continue
		}
		keys = append(keys, certKey{host: host}, certKey{host: host, rsa: true})
	}
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(m.ctx, storageTimeout)
		m.load(ctx, k)
		cancel()
	}
	m.refreshARI(keys)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	for _, k := range keys {
		e := m.entries[k]
		if e == nil {
			continue // removed meanwhile
		}
		if e.ari != nil && e.cert != nil && (next.IsZero() || e.ari.nextFetch.Before(next)) {
			next = e.ari.nextFetch
		}
		t := nextAttemptLocked(e)
		if t.IsZero() {
			continue
		}
		if !now.Before(t) {
			m.startLocked(k, e)
			continue
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// refreshARI fetches the CA's renewal window of each certificate among
// keys that has none yet or whose Retry-After has passed, if the CA has
// ARI.
func (m *Manager) refreshARI(keys []certKey) {
	type due struct {
		k    certKey
		is   *issuer
		leaf *x509.Certificate
		prev *ariState
	}
	var todo []due
	m.mu.Lock()
	now := m.clock.Now()
	for _, k := range keys {
		e := m.entries[k]
		if e == nil || e.cert == nil || e.flight != nil {
			continue
		}
		is := m.ariIssuerLocked(e)
		if is != nil && (e.ari == nil || !now.Before(e.ari.nextFetch)) {
			todo = append(todo, due{k, is, e.cert.Leaf, e.ari})
		}
	}
	m.mu.Unlock()
	for _, d := range todo {
		ctx, cancel := context.WithTimeout(m.ctx, ariFetchTimeout)
		base, err := d.is.renewalInfoURL(ctx)
		cancel()
		if err != nil || base == "" {
			continue // no ARI, or the directory is unreachable: the next pass tries again
		}
		ctx, cancel = context.WithTimeout(m.ctx, ariFetchTimeout)
		st, err := m.fetchARI(ctx, d.is, d.leaf, d.prev, now)
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		if err != nil {
			st = &ariState{failures: 1}
			if d.prev != nil {
				*st = *d.prev
				st.failures++
			}
			st.nextFetch = now.Add(backoff(st.failures))
			m.log.Warn("renewal info failed", "host", d.k.host, "key", d.k.keyType(), "issuer", d.is.name, "ca", d.is.dirURL, "error", err, "failures", st.failures, "next_fetch", st.nextFetch)
		} else if st == nil {
			continue
		}
		m.mu.Lock()
		e := m.entries[d.k]
		stored := e != nil && e.cert != nil && e.cert.Leaf == d.leaf
		if stored {
			e.ari = st
		}
		m.mu.Unlock()
		if stored && err == nil && (d.prev == nil || !d.prev.selected.Equal(st.selected)) {
			attrs := []any{"host", d.k.host, "key", d.k.keyType(), "issuer", d.is.name, "ca", d.is.dirURL,
				"window_start", st.start, "window_end", st.end, "renew_at", st.selected}
			if st.explanation != "" {
				attrs = append(attrs, "explanation_url", st.explanation)
			}
			m.log.Info("renewal window", attrs...)
		}
		if stored {
			m.saveState(d.k)
		}
	}
}

// renewLocal re-issues the local CA's leaves (those served so far) that
// are due, so that a leaf is renewed even when no handshake asks for it,
// and returns the earliest renewal time of the others (zero if none).
func (m *Manager) renewLocal() time.Time {
	due, next := m.ca.due()
	for _, name := range due {
		if !m.Allowed(name) {
			continue
		}
		if _, err := m.ca.certificate(name); err != nil {
			m.failed(name, err)
		}
	}
	if len(due) > 0 {
		if _, n := m.ca.due(); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}
