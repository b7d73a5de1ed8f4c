package testenv

// Redis for integration tests: a redis-server on a free 127.0.0.1 port,
// optionally with a password, ACL users, its own TLS, or cluster mode, and
// a Redis Cluster of several such servers.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisOptions configure StartRedis. The zero value is a server without
// password, TLS or cluster mode.
type RedisOptions struct {
	// Password sets requirepass: the default user's password.
	Password string
	// Users adds ACL users, name → password, each allowed every command
	// on every key and channel.
	Users map[string]string
	// CertPEM and KeyPEM, when set, make the server TLS-only: its port
	// speaks TLS (tls-port) and the plaintext port is off. Clients are not
	// asked for certificates.
	CertPEM, KeyPEM []byte
	// Cluster turns on cluster mode; see StartRedisCluster.
	Cluster bool
}

// Redis is a running throwaway redis-server.
type Redis struct {
	Addr string // 127.0.0.1:port
	Port int
	TLS  bool // the port speaks TLS
	// BusPort is the cluster bus port of a cluster-mode server, reserved
	// like Port (Redis would take Port+10000, which nothing reserves).
	BusPort int

	proc *process
}

// StartRedis starts redis-server on a free 127.0.0.1 port, without
// persistence, and stops it when the test ends. Without redis-server the
// test is skipped (redis-server package).
func StartRedis(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	bin := LookBinary(t, "redis-server", "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	conf := []string{
		"bind 127.0.0.1",
		"protected-mode no",
		"save \"\"",
		"appendonly no",
		"dir " + dir,
		"logfile \"\"",
	}
	r := &Redis{Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if len(opts.CertPEM) > 0 {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		for name, b := range map[string][]byte{crt: opts.CertPEM, key: opts.KeyPEM} {
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatalf("testenv: %v", err)
			}
		}
		conf = append(conf, "port 0", "tls-port "+strconv.Itoa(port),
			"tls-cert-file "+crt, "tls-key-file "+key, "tls-auth-clients no")
		r.TLS = true
	} else {
		conf = append(conf, "port "+strconv.Itoa(port))
	}
	if opts.Password != "" {
		conf = append(conf, "requirepass "+opts.Password)
	}
	for name, pw := range opts.Users {
		conf = append(conf, fmt.Sprintf("user %s on >%s ~* &* +@all", name, pw))
	}
	if opts.Cluster {
		r.BusPort = FreePort(t)
		conf = append(conf, "cluster-enabled yes", "cluster-port "+strconv.Itoa(r.BusPort),
			"cluster-config-file "+filepath.Join(dir, "nodes.conf"),
			"cluster-node-timeout 5000")
	}
	confFile := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	r.proc = startProcess(t, "redis-server", exec.Command(bin, confFile))
	r.proc.waitReady(t, 20*time.Second, dialable(r.Addr))
	return r
}

// Stop stops the server at once; it runs at the end of the test anyway.
// Tests call it to make a backend go down.
func (r *Redis) Stop() { r.proc.stop() }

// Do sends one command over a new plaintext connection and returns the
// reply: a simple string, an integer or a bulk string as text; an error
// reply as an error.
func (r *Redis) Do(args ...string) (string, error) {
	if r.TLS {
		return "", fmt.Errorf("testenv: Redis.Do needs a plaintext server")
	}
	c, err := net.DialTimeout("tcp", r.Addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return redisDo(c, args...)
}

// redisDo sends one command on rw and reads its reply; see Redis.Do.
func redisDo(rw io.ReadWriter, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(rw, b.String()); err != nil {
		return "", err
	}
	br := bufio.NewReader(rw)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// StartRedisCluster starts n cluster-mode redis-servers, shares the 16384
// slots among them as masters without replicas, joins them and waits for
// every node to report cluster_state:ok (what `redis-cli --cluster
// create` does, without its fixed waits).
func StartRedisCluster(t testing.TB, n int) []*Redis {
	t.Helper()
	nodes := make([]*Redis, n)
	for i := range nodes {
		nodes[i] = StartRedis(t, RedisOptions{Cluster: true})
	}
	const slots = 16384
	for i, node := range nodes {
		first, last := i*slots/n, (i+1)*slots/n-1
		if _, err := node.Do("CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			t.Fatalf("testenv: cluster set-config-epoch on %s: %v", node.Addr, err)
		}
		if _, err := node.Do("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(first), strconv.Itoa(last)); err != nil {
			t.Fatalf("testenv: cluster addslotsrange on %s: %v", node.Addr, err)
		}
	}
	for _, node := range nodes[1:] {
		if _, err := nodes[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(node.Port), strconv.Itoa(node.BusPort)); err != nil {
			t.Fatalf("testenv: cluster meet %s: %v", node.Addr, err)
		}
	}
	for _, node := range nodes {
		node.proc.waitReady(t, 30*time.Second, func() error {
			info, err := node.Do("CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				return fmt.Errorf("cluster not ready on %s: %q", node.Addr, info)
			}
			return nil
		})
	}
	return nodes
}
