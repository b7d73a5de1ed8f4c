package testenv

// MariaDB for integration tests. A test whose server binary is missing is
// skipped with a message naming the Debian package, unless
// LEPROXY_INTEGRATION=require, when it fails instead.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mariadbStartTimeout bounds how long a starting server may take to
// accept connections; the machine may be loaded.
const mariadbStartTimeout = 90 * time.Second

// MariaDBOptions configure StartMariaDB. The zero value is a server
// without TLS whose only account is root, over the unix socket.
type MariaDBOptions struct {
	// CertPEM and KeyPEM, when both set, turn on the server's own TLS
	// with this certificate chain and private key.
	CertPEM, KeyPEM []byte
	// Args are more mariadbd options, such as "--local-infile=1" or
	// "--max-allowed-packet=64M".
	Args []string
}

// MariaDB is a running throwaway MariaDB server.
type MariaDB struct {
	Addr    string // 127.0.0.1:port, TCP
	Port    int
	Socket  string // unix socket; root logs in over it without a password
	DataDir string

	t        testing.TB
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the server process has exited
	waitErr  error         // the process's exit status, after exited
	logFile  string
	stopOnce sync.Once
}

// StartMariaDB initialises a data directory in a temporary directory
// (mariadb-install-db), starts mariadbd on a free 127.0.0.1 port and stops
// it when the test ends. Run as root, the server runs as the mysql user, as
// Debian's packages require. TCP logins need accounts: create them with
// Exec.
func StartMariaDB(t testing.TB, opts MariaDBOptions) *MariaDB {
	t.Helper()
	bins, err := mariadbBinaries("mariadbd", "mariadb-install-db", "mariadb")
	if err != nil {
		mariadbUnavailable(t, err)
	}
	runAs, err := mariadbRunAs()
	if err != nil {
		mariadbUnavailable(t, err)
	}

	// Everything lives in directories the server's user owns, under
	// parents it can traverse: t.TempDir's parent is private to root.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// The socket directory is short: unix socket paths are limited to 107
	// bytes and test names are long.
	run, err := os.MkdirTemp("", "mdb")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, d := range []string{base, run} {
		if err := runAs.chown(d); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	m := &MariaDB{
		DataDir: filepath.Join(base, "data"),
		Socket:  filepath.Join(run, "my.sock"),
		logFile: filepath.Join(base, "error.log"),
		t:       t,
	}
	// Small InnoDB files and no durability: throwaway servers start
	// faster. The same settings for both, or mariadbd resizes the log.
	common := []string{
		"--datadir=" + m.DataDir,
		"--skip-name-resolve",
		"--innodb-log-file-size=8M",
		"--innodb-buffer-pool-size=32M",
		"--innodb-doublewrite=0",
		"--innodb-flush-log-at-trx-commit=0",
	}
	install := append([]string{"--no-defaults"}, runAs.userArgs()...)
	install = append(install, common...)
	install = append(install, "--skip-test-db")
	if !runAs.root {
		install = append(install, "--auth-root-socket-user="+runAs.name)
	}
	cmd := exec.Command(bins["mariadb-install-db"], install...)
	cmd.Dir = base
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: mariadb-install-db: %v\n%s", err, out)
	}

	args := append([]string{"--no-defaults"}, runAs.userArgs()...)
	args = append(args, common...)
	args = append(args,
		"--bind-address=127.0.0.1",
		"--socket="+m.Socket,
		"--pid-file="+filepath.Join(run, "my.pid"),
		"--log-error="+m.logFile,
	)
	if len(opts.CertPEM) > 0 && len(opts.KeyPEM) > 0 {
		crt, key := filepath.Join(base, "server.crt"), filepath.Join(base, "server.key")
		if err := runAs.writeFile(crt, opts.CertPEM, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := runAs.writeFile(key, opts.KeyPEM, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		args = append(args, "--ssl-cert="+crt, "--ssl-key="+key)
	}
	args = append(args, opts.Args...)

	// A free port can be taken between the probe and the server's bind;
	// try a few.
	var lastErr error
	for range 3 {
		port, err := reservePort()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if lastErr = m.start(bins["mariadbd"], append(args, "--port="+strconv.Itoa(port)), port, base); lastErr == nil {
			m.Port = port
			m.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			t.Cleanup(m.Stop)
			return m
		}
	}
	t.Fatalf("testenv: %v", lastErr)
	return nil
}

// start runs mariadbd with args and waits until it accepts connections
// on its port and its socket, or exits.
func (m *MariaDB) start(bin string, args []string, port int, dir string) error {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mariadbd: %w", err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()
	deadline := time.Now().Add(mariadbStartTimeout)
	for {
		if mariadbAnswers("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))) && mariadbAnswers("unix", m.Socket) {
			return nil
		}
		select {
		case <-m.exited:
			log, _ := os.ReadFile(m.logFile)
			return fmt.Errorf("mariadbd exited: %v\n%s", m.waitErr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.kill()
			log, _ := os.ReadFile(m.logFile)
			return fmt.Errorf("mariadbd did not accept connections within %v\n%s", mariadbStartTimeout, log)
		}
	}
}

// mariadbAnswers reports whether a server at addr sends a packet: a
// greeting, or, over TCP before any account allows the address, an ERR.
func mariadbAnswers(network, addr string) bool {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return false
	}
	return hdr[4] == 10 || hdr[4] == 0xff
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 30 s); it runs at
// the end of the test anyway. Tests call it to make a backend go down.
func (m *MariaDB) Stop() {
	m.stopOnce.Do(func() {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			m.t.Errorf("testenv: mariadbd did not stop within 30 s; killing it")
			m.kill()
		}
	})
}

func (m *MariaDB) kill() {
	m.cmd.Process.Kill()
	<-m.exited
}

// Exec runs SQL statements as root over the unix socket with the mariadb
// client and returns what they print (tab-separated, no column names).
func (m *MariaDB) Exec(t testing.TB, sql string) string {
	t.Helper()
	bins, err := mariadbBinaries("mariadb")
	if err != nil {
		mariadbUnavailable(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["mariadb"], "--no-defaults", "--protocol=socket",
		"--socket="+m.Socket, "--user=root", "--batch", "--skip-column-names", "-e", sql)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: mariadb -e %q: %v\n%s", sql, err, stderr.Bytes())
	}
	return strings.TrimSpace(out.String())
}

// Log returns the server's error log so far.
func (m *MariaDB) Log() string {
	b, _ := os.ReadFile(m.logFile)
	return string(b)
}

// mariadbBinaries finds programs on PATH or in /usr/sbin and /usr/bin,
// where Debian installs them.
func mariadbBinaries(names ...string) (map[string]string, error) {
	found := make(map[string]string, len(names))
	for _, name := range names {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
				if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
					p, err = filepath.Join(dir, name), nil
					break
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("no %s on PATH or in /usr/sbin: %w", name, err)
		}
		found[name] = p
	}
	return found, nil
}

// mariadbUnavailable skips the test for want of MariaDB, or fails it when
// LEPROXY_INTEGRATION=require.
func mariadbUnavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("LEPROXY_INTEGRATION") == "require" {
		t.Fatalf("testenv: MariaDB required (LEPROXY_INTEGRATION=require): %v", err)
	}
	t.Skipf("testenv: %v; install the Debian packages mariadb-server and mariadb-client to run this test", err)
}

// mdbUser is the account MariaDB runs under: the mysql user when we are
// root, else ourselves.
type mdbUser struct {
	root     bool
	name     string // our own user name, when not root
	uid, gid int
}

func mariadbRunAs() (mdbUser, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return mdbUser{}, err
		}
		return mdbUser{name: u.Username}, nil
	}
	u, err := user.Lookup("mysql")
	if err != nil {
		return mdbUser{}, fmt.Errorf("running as root and no mysql user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return mdbUser{root: true, uid: uid, gid: gid}, nil
}

// userArgs are the options that make the server drop root for mysql.
func (u mdbUser) userArgs() []string {
	if !u.root {
		return nil
	}
	return []string{"--user=mysql"}
}

func (u mdbUser) chown(path string) error {
	if !u.root {
		return nil
	}
	return os.Chown(path, u.uid, u.gid)
}

func (u mdbUser) writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, b, mode); err != nil {
		return err
	}
	return u.chown(path)
}
