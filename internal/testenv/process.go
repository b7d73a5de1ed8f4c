package testenv

// Server processes for integration tests: finding the binary (or skipping
// the test, naming the Debian package), running it in its own process
// group with its output kept for a failing test, and stopping it.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// processLogTail bounds how much of a server's output is kept.
const processLogTail = 32 << 10

// LookBinary returns the path of the program name. When it is missing the
// test is skipped with a message naming the Debian package pkg that
// provides it, or fails when LEPROXY_INTEGRATION=require.
func LookBinary(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Unavailable(t, pkg, fmt.Errorf("%s not found: %w", name, err))
	return ""
}

// Unavailable skips the test for want of a server, naming the Debian
// package that provides it, or fails it when LEPROXY_INTEGRATION=require.
func Unavailable(t testing.TB, pkg string, err error) {
	t.Helper()
	if os.Getenv("LEPROXY_INTEGRATION") == "require" {
		t.Fatalf("testenv: %s required (LEPROXY_INTEGRATION=require): %v", pkg, err)
	}
	t.Skipf("testenv: %v; install the Debian package %s to run this test", err, pkg)
}

// process is a server process a test started.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// startProcess starts cmd in its own process group with its output kept,
// and stops it (see stop) when the test ends.
func startProcess(t testing.TB, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, out: &tailBuffer{max: processLogTail}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the process group: SIGTERM, then SIGKILL after 10 s.
func (p *process) stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls ready until it returns nil, the process exits or
// timeout passes; the test fails with the server's output otherwise.
func (p *process) waitReady(t testing.TB, timeout time.Duration, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if p.exited() {
			t.Fatalf("testenv: %s exited before it was ready (%v): %v\n%s", p.name, p.err, err, p.out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s not ready after %v: %v\n%s", p.name, timeout, err, p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialable returns a readiness check that a TCP connection to addr
// succeeds.
func dialable(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// serviceUser is the account a server that refuses to run as root runs
// under: that user when we are root, nil otherwise.
func serviceUser(t testing.TB, name, pkg string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		Unavailable(t, pkg, fmt.Errorf("running as root and no %s user: %w", name, err))
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("testenv: user %s: %v", name, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}
}

// chownTo gives path to the credential's user; nil changes nothing.
func chownTo(cred *syscall.Credential, path string) error {
	if cred == nil {
		return nil
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}
