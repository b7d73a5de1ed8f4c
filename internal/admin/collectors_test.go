package admin

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/certs"
)

func TestTCPStatsCollector(t *testing.T) {
	m := NewMetrics()
	var calls atomic.Int64
	m.SetTCPStats(func() []TCPListenerStats {
		calls.Add(1)
		return []TCPListenerStats{
			{Listen: ":5432", Protocol: "postgres", Stats: dbproxy.Stats{
				Accepted: 10, Refused: 1, Handled: 2, Unrouted: 3,
				UnroutedEnds: map[dbproxy.End]uint64{{By: "leproxy", Reason: "refused"}: 3},
				Routes: []dbproxy.RouteStats{
					{Host: "db.example.test", Backend: "10.0.0.5:5432", Sessions: 4, Active: 2, BytesIn: 1000, BytesOut: 50000, Errors: 1,
						Ends: map[dbproxy.End]uint64{{By: "client", Reason: "closed"}: 1, {By: "backend", Reason: "reset"}: 1}},
					{Host: "reports.example.test", Backend: "10.0.0.6:5432"},
				},
			}},
			{Listen: ":6379", Protocol: "redis", Stats: dbproxy.Stats{
				Accepted: 7,
				Routes: []dbproxy.RouteStats{
					{Host: "cache.example.test", Sessions: 7, Active: 1, BytesIn: 70, BytesOut: 700},
				},
			}},
			// The old Server of :5432, still draining after a reload: summed.
			{Listen: ":5432", Protocol: "postgres", Stats: dbproxy.Stats{
				Accepted: 5, Unrouted: 1,
				Routes: []dbproxy.RouteStats{
					{Host: "db.example.test", Sessions: 5, Active: 1, BytesIn: 24, BytesOut: 76, Errors: 2,
						Ends: map[dbproxy.End]uint64{{By: "client", Reason: "closed"}: 2}},
				},
			}},
		}
	})

	mfs := scrape(t, m)
	if got := calls.Load(); got != 1 {
		t.Errorf("stats function called %d times for one scrape, want 1", got)
	}
	pg := map[string]string{"listener": ":5432", "protocol": "postgres"}
	redis := map[string]string{"listener": ":6379", "protocol": "redis"}
	route := func(l map[string]string, host string, extra ...string) map[string]string {
		out := map[string]string{"route": host}
		for k, v := range l {
			out[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			out[extra[i]] = extra[i+1]
		}
		return out
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"leproxy_tcp_connections_accepted_total", pg, 15},
		{"leproxy_tcp_connections_refused_total", pg, 1},
		{"leproxy_tcp_connections_handled_total", pg, 2},
		{"leproxy_tcp_connections_unrouted_total", pg, 4},
		{"leproxy_tcp_connections_accepted_total", redis, 7},
		{"leproxy_tcp_connections_refused_total", redis, 0},
		{"leproxy_tcp_sessions_total", route(pg, "db.example.test"), 9},
		{"leproxy_tcp_sessions_active", route(pg, "db.example.test"), 3},
		{"leproxy_tcp_bytes_total", route(pg, "db.example.test", "direction", "in"), 1024},
		{"leproxy_tcp_bytes_total", route(pg, "db.example.test", "direction", "out"), 50076},
		{"leproxy_tcp_errors_total", route(pg, "db.example.test"), 3},
		{"leproxy_tcp_sessions_total", route(pg, "reports.example.test"), 0},
		{"leproxy_tcp_sessions_active", route(pg, "reports.example.test"), 0},
		{"leproxy_tcp_bytes_total", route(redis, "cache.example.test", "direction", "out"), 700},
		{"leproxy_tcp_sessions_active", route(redis, "cache.example.test"), 1},
		{"leproxy_tcp_session_ends_total", route(pg, "db.example.test", "closed_by", "client", "reason", "closed"), 3},
		{"leproxy_tcp_session_ends_total", route(pg, "db.example.test", "closed_by", "backend", "reason", "reset"), 1},
		{"leproxy_tcp_session_ends_total", route(pg, "", "closed_by", "leproxy", "reason", "refused"), 3},
	}
	for _, tt := range tests {
		wantValue(t, mfs, tt.name, tt.labels, tt.want)
	}
	if n := len(mfs["leproxy_tcp_session_ends_total"].GetMetric()); n != 3 {
		t.Errorf("leproxy_tcp_session_ends_total: got %d series, want 3", n)
	}
	if n := len(mfs["leproxy_tcp_sessions_total"].GetMetric()); n != 3 {
		t.Errorf("leproxy_tcp_sessions_total: got %d series, want 3 (one per listener and route)", n)
	}

	m.SetTCPStats(nil)
	if mfs := scrape(t, m); mfs["leproxy_tcp_sessions_total"] != nil {
		t.Error("leproxy_tcp_sessions_total still exported after SetTCPStats(nil)")
	}
}

func TestCertCollector(t *testing.T) {
	notAfter := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	attempt := time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC)
	m := NewMetrics()
	m.SetCertStatus(func() []certs.Status {
		return []certs.Status{
			{Host: "a.example.test", Issuer: "Pebble Intermediate", CA: "zerossl", NotAfter: notAfter, LastAttempt: attempt},
			{Host: "b.example.test", LastError: "acme: rate limited", LastAttempt: attempt.Add(time.Minute), Failures: 3, NextAttempt: attempt.Add(time.Hour)},
			{Host: "c.example.test"},
			{Host: "a.example.test", NotAfter: notAfter.Add(time.Hour)}, // a duplicate: ignored
		}
	})
	mfs := scrape(t, m)
	host := func(h string) map[string]string { return map[string]string{"host": h} }
	wantValue(t, mfs, "leproxy_certificate_not_after_seconds", host("a.example.test"), float64(notAfter.Unix()))
	wantAbsent(t, mfs, "leproxy_certificate_not_after_seconds", host("b.example.test"))
	wantAbsent(t, mfs, "leproxy_certificate_not_after_seconds", host("c.example.test"))
	wantValue(t, mfs, "leproxy_certificate_last_attempt_timestamp_seconds", host("a.example.test"), float64(attempt.Unix()))
	wantValue(t, mfs, "leproxy_certificate_last_attempt_timestamp_seconds", host("b.example.test"), float64(attempt.Add(time.Minute).Unix()))
	wantValue(t, mfs, "leproxy_certificate_next_attempt_timestamp_seconds", host("b.example.test"), float64(attempt.Add(time.Hour).Unix()))
	wantValue(t, mfs, "leproxy_certificate_failures", host("b.example.test"), 3)
	wantValue(t, mfs, "leproxy_certificate_failures", host("a.example.test"), 0)
	wantAbsent(t, mfs, "leproxy_certificate_next_attempt_timestamp_seconds", host("a.example.test"))
	wantAbsent(t, mfs, "leproxy_certificate_last_attempt_timestamp_seconds", host("c.example.test"))
	wantValue(t, mfs, "leproxy_certificate_last_error", host("a.example.test"), 0)
	wantValue(t, mfs, "leproxy_certificate_last_error", host("b.example.test"), 1)
	wantValue(t, mfs, "leproxy_certificate_last_error", host("c.example.test"), 0)
	wantValue(t, mfs, "leproxy_certificate_issuer_info", map[string]string{"host": "a.example.test", "issuer": "zerossl"}, 1)
	wantAbsent(t, mfs, "leproxy_certificate_issuer_info", host("b.example.test"))
}
