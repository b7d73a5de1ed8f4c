package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
)

// saslMessage is an AuthenticationSASL message whose mechanism list is
// list, verbatim.
func saslMessage(list string) []byte {
	b := []byte{'R', 0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, authSASL)
	b = append(b, list...)
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

func encodeBackend(msgs ...pgproto3.BackendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

func TestRewriteAuthSASL(t *testing.T) {
	long := strings.Repeat("SCRAM-SHA-256\x00", 70)
	long += strings.Repeat("X", maxAuthSASL-len(long)-2) + "\x00\x00"
	tests := []struct {
		name    string
		list    string
		want    string // the list the client gets
		dropped bool
		wantErr error // errOnlyChannelBinding, or a *wireError 08P01 when errMalformed
	}{
		{name: "SCRAM-SHA-256 only", list: "SCRAM-SHA-256\x00\x00", want: "SCRAM-SHA-256\x00\x00"},
		{name: "both, as PostgreSQL sends them", list: "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00", want: "SCRAM-SHA-256\x00\x00", dropped: true},
		{name: "both, PLUS last", list: "SCRAM-SHA-256\x00SCRAM-SHA-256-PLUS\x00\x00", want: "SCRAM-SHA-256\x00\x00", dropped: true},
		{name: "lower case", list: "scram-sha-256-plus\x00SCRAM-SHA-256\x00\x00", want: "SCRAM-SHA-256\x00\x00", dropped: true},
		{name: "other mechanisms kept in order", list: "OAUTHBEARER\x00X-PLUS\x00SCRAM-SHA-256\x00PLUS\x00\x00", want: "OAUTHBEARER\x00SCRAM-SHA-256\x00PLUS\x00\x00", dropped: true},
		{name: "no mechanisms", list: "\x00", want: "\x00"},
		{name: "at the size limit", list: long, want: long},
		{name: "only PLUS", list: "SCRAM-SHA-256-PLUS\x00\x00", wantErr: errOnlyChannelBinding},
		{name: "only PLUS, two of them", list: "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-512-PLUS\x00\x00", wantErr: errOnlyChannelBinding},
		{name: "unterminated name", list: "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256", wantErr: errMalformed},
		{name: "no empty name at the end", list: "SCRAM-SHA-256\x00", wantErr: errMalformed},
		{name: "empty list", list: "", wantErr: errMalformed},
		{name: "bytes after the list", list: "SCRAM-SHA-256\x00\x00SCRAM-SHA-256-PLUS\x00\x00", wantErr: errMalformed},
		{name: "oversized", list: "S" + long, wantErr: errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := saslMessage(tt.list)
			msg, dropped, err := rewriteAuthSASL(bytes.Clone(in[5:]))
			switch {
			case tt.wantErr == errMalformed:
				if we, ok := errors.AsType[*wireError](err); !ok || we.code != sqlstateProtocolViolation {
					t.Fatalf("got %q, %v; want a protocol violation", msg, err)
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || !dropped {
					t.Fatalf("got %q, %t, %v; want %v", msg, dropped, err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if want := saslMessage(tt.want); !bytes.Equal(msg, want) || dropped != tt.dropped {
				t.Errorf("got %q, dropped %t; want %q, %t", msg, dropped, want, tt.dropped)
			}
			if !tt.dropped && !bytes.Equal(msg, in) {
				t.Errorf("rewrote %q to %q although nothing was dropped", in, msg)
			}
		})
	}
	if _, _, err := rewriteAuthSASL([]byte{0, 0, 0, 0}); err == nil {
		t.Error("rewrote an AuthenticationOk")
	}
}

// errMalformed marks the test cases that want a protocol violation.
var errMalformed = errors.New("malformed")

func TestRelayStartupSASL(t *testing.T) {
	both := encodeBackend(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}})
	plain := encodeBackend(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
	rest := encodeBackend(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=x")}, &pgproto3.AuthenticationOk{},
		&pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{1, 2, 3, 4}}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	oversized := binary.BigEndian.AppendUint32([]byte{'R', 0, 0, 0, 0}, authSASL)
	binary.BigEndian.PutUint32(oversized[1:], 4+4+maxAuthSASL+1)
	tests := []struct {
		name     string
		backend  []byte
		want     []byte // what the client gets, when the startup succeeds
		wantCode string // or the SQLSTATE of the proxy's refusal
		wantMsg  string
	}{
		{name: "SCRAM-SHA-256 only", backend: slicesConcat(plain, rest), want: slicesConcat(plain, rest)},
		{name: "PLUS dropped", backend: slicesConcat(both, rest), want: slicesConcat(plain, rest)},
		{name: "only PLUS", backend: slicesConcat(saslMessage("SCRAM-SHA-256-PLUS\x00\x00"), rest),
			wantCode: sqlstateInvalidAuthSpec, wantMsg: "the backend of db.test accepts only SASL authentication with channel binding, and channel binding cannot pass through leproxy"},
		{name: "malformed", backend: slicesConcat(saslMessage("SCRAM-SHA-256-PLUS\x00"), rest),
			wantCode: sqlstateProtocolViolation, wantMsg: "invalid message from the backend of db.test"},
		// Refused on its length alone: the body never comes.
		{name: "oversized", backend: oversized, wantCode: sqlstateProtocolViolation, wantMsg: "invalid message from the backend of db.test"},
		{name: "truncated", backend: both[:len(both)-3], wantCode: sqlstateConnectionFailure, wantMsg: "lost the connection to the backend of db.test"},
		{name: "AuthenticationSASL without a list", backend: saslMessage(""), wantCode: sqlstateProtocolViolation, wantMsg: "invalid message from the backend of db.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var toClient bytes.Buffer
			client := &idleClient{w: &toClient, stopped: make(chan struct{})}
			key, err := relayStartup(client, &memConn{Reader: bytes.NewReader(tt.backend), Writer: io.Discard}, "db.test")
			if tt.wantCode == "" {
				if err != nil || key == nil {
					t.Fatalf("got %v, %v; want the session", key, err)
				}
				if !bytes.Equal(toClient.Bytes(), tt.want) {
					t.Errorf("client got %q, want %q", toClient.Bytes(), tt.want)
				}
				return
			}
			we, ok := errors.AsType[*wireError](err)
			if !ok || we.code != tt.wantCode || we.msg != tt.wantMsg {
				t.Fatalf("got %v, %v; want %s %q", key, err, tt.wantCode, tt.wantMsg)
			}
			if want := appendErrorResponse(nil, tt.wantCode, tt.wantMsg); !bytes.Equal(toClient.Bytes(), want) {
				t.Errorf("client got %q, want only the proxy's ErrorResponse %q", toClient.Bytes(), want)
			}
		})
	}
}

func slicesConcat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestRelayStartupClientClaimsBinding plays both ends of the relay: a
// backend that offers channel binding and refuses a client-first-message
// with gs2 flag "y", as PostgreSQL over TLS does, and the client.
func TestRelayStartupClientClaimsBinding(t *testing.T) {
	negotiation := &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28000", Message: "SCRAM channel binding negotiation error",
		Detail: "The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."}
	wrongPassword := &pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "u"`}
	tests := []struct {
		name       string
		mechanisms []string
		gs2        string
		continued  bool // the backend accepts the client-first-message, refuses the final one
		refusal    *pgproto3.ErrorResponse
		wantOwn    bool // the client gets leproxy's channel binding refusal
	}{
		{"y after PLUS was dropped", []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}, "y,,", false, negotiation, true},
		{"n after PLUS was dropped", []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}, "n,,", false, wrongPassword, false},
		{"y, nothing dropped", []string{"SCRAM-SHA-256"}, "y,,", false, negotiation, false},
		{"y accepted, then a wrong password", []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}, "y,,", true, wrongPassword, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientEnd, proxyClient := net.Pipe()
			backendEnd, proxyBackend := net.Pipe()
			defer clientEnd.Close()
			defer backendEnd.Close()
			backendDone := make(chan error, 1)
			go func() {
				defer backendEnd.Close()
				be := pgproto3.NewBackend(backendEnd, backendEnd)
				be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: tt.mechanisms})
				if err := be.Flush(); err != nil {
					backendDone <- err
					return
				}
				if err := be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
					backendDone <- err
					return
				}
				msg, err := be.Receive()
				if err != nil {
					backendDone <- err
					return
				}
				if first, ok := msg.(*pgproto3.SASLInitialResponse); !ok || !bytes.HasPrefix(first.Data, []byte(tt.gs2)) {
					backendDone <- fmt.Errorf("backend got %#v, want the client's SASLInitialResponse verbatim", msg)
					return
				}
				if tt.continued {
					be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte("r=abcdef,s=c2FsdA==,i=4096")})
					be.Flush()
					be.SetAuthType(pgproto3.AuthTypeSASLContinue)
					if _, err := be.Receive(); err != nil {
						backendDone <- err
						return
					}
				}
				be.Send(tt.refusal)
				backendDone <- be.Flush()
			}()
			type result struct {
				key *cancelKey
				err error
			}
			relayed := make(chan result, 1)
			go func() {
				key, err := relayStartup(proxyClient, proxyBackend, "db.test")
				proxyClient.Close()
				relayed <- result{key, err}
			}()

			clientEnd.SetDeadline(time.Now().Add(10 * time.Second))
			fe := pgproto3.NewFrontend(clientEnd, clientEnd)
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if offer, ok := msg.(*pgproto3.AuthenticationSASL); !ok || strings.Contains(strings.Join(offer.AuthMechanisms, " "), "PLUS") {
				t.Fatalf("client was offered %#v, want SCRAM-SHA-256 alone", msg)
			}
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(tt.gs2 + "n=,r=abc")})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if tt.continued {
				if msg, err := fe.Receive(); err != nil {
					t.Fatal(err)
				} else if _, ok := msg.(*pgproto3.AuthenticationSASLContinue); !ok {
					t.Fatalf("got %#v, want AuthenticationSASLContinue", msg)
				}
				fe.Send(&pgproto3.SASLResponse{Data: []byte("c=eSws,r=abcdef,p=cHJvb2Y=")})
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			msg, err = fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := msg.(*pgproto3.ErrorResponse)
			if !ok {
				t.Fatalf("got %#v, want an ErrorResponse", msg)
			}
			res := <-relayed
			if err := <-backendDone; err != nil {
				t.Fatal(err)
			}
			be, _ := errors.AsType[*backendError](res.err)
			if be == nil || be.code != tt.refusal.Code || be.msg != tt.refusal.Message {
				t.Errorf("relay error %v, want the backend's %s %q in it", res.err, tt.refusal.Code, tt.refusal.Message)
			}
			if !tt.wantOwn {
				if got.Code != tt.refusal.Code || got.Message != tt.refusal.Message || got.Detail != tt.refusal.Detail {
					t.Errorf("client got %s %q, want the backend's %s %q verbatim", got.Code, got.Message, tt.refusal.Code, tt.refusal.Message)
				}
				return
			}
			want := channelBindingRefusal("db.test")
			if got.Code != sqlstateInvalidAuthSpec || got.Message != want || got.Severity != "FATAL" {
				t.Errorf("client got %s %s %q, want FATAL %s %q", got.Severity, got.Code, got.Message, sqlstateInvalidAuthSpec, want)
			}
			if we, ok := errors.AsType[*wireError](res.err); !ok || we.code != sqlstateInvalidAuthSpec {
				t.Errorf("relay error %v, want leproxy's refusal", res.err)
			}
		})
	}
}

func TestGS2ClaimsBinding(t *testing.T) {
	initial := func(mech, data string) []byte {
		b, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: mech, Data: []byte(data)}).Encode(nil)
		return b
	}
	password, _ := (&pgproto3.PasswordMessage{Password: "y,,secret"}).Encode(nil)
	tests := []struct {
		name   string
		head   []byte
		claims bool
	}{
		{"y", initial("SCRAM-SHA-256", "y,,n=,r=abc"), true},
		{"n", initial("SCRAM-SHA-256", "n,,n=,r=abc"), false},
		{"p", initial("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc"), false},
		{"y without its comma", initial("SCRAM-SHA-256", "yx"), false},
		{"no data", initial("SCRAM-SHA-256", ""), false},
		{"password message", password, false},
		{"query", []byte("Q\x00\x00\x00\x0cy,,x\x00"), false},
		{"data length says none", []byte("p\x00\x00\x00\x17SCRAM-SHA-256\x00\xff\xff\xff\xffy,"), false},
		{"y past the message's end", append([]byte("p\x00\x00\x00\x15SCRAM-SHA-256\x00\x00\x00\x00\x02"), "y,"...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if decided, claims := gs2ClaimsBinding(tt.head); !decided || claims != tt.claims {
				t.Errorf("got %t, %t; want decided, %t", decided, claims, tt.claims)
			}
			// Byte by byte, as a client may send it: undecided until
			// the answer is right.
			for i := range len(tt.head) {
				if decided, claims := gs2ClaimsBinding(tt.head[:i]); decided && claims != tt.claims {
					t.Fatalf("after %d bytes: decided %t", i, claims)
				}
			}
		})
	}
}

// FuzzDropChannelBinding: the rewritten list is the input's mechanisms in
// order without those ending in -PLUS, well formed and no longer; or the
// input is refused as malformed.
func FuzzDropChannelBinding(f *testing.F) {
	for _, s := range []string{"SCRAM-SHA-256\x00\x00", "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00", "SCRAM-SHA-256-PLUS\x00\x00",
		"\x00", "", "a-plus\x00", "X\x00\x00\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, list []byte) {
		out, dropped, kept, err := dropChannelBinding(list)
		if err != nil {
			if we, ok := errors.AsType[*wireError](err); !ok || we.code != sqlstateProtocolViolation {
				t.Fatalf("error %v is not a protocol violation", err)
			}
			if out != nil {
				t.Fatal("output with an error")
			}
			return
		}
		if len(out) > len(list) || (dropped == 0) != bytes.Equal(out, list) {
			t.Fatalf("%q became %q, %d dropped", list, out, dropped)
		}
		// The input is names and an empty one, exactly.
		all := strings.TrimSuffix(string(list), "\x00")
		if all != "" && !strings.HasSuffix(all, "\x00") {
			t.Fatalf("accepted %q, whose last name is unterminated", list)
		}
		var names []string
		if all != "" {
			names = strings.Split(strings.TrimSuffix(all, "\x00"), "\x00")
		}
		var want []string
		for _, n := range names {
			if n == "" {
				t.Fatalf("accepted %q with an empty name inside", list)
			}
			if !strings.HasSuffix(strings.ToUpper(n), "-PLUS") {
				want = append(want, n)
			}
		}
		if dropped+kept != len(names) || kept != len(want) {
			t.Fatalf("%q: dropped %d, kept %d of %d names", list, dropped, kept, len(names))
		}
		wantList := strings.Join(append(want, ""), "\x00") + "\x00"
		if len(want) == 0 {
			wantList = "\x00"
		}
		if string(out) != wantList {
			t.Fatalf("%q became %q, want %q", list, out, wantList)
		}
		// Idempotent, and a message of consistent length.
		if again, d, _, err := dropChannelBinding(out); err != nil || d != 0 || !bytes.Equal(again, out) {
			t.Fatalf("rewriting %q again: %q, %d, %v", out, again, d, err)
		}
		if kept > 0 && len(list) <= maxAuthSASL {
			body := append(binary.BigEndian.AppendUint32(nil, authSASL), list...)
			msg, _, err := rewriteAuthSASL(body)
			if err != nil || int(binary.BigEndian.Uint32(msg[1:])) != len(msg)-1 || !bytes.Equal(msg[9:], out) {
				t.Fatalf("rewriteAuthSASL(%q) = %q, %v", body, msg, err)
			}
		}
	})
}

// FuzzGS2ClaimsBinding: the client-bytes parser never panics, and a
// decision on a prefix is the decision on the whole.
func FuzzGS2ClaimsBinding(f *testing.F) {
	for _, d := range []string{"y,,n=,r=abc", "n,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", ""} {
		b, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(d)}).Encode(nil)
		f.Add(b)
	}
	f.Add([]byte("p\x00\x00\x00\x04"))
	f.Add([]byte("Q\x00\x00\x00\x05\x00"))
	f.Fuzz(func(t *testing.T, head []byte) {
		head = head[:min(len(head), maxSASLInitialHead)]
		decided, claims := gs2ClaimsBinding(head)
		if claims && (!decided || head[0] != 'p') {
			t.Fatalf("%q: decided %t, claims %t", head, decided, claims)
		}
		for i := range len(head) {
			if d, c := gs2ClaimsBinding(head[:i]); d && (!decided || c != claims) {
				t.Fatalf("%q: after %d bytes decided %t, on the whole %t, %t", head, i, c, decided, claims)
			}
		}
	})
}

// TestRelayStartupBackendRefusesFirst: a client that closes as soon as it
// has read the backend's ErrorResponse does not turn the backend's refusal
// into its own end of the startup.
func TestRelayStartupBackendRefusesFirst(t *testing.T) {
	refusal := encodeBackend(&pgproto3.AuthenticationCleartextPassword{},
		&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
	b := &closeWriteConn{memConn: memConn{Reader: bytes.NewReader(refusal), Writer: io.Discard}, closed: make(chan struct{})}
	client := &closingClient{eof: make(chan struct{}), stopped: make(chan struct{}), backend: b}
	_, err := relayStartup(client, b, "db.test")
	be, ok := errors.AsType[*backendError](err)
	if !ok || be.code != "28P01" {
		t.Fatalf("got %v, want the backend's refusal", err)
	}
}

// TestRelayStartupClientEndsFirst: a client that ends the startup before
// the backend refuses (here: because of it) is the session's error.
func TestRelayStartupClientEndsFirst(t *testing.T) {
	refusal := encodeBackend(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "08006", Message: "unexpected EOF"})
	closed := make(chan struct{})
	b := &closeWriteConn{memConn: memConn{Reader: &gatedReader{gate: closed, r: bytes.NewReader(refusal)}, Writer: io.Discard}, closed: closed}
	client := &closingClient{eof: make(chan struct{}), stopped: make(chan struct{}), backend: b}
	close(client.eof)
	_, err := relayStartup(client, b, "db.test")
	if err == nil || !strings.Contains(err.Error(), "client ended the startup: reading from client: EOF") {
		t.Fatalf("got %v, want the client's end", err)
	}
}

// closingClient reads EOF once the relay has written to it (or at once
// when eof is closed from the start), and its Write returns only when the
// relay has passed that EOF on to the backend: the client's end is seen
// before the relay can finish.
type closingClient struct {
	bytes.Buffer
	once    sync.Once
	eof     chan struct{}
	stopped chan struct{}
	stop    sync.Once
	backend *closeWriteConn
}

func (c *closingClient) Read([]byte) (int, error) {
	select {
	case <-c.eof:
		return 0, io.EOF
	case <-c.stopped:
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *closingClient) Write(p []byte) (int, error) {
	c.once.Do(func() {
		select {
		case <-c.eof:
		default:
			close(c.eof)
			<-c.backend.closed
		}
	})
	return c.Buffer.Write(p)
}

func (c *closingClient) SetReadDeadline(time.Time) error {
	c.stop.Do(func() { close(c.stopped) })
	return nil
}

// closeWriteConn is a memConn that records its CloseWrite.
type closeWriteConn struct {
	memConn
	once   sync.Once
	closed chan struct{}
}

func (c *closeWriteConn) CloseWrite() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// gatedReader reads r once gate is closed.
type gatedReader struct {
	gate <-chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

// TestPostgresWrongPasswordSessionError: the session-end line of a
// refused login carries the backend's refusal, not the client's EOF that
// follows it.
func TestPostgresWrongPasswordSessionError(t *testing.T) {
	ca := dbtest.NewCA(t)
	fb := pgtest.StartBackend(t, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}, Password: "sesame"})
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{fb.Route("a.test")}})
	for i := range 10 {
		conn := pgtest.SSLRequest(t, p.Dial(t), ca, "a.test", "a.test")
		dbtest.MustWrite(t, conn, pgtest.StartupBytes(3, 0, "user", "u"))
		fe := pgproto3.NewFrontend(conn, conn)
		if msg, err := fe.Receive(); err != nil {
			t.Fatal(err)
		} else if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); !ok {
			t.Fatalf("got %T, want AuthenticationCleartextPassword", msg)
		}
		fe.Send(&pgproto3.PasswordMessage{Password: "wrong"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		res := pgtest.ReadStartup(t, fe)
		if res.Err == nil || res.Err.Code != "28P01" {
			t.Fatalf("got %+v, want SQLSTATE 28P01", res)
		}
		// Gone at once, as psql and pgx are.
		conn.Close()
		var recs []map[string]any
		dbtest.WaitFor(t, "the session end line", func() bool {
			recs = p.SessionEnds(t)
			return len(recs) > i
		})
		e, _ := recs[i]["error"].(string)
		if !strings.Contains(e, "SQLSTATE 28P01: password authentication failed") || strings.Contains(e, "EOF") {
			t.Fatalf("session %d: end error %q, want the backend's refusal", i, e)
		}
		if recs[i]["closed_by"] != dbproxy.ByBackend || recs[i]["reason"] != dbproxy.ReasonRefused {
			t.Errorf("session %d: closed_by=%v reason=%v, want %s %s", i, recs[i]["closed_by"], recs[i]["reason"], dbproxy.ByBackend, dbproxy.ReasonRefused)
		}
	}
}
