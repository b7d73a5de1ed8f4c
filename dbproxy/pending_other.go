//go:build !unix

package dbproxy

import "net"

// peek cannot look at sockets on this platform: bytes pipelined behind a
// TLS request then make the TLS handshake fail instead of being refused
// with a clear error, and a session's closed_by falls back to which
// direction failed.
func peek(net.Conn) (peekState, error) { return peekUnsupported, nil }
