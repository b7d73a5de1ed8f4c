package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
	"golang.org/x/crypto/acme"
)

func TestARICertID(t *testing.T) {
	// RFC 9773 §4.1's example.
	leaf := &x509.Certificate{
		AuthorityKeyId: []byte{0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4},
		SerialNumber:   big.NewInt(0x87654321),
	}
	got, err := ariCertID(leaf)
	if want := "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"; err != nil || got != want {
		t.Errorf("ariCertID = %q, %v; want %q", got, err, want)
	}
	if _, err := ariCertID(&x509.Certificate{SerialNumber: big.NewInt(1)}); err == nil {
		t.Error("ariCertID without AKI succeeded")
	}
}

func TestARIRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", ariRetryDefault},
		{"garbage", ariRetryDefault},
		{"21600", 6 * time.Hour},
		{"1", ariRetryMin},
		{"-5", ariRetryMin},
		{"999999", ariRetryMax},
		{now.Add(2 * time.Hour).Format(http.TimeFormat), 2 * time.Hour},
	}
	for _, tt := range tests {
		if got := ariRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ariRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// ariOf returns the renewal info state of host's ECDSA certificate.
func ariOf(m *Manager, host string) *ariState {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[certKey{host: host}]
	if e == nil || e.ari == nil {
		return nil
	}
	a := *e.ari
	return &a
}

// TestARIRenewal: after issuance the Manager asks Pebble for the renewal
// window and schedules the renewal at a time in it; when the CA moves the
// window into the past, the next fetch (after Retry-After) renews with
// "replaces", which Pebble records (a second replacement is refused).
func TestARIRenewal(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	clk := newFakeClock(time.Now().Add(time.Hour))
	m, logs := pebbleClockManager(t, p, clk, false, "ari.example.test")
	listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))

	first := served(t, m, "ari.example.test")
	waitFor(t, "the renewal window", func() bool { return ariOf(m, "ari.example.test") != nil })
	a := ariOf(m, "ari.example.test")
	if a.selected.Before(a.start) || !a.selected.Before(a.end) {
		t.Errorf("selected %v outside the window [%v, %v)", a.selected, a.start, a.end)
	}
	if st := statusOfHost(m, "ari.example.test"); !st.NextAttempt.Equal(a.selected) {
		t.Errorf("NextAttempt = %v, want the time selected in the ARI window %v", st.NextAttempt, a.selected)
	}
	wantID, _ := ariCertID(first)
	if a.certID != wantID {
		t.Errorf("certID %q, want %q", a.certID, wantID)
	}
	// The record is logged just after the window is stored.
	waitFor(t, "the renewal window record", func() bool { return logs.count("renewal window", "host=ari.example.test") > 0 })
	if got := logs.count("renewal window", "host=ari.example.test"); got != 1 {
		t.Errorf("%d \"renewal window\" records, want 1; log:\n%s", got, logs)
	}
	// Pebble asks clients to come back in 6 hours.
	if want := clk.Now().Add(6 * time.Hour); a.nextFetch.Sub(want).Abs() > time.Minute {
		t.Errorf("next fetch %v, want about %v (Retry-After)", a.nextFetch, want)
	}

	// The CA moves the window into the past; nothing happens before the
	// next fetch.
	past := time.Now().Add(-2 * time.Hour).UTC()
	p.SetRenewalInfo(t, first, `{"suggestedWindow":{"start":"`+past.Format(time.RFC3339)+`","end":"`+past.Add(time.Hour).Format(time.RFC3339)+`"}}`)
	waitPass(t, m)
	if got := p.Orders(); got != 1 {
		t.Fatalf("%d orders before the next renewal info fetch, want 1", got)
	}
	clk.Set(a.nextFetch)
	waitFor(t, "the ARI renewal", func() bool { return !served(t, m, "ari.example.test").Equal(first) })
	if got := p.Orders(); got != 2 {
		t.Errorf("%d orders, want 2", got)
	}
	if got := logs.count("certificate renewed", "host=ari.example.test", "replaces="+wantID); got != 1 {
		t.Errorf("%d \"certificate renewed\" records with replaces=%s, want 1; log:\n%s", got, wantID, logs)
	}
	if got := logs.count("order replacing a certificate refused"); got != 0 {
		t.Errorf("Pebble refused the order with replaces; log:\n%s", logs)
	}
	// Pebble marked the first certificate replaced: replacing it again is
	// refused.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := newOrderReplacing(ctx, m.issuers[0].client, m.issuers[0].httpc, "ari.example.test", wantID, "")
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.ProblemType != errAlreadyReplaced {
		t.Errorf("second order replacing %s: %v, want %s", wantID, err, errAlreadyReplaced)
	}
}
