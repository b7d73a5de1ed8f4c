// Package sdnotify implements the sender side of systemd's notify protocol
// (sd_notify(3)) without cgo: datagrams of newline-separated VAR=value
// assignments sent to the unix socket named by $NOTIFY_SOCKET.
//
// A service with Type=notify sends Ready once it serves; with
// Type=notify-reload (systemd 253 and later) it also sends Reloading when a
// reload starts and Ready again when the reload is done, whether it
// succeeded or not, and Stopping when it begins to shut down. Status
// messages show in `systemctl status`.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds one send: a datagram socket whose receiver does not
// drain its queue would otherwise block the sender.
const sendTimeout = 5 * time.Second

// Notifier sends notifications to the service manager. A nil *Notifier and
// the zero Notifier do nothing and return nil, so that callers need not
// check whether leproxy runs under systemd. A Notifier is safe for
// concurrent use.
type Notifier struct {
	addr *net.UnixAddr
	err  error // a NOTIFY_SOCKET that cannot be used, returned by every send
}

// New returns a Notifier for $NOTIFY_SOCKET, or nil when the variable is
// unset or empty. The socket may be a path ("/run/systemd/notify") or a
// Linux abstract name ("@name"). Any other address (such as systemd's
// "vsock:" form) gives a Notifier whose every send returns an error naming
// it.
func New() *Notifier {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" {
		return nil
	}
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "@") {
		return &Notifier{err: fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q: want an absolute path or an @abstract name", s)}
	}
	// The net package maps a leading '@' to the abstract namespace.
	return &Notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}
}

// Ready sends READY=1: start-up, or a reload announced with Reloading, is
// complete.
func (n *Notifier) Ready() error {
	return n.Send("READY=1")
}

// Reloading sends RELOADING=1 with MONOTONIC_USEC set to the current
// CLOCK_MONOTONIC time in microseconds, as Type=notify-reload requires.
// Send Ready when the reload is done.
func (n *Notifier) Reloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sdnotify: reading the monotonic clock: %w", err)
	}
	return n.Send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", usec))
}

// Stopping sends STOPPING=1: the service is shutting down.
func (n *Notifier) Stopping() error {
	return n.Send("STOPPING=1")
}

// Status sends STATUS=s, a one-line description of the service state. A
// newline in s would start another assignment, so newlines become spaces.
func (n *Notifier) Status(s string) error {
	return n.Send("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Send sends state, one or more newline-separated VAR=value assignments,
// in one datagram.
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	if n.err != nil {
		return n.err
	}
	if n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: connecting to %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("sdnotify: sending to %s: %w", n.addr.Name, err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: sending to %s: %w", n.addr.Name, err)
	}
	return nil
}

// monotonicUsec returns CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with.
func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	if ts.Sec < 0 || ts.Nsec < 0 {
		return 0, errors.New("negative time")
	}
	return uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000, nil
}
