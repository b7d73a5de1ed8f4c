//go:build unix

package dbproxy

import (
	"errors"
	"net"
	"syscall"
)

// PendingInput reports whether bytes have arrived on c that nobody has
// read yet, without reading them and without waiting: recv(2) with
// MSG_PEEK|MSG_DONTWAIT. It answers false for connections that are not
// sockets. Protocols use it to refuse bytes pipelined behind a request to
// start TLS: those were sent in plaintext, possibly by a man in the middle,
// and must not be taken for part of the encrypted stream. It peeks under
// RawConn.Control, which takes no lock on the connection, so it also
// answers while another goroutine is blocked reading c (an HTTP server
// waiting for the next request).
func PendingInput(c net.Conn) (bool, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var (
		n    int
		rerr error
		buf  [1]byte
	)
	err = rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	if err != nil {
		return false, err
	}
	if rerr != nil {
		if errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, rerr
	}
	return n > 0, nil
}
