package postgres

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
)

// The fake backend trusts every client and, after its first
// ReadyForQuery, echoes lines: once Connect has read that ReadyForQuery
// the session is a line exchange through the byte pump.
func TestConformance(t *testing.T) {
	dbtest.Conformance{
		Protocol: "postgres",
		StartBackend: func(t testing.TB, name string) string {
			return pgtest.StartBackend(t, &pgtest.Backend{Name: name, PID: 1, Key: []byte{1, 2, 3, 4}, Echo: true}).Addr
		},
		Connect: func(t testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
			return connectRaw(conn, cfg)
		},
	}.Run(t)
}

// connectRaw starts a session over conn as libpq does with
// sslnegotiation=postgres: an SSLRequest and TLS with cfg (neither when
// cfg is nil), a StartupMessage, then the backend's messages up to
// ReadyForQuery. It reads one message at a time, exactly, so that nothing
// after ReadyForQuery is consumed. An ErrorResponse, in place of the
// SSLRequest's answer (a Refuser's) or during startup, is returned as an
// error carrying its SQLSTATE and message; the client then closes, as
// libpq does.
func connectRaw(conn net.Conn, cfg *tls.Config) (_ net.Conn, err error) {
	defer func(raw net.Conn) {
		if err != nil {
			raw.Close()
		}
	}(conn)
	if cfg != nil {
		if _, err := conn.Write(pgtest.RequestBytes(pgtest.SSLRequestCode)); err != nil {
			return nil, err
		}
		var answer [1]byte
		if _, err := io.ReadFull(conn, answer[:]); err != nil {
			return nil, fmt.Errorf("reading the SSLRequest's answer: %w", err)
		}
		switch answer[0] {
		case 'S':
		case 'E':
			return nil, readError(conn)
		default:
			return nil, fmt.Errorf("SSLRequest answered %q", answer[0])
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	if _, err := conn.Write(pgtest.StartupBytes(3, 0, "user", "u", "database", "db")); err != nil {
		return nil, err
	}
	for {
		var typ [1]byte
		if _, err := io.ReadFull(conn, typ[:]); err != nil {
			return nil, fmt.Errorf("reading the startup: %w", err)
		}
		if typ[0] == 'E' {
			return nil, readError(conn)
		}
		if _, err := readBody(conn); err != nil {
			return nil, err
		}
		if typ[0] == 'Z' {
			return conn, nil
		}
	}
}

// readBody reads the length word and body of a message whose type byte
// has been read.
func readBody(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("reading a message length: %w", err)
	}
	l := binary.BigEndian.Uint32(n[:])
	if l < 4 || l > 1<<20 {
		return nil, fmt.Errorf("message length %d", l)
	}
	body := make([]byte, l-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("reading a message: %w", err)
	}
	return body, nil
}

// readError reads the rest of an ErrorResponse and returns it as an
// error, decoded by pgproto3.
func readError(r io.Reader) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil {
		return fmt.Errorf("decoding an ErrorResponse: %w", err)
	}
	return fmt.Errorf("server error: %s %s: %s", e.Severity, e.Code, e.Message)
}
