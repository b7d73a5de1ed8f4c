package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStatusBookFailureRateLimit(t *testing.T) {
	var b statusBook
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at      time.Duration
		msg     string
		wantLog bool
	}{
		{at: 0, msg: "boom", wantLog: true},
		{at: 10 * time.Second, msg: "boom", wantLog: false},
		{at: 59 * time.Second, msg: "boom", wantLog: false},
		{at: 60 * time.Second, msg: "boom", wantLog: true},
		{at: 61 * time.Second, msg: "other", wantLog: true},
		{at: 62 * time.Second, msg: "other", wantLog: false},
	}
	for _, s := range steps {
		if got := b.failed("a.example", s.msg, t0.Add(s.at)); got != s.wantLog {
			t.Errorf("failed(%q) at +%v: log %v, want %v", s.msg, s.at, got, s.wantLog)
		}
		st := b.status("a.example")
		if st.LastError != s.msg || !st.LastAttempt.Equal(t0.Add(s.at)) {
			t.Errorf("after failure at +%v: status %+v, want LastError %q LastAttempt %v", s.at, st, s.msg, t0.Add(s.at))
		}
	}
	// Another host has its own limit.
	if !b.failed("b.example", "boom", t0.Add(62*time.Second)) {
		t.Error("first failure of another host not logged")
	}

	leaf := &x509.Certificate{Issuer: pkix.Name{CommonName: "Test CA"}, NotAfter: t0.Add(90 * 24 * time.Hour)}
	b.obtained("a.example", leaf, false, t0.Add(time.Hour))
	st := b.status("a.example")
	want := Status{Host: "a.example", Issuer: "Test CA", NotAfter: leaf.NotAfter, LastAttempt: t0.Add(time.Hour)}
	if st != want {
		t.Errorf("after obtained: %+v, want %+v", st, want)
	}
	// After a success the same failure is news again.
	if !b.failed("a.example", "other", t0.Add(time.Hour+time.Second)) {
		t.Error("failure after a success not logged")
	}

	b.forgetExcept(newHostSet([]string{"b.example"}))
	if st := b.status("a.example"); st != (Status{Host: "a.example"}) {
		t.Errorf("status of a removed host = %+v, want empty", st)
	}
}

func TestIssuerName(t *testing.T) {
	tests := []struct {
		issuer pkix.Name
		want   string
	}{
		{issuer: pkix.Name{CommonName: "R3", Organization: []string{"Let's Encrypt"}}, want: "R3"},
		{issuer: pkix.Name{Organization: []string{"Example"}}, want: "O=Example"},
	}
	for _, tt := range tests {
		if got := issuerName(&x509.Certificate{Issuer: tt.issuer}); got != tt.want {
			t.Errorf("issuerName(%v) = %q, want %q", tt.issuer, got, tt.want)
		}
	}
}

func TestManagerStatus(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock(time.Now())
	m := newTestManager(t, Config{CacheDir: dir, Local: true, clock: clock})
	m.SetHosts([]string{"b.localhost", "a.localhost"})
	c, err := m.GetCertificate(ecdsaHello("a.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	root := readCert(t, m.LocalRootPath())
	want := []Status{
		{Host: "a.localhost", Issuer: root.Subject.CommonName, NotAfter: c.Leaf.NotAfter, NotBefore: c.Leaf.NotBefore, CA: "local", Local: true, LastAttempt: clock.Now()},
		{Host: "b.localhost"},
	}
	got := m.Status()
	if len(got) != len(want) {
		t.Fatalf("Status() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Status()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestStatusFromCache: a certificate in an existing autocert cache shows
// in Status before any handshake.
func TestStatusFromCache(t *testing.T) {
	dir := t.TempDir()
	// A certificate from another CA, written in autocert's format.
	src := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	src.SetHosts([]string{"www.example.com"})
	c, err := src.GetCertificate(ecdsaHello("www.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www.example.com"), autocertEntry(t, c), 0o600); err != nil {
		t.Fatal(err)
	}

	dirURL, roots, requests := failingACME(t)
	// Without ARI: the maintenance loop would ask the CA for the cached
	// certificate's renewal window, which is not what this test counts.
	m := newTestManager(t, Config{CacheDir: dir, DirectoryURL: dirURL, RootCAs: roots, noARI: true})
	m.SetHosts([]string{"www.example.com", "new.example.com"})
	got := m.Status()
	want := []Status{
		{Host: "new.example.com"},
		{Host: "www.example.com", Issuer: c.Leaf.Issuer.CommonName, NotAfter: c.Leaf.NotAfter, NotBefore: c.Leaf.NotBefore, NextAttempt: renewAt(c, time.Time{})},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Status() = %+v, want %+v", got, want)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("Status made %d ACME requests, want 0", n)
	}
}
