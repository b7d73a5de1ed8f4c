package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// maxCommands bounds the commands a client may send before TLS, and after
// TLS before its EHLO.
const maxCommands = 20

// A proxyError is a refusal leproxy tells the client as an SMTP reply.
type proxyError struct {
	code int
	text string // enhanced status code and message
	err  error  // the cause, for the log; may be nil
}

func (e *proxyError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%d %s: %v", e.code, e.text, e.err)
	}
	return fmt.Sprintf("%d %s", e.code, e.text)
}

func (e *proxyError) Unwrap() error { return e.err }

// conn is the client side of one SMTP handshake.
type conn struct {
	p    *protocol
	s    *dbproxy.Session
	raw  net.Conn // as accepted
	conn net.Conn // raw, or TLS over it
	br   *bufio.Reader
	host string // the name leproxy calls itself
}

// reply sends a one-line reply.
func (c *conn) reply(code int, text string) error {
	if _, err := c.conn.Write(replyBytes(code, text)); err != nil {
		return fmt.Errorf("writing to client: %w", err)
	}
	return nil
}

// tell sends err to the client when it is a *proxyError, and returns it.
// A handshake that timed out is told so, with a short write deadline.
func (c *conn) tell(err error) error {
	if pe, ok := errors.AsType[*proxyError](err); ok {
		c.conn.Write(replyBytes(pe.code, pe.text))
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.conn.Write(replyBytes(421, "4.4.2 "+c.host+" leproxy: timeout, closing connection"))
	}
	if tc, ok := c.conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
	return err
}

// readCommand reads the client's next command line.
func (c *conn) readCommand() (line, verb, arg string, err error) {
	line, err = readLine(c.br)
	if errors.Is(err, errLineTooLong) {
		return "", "", "", &proxyError{code: 500, text: "5.5.2 leproxy: line too long"}
	}
	if err != nil {
		return "", "", "", fmt.Errorf("reading from client: %w", err)
	}
	verb, arg = parseCommand(line)
	return line, verb, arg, nil
}

// Handshake implements dbproxy.Protocol.
func (p *protocol) Handshake(ctx context.Context, client net.Conn, s *dbproxy.Session) (net.Conn, net.Conn, error) {
	c := &conn{p: p, s: s, raw: client, conn: client, host: greetingRoute(s).Host}
	if p.implicit {
		return c.implicitTLS(ctx)
	}
	c.br = bufio.NewReaderSize(client, maxLineLen)
	if err := c.reply(220, c.host+" ESMTP leproxy"); err != nil {
		return nil, nil, err
	}
	b, err := c.beforeTLS(ctx)
	if err != nil {
		return nil, nil, c.tell(err)
	}
	if b != nil { // a plaintext session
		return c.clientConn(), b, nil
	}
	if c.conn == c.raw { // QUIT
		return nil, nil, nil
	}
	return c.afterTLS(ctx, false)
}

// beforeTLS answers the client's commands until STARTTLS, after which TLS
// is up, or QUIT. A client that the default route lets through in
// plaintext is connected to it at its first command that is not leproxy's
// to answer, and the backend is returned.
func (c *conn) beforeTLS(ctx context.Context) (net.Conn, error) {
	var ehlo string  // the client's last EHLO or HELO
	var refused bool // a command was refused for want of TLS
	for range maxCommands {
		line, verb, arg, err := c.readCommand()
		if err != nil {
			if refused && !errors.Is(err, os.ErrDeadlineExceeded) {
				// Not wrapped: leproxy refused the session, the client did
				// not end it.
				return nil, fmt.Errorf("TLS is required: the client did not start it (%v)", err)
			}
			return nil, err
		}
		switch verb {
		case "EHLO":
			if arg == "" {
				err = c.reply(501, "5.5.4 Syntax: EHLO hostname")
				break
			}
			ehlo = line
			_, err = c.conn.Write(c.p.ehloReply(c.s).bytes())
		case "HELO":
			if arg == "" {
				err = c.reply(501, "5.5.4 Syntax: HELO hostname")
				break
			}
			ehlo = line
			err = c.reply(250, c.host)
		case "STARTTLS":
			if arg != "" {
				err = c.reply(501, "5.5.4 Syntax: STARTTLS")
				break
			}
			return nil, c.startTLS(ctx)
		case "NOOP", "RSET":
			err = c.reply(250, "2.0.0 OK")
		case "QUIT":
			c.reply(221, "2.0.0 "+c.host+" closing connection")
			return nil, nil
		default:
			if r := c.s.DefaultRoute(); r != nil && r.AllowPlaintext {
				return c.plaintext(ctx, ehlo, line)
			}
			refused = true
			err = c.reply(530, "5.7.0 Must issue a STARTTLS command first")
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, &proxyError{code: 421, text: "4.7.0 " + c.host + " leproxy: too many commands without STARTTLS, closing connection"}
}

// startTLS answers STARTTLS and runs the TLS handshake; bytes the client
// sent behind STARTTLS refuse the session.
func (c *conn) startTLS(ctx context.Context) error {
	pending := c.br.Buffered() > 0
	if !pending {
		var err error
		if pending, err = dbproxy.PendingInput(c.raw); err != nil {
			return fmt.Errorf("checking for data after STARTTLS: %w", err)
		}
	}
	if pending {
		return &proxyError{code: 421, text: "4.7.0 " + c.host + " leproxy: commands pipelined after STARTTLS are refused, closing connection",
			err: errors.New("received unencrypted data after STARTTLS")}
	}
	if err := c.reply(220, "2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	tc, err := c.s.ServerHandshake(ctx, c.raw)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.conn, c.br = tc, bufio.NewReaderSize(tc, maxLineLen)
	return nil
}

// afterTLS routes a client whose TLS is up (or a plaintext one on an
// smtps listener the default route lets through), reads its EHLO,
// connects the backend and replays the EHLO there. greet says whether
// leproxy still owes the client its greeting (smtps).
func (c *conn) afterTLS(ctx context.Context, greet bool) (net.Conn, net.Conn, error) {
	sni := ""
	if tc, ok := c.conn.(*tls.Conn); ok {
		sni = tc.ConnectionState().ServerName
	}
	r, rerr := c.s.Route(sni)
	if rerr != nil {
		err := &proxyError{code: 421, text: "4.7.0 " + c.host + " leproxy: " + dbproxy.NoRouteMessage(sni), err: rerr}
		if !greet {
			// The client has sent, or is sending, its EHLO: the refusal
			// is its answer.
			c.conn.SetReadDeadline(dbproxy.PeekDeadline(ctx))
			c.readCommand()
		}
		return nil, nil, c.tell(err)
	}
	c.host = r.Host
	if greet {
		if err := c.reply(220, c.host+" ESMTP leproxy"); err != nil {
			return nil, nil, err
		}
	}
	ehlo, err := c.readEHLO()
	if err != nil {
		return nil, nil, c.tell(err)
	}
	if ehlo == "" { // QUIT
		return nil, nil, nil
	}
	_, name := parseCommand(ehlo)
	c.s.AddLogAttrs("ehlo", printable(name))
	bk, err := c.connectBackend(ctx, r)
	if err != nil {
		return nil, nil, c.tell(err)
	}
	rp, err := bk.command(ehlo)
	if err != nil {
		return nil, nil, c.tell(c.backendRefused(err))
	}
	if rp.code == 250 && len(rp.lines) > 1 {
		c.p.learn(r, rp)
		rp = rp.without("STARTTLS")
	}
	if _, err := c.conn.Write(rp.bytes()); err != nil {
		return nil, nil, fmt.Errorf("writing to client: %w", err)
	}
	return c.clientConn(), bk.serverConn(), nil
}

// readEHLO reads the client's commands until its EHLO or HELO, which it
// returns, answering the few others it may send first; "" after QUIT.
func (c *conn) readEHLO() (string, error) {
	for range maxCommands {
		line, verb, arg, err := c.readCommand()
		if err != nil {
			return "", err
		}
		switch verb {
		case "EHLO", "HELO":
			if arg != "" {
				return line, nil
			}
			err = c.reply(501, "5.5.4 Syntax: "+verb+" hostname")
		case "NOOP", "RSET":
			err = c.reply(250, "2.0.0 OK")
		case "QUIT":
			c.reply(221, "2.0.0 "+c.host+" closing connection")
			return "", nil
		case "STARTTLS":
			err = c.reply(503, "5.5.1 Error: TLS already active")
		default:
			err = c.reply(503, "5.5.1 Error: send EHLO first")
		}
		if err != nil {
			return "", err
		}
	}
	return "", &proxyError{code: 421, text: "4.7.0 " + c.host + " leproxy: too many commands without EHLO, closing connection"}
}

// plaintext connects a plaintext client to the default route's backend,
// which allows it, at its first command that leproxy does not answer
// itself, line: the client's EHLO (or HELO) is replayed first and the
// backend's reply discarded, then line is passed on.
func (c *conn) plaintext(ctx context.Context, ehlo, line string) (net.Conn, error) {
	r, err := c.s.Route("")
	if err != nil {
		return nil, &proxyError{code: 421, text: "4.7.0 " + c.host + " leproxy: " + dbproxy.NoRouteMessage(""), err: err}
	}
	bk, err := c.connectBackend(ctx, r)
	if err != nil {
		return nil, err
	}
	if ehlo != "" {
		rp, err := bk.command(ehlo)
		if err != nil {
			return nil, c.backendRefused(err)
		}
		if rp.code == 250 && len(rp.lines) > 1 {
			c.p.learn(r, rp)
		}
	}
	if _, err := io.WriteString(bk.conn, line+"\r\n"); err != nil {
		return nil, fmt.Errorf("writing to backend %s: %w", r.Backend, err)
	}
	return bk.serverConn(), nil
}

// clientConn is the client connection to pipe, with what was read ahead
// of the handshake put back.
func (c *conn) clientConn() net.Conn { return withBuffered(c.conn, c.br) }

// withBuffered returns conn, or conn with br's buffered bytes before it
// when br, which reads conn, holds some.
func withBuffered(conn net.Conn, br *bufio.Reader) net.Conn {
	if br == nil || br.Buffered() == 0 {
		return conn
	}
	b, _ := br.Peek(br.Buffered())
	return dbproxy.NewPrefixConn(conn, append([]byte(nil), b...))
}
