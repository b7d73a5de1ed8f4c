package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

// TestScheduleSurvivesRestart: a new Manager over the same Storage obeys
// the schedule the last one kept there: the time chosen in the ARI window
// (no new renewal info fetch before Retry-After), and after a failed
// order its backoff, last error and failure count (no order before the
// next attempt, which then happens).
func TestScheduleSurvivesRestart(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	dir := t.TempDir()
	clk := newFakeClock(time.Now().Add(time.Hour))
	newManager := func() *Manager {
		return newTestManager(t, Config{CacheDir: dir, DirectoryURL: p.DirectoryURL, RootCAs: p.ServerRoots, clock: clk})
	}
	hosts := []string{"ok.example.test", "fail.example.test"}

	m1 := newManager()
	m1.SetHosts(hosts)
	// Nothing answers tls-alpn-01 yet: fail.example.test fails.
	if _, err := m1.GetCertificate(ecdsaHello("fail.example.test")); err == nil {
		t.Fatal("order succeeded with no challenge answered")
	}
	failed := statusOfHost(m1, "fail.example.test")
	if failed.Failures != 1 || failed.NextAttempt.IsZero() {
		t.Fatalf("Status after the failure = %+v", failed)
	}
	ln, err := net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln, m1.TLSConfig("http/1.1"))
	leaf := served(t, m1, "ok.example.test")
	waitFor(t, "the renewal window", func() bool { return ariOf(m1, "ok.example.test") != nil })
	ari1 := ariOf(m1, "ok.example.test")
	waitPass(t, m1)
	m1.Close()
	ln.Close()

	// The schedule is JSON in its own key, not in the certificate's PEM.
	data, err := os.ReadFile(filepath.Join(dir, "ok.example.test+leproxy-state"))
	if err != nil {
		t.Fatal(err)
	}
	var st certState
	if err := json.Unmarshal(data, &st); err != nil || st.ARI == nil || !st.ARI.Selected.Equal(ari1.selected) || st.Serial != serialOf(leaf) {
		t.Errorf("stored schedule %s (%v), want the ARI window's selected time %v", data, err, ari1.selected)
	}
	if pemData, err := os.ReadFile(filepath.Join(dir, "ok.example.test")); err != nil || strings.Contains(string(pemData), "{") {
		t.Errorf("certificate file holds more than PEM (%v)", err)
	}

	// Restart ten seconds later, inside the first backoff (a minute): a
	// fresh ARI fetch would set the next fetch six hours from the new now.
	clk.Set(clk.Now().Add(10 * time.Second))
	if !clk.Now().Before(failed.NextAttempt) {
		t.Fatalf("the restart at %v is past the next attempt %v", clk.Now(), failed.NextAttempt)
	}
	orders := p.Orders()
	m2 := newManager()
	m2.SetHosts(hosts)
	waitPass(t, m2)
	ari2 := ariOf(m2, "ok.example.test")
	if ari2 == nil || !ari2.selected.Equal(ari1.selected) || !ari2.nextFetch.Equal(ari1.nextFetch) || ari2.certID != ari1.certID {
		t.Errorf("ARI state after the restart = %+v, want %+v (kept, not fetched again)", ari2, ari1)
	}
	if st := statusOfHost(m2, "ok.example.test"); !st.NextAttempt.Equal(ari1.selected) || st.CA != p.DirectoryURL {
		t.Errorf("Status after the restart = %+v, want NextAttempt %v and CA %s", st, ari1.selected, p.DirectoryURL)
	}
	got := statusOfHost(m2, "fail.example.test")
	if got.Failures != 1 || got.LastError != failed.LastError || !got.NextAttempt.Equal(failed.NextAttempt) || !got.LastAttempt.Equal(failed.LastAttempt) {
		t.Errorf("Status of the failed name after the restart = %+v, want %+v", got, failed)
	}
	if _, err := m2.GetCertificate(ecdsaHello("fail.example.test")); err == nil || !strings.Contains(err.Error(), "next attempt at") {
		t.Errorf("handshake inside the backoff after a restart: %v, want the backoff's error", err)
	}
	if got := p.Orders(); got != orders {
		t.Errorf("%d orders after the restart inside the backoff, want 0", got-orders)
	}

	// At the next attempt the order is placed, and succeeds.
	ln, err = net.Listen("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	serveTLS(t, ln, m2.TLSConfig("http/1.1"))
	clk.Set(failed.NextAttempt)
	waitFor(t, "the retry", func() bool { return statusOfHost(m2, "fail.example.test").NotAfter.After(clk.Now()) })
	if got := p.Orders(); got != orders+1 {
		t.Errorf("%d orders at the next attempt, want 1", got-orders)
	}
	if st := statusOfHost(m2, "fail.example.test"); st.Failures != 0 || st.LastError != "" {
		t.Errorf("Status after the retry = %+v, want the failure cleared", st)
	}
}

// TestScheduleOfAnotherCertificateIgnored: a schedule written for another
// certificate than the one in Storage (a peer renewed it) is not applied.
func TestScheduleOfAnotherCertificateIgnored(t *testing.T) {
	dir := t.TempDir()
	c := selfSignedEntry(t, "x.example.test", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	storage := NewDirStorage(dir)
	ctx := t.Context()
	if err := storage.Put(ctx, "x.example.test", c); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(certState{Version: stateVersion, Serial: "abc", Failures: 4, LastError: "old", LastAttempt: time.Now().Add(-time.Minute), RetryAt: time.Now().Add(time.Hour)})
	if err := storage.Put(ctx, "x.example.test"+stateSuffix, st); err != nil {
		t.Fatal(err)
	}
	m := newTestManager(t, Config{CacheDir: dir, DirectoryURL: closedDirectory(t)})
	m.SetHosts([]string{"x.example.test"})
	if s := statusOfHost(m, "x.example.test"); s.Failures != 0 || s.LastError != "" || s.NotAfter.IsZero() {
		t.Errorf("Status = %+v, want the stored certificate without the other one's failures", s)
	}
}

// selfSignedEntry returns a Storage value (key, then certificate) for
// name, valid in [notBefore, notAfter).
func selfSignedEntry(t *testing.T, name string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	ca := newLocalCA(t.TempDir(), nil)
	ca.now = func() time.Time { return notBefore.Add(localBackdating) }
	ca.validity = notAfter.Sub(notBefore) - localBackdating
	ca.constrain = false
	c, err := ca.issue(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(c.Certificate[0]); err != nil {
		t.Fatal(err)
	}
	data, err := encodeEntry(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestLocalLeafBackgroundRenewal: a local-CA leaf past its renewal point
// is issued anew by the maintenance loop, with no handshake asking.
func TestLocalLeafBackgroundRenewal(t *testing.T) {
	logger, logs := newTestLogger()
	clk := newFakeClock(time.Now())
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true, Logger: logger, clock: clk})
	m.SetHosts([]string{"bg.localhost"})
	c, err := m.GetCertificate(ecdsaHello("bg.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	first := c.Leaf
	leafOf := func() *x509.Certificate {
		m.ca.mu.Lock()
		defer m.ca.mu.Unlock()
		return m.ca.leaves["bg.localhost"].Leaf
	}
	due := leafRenewAt(c)
	clk.Set(due.Add(-time.Second))
	waitPass(t, m)
	if !leafOf().Equal(first) {
		t.Fatal("leaf renewed before its renewal point")
	}
	clk.Set(due)
	waitFor(t, "the background renewal", func() bool { return !leafOf().Equal(first) })
	if got := logs.count("certificate renewed", "host=bg.localhost", "source=local"); got != 1 {
		t.Errorf("%d \"certificate renewed\" records, want 1; log:\n%s", got, logs)
	}
	if st := statusOfHost(m, "bg.localhost"); !st.NotAfter.Equal(leafOf().NotAfter) {
		t.Errorf("Status NotAfter %v, want the new leaf's %v", st.NotAfter, leafOf().NotAfter)
	}
	// Removed from the mapping: not renewed any more.
	last := leafOf()
	m.SetHosts(nil)
	clk.Set(leafRenewAt(&tls.Certificate{Leaf: last}).Add(time.Second))
	waitPass(t, m)
	if got := logs.count("certificate renewed", "host=bg.localhost"); got != 1 {
		t.Errorf("%d renewals after the name left the mapping, want 1 in all", got)
	}
}

// TestScheduleOfRemovedIssuer: a certificate whose schedule names an
// issuer no longer configured keeps being served, with no ARI asked of
// another issuer and no "replaces" sent to one; its failures still apply.
func TestScheduleOfRemovedIssuer(t *testing.T) {
	dir := t.TempDir()
	data := selfSignedEntry(t, "y.example.test", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c, err := decodeEntry(data, certKey{host: "y.example.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	storage := NewDirStorage(dir)
	if err := storage.Put(t.Context(), "y.example.test", data); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(certState{Version: stateVersion, Serial: serialOf(c.Leaf), Issuer: "gone", IssuerURL: "https://gone.example/dir", Failures: 2, LastError: "x", LastAttempt: time.Now().Add(-time.Minute)})
	if err := storage.Put(t.Context(), "y.example.test"+stateSuffix, st); err != nil {
		t.Fatal(err)
	}
	m := newTestManager(t, Config{CacheDir: dir, DirectoryURL: closedDirectory(t)})
	m.SetHosts([]string{"y.example.test"})
	s := statusOfHost(m, "y.example.test")
	if s.Failures != 2 || s.CA != "" || s.NotAfter.IsZero() {
		t.Errorf("Status = %+v, want the stored certificate, its 2 failures and no CA", s)
	}
	m.mu.Lock()
	is := m.ariIssuerLocked(m.entries[certKey{host: "y.example.test"}])
	m.mu.Unlock()
	if is != nil {
		t.Errorf("ARI issuer %s for a certificate of an issuer no longer configured, want none", is.name)
	}
}
