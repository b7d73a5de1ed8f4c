package testenv

// PostgreSQL for integration tests. A test whose server binary is missing
// is skipped with a message naming the Debian package, unless
// LEPROXY_INTEGRATION=require, when it fails instead.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PostgresOptions configure StartPostgres. The zero value is a server
// that trusts every login of user "postgres" and has no TLS.
type PostgresOptions struct {
	// Password, when set, becomes the postgres superuser's password and
	// TCP logins must give it with scram-sha-256.
	Password string
	// CertPEM and KeyPEM, when both set, turn on PostgreSQL's own TLS
	// (ssl=on) with this certificate chain and private key.
	CertPEM, KeyPEM []byte
}

// Postgres is a running throwaway PostgreSQL server.
type Postgres struct {
	Addr     string // 127.0.0.1:port, TCP
	Port     int
	User     string // superuser, "postgres"
	Password string // "" when logins are trusted
	BinDir   string // directory of initdb, pg_ctl, postgres
	DataDir  string
	// SocketDir holds the server's unix socket; local logins are trusted.
	SocketDir string

	t        testing.TB
	stopOnce sync.Once
}

// PostgresBinDir returns the bin directory of the newest PostgreSQL
// server installed under /usr/lib/postgresql (Debian's layout), or the
// directory of initdb on PATH.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", -1.0
	for _, d := range dirs {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil && v > bestVersion {
			best, bestVersion = d, v
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin or on PATH")
}

// StartPostgres initialises a database cluster in a temporary directory,
// starts PostgreSQL on a free 127.0.0.1 port and stops it when the test
// ends. Run as root, the server runs as the postgres user, as Debian's
// packages require.
func StartPostgres(t testing.TB, opts PostgresOptions) *Postgres {
	t.Helper()
	bin, err := PostgresBinDir()
	if err != nil {
		postgresUnavailable(t, err)
	}
	runAs, err := postgresRunAs()
	if err != nil {
		postgresUnavailable(t, err)
	}
	p := &Postgres{User: "postgres", Password: opts.Password, BinDir: bin, t: t}

	// Everything lives in a directory the server's user owns. t.TempDir's
	// parent is private to root; open it so postgres can get through.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// The socket directory is short: unix socket paths are limited to 107
	// bytes and test names are long.
	sock, err := os.MkdirTemp("", "pgsock")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	for _, d := range []string{base, sock} {
		if err := runAs.chown(d); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	p.DataDir, p.SocketDir = filepath.Join(base, "data"), sock

	args := []string{"-D", p.DataDir, "-U", p.User, "-E", "UTF8", "--no-sync", "--auth-local=trust"}
	if opts.Password != "" {
		pwfile := filepath.Join(base, "pwfile")
		if err := runAs.writeFile(pwfile, []byte(opts.Password+"\n"), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		args = append(args, "--auth-host=scram-sha-256", "--pwfile="+pwfile)
	} else {
		args = append(args, "--auth-host=trust")
	}
	began := time.Now()
	if out, err := runAs.command(base, filepath.Join(bin, "initdb"), args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	initTime := time.Since(began)

	settings := []string{
		"-c listen_addresses=127.0.0.1",
		"-k " + sock,
		"-c fsync=off",
		"-c shared_buffers=16MB",
	}
	if len(opts.CertPEM) > 0 && len(opts.KeyPEM) > 0 {
		crt, key := filepath.Join(p.DataDir, "server.crt"), filepath.Join(p.DataDir, "server.key")
		if err := runAs.writeFile(crt, opts.CertPEM, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := runAs.writeFile(key, opts.KeyPEM, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		settings = append(settings, "-c ssl=on", "-c ssl_cert_file="+crt, "-c ssl_key_file="+key)
	}

	// A free port can be taken between the probe and the server's bind;
	// try a few.
	logFile := filepath.Join(base, "postgres.log")
	var lastErr error
	for range 3 {
		port, err := reservePort()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		o := strings.Join(append([]string{"-p " + strconv.Itoa(port)}, settings...), " ")
		began := time.Now()
		out, err := runAs.command(base, filepath.Join(bin, "pg_ctl"), "-D", p.DataDir, "-l", logFile, "-o", o, "-w", "-t", "60", "start").CombinedOutput()
		if err == nil {
			p.Port = port
			p.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			t.Cleanup(p.Stop)
			t.Logf("testenv: PostgreSQL %s on %s (initdb %v, start %v)", filepath.Base(filepath.Dir(bin)), p.Addr,
				initTime.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
			return p
		}
		log, _ := os.ReadFile(logFile)
		lastErr = fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Fatalf("testenv: %v", lastErr)
	return nil
}

// Stop stops the server at once (immediate shutdown); it runs at the end
// of the test anyway. Tests call it to make a backend go down.
func (p *Postgres) Stop() {
	p.stopOnce.Do(func() {
		runAs, _ := postgresRunAs()
		out, err := runAs.command(filepath.Dir(p.DataDir), filepath.Join(p.BinDir, "pg_ctl"), "-D", p.DataDir, "-m", "immediate", "-w", "stop").CombinedOutput()
		if err != nil {
			p.t.Errorf("testenv: pg_ctl stop: %v\n%s", err, out)
		}
	})
}

// ConnString is a libpq key=value connection string that reaches the
// server directly over TCP, without TLS.
func (p *Postgres) ConnString() string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable", p.Port, p.User)
	if p.Password != "" {
		s += " password=" + p.Password
	}
	return s
}

// postgresUnavailable skips the test for want of PostgreSQL, or fails it
// when LEPROXY_INTEGRATION=require.
func postgresUnavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("LEPROXY_INTEGRATION") == "require" {
		t.Fatalf("testenv: PostgreSQL required (LEPROXY_INTEGRATION=require): %v", err)
	}
	t.Skipf("testenv: %v; install the Debian package postgresql to run this test", err)
}

// pgUser is the account PostgreSQL runs under: the postgres user when we
// are root (PostgreSQL refuses to run as root), else ourselves.
type pgUser struct {
	root     bool
	uid, gid int
}

func postgresRunAs() (pgUser, error) {
	if os.Geteuid() != 0 {
		return pgUser{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return pgUser{}, fmt.Errorf("running as root and no postgres user: %w", err)
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		return pgUser{}, fmt.Errorf("running as root and no runuser: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return pgUser{root: true, uid: uid, gid: gid}, nil
}

func (u pgUser) command(dir, name string, args ...string) *exec.Cmd {
	if u.root {
		args = slices.Concat([]string{"-u", "postgres", "--", name}, args)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	return cmd
}

func (u pgUser) chown(path string) error {
	if !u.root {
		return nil
	}
	return os.Chown(path, u.uid, u.gid)
}

func (u pgUser) writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, b, mode); err != nil {
		return err
	}
	return u.chown(path)
}
