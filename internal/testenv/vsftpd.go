package testenv

// vsftpd for integration tests: anonymous FTP with an upload directory,
// plaintext or with TLS (explicit, AUTH TLS) requiring TLS session reuse on
// data connections.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// VSFTPD is a running throwaway vsftpd.
type VSFTPD struct {
	Addr string // 127.0.0.1:port, the control connection
	// Root is the anonymous root (not writable by the ftp user); Pub, its
	// "pub" directory, takes anonymous uploads. Tests put files there.
	Root, Pub string
	// PassivePort is the one data port vsftpd listens on in passive mode.
	PassivePort int

	proc *process
}

// VSFTPDOptions configures StartVSFTPD.
type VSFTPDOptions struct {
	// CertFile and KeyFile, when set, turn TLS on: AUTH TLS required for
	// the login and the data (force_anon_*_ssl), data connections required
	// to reuse the control connection's TLS session (require_ssl_reuse).
	CertFile, KeyFile string
}

// StartVSFTPD starts vsftpd on a free 127.0.0.1 port with anonymous login
// (no password), downloads from Root and uploads into Pub, and stops it
// when the test ends. As root it runs as vsftpd is deployed: the anonymous
// session chrooted and running as the ftp user (which Debian's vsftpd
// package creates); otherwise as the user running the test
// (run_as_launching_user). Without vsftpd the test is skipped (vsftpd
// package).
func StartVSFTPD(t testing.TB, opts VSFTPDOptions) *VSFTPD {
	t.Helper()
	bin := LookBinary(t, "vsftpd", "vsftpd")
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("ftp")
		if err != nil {
			Unavailable(t, "vsftpd", fmt.Errorf("running as root and no ftp user for anonymous FTP: %w", err))
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	dir := t.TempDir()
	v := &VSFTPD{Root: filepath.Join(dir, "root"), PassivePort: FreePort(t)}
	v.Pub = filepath.Join(v.Root, "pub")
	empty := filepath.Join(dir, "empty")
	for _, d := range []string{v.Root, v.Pub, empty} {
		if err := os.Mkdir(d, 0o755); err != nil { // #nosec G301 -- the ftp user reads it
			t.Fatalf("testenv: %v", err)
		}
	}
	if uid >= 0 {
		if err := os.Chown(v.Pub, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	port := FreePort(t)
	v.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf := []string{
		"listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1",
		"listen_port=" + strconv.Itoa(port), "background=NO",
		"anonymous_enable=YES", "local_enable=NO", "no_anon_password=YES",
		"anon_root=" + v.Root, "write_enable=YES", "anon_upload_enable=YES",
		"anon_mkdir_write_enable=YES", "anon_other_write_enable=YES", "anon_umask=022",
		"pasv_enable=YES", "pasv_address=127.0.0.1",
		"pasv_min_port=" + strconv.Itoa(v.PassivePort), "pasv_max_port=" + strconv.Itoa(v.PassivePort),
		"seccomp_sandbox=NO", "secure_chroot_dir=" + empty,
		"xferlog_enable=YES", "vsftpd_log_file=" + filepath.Join(dir, "vsftpd.log"),
		"max_per_ip=0", "max_clients=0",
	}
	if uid < 0 {
		conf = append(conf, "run_as_launching_user=YES")
	}
	if opts.CertFile != "" {
		conf = append(conf, "ssl_enable=YES", "rsa_cert_file="+opts.CertFile, "rsa_private_key_file="+opts.KeyFile,
			"ssl_ciphers=HIGH", "ssl_request_cert=NO", "require_ssl_reuse=YES", "allow_anon_ssl=YES",
			"force_anon_logins_ssl=YES", "force_anon_data_ssl=YES", "debug_ssl=YES")
	} else {
		conf = append(conf, "ssl_enable=NO")
	}
	confFile := filepath.Join(dir, "vsftpd.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	v.proc = startProcess(t, "vsftpd", exec.Command(bin, confFile)) // #nosec G204 -- the test's own binary and file
	v.proc.waitReady(t, 20*time.Second, greets(v.Addr, "220"))
	return v
}

// greets returns a readiness check that a server at addr accepts a
// connection and sends a first line starting with prefix: the greeting,
// the event that says it serves.
func greets(addr, prefix string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the greeting: %w", err)
		}
		if !strings.HasPrefix(line, prefix) {
			return fmt.Errorf("greeting %q", strings.TrimSpace(line))
		}
		return nil
	}
}
