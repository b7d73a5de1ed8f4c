package tlsproxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// The protocol-agnostic "tls" terminator in front of real servers: a
// plaintext Redis, and a Redis with its own TLS reached with tls: verify.
func TestTLSProtoIntegrationRedis(t *testing.T) {
	ca := dbtest.NewCA(t)
	plain := testenv.StartRedis(t, testenv.RedisOptions{Password: "pw"})
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	secure := testenv.StartRedis(t, testenv.RedisOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	p := dbtest.StartProtocol(t, ca, "tls", "plain.test",
		dbproxy.Route{Host: "plain.test", Backend: plain.Addr},
		dbproxy.Route{Host: "secure.test", Backend: secure.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool})
	ctx := t.Context()
	for _, tt := range []struct{ sni, verify, password string }{
		{"plain.test", "plain.test", "pw"},
		{"secure.test", "secure.test", ""},
		{"", "plain.test", "pw"}, // no SNI: the default
	} {
		opts := redisOptions(p, tt.sni, tt.verify)
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
	opts := redisOptions(p, "c.test", "plain.test")
	err := redisClient(t, opts).Ping(ctx).Err()
	if err == nil || strings.Contains(err.Error(), "leproxy") {
		t.Errorf("unknown server name: got %v, want a closed connection", err)
	}
}

// redisOptions are go-redis options for a client of the proxy that sends
// sni ("" for none) and verifies the certificate for verifyName.
func redisOptions(p *dbtest.Proxy, sni, verifyName string) *goredis.Options {
	return &goredis.Options{
		Addr: p.Addr, DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := p.CA.ClientTLS(c, sni, verifyName)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		},
	}
}

func redisClient(t testing.TB, opts *goredis.Options) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}
