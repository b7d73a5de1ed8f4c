package smtp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/leproxy/leproxy/dbproxy"
)

// backend is the backend side of one SMTP handshake.
type backend struct {
	r    *dbproxy.Route
	conn net.Conn // from Dial, or TLS over it
	br   *bufio.Reader
}

// connectBackend dials r's backend, reads its greeting and, when the route
// asks for TLS, starts it: with STARTTLS on an smtp listener, from the
// first byte on an smtps one. Its errors are proxyErrors for the client.
func (c *conn) connectBackend(ctx context.Context, r *dbproxy.Route) (*backend, error) {
	unreachable := func(err error) error {
		return &proxyError{code: 421, text: "4.4.1 " + c.host + " leproxy: could not connect to the backend of " + r.Host, err: err}
	}
	dial := c.s.Dial
	if c.p.implicit {
		dial = c.s.DialBackend
	}
	b, err := dial(ctx, r)
	if err != nil {
		return nil, unreachable(err)
	}
	bk := &backend{r: r, conn: b, br: bufio.NewReaderSize(b, maxLineLen)}
	if err := bk.greeting(c.s); err != nil {
		return nil, c.backendRefused(err)
	}
	if c.p.implicit || !r.TLS.Enabled() {
		return bk, nil
	}
	if err := bk.startTLS(c.host); err != nil {
		c.s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonUnreachable)
		return nil, unreachable(err)
	}
	tc, err := c.s.StartBackendTLS(ctx, bk.conn, r)
	if err != nil {
		return nil, unreachable(err)
	}
	bk.conn, bk.br = tc, bufio.NewReaderSize(tc, maxLineLen)
	return bk, nil
}

// backendRefused is the client's refusal for a backend that did not
// greet with 220 or broke the protocol.
func (c *conn) backendRefused(err error) error {
	return &proxyError{code: 421, text: "4.3.0 " + c.host + " leproxy: the backend refused the session", err: err}
}

// greeting consumes the backend's greeting.
func (bk *backend) greeting(s *dbproxy.Session) error {
	rp, err := readReply(bk.br)
	if err != nil {
		return fmt.Errorf("backend %s greeting: %w", bk.r.Backend, err)
	}
	if rp.code != 220 {
		s.SetEnd(dbproxy.ByBackend, dbproxy.ReasonRefused)
		return fmt.Errorf("backend %s greeted with %s", bk.r.Backend, rp)
	}
	return nil
}

// command sends the command line to the backend and reads its reply.
func (bk *backend) command(line string) (*reply, error) {
	if _, err := io.WriteString(bk.conn, line+"\r\n"); err != nil {
		return nil, fmt.Errorf("writing to backend %s: %w", bk.r.Backend, err)
	}
	rp, err := readReply(bk.br)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", bk.r.Backend, err)
	}
	return rp, nil
}

// startTLS asks the backend to start TLS: EHLO as host, which must offer
// STARTTLS, then STARTTLS, which must be answered 220 with nothing behind.
func (bk *backend) startTLS(host string) error {
	rp, err := bk.command("EHLO " + host)
	if err != nil {
		return err
	}
	if rp.code != 250 {
		return fmt.Errorf("backend %s answered EHLO with %s", bk.r.Backend, rp)
	}
	if _, ok := rp.keywords()["STARTTLS"]; !ok {
		return fmt.Errorf("backend %s does not offer STARTTLS", bk.r.Backend)
	}
	if rp, err = bk.command("STARTTLS"); err != nil {
		return err
	}
	if rp.code != 220 {
		return fmt.Errorf("backend %s answered STARTTLS with %s", bk.r.Backend, rp)
	}
	if bk.br.Buffered() > 0 {
		return fmt.Errorf("backend %s sent data after its answer to STARTTLS", bk.r.Backend)
	}
	return nil
}

// serverConn is the backend connection to pipe, with what was read ahead
// put back.
func (bk *backend) serverConn() net.Conn { return withBuffered(bk.conn, bk.br) }
