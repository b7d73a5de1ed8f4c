// Package pgtest is PostgreSQL test support for dbproxy's tests: a fake
// PostgreSQL server driven by pgproto3 and the client side of the
// pre-TLS exchange, byte by byte.
package pgtest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// Request codes of the startup packets that are not a StartupMessage.
const (
	SSLRequestCode    = 80877103
	GSSENCRequestCode = 80877104
	CancelRequestCode = 80877102
)

// A CancelKey is the process ID and secret key of a CancelRequest.
type CancelKey struct {
	PID uint32
	Key string
}

// Client-side wire helpers.

// StartupBytes is a StartupMessage of protocol major.minor with params
// (name, value, name, value…).

func StartupBytes(major, minor uint16, params ...string) []byte {
	b := []byte{0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, uint32(major)<<16|uint32(minor))
	for _, p := range params {
		b = append(b, p...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// RequestBytes is a request packet with code (SSLRequestCode…).
func RequestBytes(code uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code)
}

// CancelBytes is a CancelRequest for pid and key.
func CancelBytes(pid uint32, key []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(12+len(key)))
	b = binary.BigEndian.AppendUint32(b, CancelRequestCode)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, key...)
}

// ReadByte reads the one-byte answer to an SSLRequest or GSSENCRequest.
func ReadByte(t testing.TB, r io.Reader) byte {
	t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	return b[0]
}

// SSLRequest sends an SSLRequest, expects 'S' and completes TLS.
func SSLRequest(t testing.TB, conn net.Conn, ca *dbtest.CA, sni, verifyName string, alpn ...string) net.Conn {
	t.Helper()
	dbtest.MustWrite(t, conn, RequestBytes(SSLRequestCode))
	if got := ReadByte(t, conn); got != 'S' {
		t.Fatalf("SSLRequest answer: got %q, want 'S'", got)
	}
	tc := ca.ClientTLS(conn, sni, verifyName, alpn...)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return tc
}

// StartupResult is what a client read after its StartupMessage.
type StartupResult struct {
	Err     *pgproto3.ErrorResponse // the ErrorResponse, if any
	PID     uint32
	Key     []byte
	Params  map[string]string
	ReadErr error // the read that ended it, when neither Z nor E came
}

// ReadStartup reads backend messages until ReadyForQuery, an
// ErrorResponse or a read error.
func ReadStartup(t testing.TB, fe *pgproto3.Frontend) StartupResult {
	t.Helper()
	res := StartupResult{Params: map[string]string{}}
	for {
		msg, err := fe.Receive()
		if err != nil {
			res.ReadErr = err
			return res
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			e := *m
			res.Err = &e
			return res
		case *pgproto3.BackendKeyData:
			res.PID, res.Key = m.ProcessID, bytes.Clone(m.SecretKey)
		case *pgproto3.ParameterStatus:
			res.Params[m.Name] = m.Value
		case *pgproto3.ReadyForQuery:
			return res
		}
	}
}

// Query sends a simple query and returns the CommandComplete tag.
func Query(t testing.TB, fe *pgproto3.Frontend, sql string) string {
	t.Helper()
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatalf("sending query: %v", err)
	}
	var tag string
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("reading query result: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			tag = string(m.CommandTag)
		case *pgproto3.ErrorResponse:
			t.Fatalf("query error: %s %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return tag
		}
	}
}

// Backend is a minimal PostgreSQL server: it trusts or asks a
// cleartext password, sends BackendKeyData with its pid and key, answers
// every simple query with CommandComplete "<name>:<tls>:<query>", and
// reports cancel requests. Driven by pgproto3.
type Backend struct {
	Name     string
	Addr     string // set by StartBackend
	PID      uint32
	Key      []byte
	Password string           // "" trusts
	Cert     *tls.Certificate // accepts SSLRequest when set
	// AsyncAfterReady is sent right after the first ReadyForQuery, in the
	// same write, as a server's asynchronous messages may be.
	AsyncAfterReady []byte
	// Echo, after the first ReadyForQuery, stops speaking PostgreSQL and
	// answers lines as dbtest.EchoLines does, for dbtest.Conformance.
	Echo bool

	Accepted atomic.Int32
	Cancels  chan CancelKey         // the cancel requests received
	Startups chan map[string]string // each StartupMessage's parameters
}

// StartBackend starts fb on 127.0.0.1 until the test ends.
func StartBackend(t testing.TB, fb *Backend) *Backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb.Addr = l.Addr().String()
	fb.Cancels = make(chan CancelKey, 16)
	fb.Startups = make(chan map[string]string, 64)
	dbtest.ServeFake(t, l, 30*time.Second, func() { fb.Accepted.Add(1) }, fb.serve)
	return fb
}

func (fb *Backend) serve(c net.Conn) {
	conn := c
	secure := false
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 8 || n > 10000 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(conn, body); err != nil {
			return
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case SSLRequestCode:
			if fb.Cert == nil || secure {
				conn.Write([]byte{'N'})
				continue
			}
			conn.Write([]byte{'S'})
			tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{*fb.Cert}})
			if tc.Handshake() != nil {
				return
			}
			conn, secure = tc, true
			continue
		case CancelRequestCode:
			var req pgproto3.CancelRequest
			if req.Decode(body) == nil {
				fb.Cancels <- CancelKey{PID: req.ProcessID, Key: string(req.SecretKey)}
			}
			return
		}
		var sm pgproto3.StartupMessage
		if err := sm.Decode(body); err != nil {
			return
		}
		fb.Startups <- sm.Parameters
		be := pgproto3.NewBackend(conn, conn)
		if fb.Password != "" {
			be.Send(&pgproto3.AuthenticationCleartextPassword{})
			if be.Flush() != nil || be.SetAuthType(pgproto3.AuthTypeCleartextPassword) != nil {
				return
			}
			msg, err := be.Receive()
			if err != nil {
				return
			}
			if pw, ok := msg.(*pgproto3.PasswordMessage); !ok || pw.Password != fb.Password {
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
				be.Flush()
				return
			}
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "17.0 (" + fb.Name + ")"})
		be.Send(&pgproto3.BackendKeyData{ProcessID: fb.PID, SecretKey: fb.Key})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		if be.Flush() != nil {
			return
		}
		if len(fb.AsyncAfterReady) > 0 {
			conn.Write(fb.AsyncAfterReady)
		}
		if fb.Echo {
			dbtest.EchoLines(conn, fb.Name)
			return
		}
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			switch m := msg.(type) {
			case *pgproto3.Query:
				be.Send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "%s:%t:%s", fb.Name, secure, m.String)})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
			case *pgproto3.Terminate:
				return
			}
		}
	}
}

// Route is the Route to this backend for host.
func (fb *Backend) Route(host string) dbproxy.Route {
	return dbproxy.Route{Host: host, Backend: fb.Addr}
}
