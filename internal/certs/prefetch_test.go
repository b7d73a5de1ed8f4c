package certs

import (
	"context"
	"testing"
)

func TestPrefetchFillsStatus(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"a.example.test", "b.localhost"})
	for _, st := range m.Status() {
		if !st.NotAfter.IsZero() {
			t.Fatalf("%s has a certificate before Prefetch", st.Host)
		}
	}
	m.Prefetch(context.Background(), []string{"a.example.test", "b.localhost", "not-allowed.test"})
	st := m.Status()
	if len(st) != 2 {
		t.Fatalf("got %d statuses, want 2", len(st))
	}
	for _, s := range st {
		if s.NotAfter.IsZero() || !s.Local {
			t.Errorf("%s after Prefetch: %+v, want a local certificate", s.Host, s)
		}
	}
}

func TestPrefetchStopsWithContext(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"a.localhost"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.Prefetch(ctx, []string{"a.localhost"})
	if s := m.Status(); len(s) != 1 || !s[0].NotAfter.IsZero() {
		t.Errorf("Prefetch with a cancelled context obtained %+v", s)
	}
}
