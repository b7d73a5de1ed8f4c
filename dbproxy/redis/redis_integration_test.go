package redis

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// Redis through leproxy with real redis-servers, go-redis and redis-cli.

// tlsOptions are go-redis options for the proxy over verified TLS
// with server name sni; sni "" sends none and verifies verifyName.
func tlsOptions(p *dbtest.Proxy, sni, verifyName string) *goredis.Options {
	opts := &goredis.Options{Addr: p.Addr, DialTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, MaxRetries: -1}
	if sni != "" && sni == verifyName {
		// go-redis's own TLS, as a user configures it.
		opts.TLSConfig = &tls.Config{ServerName: sni, RootCAs: p.CA.Pool}
		return opts
	}
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
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
	}
	return opts
}

func newClient(t testing.TB, opts *goredis.Options) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// writeCAFile writes the test CA's certificate for command-line clients.
func writeCAFile(t testing.TB, ca *dbtest.CA) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRedisIntegrationClients(t *testing.T) {
	srv := testenv.StartRedis(t, testenv.RedisOptions{Password: "pw", Users: map[string]string{"alice": "apw"}})
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "redis", "a.test", dbproxy.Route{Host: "a.test", Backend: srv.Addr})
	ctx := t.Context()

	t.Run("RESP2 with requirepass", func(t *testing.T) {
		opts := tlsOptions(p, "a.test", "a.test")
		opts.Password, opts.Protocol = "pw", 2
		c := newClient(t, opts)
		if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if got, err := c.Get(ctx, "k2").Result(); err != nil || got != "v2" {
			t.Errorf("GET: got %q, %v, want v2", got, err)
		}
	})
	t.Run("RESP3 with an ACL user and HELLO", func(t *testing.T) {
		opts := tlsOptions(p, "a.test", "a.test")
		opts.Username, opts.Password, opts.Protocol = "alice", "apw", 3
		c := newClient(t, opts)
		if got, err := c.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || got != "alice" {
			t.Errorf("ACL WHOAMI: got %q, %v, want alice", got, err)
		}
		hello, err := c.Do(ctx, "HELLO", "3", "AUTH", "alice", "apw").Result()
		if err != nil {
			t.Fatalf("HELLO 3: %v", err)
		}
		if m, ok := hello.(map[any]any); !ok || m["proto"] != int64(3) {
			t.Errorf("HELLO 3 reply %#v, want a RESP3 map with proto 3", hello)
		}
		if err := c.HSet(ctx, "h", "f", "1").Err(); err != nil {
			t.Fatalf("HSET: %v", err)
		}
		if got, err := c.HGetAll(ctx, "h").Result(); err != nil || got["f"] != "1" {
			t.Errorf("HGETALL (a RESP3 map): got %v, %v", got, err)
		}
	})
	t.Run("wrong password reaches the client untouched", func(t *testing.T) {
		opts := tlsOptions(p, "a.test", "a.test")
		opts.Username, opts.Password = "alice", "wrong"
		err := newClient(t, opts).Ping(ctx).Err()
		if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
			t.Errorf("got %v, want Redis's WRONGPASS error", err)
		}
	})
	t.Run("no server name gets the default", func(t *testing.T) {
		opts := tlsOptions(p, "", "a.test")
		opts.Password = "pw"
		if got, err := newClient(t, opts).Ping(ctx).Result(); err != nil || got != "PONG" {
			t.Errorf("PING: got %q, %v", got, err)
		}
	})
	t.Run("large values and pipelining", func(t *testing.T) {
		opts := tlsOptions(p, "a.test", "a.test")
		opts.Password = "pw"
		c := newClient(t, opts)
		big := strings.Repeat("0123456789", 300000) // 3 MB
		cmds, err := c.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
			pipe.Set(ctx, "big", big, 0)
			pipe.Get(ctx, "big")
			pipe.Incr(ctx, "n")
			return nil
		})
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		if got := cmds[1].(*goredis.StringCmd).Val(); got != big {
			t.Errorf("GET big: got %d bytes, want %d", len(got), len(big))
		}
	})
	t.Run("pub/sub", func(t *testing.T) {
		opts := tlsOptions(p, "a.test", "a.test")
		opts.Password = "pw"
		c := newClient(t, opts)
		sub := c.Subscribe(ctx, "news")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if err := c.Publish(ctx, "news", "hello").Err(); err != nil {
			t.Fatalf("publish: %v", err)
		}
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil || msg.Payload != "hello" {
			t.Errorf("got %v, %v, want hello", msg, err)
		}
	})
	t.Run("redis-cli", func(t *testing.T) {
		cli := testenv.LookBinary(t, "redis-cli", "redis-tools")
		_, port, _ := net.SplitHostPort(p.Addr)
		caFile := writeCAFile(t, ca)
		out, err := exec.Command(cli, "--tls", "--cacert", caFile, "--sni", "a.test",
			"-h", "127.0.0.1", "-p", port, "--user", "alice", "--pass", "apw", "--no-auth-warning", "PING").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "PONG" {
			t.Errorf("redis-cli --tls PING: %v, output %q, want PONG", err, out)
		}
		// Without --tls: the plaintext refusal.
		out, _ = exec.Command(cli, "-h", "127.0.0.1", "-p", port, "PING").CombinedOutput()
		if !strings.Contains(string(out), "TLS is required on this port (leproxy)") {
			t.Errorf("plaintext redis-cli PING: output %q, want the TLS required error", out)
		}
	})
	t.Run("plaintext go-redis", func(t *testing.T) {
		err := newClient(t, &goredis.Options{Addr: p.Addr, Password: "pw", MaxRetries: -1}).Ping(ctx).Err()
		if err == nil || !strings.Contains(err.Error(), "TLS is required on this port") {
			t.Errorf("got %v, want the TLS required error", err)
		}
	})
	t.Run("unknown server name", func(t *testing.T) {
		opts := tlsOptions(p, "c.test", "a.test")
		opts.Password = "pw"
		err := newClient(t, opts).Ping(ctx).Err()
		if err == nil || !strings.Contains(err.Error(), "no route for server name c.test (leproxy)") {
			t.Errorf("got %v, want the no route error", err)
		}
	})
}

func TestRedisIntegrationBackendDown(t *testing.T) {
	srv := testenv.StartRedis(t, testenv.RedisOptions{})
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "redis", "", dbproxy.Route{Host: "a.test", Backend: srv.Addr})
	c := newClient(t, tlsOptions(p, "a.test", "a.test"))
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING with the backend up: %v", err)
	}
	srv.Stop()
	c2 := newClient(t, tlsOptions(p, "a.test", "a.test"))
	err := c2.Ping(t.Context()).Err()
	if err == nil || !strings.Contains(err.Error(), "could not connect to the backend of a.test (leproxy)") {
		t.Errorf("got %v, want the backend error", err)
	}
}

// TestRedisIntegrationBackendTLS routes to a Redis that speaks only TLS.
func TestRedisIntegrationBackendTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	srv := testenv.StartRedis(t, testenv.RedisOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	other := dbtest.NewCA(t)
	tests := []struct {
		name    string
		route   dbproxy.Route
		wantErr string
	}{
		{"verify", dbproxy.Route{Host: "a.test", Backend: srv.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, ""},
		{"insecure", dbproxy.Route{Host: "a.test", Backend: srv.Addr, TLS: dbproxy.TLSInsecure}, ""},
		{"verify against another CA", dbproxy.Route{Host: "a.test", Backend: srv.Addr, TLS: dbproxy.TLSVerify, RootCAs: other.Pool},
			"could not connect to the backend of a.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dbtest.StartProtocol(t, ca, "redis", "", tt.route)
			c := newClient(t, tlsOptions(p, "a.test", "a.test"))
			err := c.Set(t.Context(), "k", "v", 0).Err()
			if tt.wantErr == "" && err != nil {
				t.Errorf("SET: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestRedisIntegrationCluster runs go-redis's ClusterClient against a
// three-node Redis Cluster through leproxy, one hostname per node. The
// client's dialer refuses any address but a route host on the listener's
// port, so a node address that was not rewritten fails the test.
func TestRedisIntegrationCluster(t *testing.T) {
	nodes := testenv.StartRedisCluster(t, 3)
	ca := dbtest.NewCA(t)
	var routes []dbproxy.Route
	for i, n := range nodes {
		h := fmt.Sprintf("node%d.test", i+1)
		routes = append(routes, dbproxy.Route{Host: h, Backend: n.Addr})
	}
	p := dbtest.StartProtocol(t, ca, "redis", "", routes...)
	_, lport, _ := net.SplitHostPort(p.Addr)
	ctx := t.Context()

	var (
		mu     sync.Mutex
		dialed = map[string]bool{}
	)
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		dialed[addr] = true
		mu.Unlock()
		if port != lport || !strings.HasSuffix(host, ".test") {
			return nil, fmt.Errorf("client sent around the proxy, to %s", addr)
		}
		d := &tls.Dialer{Config: &tls.Config{ServerName: host, RootCAs: ca.Pool}}
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}

	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("ClusterClient RESP%d", proto), func(t *testing.T) {
			c := goredis.NewClusterClient(&goredis.ClusterOptions{
				Addrs:       []string{"node1.test:" + lport},
				Dialer:      dialer,
				Protocol:    proto,
				DialTimeout: 10 * time.Second,
				ReadTimeout: 10 * time.Second,
			})
			defer c.Close()
			for i := range 100 {
				k := fmt.Sprintf("key:%d:%d", proto, i)
				if err := c.Set(ctx, k, strconv.Itoa(i), 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", k, err)
				}
			}
			for i := range 100 {
				k := fmt.Sprintf("key:%d:%d", proto, i)
				if got, err := c.Get(ctx, k).Result(); err != nil || got != strconv.Itoa(i) {
					t.Fatalf("GET %s: got %q, %v", k, got, err)
				}
			}
			// Deprecated in Redis 7 for CLUSTER SHARDS, but clients still
			// send it: its rewrite is tested as much as SHARDS'.
			//lint:ignore SA1019 CLUSTER SLOTS is tested on purpose.
			slots, err := c.ClusterSlots(ctx).Result()
			if err != nil {
				t.Fatalf("CLUSTER SLOTS: %v", err)
			}
			var addrs []string
			for _, s := range slots {
				for _, n := range s.Nodes {
					addrs = append(addrs, n.Addr)
				}
			}
			slices.Sort(addrs)
			want := []string{"node1.test:" + lport, "node2.test:" + lport, "node3.test:" + lport}
			if !slices.Equal(addrs, want) {
				t.Errorf("CLUSTER SLOTS nodes: got %v, want %v", addrs, want)
			}
			shards, err := c.ClusterShards(ctx).Result()
			if err != nil {
				t.Fatalf("CLUSTER SHARDS: %v", err)
			}
			addrs = addrs[:0]
			for _, s := range shards {
				for _, n := range s.Nodes {
					addrs = append(addrs, net.JoinHostPort(n.Endpoint, strconv.FormatInt(n.Port, 10)))
				}
			}
			slices.Sort(addrs)
			if !slices.Equal(addrs, want) {
				t.Errorf("CLUSTER SHARDS endpoints: got %v, want %v", addrs, want)
			}
			text, err := c.ClusterNodes(ctx).Result()
			if err != nil {
				t.Fatalf("CLUSTER NODES: %v", err)
			}
			for _, n := range nodes {
				if strings.Contains(text, n.Addr) {
					t.Errorf("CLUSTER NODES names backend %s:\n%s", n.Addr, text)
				}
			}
			for _, w := range want {
				if !strings.Contains(text, w+"@") {
					t.Errorf("CLUSTER NODES lacks %s:\n%s", w, text)
				}
			}
		})
	}

	// MOVED and ASK, as a plain client reads them.
	tc := p.DialTLS(t, "node1.test", "node1.test")
	br := bufio.NewReader(tc)
	key, owner := "", -1
	for i := 0; owner != 1; i++ {
		key = fmt.Sprintf("moved:%d", i)
		slot, err := nodes[0].Do("CLUSTER", "KEYSLOT", key)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := strconv.Atoi(slot)
		owner = s * 3 / 16384
	}
	slot, _ := nodes[0].Do("CLUSTER", "KEYSLOT", key)
	if got, want := do(t, tc, br, "GET", key), "-MOVED "+slot+" node2.test:"+lport+"\r\n"; got != want {
		t.Errorf("GET of a key of node 2 on node 1: got %q, want %q", got, want)
	}
	// A slot of node 1 migrating to node 3: a missing key gets ASK.
	key1 := ""
	for i := 0; ; i++ {
		key1 = fmt.Sprintf("ask:%d", i)
		s, _ := nodes[0].Do("CLUSTER", "KEYSLOT", key1)
		n, _ := strconv.Atoi(s)
		if n*3/16384 == 0 {
			slot = s
			break
		}
	}
	id3, err := nodes[2].Do("CLUSTER", "MYID")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].Do("CLUSTER", "SETSLOT", slot, "MIGRATING", id3); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nodes[0].Do("CLUSTER", "SETSLOT", slot, "STABLE") })
	if got, want := do(t, tc, br, "GET", key1), "-ASK "+slot+" node3.test:"+lport+"\r\n"; got != want {
		t.Errorf("GET of a migrating slot's missing key: got %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for addr := range dialed {
		if _, port, _ := net.SplitHostPort(addr); port != lport {
			t.Errorf("ClusterClient dialled %s, around the proxy", addr)
		}
	}
}
