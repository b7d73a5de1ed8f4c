package smtp

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// The exchange of the suite is an SMTP command the fake backend answers,
// "XECHO msg" → "250 name:msg"; sessions are piped verbatim.
func conformance(protocol string, connect func(net.Conn, *tls.Config) (net.Conn, error)) dbtest.Conformance {
	return dbtest.Conformance{
		Protocol:     protocol,
		StartBackend: func(t testing.TB, name string) string { return startFake(t, name, "") },
		Connect: func(_ testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			c, err := connect(conn, cfg)
			if err != nil {
				conn.Close() // a real client hangs up on a refusal
			}
			return c, err
		},
		Request: func(msg string) []byte { return []byte("XECHO " + msg + "\r\n") },
		ReadAnswer: func(r io.Reader) (string, error) {
			rp, err := readReply(bufio.NewReader(r))
			if err != nil {
				return "", err
			}
			if rp.code != 250 {
				return "", fmt.Errorf("answer %s", rp)
			}
			return rp.lines[0], nil
		},
	}
}

func TestConformance(t *testing.T) {
	conformance("smtp", connectSTARTTLS).Run(t)
}

func TestConformanceSMTPS(t *testing.T) {
	conformance("smtps", connectImplicit).Run(t)
}

// expect reads a reply and fails unless its code is code; the error
// carries the reply's text.
func expect(br *bufio.Reader, code int) (*reply, error) {
	rp, err := readReply(br)
	if err != nil {
		return nil, err
	}
	if rp.code != code {
		return rp, fmt.Errorf("server replied %s, want %d", rp, code)
	}
	return rp, nil
}

// command sends line and reads the reply, which must have code.
func command(w io.Writer, br *bufio.Reader, line string, code int) (*reply, error) {
	if _, err := io.WriteString(w, line+"\r\n"); err != nil {
		return nil, err
	}
	return expect(br, code)
}

// connectSTARTTLS is an SMTP client on a STARTTLS port: greeting, EHLO,
// STARTTLS and TLS with cfg, EHLO again. In plaintext (cfg nil) it sends
// MAIL FROM after its EHLO, which needs TLS unless plaintext is allowed.
func connectSTARTTLS(conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	br := bufio.NewReader(conn)
	if _, err := expect(br, 220); err != nil {
		return nil, err
	}
	if _, err := command(conn, br, "EHLO client.test", 250); err != nil {
		return nil, err
	}
	if cfg == nil {
		if _, err := command(conn, br, "MAIL FROM:<c@client.test>", 250); err != nil {
			return nil, err
		}
		return conn, nil
	}
	if _, err := command(conn, br, "STARTTLS", 220); err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	br = bufio.NewReader(tc)
	rp, err := command(tc, br, "EHLO client.test", 250)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(rp.lines[0], "a hello") && !strings.HasPrefix(rp.lines[0], "b hello") {
		return nil, fmt.Errorf("EHLO after TLS answered %s, not by the backend", rp)
	}
	return tc, nil
}

// connectImplicit is an SMTP client on an implicit TLS port: TLS with
// cfg, greeting, EHLO. In plaintext (cfg nil) it is a client that sends
// its EHLO before the greeting.
func connectImplicit(conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	if cfg == nil {
		if _, err := io.WriteString(conn, "EHLO client.test\r\n"); err != nil {
			return nil, err
		}
		br := bufio.NewReader(conn)
		if _, err := expect(br, 220); err != nil {
			return nil, err
		}
		if _, err := expect(br, 250); err != nil {
			return nil, err
		}
		return conn, nil
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	br := bufio.NewReader(tc)
	if _, err := expect(br, 220); err != nil {
		return nil, err
	}
	if _, err := command(tc, br, "EHLO client.test", 250); err != nil {
		return nil, err
	}
	return tc, nil
}
