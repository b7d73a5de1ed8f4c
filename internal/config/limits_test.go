package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	const mapping = `limits:
  trusted_proxies: [10.0.0.0/8, "::1"]
  allow: [192.168.1.7, 2001:db8::/32]
  ipv6_prefix: 56
  max_clients: 1000
  https:
    conn_rate: 20/s
    conn_burst: 40
    conns_per_client: 100
    block: {after: 10, window: 1m, for: 10m}
shop.example.com:
  backend: 127.0.0.1:8080
  rate_limit: {requests: 10/s, burst: 20, in_flight: 50}
slow.example.com:
  backend: 127.0.0.1:8081
  rate_limit: {requests: 600/m}
tcp:
  - listen: ":5432"
    protocol: postgres
    conn_rate: 5/s
    conns_per_client: 20
    block: {after: 10, window: 5m, for: 1h, auth: true}
    routes: {db.example.com: 127.0.0.1:5433}
`
	cfg, err := Parse("m.yml", []byte(mapping))
	if err != nil {
		t.Fatal(err)
	}
	lim := cfg.Limits
	wantTrusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	wantAllow := []netip.Prefix{netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if !equalPrefixes(lim.TrustedProxies, wantTrusted) || !equalPrefixes(lim.Allow, wantAllow) {
		t.Errorf("trusted %v allow %v", lim.TrustedProxies, lim.Allow)
	}
	if lim.IPv6Prefix != 56 || lim.MaxClients != 1000 || lim.Line != 1 {
		t.Errorf("limits = %+v", lim)
	}
	if want := (ListenerLimits{20, 40, 100, Block{After: 10, Window: time.Minute, For: 10 * time.Minute}}); lim.HTTPS != want {
		t.Errorf("https = %+v, want %+v", lim.HTTPS, want)
	}
	if want := (RateLimit{Requests: 10, Burst: 20, InFlight: 50}); cfg.Hosts[0].RateLimit != want {
		t.Errorf("shop rate_limit = %+v, want %+v", cfg.Hosts[0].RateLimit, want)
	}
	if want := (RateLimit{Requests: 10}); cfg.Hosts[1].RateLimit != want {
		t.Errorf("slow rate_limit = %+v, want %+v", cfg.Hosts[1].RateLimit, want)
	}
	if want := (ListenerLimits{ConnRate: 5, ConnsPerClient: 20, Block: Block{10, 5 * time.Minute, time.Hour, true}}); cfg.TCP[0].Limits != want {
		t.Errorf("tcp limits = %+v, want %+v", cfg.TCP[0].Limits, want)
	}
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLimitsErrors(t *testing.T) {
	const tcp = "tcp:\n- listen: :1\n  protocol: postgres\n  routes: {a.example.com: 127.0.0.1:2}\n"
	for _, tt := range []struct {
		name, input string
		line        int
		key, msg    string
	}{
		{"rate unit", "a.example.com:\n  backend: :80\n  rate_limit: {requests: 10/d}\n", 3, "a.example.com.rate_limit.requests", `unknown unit "d"`},
		{"rate no unit", "a.example.com:\n  backend: :80\n  rate_limit:\n    requests: 10\n", 4, "a.example.com.rate_limit.requests", "expected a number per unit"},
		{"rate zero", "a.example.com:\n  backend: :80\n  rate_limit: {requests: 0/s}\n", 3, "a.example.com.rate_limit.requests", "not a positive number"},
		{"burst alone", "a.example.com:\n  backend: :80\n  rate_limit:\n    burst: 5\n", 4, "a.example.com.rate_limit.burst", `burst needs "requests"`},
		{"rate_limit empty", "a.example.com:\n  backend: :80\n  rate_limit: {}\n", 3, "a.example.com.rate_limit", `expected "requests" or "in_flight"`},
		{"rate_limit unknown", "a.example.com:\n  backend: :80\n  rate_limit: {rps: 5}\n", 3, "a.example.com.rate_limit", `unknown key "rps"`},
		{"in_flight negative", "a.example.com:\n  backend: :80\n  rate_limit: {in_flight: -1}\n", 3, "a.example.com.rate_limit.in_flight", "positive integer"},
		{"trusted not a list", "limits:\n  trusted_proxies: {a: b}\n" + "a.example.com: :80\n", 2, "limits.trusted_proxies", "expected"},
		{"trusted bad", "limits:\n  trusted_proxies:\n    - 10.0.0.0/33\n" + "a.example.com: :80\n", 3, "limits.trusted_proxies", `invalid network "10.0.0.0/33"`},
		{"trusted host bits", "limits:\n  trusted_proxies: [10.0.0.1/8]\n" + "a.example.com: :80\n", 2, "limits.trusted_proxies", `did you mean 10.0.0.0/8?`},
		{"allow bad", "limits:\n  allow: [nope]\n" + "a.example.com: :80\n", 2, "limits.allow", `invalid network "nope"`},
		{"ipv6_prefix", "limits:\n  ipv6_prefix: 129\n" + "a.example.com: :80\n", 2, "limits.ipv6_prefix", "from 1 to 128"},
		{"https auth", "limits:\n  https:\n    block:\n      after: 3\n      auth: true\n" + "a.example.com: :80\n", 5, "limits.https.block.auth", "tcp listeners only"},
		{"https unknown", "limits:\n  https:\n    max_conns: 3\n" + "a.example.com: :80\n", 3, "limits.https", `unknown key "max_conns"`},
		{"duplicate limits", "limits: {}\nlimits: {}\na.example.com: :80\n", 2, "", "duplicate limits section (first at line 1)"},
		{"tcp conn_rate", tcp + "  conn_rate: fast\n", 5, "tcp[0].conn_rate", `invalid rate "fast"`},
		{"tcp conn_burst alone", tcp + "  conn_burst: 3\n", 5, "tcp[0].conn_burst", `conn_burst needs "conn_rate"`},
		{"tcp conns_per_client", tcp + "  conns_per_client: 0\n", 5, "tcp[0].conns_per_client", "positive integer"},
		{"block no after", tcp + "  block: {for: 1m}\n", 5, "tcp[0].block", `missing key "after"`},
		{"block window", tcp + "  block:\n    after: 3\n    window: 5\n", 7, "tcp[0].block.window", "positive duration"},
		{"block unknown", tcp + "  block: {after: 3, until: 1m}\n", 5, "tcp[0].block", `unknown key "until"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m.yml", []byte(tt.input))
			if err == nil {
				t.Fatal("got no error")
			}
			for _, e := range checkErrorShape(t, err) {
				if e.Line == tt.line && e.Key == tt.key && strings.Contains(e.Msg, tt.msg) {
					return
				}
			}
			t.Errorf("got %q, want an error at line %d, key %q, with message containing %q", err, tt.line, tt.key, tt.msg)
		})
	}
}
