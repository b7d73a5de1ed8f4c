package ldap

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// startFake starts a proxy with routes a.test (the default) and b.test to
// fake backends without TLS.
func startFake(t *testing.T) (*dbtest.Proxy, *fakeBackend, *fakeBackend) {
	t.Helper()
	a, b := startFakeBackend(t, "a", nil), startFakeBackend(t, "b", nil)
	p := dbtest.StartProtocol(t, dbtest.NewCA(t), "ldap", "a.test",
		dbproxy.Route{Host: "a.test", Backend: a.addr}, dbproxy.Route{Host: "b.test", Backend: b.addr})
	return p, a, b
}

// wantResult checks a result: its messageID, protocolOp, code and a
// diagnostic containing diag.
func wantResult(t *testing.T, res *ldapResult, err error, id int32, op byte, code int, diag string) {
	t.Helper()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if res.id != id || res.op != op || res.code != code || !strings.Contains(res.diagnostic, diag) {
		t.Errorf("got messageID %d, %s %#02x, code %d, %q; want %d, %#02x, code %d, %q",
			res.id, opName(res.op), res.op, res.code, res.diagnostic, id, op, code, diag)
	}
	if op == extendedResponseOpTag && id == noticeMessageID && res.responseName != oidNoticeOfDisconnect {
		t.Errorf("notice with responseName %q, want %s", res.responseName, oidNoticeOfDisconnect)
	}
}

// wantClosed checks that the proxy closes c with nothing more to say,
// and closes c, as a client does.
func wantClosed(t *testing.T, c io.ReadCloser) {
	t.Helper()
	defer c.Close()
	if rest, err := io.ReadAll(c); len(rest) != 0 || err != nil && !isReset(err) {
		t.Errorf("after the refusal: got %q, %v; want the close", rest, err)
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "reset") }

// Bytes sent behind the StartTLS request, before the handshake, could be a
// man in the middle's: refused with protocolError, no TLS, no backend.
func TestStartTLSPipelinedRefused(t *testing.T) {
	p, a, _ := startFake(t)
	c := p.Dial(t)
	dbtest.MustWrite(t, c, append(appendExtendedRequest(nil, 1, oidStartTLS), bindRequest(2)...))
	res, err := readResult(c)
	wantResult(t, res, err, 1, extendedResponseOpTag, resultProtocolError, "leproxy: unencrypted data after the StartTLS request")
	wantClosed(t, c)
	if e := p.SessionError(t); !strings.Contains(e, "unencrypted data") {
		t.Errorf("session error %q", e)
	}
	if f := a.firsts(); len(f) != 0 {
		t.Errorf("the backend saw %v", f)
	}
}

// Every operation before StartTLS is answered with its own response type
// and confidentialityRequired; none reaches the backend.
func TestPlaintextOperationsRefused(t *testing.T) {
	const diag = "leproxy: TLS is required for a.test"
	app := func(n int) byte { return classApplication | constructed | byte(n) }
	whoami := appendExtendedRequest(nil, 9, "1.3.6.1.4.1.4203.1.11.3")
	for _, tc := range []struct {
		name string
		req  []byte
		id   int32
		op   byte
	}{
		{"Bind", bindRequest(5), 5, app(opBindResponse)},
		{"Search", appendMessage(nil, 300, app(opSearchRequest), []byte{0x04, 0x00}), 300, app(opSearchDone)},
		{"Modify", appendMessage(nil, 7, app(opModifyRequest), []byte{0x04, 0x00}), 7, app(opModifyResponse)},
		{"Add", appendMessage(nil, 8, app(opAddRequest), []byte{0x04, 0x00}), 8, app(opAddResponse)},
		{"Del", appendMessage(nil, 1<<20, classApplication|opDelRequest, []byte("dc=x")), 1 << 20, app(opDelResponse)},
		{"ModifyDN", appendMessage(nil, 12, app(opModDNRequest), []byte{0x04, 0x00}), 12, app(opModDNResponse)},
		{"Compare", appendMessage(nil, 14, app(opCompareRequest), []byte{0x04, 0x00}), 14, app(opCompareResponse)},
		{"WhoAmI", whoami, 9, extendedResponseOpTag},
		// Announces 2 GiB: answered at once, nothing allocated or awaited.
		{"HugeExtended", []byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x06, 0x77, 0x84, 0x7f, 0xff, 0xff, 0xf0}, 6, extendedResponseOpTag},
		// No response type: a Notice of Disconnection.
		{"Unbind", appendMessage(nil, 3, classApplication|opUnbindRequest, nil), 0, extendedResponseOpTag},
		{"Abandon", appendMessage(nil, 4, classApplication|opAbandonRequest, []byte{1}), 0, extendedResponseOpTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, a, _ := startFake(t)
			c := p.Dial(t)
			dbtest.MustWrite(t, c, tc.req)
			res, err := readResult(c)
			wantResult(t, res, err, tc.id, tc.op, resultConfidentiality, diag)
			if tc.name == "WhoAmI" && res.responseName != "" {
				t.Errorf("WhoAmI answer with responseName %q", res.responseName)
			}
			wantClosed(t, c)
			if e := p.SessionError(t); !strings.Contains(e, "before StartTLS") {
				t.Errorf("session error %q", e)
			}
			if f := a.firsts(); len(f) != 0 {
				t.Errorf("the backend saw %v", f)
			}
		})
	}
}

// Bytes that are no LDAP, or a StartTLS that breaks the rules, get
// protocolError; a length that would allocate gigabytes is refused at once.
func TestMalformedFirstMessage(t *testing.T) {
	startTLSWithValue := appendMessage(nil, 2, extendedRequestOpTag,
		append(appendTLV(nil, tagExtRequestName, []byte(oidStartTLS)), appendTLV(nil, 0x81, []byte("x"))...))
	for _, tc := range []struct {
		name string
		req  []byte
		id   int32
		diag string
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, "want a SEQUENCE"},
		{"IndefiniteLength", []byte{0x30, 0x80, 0x02, 0x01, 0x01}, 0, "indefinite length"},
		{"LongLength", []byte{0x30, 0x85, 1, 2, 3, 4, 5}, 0, "length of 5 octets"},
		{"NegativeMessageID", []byte{0x30, 0x05, 0x02, 0x01, 0xff, 0x42, 0x00}, 0, "negative messageID"},
		{"HighTag", []byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x7f, 0x00}, 0, "high-tag-number"},
		{"OpLongerThanMessage", []byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x77, 0x10}, 0, "protocolOp of 16 bytes"},
		{"StartTLSWithValue", startTLSWithValue, 2, "StartTLS request with a requestValue"},
		{"ExtendedWithoutName", appendMessage(nil, 3, extendedRequestOpTag, appendTLV(nil, 0x04, []byte("x"))), 3, "without requestName"},
		{"MessageIDZero", appendExtendedRequest(nil, 0, oidStartTLS), 0, "ExtendedRequest with messageID 0"},
		{"ElementAfterControls", startTLSWithControls(5, []byte{tagOctetStr, 0}), 5, "unexpected element 0xa0 after the protocolOp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _, _ := startFake(t)
			c := p.Dial(t)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			dbtest.MustWrite(t, c, tc.req)
			res, err := readResult(c)
			wantResult(t, res, err, tc.id, extendedResponseOpTag, resultProtocolError, tc.diag)
			wantClosed(t, c)
			if e := p.SessionError(t); e == "" {
				t.Error("session end logged no error")
			}
		})
	}
}

// startTLSWithControls is a StartTLS request with an empty Controls and
// then extra.
func startTLSWithControls(id int32, extra []byte) []byte {
	m := appendInt(nil, tagInteger, int64(id))
	m = appendTLV(m, extendedRequestOpTag, appendTLV(nil, tagExtRequestName, []byte(oidStartTLS)))
	m = appendTLV(m, tagControls, nil)
	return appendTLV(nil, tagSequence, append(m, extra...))
}

// Controls on the StartTLS request are allowed.
func TestStartTLSWithControls(t *testing.T) {
	p, a, _ := startFake(t)
	c := p.Dial(t)
	dbtest.MustWrite(t, c, startTLSWithControls(1, nil))
	res, err := readResult(c)
	wantResult(t, res, err, 1, extendedResponseOpTag, resultSuccess, "")
	tc := tls.Client(c, p.CA.ClientConfig("a.test", "a.test"))
	dbtest.MustWrite(t, tc, bindRequest(2))
	res, err = readResult(tc)
	wantResult(t, res, err, 2, classApplication|constructed|opBindResponse, resultSuccess, "bound to a")
	if f := a.firsts(); len(f) != 1 || f[0] != "BindRequest" {
		t.Errorf("the backend's first messages: %v", f)
	}
}

// LDAPS, TLS from the first byte, on the same port: routed by SNI.
func TestLDAPS(t *testing.T) {
	p, _, b := startFake(t)
	tc := p.DialTLS(t, "b.test", "b.test")
	dbtest.MustWrite(t, tc, bindRequest(1))
	res, err := readResult(tc)
	wantResult(t, res, err, 1, classApplication|constructed|opBindResponse, resultSuccess, "bound to b")
	if got := dbtest.EchoLine(t, tc, "x"); got != "b:x" {
		t.Errorf("got %q, want b:x", got)
	}
	if f := b.firsts(); len(f) != 1 || f[0] != "BindRequest" {
		t.Errorf("the backend's first messages: %v", f)
	}

	// An unknown name: the client's next request is answered.
	tc = p.DialTLS(t, "z.test", "a.test")
	dbtest.MustWrite(t, tc, appendMessage(nil, 42, classApplication|constructed|opSearchRequest, []byte{0x04, 0x00}))
	res, err = readResult(tc)
	wantResult(t, res, err, 42, classApplication|constructed|opSearchDone, resultUnavailable, "leproxy: no route for server name z.test")
	wantClosed(t, tc)
}

// A TLS client that sends nothing after a refused handshake gets a Notice
// of Disconnection.
func TestSilentClientGetsNotice(t *testing.T) {
	p, _, _ := startFake(t)
	tc, err := clientStartTLS(p.Dial(t), p.CA.ClientConfig("z.test", "a.test"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := readResult(tc)
	wantResult(t, res, err, noticeMessageID, extendedResponseOpTag, resultUnavailable, "no route for server name z.test")
	wantClosed(t, tc)
}

// tls: verify and insecure send the backend leproxy's own StartTLS; a
// backend that refuses it leaves the client with unavailable, naming the
// route, and the log with the backend's answer.
func TestBackendStartTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	cert, _, _ := ca.Issue(t, "127.0.0.1")
	tlsFake := startFakeBackend(t, "t", &cert)
	plainFake := startFakeBackend(t, "p", nil)
	p := dbtest.StartProtocol(t, ca, "ldap", "v.test",
		dbproxy.Route{Host: "v.test", Backend: tlsFake.addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool},
		dbproxy.Route{Host: "i.test", Backend: tlsFake.addr, TLS: dbproxy.TLSInsecure},
		dbproxy.Route{Host: "n.test", Backend: plainFake.addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool},
		dbproxy.Route{Host: "w.test", Backend: tlsFake.addr, TLS: dbproxy.TLSVerify}, // system roots: untrusted
	)
	for _, host := range []string{"v.test", "i.test"} {
		c, err := connect(t, p.Dial(t), ca.ClientConfig(host, host))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if got := dbtest.EchoLine(t, c, "x"); got != "t:x" {
			t.Errorf("%s: got %q, want t:x", host, got)
		}
		c.Close()
	}
	if f := tlsFake.firsts(); len(f) != 2 || f[0] != "ExtendedRequest" {
		t.Errorf("the TLS backend's first messages: %v, want two StartTLS", f)
	}
	for _, host := range []string{"n.test", "w.test"} {
		_, err := connect(t, p.Dial(t), ca.ClientConfig(host, host))
		var re *resultError
		if !errors.As(err, &re) || re.res.code != resultUnavailable || !strings.Contains(re.res.diagnostic, "could not connect to the backend of "+host) {
			t.Errorf("%s: %v, want unavailable naming the route", host, err)
		}
	}
	dbtest.WaitFor(t, "four session ends", func() bool { return len(p.SessionEnds(t)) == 4 })
	for _, rec := range p.SessionEnds(t) {
		if (rec["route"] == "n.test" || rec["route"] == "w.test") && (rec["closed_by"] != dbproxy.ByBackend || rec["reason"] != dbproxy.ReasonUnreachable) {
			t.Errorf("session end %v: want closed_by backend, reason unreachable", rec)
		}
	}
	logs := p.Logs.String()
	if !strings.Contains(logs, `refused StartTLS: result code 52: \"p: no StartTLS here\"`) || !strings.Contains(logs, "certificate signed by unknown authority") {
		t.Errorf("log lacks the backends' refusals:\n%s", logs)
	}
}

// A client over MaxConns reads a Notice of Disconnection with busy.
func TestMaxConnsNotice(t *testing.T) {
	a := startFakeBackend(t, "a", nil)
	proto, _ := dbproxy.Lookup("ldap")
	p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: proto, Default: "a.test", MaxConns: 1,
		Routes: []dbproxy.Route{{Host: "a.test", Backend: a.addr}}})
	first, err := connect(t, p.Dial(t), p.CA.ClientConfig("a.test", "a.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c := p.Dial(t)
	res, err := readResult(c)
	wantResult(t, res, err, noticeMessageID, extendedResponseOpTag, resultBusy, "leproxy: too many connections")
}

// The messages leproxy writes are what go-ldap and libldap read; their
// bytes, checked once.
func TestEncoding(t *testing.T) {
	got := appendResult(nil, 1, extendedResponseOpTag, resultSuccess, "", oidStartTLS)
	want := append([]byte{0x30, 0x24, 0x02, 0x01, 0x01, 0x78, 0x1f, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00, 0x8a, 0x16}, oidStartTLS...)
	if !bytes.Equal(got, want) {
		t.Errorf("StartTLS response % x, want % x", got, want)
	}
	if got := appendInt(nil, tagInteger, 128); !bytes.Equal(got, []byte{0x02, 0x02, 0x00, 0x80}) {
		t.Errorf("INTEGER 128 = % x", got)
	}
	long := appendTLV(nil, tagOctetStr, make([]byte, 300))
	if !bytes.Equal(long[:4], []byte{0x04, 0x82, 0x01, 0x2c}) {
		t.Errorf("length 300 = % x", long[:4])
	}
}

// A client that stalls inside its first message is timed out, not told
// about a protocol error it did not make.
func TestStalledFirstMessage(t *testing.T) {
	a := startFakeBackend(t, "a", nil)
	proto, _ := dbproxy.Lookup("ldap")
	p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: proto, Default: "a.test",
		HandshakeTimeout: 200 * time.Millisecond, Routes: []dbproxy.Route{{Host: "a.test", Backend: a.addr}}})
	c := p.Dial(t)
	dbtest.MustWrite(t, c, appendExtendedRequest(nil, 1, oidStartTLS)[:5])
	if got, _ := dbtest.ReadAll(t, c); got != "" {
		t.Errorf("got %q, want the close", got)
	}
	c.Close()
	if e := p.SessionError(t); !strings.Contains(e, "timeout") {
		t.Errorf("session error %q, want a timeout", e)
	}
	rec := p.SessionEnds(t)[0]
	if rec["reason"] != dbproxy.ReasonTimeout {
		t.Errorf("session end reason %v, want %s", rec["reason"], dbproxy.ReasonTimeout)
	}
}
