package testenv

// RabbitMQ for integration tests. It takes about 8 s to start, so a test
// package should start one and share it among the cases that need it.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rabbitMQDir is where Debian installs RabbitMQ's own scripts; the ones
// on PATH re-run them through su as the rabbitmq user with its home.
const rabbitMQDir = "/usr/lib/rabbitmq/bin"

// RabbitMQ is a running throwaway RabbitMQ node.
type RabbitMQ struct {
	Addr string // 127.0.0.1:port, AMQP 0-9-1 in plaintext
	Port int
	// User and Password are RabbitMQ's default account, guest/guest,
	// which may log in from the loopback interface only.
	User, Password string

	base     string
	env      []string
	cred     *syscall.Credential
	proc     *process
	epmd     *process
	stopOnce sync.Once
	t        testing.TB
}

// StartRabbitMQ starts a RabbitMQ node on a free 127.0.0.1 port with its
// own Erlang port mapper (epmd) on another, its data, logs and Erlang
// cookie in a temporary directory, no plugins, and stops it when the test
// ends (rabbitmqctl stop, then epmd). Run as root, both run as the
// rabbitmq user. Without rabbitmq-server the test is skipped
// (rabbitmq-server package).
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	server := filepath.Join(rabbitMQDir, "rabbitmq-server")
	if _, err := os.Stat(server); err != nil {
		Unavailable(t, "rabbitmq-server", fmt.Errorf("RabbitMQ not found: %w", err))
	}
	epmdBin := LookBinary(t, "epmd", "erlang-base")
	cred := serviceUser(t, "rabbitmq", "rabbitmq-server")

	// Everything lives in a directory the rabbitmq user owns. t.TempDir's
	// parent is private to root; open it so rabbitmq can get through.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// Our own files, so that nothing under /etc/rabbitmq or
	// /var/lib/rabbitmq is read or written.
	files := map[string]string{
		"enabled_plugins":   "[].\n",
		"rabbitmq-env.conf": "",
		"rabbitmq.conf":     "# leproxy test node\n",
		"advanced.config":   "[].\n",
		".erlang.cookie":    "LEPROXYTESTCOOKIE" + strconv.Itoa(os.Getpid()) + "\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == ".erlang.cookie" {
			mode = 0o400
		}
		path := filepath.Join(base, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	err := filepath.Walk(base, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return chownTo(cred, path)
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}

	port, epmdPort, distPort := FreePort(t), FreePort(t), FreePort(t)
	r := &RabbitMQ{
		Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		User: "guest", Password: "guest",
		base: base, cred: cred, t: t,
	}
	r.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + base,
		"LANG=C.UTF-8",
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_EPMD_PORT=" + strconv.Itoa(epmdPort),
		"RABBITMQ_NODENAME=leproxy" + strconv.Itoa(port) + "@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(base, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(base, "log"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(base, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(base, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(base, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(base, "advanced.config"),
		"RABBITMQ_PID_FILE=" + filepath.Join(base, "rabbitmq.pid"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	}

	// Our own epmd, on a port of our own, so that stopping it stops no
	// one else's.
	epmd := exec.Command(epmdBin, "-port", strconv.Itoa(epmdPort), "-address", "127.0.0.1")
	r.epmd = startProcess(t, "epmd", r.command(epmd))
	r.epmd.waitReady(t, 10*time.Second, dialable(net.JoinHostPort("127.0.0.1", strconv.Itoa(epmdPort))))

	r.proc = startProcess(t, "rabbitmq-server", r.command(exec.Command(server)))
	t.Cleanup(r.Stop) // runs before the process cleanups registered above
	r.proc.waitReady(t, 90*time.Second, r.ready)
	return r
}

// command runs cmd as the rabbitmq user with the node's environment.
func (r *RabbitMQ) command(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = r.env
	cmd.Dir = r.base
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	return cmd
}

// ready checks that the node answers an AMQP 0-9-1 protocol header with a
// method frame (Connection.Start).
func (r *RabbitMQ) ready() error {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 1 {
		return fmt.Errorf("got frame type %d, want 1", b[0])
	}
	return nil
}

// URL is the plaintext amqp:// URL of the node's default vhost.
func (r *RabbitMQ) URL() string {
	return fmt.Sprintf("amqp://%s:%s@%s/", r.User, r.Password, r.Addr)
}

// Stop stops the node with rabbitmqctl stop, then its epmd; it runs at the
// end of the test anyway. Tests call it to make a backend go down.
func (r *RabbitMQ) Stop() {
	r.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ctl := exec.CommandContext(ctx, filepath.Join(rabbitMQDir, "rabbitmqctl"), "stop")
		var out bytes.Buffer
		ctl.Stdout, ctl.Stderr = &out, &out
		if err := r.command(ctl).Run(); err != nil && !r.proc.exited() {
			r.t.Logf("testenv: rabbitmqctl stop: %v\n%s", err, out.String())
		}
		r.proc.stop()
		r.epmd.stop()
	})
}
