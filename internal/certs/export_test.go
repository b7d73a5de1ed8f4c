package certs

import (
	"context"
	"crypto/x509"
	"testing"
	"time"
)

// Seams for the fleet tests of package certs_test, which need
// internal/etcdstore (a package that imports certs).

// SetChallengeHook makes f see every challenge whose answer is published,
// before the CA is told to validate it; the returned function removes it.
func SetChallengeHook(f func(host, typ string)) (restore func()) {
	challengeHook = f
	return func() { challengeHook = nil }
}

// RenewNow starts a renewal of host's ECDSA certificate, as the
// maintenance loop does when it is due, replacing the one in memory.
func (m *Manager) RenewNow(host string) {
	k := certKey{host: host}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entryLocked(k); e != nil && e.flight == nil {
		m.startLocked(k, e)
	}
}

// FakeClock is the in-package tests' clock that moves only when Set.
type FakeClock = fakeClock

// NewFakeClock returns a FakeClock at t.
func NewFakeClock(t time.Time) *FakeClock { return newFakeClock(t) }

// SetClock makes the Manager of cfg run on clk instead of the wall clock.
func (cfg *Config) SetClock(clk *FakeClock) { cfg.clock = clk }

// ARICertID returns the RFC 9773 identifier of leaf.
func ARICertID(leaf *x509.Certificate) (string, error) { return ariCertID(leaf) }

// ARIState returns the CA's renewal window the Manager holds for host's
// ECDSA certificate: the certificate's ARI identifier and when the window
// is fetched next; ok is false if it holds none.
func (m *Manager) ARIState(host string) (certID string, nextFetch time.Time, ok bool) {
	a := ariOf(m, host)
	if a == nil {
		return "", time.Time{}, false
	}
	return a.certID, a.nextFetch, true
}

// WaitPass waits until the maintenance loop has finished a pass that
// started after the call.
func WaitPass(t *testing.T, m *Manager) {
	t.Helper()
	waitPass(t, m)
}

// OrderReplacing places an order for host at the first issuer that
// replaces the certificate certID; the account must be registered.
func (m *Manager) OrderReplacing(ctx context.Context, host, certID string) error {
	_, err := newOrderReplacing(ctx, m.issuers[0].client, m.issuers[0].httpc, host, certID, "")
	return err
}

// ErrAlreadyReplaced is the problem type of an order replacing a
// certificate the CA has already seen replaced.
const ErrAlreadyReplaced = errAlreadyReplaced
