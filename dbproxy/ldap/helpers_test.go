package ldap

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// fakeBackend is an LDAP-shaped backend for the conformance suite and the
// unit tests: it answers StartTLS (when it has a certificate) and a first
// BindRequest with success, a diagnostic naming it, and then echoes lines
// as dbtest.EchoLines does. It records the first request of each
// connection.
type fakeBackend struct {
	name string
	cert *tls.Certificate // nil: StartTLS is refused (unavailable)
	addr string

	mu    sync.Mutex
	first []string // opName of each connection's first message
}

func startFakeBackend(t testing.TB, name string, cert *tls.Certificate) *fakeBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBackend{name: name, cert: cert, addr: l.Addr().String()}
	dbtest.ServeFake(t, l, 30*time.Second, nil, f.serve)
	return f
}

func (f *fakeBackend) firsts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.first...)
}

func (f *fakeBackend) serve(c net.Conn) {
	var conn net.Conn = c
	for i := 0; ; i++ {
		h, err := readHeader(conn)
		if err != nil {
			return
		}
		body, err := readBody(conn, h, 1<<16)
		if err != nil {
			return
		}
		if i == 0 {
			f.mu.Lock()
			f.first = append(f.first, opName(h.op))
			f.mu.Unlock()
		}
		switch h.app() {
		case opExtendedRequest:
			name, _, err := parseExtendedRequest(h, body)
			if err != nil || name != oidStartTLS || f.cert == nil || conn != c {
				conn.Write(appendResult(nil, h.id, extendedResponseOpTag, resultUnavailable, f.name+": no StartTLS here", ""))
				return
			}
			conn.Write(appendResult(nil, h.id, extendedResponseOpTag, resultSuccess, "", oidStartTLS))
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*f.cert}})
			if tc.Handshake() != nil {
				return
			}
			conn = tc
		case opBindRequest:
			conn.Write(appendResult(nil, h.id, classApplication|constructed|opBindResponse, resultSuccess, "bound to "+f.name, ""))
			dbtest.EchoLines(conn, f.name)
			return
		default:
			return
		}
	}
}

// bindRequest is an anonymous simple BindRequest, LDAPv3.
func bindRequest(id int32) []byte {
	var c []byte
	c = appendInt(c, tagInteger, 3)
	c = appendTLV(c, tagOctetStr, nil)
	c = appendTLV(c, 0x80, nil)
	return appendMessage(nil, id, classApplication|constructed|opBindRequest, c)
}

// readResult reads one response message from r.
func readResult(r io.Reader) (*ldapResult, error) {
	h, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	body, err := readBody(r, h, 1<<16)
	if err != nil {
		return nil, err
	}
	return parseResponse(h, body)
}

// resultError is an LDAP result a test client got instead of success.
type resultError struct{ res *ldapResult }

func (e *resultError) Error() string {
	return fmt.Sprintf("LDAP result %d (%s, messageID %d): %s", e.res.code, opName(e.res.op), e.res.id, e.res.diagnostic)
}

// clientStartTLS sends StartTLS with messageID 1 on conn and runs TLS with
// cfg once leproxy says yes.
func clientStartTLS(conn net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	if _, err := conn.Write(appendExtendedRequest(nil, 1, oidStartTLS)); err != nil {
		return nil, err
	}
	res, err := readResult(conn)
	if err != nil {
		return nil, fmt.Errorf("reading the StartTLS answer: %w", err)
	}
	if res.code != resultSuccess || res.id != 1 || res.op != extendedResponseOpTag || res.responseName != oidStartTLS {
		return nil, &resultError{res}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// connect is the conformance suite's client: StartTLS and TLS with cfg
// (plaintext when cfg is nil), then an anonymous bind, which the backend
// must answer with success.
func connect(_ testing.TB, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	c := conn
	if cfg != nil {
		tc, err := clientStartTLS(conn, cfg)
		if err != nil {
			conn.Close()
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write(bindRequest(2)); err != nil {
		conn.Close()
		return nil, err
	}
	res, err := readResult(c)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the bind answer: %w", err)
	}
	if res.code != resultSuccess || res.id != 2 || res.op != classApplication|constructed|opBindResponse {
		conn.Close()
		return nil, &resultError{res}
	}
	return c, nil
}
