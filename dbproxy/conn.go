package dbproxy

import "net"

// NewPrefixConn returns c with prefix, bytes already read from it, put
// back: Read returns prefix before reading on. It lets a Protocol look at
// the first bytes of a connection (a TLS record, or the protocol's own
// first message) and then hand the whole stream to crypto/tls. The
// connection half-closes (CloseWrite) when c can.
func NewPrefixConn(c net.Conn, prefix []byte) net.Conn {
	return &prefixConn{Conn: c, prefix: prefix}
}

type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying connection when it can, so the
// byte pump's half-close reaches the TCP layer under a TLS connection.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
