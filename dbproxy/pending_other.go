//go:build !unix

package dbproxy

import "net"

// PendingInput cannot peek at sockets on this platform and reports false;
// bytes pipelined behind a TLS request then make the TLS handshake fail
// instead of being refused with a clear error.
func PendingInput(c net.Conn) (bool, error) { return false, nil }
