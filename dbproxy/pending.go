package dbproxy

import "net"

// peekState is what a look at a socket without reading it found.
type peekState int

const (
	peekUnsupported peekState = iota // not a socket, or no peeking here
	peekNothing                      // nothing to read yet
	peekData                         // bytes wait to be read
	peekEOF                          // the peer closed its side
	peekFailed                       // the socket failed (reset…), or is closed
)

// PendingInput reports whether bytes have arrived on c that nobody has
// read yet, without reading them and without waiting. It answers false
// for connections that are not sockets. Protocols use it to refuse bytes
// pipelined behind a request to start TLS: those were sent in plaintext,
// possibly by a man in the middle, and must not be taken for part of the
// encrypted stream. It also answers while another goroutine is blocked
// reading c (an HTTP server waiting for the next request).
func PendingInput(c net.Conn) (bool, error) {
	st, err := peek(c)
	return st == peekData, err
}
