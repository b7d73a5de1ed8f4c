package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
)

func TestParseStartupPacket(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		wantKind packetKind
		wantCode string // SQLSTATE of the refusal
		check    func(t *testing.T, p *startupPacket)
	}{
		{"SSLRequest", pgtest.RequestBytes(sslRequestCode), pktSSL, "", nil},
		{"GSSENCRequest", pgtest.RequestBytes(gssEncRequestCode), pktGSSENC, "", nil},
		{"SSLRequest too long", append([]byte{0, 0, 0, 9}, append(pgtest.RequestBytes(sslRequestCode)[4:], 0)...), 0, "08P01", nil},
		{"cancel 3.0", pgtest.CancelBytes(7, []byte{1, 2, 3, 4}), pktCancel, "", func(t *testing.T, p *startupPacket) {
			if p.pid != 7 || !bytes.Equal(p.key, []byte{1, 2, 3, 4}) {
				t.Errorf("got pid %d key %x", p.pid, p.key)
			}
		}},
		{"cancel 3.2 256-byte key", pgtest.CancelBytes(7, bytes.Repeat([]byte{9}, 256)), pktCancel, "", nil},
		{"cancel key too short", pgtest.CancelBytes(7, []byte{1, 2, 3}), 0, "08P01", nil},
		{"cancel key too long", pgtest.CancelBytes(7, bytes.Repeat([]byte{9}, 257)), 0, "08P01", nil},
		{"startup 3.0", pgtest.StartupBytes(3, 0, "user", "alice", "database", "db", "options", ""), pktStartup, "", func(t *testing.T, p *startupPacket) {
			if p.major != 3 || p.minor != 0 || p.param("user") != "alice" || p.param("database") != "db" || p.param("nope") != "" {
				t.Errorf("got %d.%d %v", p.major, p.minor, p.params)
			}
		}},
		{"startup 3.2", pgtest.StartupBytes(3, 2, "user", "bob"), pktStartup, "", func(t *testing.T, p *startupPacket) {
			if p.minor != 2 || p.param("user") != "bob" {
				t.Errorf("got %d.%d %v", p.major, p.minor, p.params)
			}
		}},
		{"startup without parameters", pgtest.StartupBytes(3, 0), pktStartup, "", nil},
		{"no terminator", pgtest.StartupBytes(3, 0, "user", "a")[:len(pgtest.StartupBytes(3, 0, "user", "a"))-1], 0, "08P01", nil},
		{"name without value", pgtest.StartupBytes(3, 0, "user"), 0, "08P01", nil},
		{"empty name", pgtest.StartupBytes(3, 0, "", "x"), 0, "08P01", nil},
		{"protocol 2.0", pgtest.StartupBytes(2, 0, "user", "a"), 0, "0A000", nil},
		{"protocol 4.0", pgtest.StartupBytes(4, 0, "user", "a"), 0, "0A000", nil},
		{"unknown request", pgtest.RequestBytes(1234<<16 | 1), 0, "08P01", nil},
		{"short", []byte{0, 0, 0, 4}, 0, "08P01", nil},
		{"length mismatch", append(pgtest.RequestBytes(sslRequestCode), 0), 0, "08P01", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseStartupPacket(tt.in)
			if tt.wantCode != "" {
				we, ok := errors.AsType[*wireError](err)
				if !ok || we.code != tt.wantCode {
					t.Fatalf("got %v, want a %s refusal", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want %v", err, tt.wantKind)
			}
			if p.kind != tt.wantKind || !bytes.Equal(p.raw, tt.in) {
				t.Errorf("got kind %v, want %v", p.kind, tt.wantKind)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestReadStartupPacketBoundsBeforeAllocating(t *testing.T) {
	// A length word of 2 GiB is refused before anything is read or made.
	r := &countingReader{r: strings.NewReader(strings.Repeat("x", 1<<16))}
	_, err := readStartupPacket(r, [4]byte{0x7f, 0xff, 0xff, 0xff})
	if we, ok := errors.AsType[*wireError](err); !ok || we.code != "08P01" {
		t.Fatalf("got %v, want an 08P01 refusal", err)
	}
	if r.n != 0 {
		t.Errorf("read %d bytes of a packet refused by its length", r.n)
	}
	allocs := testing.AllocsPerRun(10, func() {
		readStartupPacket(strings.NewReader(""), [4]byte{0x7f, 0xff, 0xff, 0xff})
	})
	if allocs > 5 {
		t.Errorf("%v allocations refusing a huge length", allocs)
	}
}

func TestErrorResponseEncoding(t *testing.T) {
	// pgproto3, an independent implementation, reads what we write.
	tests := []struct{ code, msg string }{
		{"28000", "TLS is required for db.example.com"},
		{"08P01", ""},
		{"08001", "nul\x00inside"},
	}
	for _, tt := range tests {
		b := appendErrorResponse([]byte("prefix"), tt.code, tt.msg)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("prefix lost: %q", b)
		}
		fe := pgproto3.NewFrontend(bytes.NewReader(b[len("prefix"):]), io.Discard)
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("%q: %v", tt.msg, err)
		}
		e, ok := msg.(*pgproto3.ErrorResponse)
		wantMsg := strings.ReplaceAll(tt.msg, "\x00", "")
		if !ok || e.Severity != "FATAL" || e.SeverityUnlocalized != "FATAL" || e.Code != tt.code || e.Message != wantMsg {
			t.Errorf("got %#v, want FATAL %s %q", msg, tt.code, wantMsg)
		}
		code, m := parseErrorFields(b[len("prefix")+5:])
		if code != tt.code || m != wantMsg {
			t.Errorf("parseErrorFields: got %s %q, want %s %q", code, m, tt.code, wantMsg)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzStartupPacket(f *testing.F) {
	f.Add(pgtest.RequestBytes(sslRequestCode))
	f.Add(pgtest.RequestBytes(gssEncRequestCode))
	f.Add(pgtest.CancelBytes(1, []byte{1, 2, 3, 4}))
	f.Add(pgtest.CancelBytes(1, bytes.Repeat([]byte{7}, 32)))
	f.Add(pgtest.StartupBytes(3, 0, "user", "alice", "database", "db"))
	f.Add(pgtest.StartupBytes(3, 2, "user", "alice", "_pq_.x", "1"))
	f.Add(pgtest.StartupBytes(3, 0, "user"))
	f.Add(pgtest.StartupBytes(2, 0))
	f.Add([]byte{0, 0, 0x27, 0x11, 0, 3, 0, 0})
	f.Add([]byte{0x16, 3, 1, 0, 0xa5})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		r := &countingReader{r: bytes.NewReader(in[4:])}
		p, err := readStartupPacket(r, [4]byte(in[:4]))
		if r.n > maxStartupPacket-4 {
			t.Fatalf("read %d bytes, more than a startup packet", r.n)
		}
		if err != nil {
			return
		}
		if len(p.raw) > maxStartupPacket || !bytes.Equal(p.raw, in[:len(p.raw)]) {
			t.Fatalf("raw packet %x is not the input's prefix", p.raw)
		}
		switch p.kind {
		case pktSSL, pktGSSENC:
			if len(p.raw) != 8 {
				t.Fatalf("request of %d bytes", len(p.raw))
			}
		case pktCancel:
			if len(p.key) < minCancelKey || len(p.key) > maxCancelKey {
				t.Fatalf("cancel key of %d bytes", len(p.key))
			}
		case pktStartup:
			if p.major != 3 || len(p.params)%2 != 0 {
				t.Fatalf("startup %d.%d with %d parameter strings", p.major, p.minor, len(p.params))
			}
			for i := 0; i < len(p.params); i += 2 {
				if p.params[i] == "" {
					t.Fatal("empty parameter name accepted")
				}
			}
			// The parameters, written back, are the packet.
			params := append([]string(nil), p.params...)
			if re := pgtest.StartupBytes(p.major, p.minor, params...); !bytes.Equal(re, p.raw) {
				t.Fatalf("re-encoded %x, want %x", re, p.raw)
			}
		default:
			t.Fatalf("kind %d", p.kind)
		}
	})
}

func FuzzBackendKeyData(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3, 4})
	f.Add(append([]byte{0, 0, 0, 1}, bytes.Repeat([]byte{1}, 256)...))
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3})
	f.Fuzz(func(t *testing.T, body []byte) {
		pid, key, err := parseBackendKeyData(body)
		var ref pgproto3.BackendKeyData
		refErr := ref.Decode(body)
		if err != nil {
			return
		}
		if refErr != nil || ref.ProcessID != pid || !bytes.Equal(ref.SecretKey, key) {
			t.Fatalf("got %d %x, pgproto3 got %d %x %v", pid, key, ref.ProcessID, ref.SecretKey, refErr)
		}
		if len(key) < minCancelKey || len(key) > maxCancelKey {
			t.Fatalf("key of %d bytes accepted", len(key))
		}
	})
}

func FuzzErrorFields(f *testing.F) {
	f.Add(appendErrorResponse(nil, "28000", "TLS is required")[5:])
	f.Add([]byte("SFATAL\x00C08P01\x00Mmsg\x00\x00"))
	f.Add([]byte("C"))
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg := parseErrorFields(body)
		if len(code)+len(msg) > len(body) {
			t.Fatalf("fields longer than the body")
		}
	})
}

// FuzzRelayStartup feeds arbitrary backend and client bytes through the
// startup relay: no panic, no unbounded allocation, and what the client
// gets is a prefix of what the backend sent, AuthenticationSASL messages
// without their channel-binding mechanisms (relayedToClient), and perhaps
// one ErrorResponse of the proxy's own.
func FuzzRelayStartup(f *testing.F) {
	var good []byte
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}},
		&pgproto3.AuthenticationSASLFinal{Data: []byte("v=x")},
		&pgproto3.AuthenticationOk{},
		&pgproto3.ParameterStatus{Name: "server_version", Value: "17"},
		&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	} {
		good, _ = m.Encode(good)
	}
	answer, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=x")}).Encode(nil)
	errResp, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "no"}).Encode(nil)
	f.Add(good, answer)
	f.Add(errResp, []byte(nil))
	f.Add([]byte{'K', 0, 0, 0, 8, 0, 0, 0, 1}, []byte(nil))
	f.Add([]byte{'R', 0x7f, 0xff, 0xff, 0xff}, []byte(nil))
	plus, _ := (&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}}).Encode(nil)
	yAnswer, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("y,,n=,r=x")}).Encode(nil)
	f.Add(append(plus, good[len(plus)-len("SCRAM-SHA-256-PLUS")-1:]...), answer)
	f.Add(append(plus, errResp...), yAnswer)
	f.Add(append(plus[:len(plus)-len("SCRAM-SHA-256")-1:len(plus)-len("SCRAM-SHA-256")-1], 0), []byte(nil))
	f.Fuzz(func(t *testing.T, backend, client []byte) {
		var toClient, toBackend bytes.Buffer
		c := &memConn{Reader: bytes.NewReader(client), Writer: &toClient}
		b := &memConn{Reader: bytes.NewReader(backend), Writer: &toBackend}
		key, err := relayStartup(c, b, "db.test")
		if err == nil && key == nil && !bytes.Contains(backend, []byte{'Z'}) {
			t.Fatal("relay ended without a ReadyForQuery")
		}
		if key != nil && (len(key.key) < minCancelKey || len(key.key) > maxCancelKey) {
			t.Fatalf("cancel key of %d bytes", len(key.key))
		}
		out := toClient.Bytes()
		relayed := relayedToClient(backend)
		ok := bytes.HasPrefix(relayed, out)
		for _, own := range [][]byte{
			appendErrorResponse(nil, sqlstateConnectionFailure, "lost the connection to the backend of db.test"),
			appendErrorResponse(nil, sqlstateProtocolViolation, "invalid message from the backend of db.test"),
			appendErrorResponse(nil, sqlstateInvalidAuthSpec, onlyChannelBindingRefusal("db.test")),
			appendErrorResponse(nil, sqlstateInvalidAuthSpec, channelBindingRefusal("db.test")),
		} {
			if rest, cut := bytes.CutSuffix(out, own); cut && bytes.HasPrefix(relayed, rest) {
				ok = true
			}
		}
		if bytes.Contains(out, []byte("-PLUS\x00")) && !bytes.Contains(relayed, []byte("-PLUS\x00")) {
			t.Fatalf("client was offered channel binding: %q", out)
		}
		if !ok {
			t.Fatalf("client got bytes the backend did not send: %q", out)
		}
		if !bytes.Equal(toBackend.Bytes(), client[:toBackend.Len()]) {
			t.Fatal("backend got bytes the client did not send")
		}
	})
}

// relayedToClient is what the startup relay should pass on of the
// backend's bytes, written independently of it: messages verbatim but
// AuthenticationSASL, whose mechanisms ending in -PLUS are dropped, up to
// the first message it must refuse, or everything from ReadyForQuery on.
func relayedToClient(backend []byte) []byte {
	var out []byte
	for len(backend) >= 5 {
		l := binary.BigEndian.Uint32(backend[1:])
		if l < 4 || l-4 > maxStartupBackendMessage {
			break
		}
		n := int(l) - 4
		if backend[0] == 'Z' {
			return append(out, backend...)
		}
		if backend[0] != 'R' || n < 4 || len(backend) < 9 || binary.BigEndian.Uint32(backend[5:]) != authSASL {
			out = append(out, backend[:min(len(backend), 5+n)]...)
			if backend[0] == 'E' || len(backend) < 5+n {
				break
			}
			backend = backend[5+n:]
			continue
		}
		if n-4 > maxAuthSASL || len(backend) < 5+n {
			break
		}
		list := string(backend[9 : 5+n])
		all, ok := strings.CutSuffix(list, "\x00")
		if !ok || (all != "" && !strings.HasSuffix(all, "\x00")) {
			break
		}
		var kept []string
		dropped := false
		if all != "" {
			for _, name := range strings.Split(strings.TrimSuffix(all, "\x00"), "\x00") {
				switch {
				case name == "":
					return out // malformed
				case strings.HasSuffix(strings.ToUpper(name), "-PLUS"):
					dropped = true
				default:
					kept = append(kept, name)
				}
			}
		}
		if dropped && len(kept) == 0 {
			break
		}
		msg := []byte{'R', 0, 0, 0, 0, 0, 0, 0, authSASL}
		for _, name := range kept {
			msg = append(append(msg, name...), 0)
		}
		msg = append(msg, 0)
		binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
		out = append(out, msg...)
		backend = backend[5+n:]
	}
	return out
}

// memConn is a startupConn over a reader and a writer; deadlines are
// ignored.
type memConn struct {
	io.Reader
	io.Writer
}

func (*memConn) SetReadDeadline(time.Time) error { return nil }

func TestWireErrorUnwrap(t *testing.T) {
	cause := errors.New("connection refused")
	err := error(&wireError{code: sqlstateConnectFailed, msg: "could not connect", err: cause})
	if !errors.Is(err, cause) || err.Error() != "could not connect: connection refused" {
		t.Errorf("got %q, want it to wrap %q", err, cause)
	}
}
