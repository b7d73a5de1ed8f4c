package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bounds of a DNS hook run.
const (
	// DefaultHookTimeout bounds one run of a DNS hook when DNSHook's
	// Timeout is 0.
	DefaultHookTimeout = 2 * time.Minute
	// hookOutputMax bounds how much of a hook's output is kept (its
	// tail), for the error and the log.
	hookOutputMax = 4 << 10
	// hookKillDelay is how long a hook's processes have after SIGKILL
	// to release its output pipes.
	hookKillDelay = 5 * time.Second
)

// DNSHook is a DNSProvider that runs a program, the exec convention of lego
// and certbot hooks:
//
//	PROGRAM present _acme-challenge.example.com. VALUE
//	PROGRAM cleanup _acme-challenge.example.com. VALUE
//
// with leproxy's environment plus CERTBOT_DOMAIN (the domain, without
// "*." or a trailing dot) and CERTBOT_VALIDATION (VALUE). present must
// return once the record is published (or CheckServers are set to wait
// for it). A non-zero exit fails the challenge with the program's output
// (its last 4 KiB); a run is killed, with its process group, after
// Timeout.
type DNSHook struct {
	// Path is the program, an absolute path.
	Path string
	// Timeout bounds one run; 0 means DefaultHookTimeout.
	Timeout time.Duration
}

var _ DNSProvider = (*DNSHook)(nil)

// Present runs the hook's present step.
func (h *DNSHook) Present(ctx context.Context, fqdn, value string) error {
	return h.run(ctx, "present", fqdn, value)
}

// CleanUp runs the hook's cleanup step.
func (h *DNSHook) CleanUp(ctx context.Context, fqdn, value string) error {
	return h.run(ctx, "cleanup", fqdn, value)
}

func (h *DNSHook) run(ctx context.Context, step, fqdn, value string) error {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Path, step, fqdn, value) // #nosec G204 -- the operator's hook from the mapping, arguments are a DNS name and a base64url digest
	domain := strings.TrimSuffix(strings.TrimPrefix(fqdn, "_acme-challenge."), ".")
	cmd.Env = append(os.Environ(), "CERTBOT_DOMAIN="+domain, "CERTBOT_VALIDATION="+value)
	out := &tailWriter{max: hookOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = hookKillDelay
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("killed after %v: %w", timeout, err)
	}
	if msg == "" {
		return fmt.Errorf("dns hook %s %s %s: %w", h.Path, step, fqdn, err)
	}
	return fmt.Errorf("dns hook %s %s %s: %w: %s", h.Path, step, fqdn, err, msg)
}

// tailWriter keeps the last max bytes written to it; safe for concurrent
// use (a hook's stdout and stderr).
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if over := w.buf.Len() - w.max; over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
