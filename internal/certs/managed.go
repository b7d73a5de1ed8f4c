package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// orderTimeout bounds one order, from the account to the stored
// certificate; a test seam.
var orderTimeout = 5 * time.Minute

// storageTimeout bounds a Storage call made outside an order.
const storageTimeout = 10 * time.Second

// entry is what the Manager knows of one certificate (certKey); guarded by
// Manager.mu.
type entry struct {
	cert        *tls.Certificate // served until it expires; nil if none
	obtainedAt  time.Time        // when this process obtained cert; zero if loaded
	loaded      bool             // Storage has been read
	failures    int              // consecutive failed orders
	lastErr     string           // of the last failed order; "" after a success
	lastAttempt time.Time        // end of the last order, failed or not
	retryAt     time.Time        // after a failure: no order before
	flight      *flight          // the order in flight, if any
	ari         *ariState        // the CA's renewal window for cert; nil if unknown
	issuedBy    *issuer          // the issuer of cert; nil if unknown (then ARI asks the first)
	issuerGone  bool             // cert's schedule names an issuer no longer configured: no ARI
	// Issuer fallback (see fallbackAfter): orders start at issuer
	// startIssuer; failIssuer had the last failures, issuerFailures
	// of them in a row.
	startIssuer, failIssuer, issuerFailures int
}

// flight is one order in flight; cert and err are set before done is
// closed.
type flight struct {
	done   chan struct{}
	cert   *tls.Certificate
	err    error
	cancel context.CancelFunc
}

// entryLocked returns the entry of k, creating it; nil if k's host is not
// allowed. m.mu is held.
func (m *Manager) entryLocked(k certKey) *entry {
	e := m.entries[k]
	if e == nil {
		if !m.Allowed(k.host) {
			return nil
		}
		e = &entry{}
		m.entries[k] = e
	}
	return e
}

// acmeCertificate returns the certificate of k: the one in memory until
// it expires, else the one in Storage, else a new one from the order in
// flight or a new order (unless the last one failed and its backoff has
// not passed). It waits for the order no longer than ctx allows; the
// order itself goes on, bounded by orderTimeout and Close.
func (m *Manager) acmeCertificate(ctx context.Context, k certKey) (*tls.Certificate, error) {
	if m.ctx.Err() != nil {
		return nil, ErrClosed
	}
	m.load(ctx, k)
	m.mu.Lock()
	e := m.entryLocked(k)
	if e == nil {
		m.mu.Unlock()
		return nil, errNotAllowed
	}
	now := m.clock.Now()
	if c := e.cert; c != nil && now.Before(c.Leaf.NotAfter) {
		m.mu.Unlock()
		return c, nil
	}
	f := e.flight
	if f == nil {
		if now.Before(e.retryAt) {
			err := fmt.Errorf("no certificate: the last order failed (%s); next attempt at %s", e.lastErr, e.retryAt.UTC().Format(time.RFC3339))
			m.mu.Unlock()
			return nil, err
		}
		f = m.startLocked(k, e)
	}
	m.mu.Unlock()
	select {
	case <-f.done:
		return f.cert, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the certificate order: %w", ctx.Err())
	}
}

// load reads the certificate of k from Storage once, if there is an entry
// for it without a certificate; an unusable value is logged and ignored (a
// new order replaces it).
func (m *Manager) load(ctx context.Context, k certKey) {
	m.mu.Lock()
	e := m.entryLocked(k)
	if e == nil || e.loaded {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	c, err := m.readStored(ctx, k)
	if ctx.Err() != nil {
		return // try again next time
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("cached certificate not usable", "host", k.host, "key", k.keyType(), "error", err)
	}
	st, err := m.readState(ctx, k)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		m.log.Warn("certificate schedule not usable; using the default one", "host", k.host, "key", k.keyType(), "error", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[k] != e || e.loaded {
		return
	}
	e.loaded = true
	if c != nil && e.cert == nil {
		e.cert = c
	}
	if st != nil && e.flight == nil && e.cert == c && e.lastAttempt.IsZero() {
		m.applyStateLocked(e, st)
	}
}

// readStored returns the valid certificate of k in Storage.
func (m *Manager) readStored(ctx context.Context, k certKey) (*tls.Certificate, error) {
	data, err := m.storage.Get(ctx, k.storageKey())
	if err != nil {
		return nil, err
	}
	c, err := decodeEntry(data, k, m.clock.Now())
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", k.storageKey(), err)
	}
	return c, nil
}

// errNotAllowed is returned for a host that is not in the mapping.
var errNotAllowed = errors.New("host is not in the mapping")

// startLocked starts an order for k, owned by the Manager; m.mu is held.
func (m *Manager) startLocked(k certKey, e *entry) *flight {
	f := &flight{done: make(chan struct{})}
	if m.closed {
		f.err = ErrClosed
		close(f.done)
		return f
	}
	ctx, cancel := context.WithTimeout(m.ctx, orderTimeout)
	f.cancel = cancel
	e.flight = f
	o := order{current: e.cert, start: e.startIssuer, replacesAt: m.ariIssuerLocked(e)}
	if e.ari != nil && o.current != nil {
		o.replaces = e.ari.certID
	}
	m.wg.Go(func() {
		defer cancel()
		m.runOrder(ctx, k, e, f, o)
	})
	return f
}

// order is what one order of a certificate starts from.
type order struct {
	current    *tls.Certificate // being replaced; nil for a first order
	start      int              // index of the issuer to try first
	replaces   string           // ARI CertID of current, if its CA has ARI
	replacesAt *issuer          // the issuer of current, the one replaces goes to
}

// ariIssuerLocked returns the issuer whose ARI applies to e's
// certificate: its issuer, or the first for a certificate of unknown
// origin (a cache from before there were several issuers); nil for one
// from an issuer no longer configured (no ARI, no replaces). m.mu is held.
func (m *Manager) ariIssuerLocked(e *entry) *issuer {
	switch {
	case e.issuedBy != nil:
		return e.issuedBy
	case e.issuerGone:
		return nil
	}
	return m.issuers[0]
}

// runOrder obtains the certificate of k as o says, stores it and records
// the result in e (and in Storage, see schedule.go) and f.
func (m *Manager) runOrder(ctx context.Context, k certKey, e *entry, f *flight, o order) {
	current, replaces := o.current, o.replaces
	c, is, adopted, err := m.issue(ctx, k, o)
	now := m.clock.Now()

	m.mu.Lock()
	e.flight = nil
	allowed := m.entries[k] == e
	cancelled := ctx.Err() != nil && (m.ctx.Err() != nil || !allowed)
	var fellBack *issuer
	switch {
	case err == nil:
		e.cert, e.failures, e.lastErr, e.retryAt, e.ari = c, 0, "", time.Time{}, nil
		e.lastAttempt = now
		e.issuedBy, e.issuerGone = is, false
		// The next order (a renewal) starts at the first issuer again.
		e.startIssuer, e.failIssuer, e.issuerFailures = 0, 0, 0
		if !adopted {
			e.obtainedAt = now
		}
	case cancelled:
		// Closed, or the host left the mapping: not a failure of the CA.
	case errors.As(err, new(*storageLockError)):
		// The shared Storage is unreachable: no order was placed, so no
		// backoff; the next handshake tries again (and fails fast).
		e.lastErr, e.lastAttempt = err.Error(), now
	default:
		e.failures++
		e.lastErr, e.lastAttempt = err.Error(), now
		e.retryAt = now.Add(backoff(e.failures))
		fellBack = m.countIssuerFailureLocked(e, is, err)
	}
	failures, retryAt := e.failures, e.retryAt
	m.mu.Unlock()
	if fellBack != nil {
		m.log.Warn("issuer keeps failing; the next orders go to the next issuer", "host", k.host, "key", k.keyType(),
			"issuer", is.name, "failures", fallbackAfter, "next_issuer", fellBack.name)
	}

	// Logged before the waiters return, so the record precedes anything
	// they do with the certificate.
	switch {
	case err == nil && adopted:
		m.log.Info("certificate loaded", "host", k.host, "key", k.keyType(), "issuer", issuerLabelOf(is), "cert_issuer", issuerName(c.Leaf), "not_after", c.Leaf.NotAfter, "source", "storage")
	case err == nil:
		msg := "certificate obtained"
		if current != nil {
			msg = "certificate renewed"
		}
		attrs := []any{"host", k.host, "key", k.keyType(), "issuer", is.name, "cert_issuer", issuerName(c.Leaf), "not_after", c.Leaf.NotAfter,
			"source", "acme", "ca", is.dirURL}
		if is.profile != "" {
			attrs = append(attrs, "profile", is.profile)
		}
		if replaces != "" && is == o.replacesAt {
			attrs = append(attrs, "replaces", replaces)
		}
		m.log.Info(msg, attrs...)
		if m.onACMEOrder != nil {
			m.onACMEOrder(k.host, nil)
		}
	case cancelled:
		m.log.Info("certificate order cancelled", "host", k.host, "key", k.keyType(), "issuer", is.name, "ca", is.dirURL, "error", err)
	case errors.As(err, new(*storageLockError)):
		m.log.Error("certificate not ordered: storage unavailable", "host", k.host, "key", k.keyType(), "error", err)
	default:
		m.logFailure(k, is, err, current, failures, retryAt)
		m.event(ACMEFailed, is, k.host, challengeOf(err))
		if m.onACMEOrder != nil {
			m.onACMEOrder(k.host, err)
		}
	}
	// No order was placed when the shared Storage was unreachable: the
	// schedule is unchanged (and writing it would wait on the Storage).
	if !cancelled && !errors.As(err, new(*storageLockError)) {
		m.saveState(k)
	}
	f.cert, f.err = c, err
	close(f.done)
	m.poke()
}

// issue obtains a certificate for k under the Storage lock of k's host
// (one lock for its ECDSA and RSA certificates, whose tls-alpn-01 answers
// share the name) and stores it; it returns the issuer that issued it (or
// that failed last).
// A valid certificate in Storage that differs from current and is not due
// (another process renewed it) is adopted instead of ordering.
func (m *Manager) issue(ctx context.Context, k certKey, o order) (c *tls.Certificate, is *issuer, adopted bool, err error) {
	lock := "issue/" + k.host
	if err := m.storage.Lock(ctx, lock); err != nil {
		return nil, m.issuers[o.start], false, &storageLockError{err: err}
	}
	defer m.storage.Unlock(context.WithoutCancel(ctx), lock)
	// A shared Storage fences the writes under the lock.
	ctx = ContextWithLock(ctx, lock)
	if s, err := m.readStored(ctx, k); err == nil && (o.current == nil || !s.Leaf.Equal(o.current.Leaf)) && m.clock.Now().Before(renewAt(s, time.Time{})) {
		return s, m.storedIssuer(ctx, k, s.Leaf), true, nil
	}
	c, is, err = m.obtainAny(ctx, k, o.start, o.replaces, o.replacesAt)
	if err != nil {
		return nil, is, false, err
	}
	data, err := encodeEntry(c)
	if err == nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
		err = m.storage.Put(sctx, k.storageKey(), data)
		cancel()
	}
	if err != nil {
		// Served all the same; obtained again after a restart.
		m.log.Error("certificate not cached", "host", k.host, "key", k.keyType(), "error", err)
	}
	return c, is, false, nil
}

// countIssuerFailureLocked counts a failed order of e that ended at is
// (after the issuers before it were unavailable, if any) and returns the
// issuer the next orders start at when is has now failed fallbackAfter
// times in a row; nil otherwise. An order that found every issuer
// unavailable counts at none: the next one starts where it did. m.mu is
// held.
func (m *Manager) countIssuerFailureLocked(e *entry, is *issuer, err error) *issuer {
	if len(m.issuers) < 2 || unavailable(err) {
		return nil
	}
	if e.issuerFailures > 0 && e.failIssuer == is.index {
		e.issuerFailures++
	} else {
		e.failIssuer, e.issuerFailures = is.index, 1
	}
	if e.issuerFailures < fallbackAfter {
		return nil
	}
	next := m.issuers[(is.index+1)%len(m.issuers)]
	e.startIssuer, e.issuerFailures = next.index, 0
	return next
}

// storageLockError is a failure to take the Storage lock of an order:
// the order was not placed.
type storageLockError struct{ err error }

func (e *storageLockError) Error() string { return "taking the order's storage lock: " + e.err.Error() }
func (e *storageLockError) Unwrap() error { return e.err }

// logFailure logs a failed order with everything an operator needs: the
// host, the CA, the challenge, the CA's problem document, and when the next
// attempt is.
func (m *Manager) logFailure(k certKey, is *issuer, err error, current *tls.Certificate, failures int, retryAt time.Time) {
	attrs := []any{"host", k.host, "key", k.keyType(), "issuer", is.name, "ca", is.dirURL}
	var oe *orderError
	if errors.As(err, &oe) && oe.challenge != "" {
		attrs = append(attrs, "challenge", oe.challenge)
	}
	if p := problem(err); p != nil {
		attrs = append(attrs, "problem_type", p.ProblemType, "problem_detail", p.Detail, "problem_status", p.StatusCode)
	}
	if de := (*DNSError)(nil); errors.As(err, &de) {
		attrs = append(attrs, "dns_server", de.Server, "dns_rcode", de.RcodeName())
	}
	attrs = append(attrs, "error", err, "failures", failures, "next_attempt", retryAt)
	if current != nil {
		attrs = append(attrs, "serving_not_after", current.Leaf.NotAfter)
	}
	m.log.Error("certificate failed", attrs...)
}

// poke wakes the maintenance loop.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// issuerLabelOf names is in logs; "unknown" for nil (a certificate from
// Storage without a schedule).
func issuerLabelOf(is *issuer) string {
	if is == nil {
		return "unknown"
	}
	return is.name
}
