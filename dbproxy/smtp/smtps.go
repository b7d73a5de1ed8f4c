package smtp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// implicitTLS is the smtps handshake: TLS from the first byte, then
// leproxy's greeting and the rest as after STARTTLS.
func (c *conn) implicitTLS(ctx context.Context) (net.Conn, net.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(c.raw, first[:]); err != nil {
		return nil, nil, fmt.Errorf("reading first byte: %w", err)
	}
	raw := dbproxy.NewPrefixConn(c.raw, first[:])
	if first[0] != dbproxy.TLSRecordHandshake {
		c.raw, c.conn = raw, raw
		c.br = bufio.NewReaderSize(raw, maxLineLen)
		if r := c.s.DefaultRoute(); r != nil && r.AllowPlaintext {
			return c.afterTLS(ctx, true)
		}
		c.conn.SetReadDeadline(dbproxy.PeekDeadline(ctx))
		line, _ := readLine(c.br)
		c.tell(&proxyError{code: 554, text: "5.7.0 " + c.host + " leproxy: TLS is required: this port speaks implicit TLS (RFC 8314)"})
		return nil, nil, fmt.Errorf("%w (first byte %#02x, %s)", dbproxy.ErrNotTLS, first[0], dbproxy.PrintableWord([]byte(line), 16))
	}
	tc, err := c.s.ServerHandshake(ctx, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	c.conn, c.br = tc, bufio.NewReaderSize(tc, maxLineLen)
	return c.afterTLS(ctx, true)
}
