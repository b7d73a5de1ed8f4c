package dbproxy

import (
	"strings"
	"testing"

	"github.com/leproxy/leproxy/internal/testenv"
)

// The protocol-agnostic "tls" terminator in front of real servers: a
// plaintext Redis, and a Redis with its own TLS reached with tls: verify.
func TestTLSProtoIntegrationRedis(t *testing.T) {
	ca := newTestCA(t)
	plain := testenv.StartRedis(t, testenv.RedisOptions{Password: "pw"})
	_, certPEM, keyPEM := ca.issue(t, "127.0.0.1")
	secure := testenv.StartRedis(t, testenv.RedisOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	p := tfProxy(t, ca, "tls", "plain.test",
		Route{Host: "plain.test", Backend: plain.Addr},
		Route{Host: "secure.test", Backend: secure.Addr, TLS: TLSVerify, RootCAs: ca.pool})
	ctx := t.Context()
	for _, tt := range []struct{ sni, verify, password string }{
		{"plain.test", "plain.test", "pw"},
		{"secure.test", "secure.test", ""},
		{"", "plain.test", "pw"}, // no SNI: the default
	} {
		opts := redisTLSOptions(p, tt.sni, tt.verify)
		opts.Password = tt.password
		c := redisClient(t, opts)
		if err := c.Set(ctx, "k", tt.verify, 0).Err(); err != nil {
			t.Errorf("sni %q: SET: %v", tt.sni, err)
			continue
		}
		if got, err := c.Get(ctx, "k").Result(); err != nil || got != tt.verify {
			t.Errorf("sni %q: GET: got %q, %v, want %q", tt.sni, got, err, tt.verify)
		}
	}
	// A protocol-agnostic terminator cannot speak RESP: a client routed
	// nowhere is closed, and says so in its own words.
	opts := redisTLSOptions(p, "c.test", "plain.test")
	err := redisClient(t, opts).Ping(ctx).Err()
	if err == nil || strings.Contains(err.Error(), "leproxy") {
		t.Errorf("unknown server name: got %v, want a closed connection", err)
	}
}
