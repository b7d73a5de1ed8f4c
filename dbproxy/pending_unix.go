//go:build unix

package dbproxy

import (
	"errors"
	"net"
	"syscall"
)

// peek looks at c's socket without reading and without waiting: recv(2)
// with MSG_PEEK|MSG_DONTWAIT, under RawConn.Control, which takes no lock
// on the connection, so it also answers while another goroutine is
// blocked reading c.
func peek(c net.Conn) (peekState, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekUnsupported, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekFailed, err
	}
	var (
		n    int
		rerr error
		buf  [1]byte
	)
	if err := rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return peekFailed, err
	}
	switch {
	case rerr == nil && n > 0:
		return peekData, nil
	case rerr == nil:
		return peekEOF, nil
	case errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK):
		return peekNothing, nil
	}
	return peekFailed, rerr
}
