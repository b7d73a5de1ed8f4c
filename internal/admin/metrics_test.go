package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func TestReloadMetrics(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	m := newMetrics(clock.now)

	type want struct{ success, failure, successful, ts float64 }
	check := func(step string, w want) {
		t.Helper()
		mfs := scrape(t, m)
		t.Run(step, func(t *testing.T) {
			wantValue(t, mfs, "leproxy_reloads_total", map[string]string{"result": "success"}, w.success)
			wantValue(t, mfs, "leproxy_reloads_total", map[string]string{"result": "failure"}, w.failure)
			wantValue(t, mfs, "leproxy_last_reload_successful", nil, w.successful)
			wantValue(t, mfs, "leproxy_last_reload_success_timestamp_seconds", nil, w.ts)
		})
	}
	check("start", want{0, 0, 1, float64(t0.Unix())})

	t1 := t0.Add(time.Hour)
	clock.set(t1)
	m.Reload(true)
	check("after a success", want{1, 0, 1, float64(t1.Unix())})

	clock.set(t1.Add(time.Hour))
	m.Reload(false)
	check("after a failure", want{1, 1, 0, float64(t1.Unix())})

	t3 := t1.Add(2 * time.Hour)
	clock.set(t3)
	m.Reload(true)
	m.Reload(true)
	check("after two more successes", want{3, 1, 1, float64(t3.Unix())})
}

func TestEventCounters(t *testing.T) {
	m := NewMetrics()
	refused := errors.New("handshake refused")
	m.TLSHandshake("https", nil)
	m.TLSHandshake("https", nil)
	m.TLSHandshake(":5432", refused)
	m.TLSHandshake(":5432", nil)
	m.ACMEOrder("a.example.test", nil)
	m.ACMEOrder("b.example.test", errors.New("rate limited"))
	m.ACMEOrder("b.example.test", errors.New("rate limited"))
	m.BackendError("a.example.test")
	m.BackendError("a.example.test")
	const le = "https://acme.example/dir"
	m.ACMEEvent(certs.ACMEEvent{Kind: certs.ACMEOrderPlaced, Issuer: le, Host: "a.example.test", Challenge: "tls-alpn-01"})
	m.ACMEEvent(certs.ACMEEvent{Kind: certs.ACMEOrderPlaced, Issuer: le, Host: "a.example.test", Challenge: "http-01"})
	m.ACMEEvent(certs.ACMEEvent{Kind: certs.ACMEFinalized, Issuer: le, Host: "a.example.test", Challenge: "http-01"})
	m.ACMEEvent(certs.ACMEEvent{Kind: certs.ACMEFailed, Issuer: le, Host: "b.example.test", Challenge: "http-01"})
	m.ACMEEvent(certs.ACMEEvent{Kind: certs.ACMEFailed, Issuer: le, Host: "b.example.test"})

	mfs := scrape(t, m)
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"leproxy_tls_handshakes_total", map[string]string{"listener": "https"}, 2},
		{"leproxy_tls_handshake_failures_total", map[string]string{"listener": "https"}, 0},
		{"leproxy_tls_handshakes_total", map[string]string{"listener": ":5432"}, 2},
		{"leproxy_tls_handshake_failures_total", map[string]string{"listener": ":5432"}, 1},
		{"leproxy_acme_orders_total", map[string]string{"host": "a.example.test"}, 1},
		{"leproxy_acme_order_failures_total", map[string]string{"host": "a.example.test"}, 0},
		{"leproxy_acme_orders_total", map[string]string{"host": "b.example.test"}, 2},
		{"leproxy_acme_order_failures_total", map[string]string{"host": "b.example.test"}, 2},
		{"leproxy_http_backend_errors_total", map[string]string{"host": "a.example.test"}, 2},
		{"leproxy_acme_new_orders_total", map[string]string{"issuer": le}, 2},
		{"leproxy_acme_finalizations_total", map[string]string{"issuer": le}, 1},
		{"leproxy_acme_failures_total", map[string]string{"issuer": le, "challenge": "http-01"}, 1},
		{"leproxy_acme_failures_total", map[string]string{"issuer": le, "challenge": ""}, 1},
	}
	for _, tt := range tests {
		wantValue(t, mfs, tt.name, tt.labels, tt.want)
	}
}

func TestRuntimeCollectors(t *testing.T) {
	mfs := scrape(t, NewMetrics())
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if mfs[name] == nil {
			t.Errorf("%s: missing from the scrape", name)
		}
	}
}

// TestNilMetrics checks that a nil *Metrics records nothing and panics
// nowhere.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Reload(true)
	m.Reload(false)
	m.TLSHandshake("https", nil)
	m.ACMEOrder("a.example.test", nil)
	m.BackendError("a.example.test")
	m.SetTCPStats(nil)
	m.SetCertStatus(nil)
	if m.Registry() != nil {
		t.Error("got a registry from a nil *Metrics, want nil")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Metrics handler: got status %d, want 404", rec.Code)
	}
}
