package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// pipeConn is a connection whose reads come from a pipe the test
// writes, and whose writes are kept.
type pipeConn struct {
	net.Conn
	r       *io.PipeReader
	w       *io.PipeWriter
	written bytes.Buffer
}

func newPipeConn(t *testing.T) *pipeConn {
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return &pipeConn{r: r, w: w}
}

func (c *pipeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.written.Write(p) }

// send writes packets for the stream to read, without waiting for it.
func (c *pipeConn) send(pkts ...[]byte) {
	go func() {
		for _, p := range pkts {
			if _, err := c.w.Write(p); err != nil {
				return
			}
		}
	}()
}

// readOne reads one packet from a stream, failing after 10 s.
func readOne(t *testing.T, r io.Reader) ([]byte, byte) {
	t.Helper()
	type res struct {
		pkt []byte
		seq byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		pkt, seq, err := readPacket(r, 1<<25)
		ch <- res{pkt, seq, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("reading a packet from the stream: %v", r.err)
		}
		return r.pkt, r.seq
	case <-time.After(10 * time.Second):
		t.Fatal("no packet from the stream in 10 s")
	}
	return nil, 0
}

// changeUserFor is a COM_CHANGE_USER as a client sends it, with a
// password answer for the plugin it names.
func changeUserFor(user string, auth []byte, db, plugin string) []byte {
	b := append([]byte{comChangeUser}, user...)
	b = append(b, 0, byte(len(auth)))
	b = append(b, auth...)
	b = append(b, db...)
	b = append(b, 0, 45, 0)
	b = append(b, plugin...)
	b = append(b, 0)
	return append(b, "\x05\x01k\x03val"...)
}

func TestMySQLRewriteChangeUser(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"full", string(changeUserFor("bob", []byte("0123456789abcdefghij"), "app", "mysql_native_password")),
			"\x11bob\x00\x00app\x00\x2d\x00leproxy_auth_relay\x00\x05\x01k\x03val", true},
		{"without plugin and attributes", "\x11bob\x00\x01xapp\x00\x21\x00",
			"\x11bob\x00\x00app\x00\x21\x00leproxy_auth_relay\x00", true},
		{"without character set", "\x11bob\x00\x00\x00",
			"\x11bob\x00\x00\x00\x08\x00leproxy_auth_relay\x00", true},
		{"authentication longer than the packet", "\x11bob\x00\x09x", "", false},
		{"unterminated user", "\x11bob", "", false},
		{"unterminated database", "\x11bob\x00\x00app", "", false},
		{"unterminated plugin", "\x11bob\x00\x00app\x00\x21\x00mysql", "", false},
	}
	for _, tt := range tests {
		got, ok := rewriteChangeUser([]byte(tt.in), 8)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("%s: got %q, %t; want %q, %t", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// The client stream passes every packet on byte for byte, however it is
// read, except COM_CHANGE_USER, which it rewrites: not inside a payload
// of 16 MiB or more, nor inside a LOAD DATA LOCAL INFILE file whose
// sequence ids wrap around to 0.
func TestMySQLClientStream(t *testing.T) {
	cu := changeUserFor("bob", make([]byte, 20), "app", "mysql_native_password")
	rewritten, _ := rewriteChangeUser(cu, 45)
	lookalike := append([]byte{comChangeUser}, "bob\x00\x00app\x00"...)
	// script is packets in and what must come out.
	type script struct{ in, want []byte }
	add := func(s *script, seq byte, payload []byte, out []byte) {
		s.in = appendPacket(s.in, seq, payload)
		if out == nil {
			out = payload
		}
		s.want = appendPacket(s.want, seq, out)
	}
	// A command of 16 MiB and more, continued in packets 1 and 2; the
	// command after it is a command.
	var big script
	payload := bytes.Repeat([]byte{comChangeUser}, maxPayload)
	payload[0] = comQuery
	add(&big, 0, payload, nil)
	add(&big, 1, payload, nil)
	add(&big, 2, lookalike, nil)
	add(&big, 0, cu, rewritten)
	// LOAD DATA LOCAL INFILE: the file's packets, ids wrapping to 0.
	var small script
	add(&small, 0, []byte("\x03SELECT 1"), nil)
	add(&small, 0, []byte("\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), nil)
	for i := 2; i < 300; i++ {
		add(&small, byte(i), lookalike, nil)
	}
	add(&small, byte(300%256), []byte{}, nil)
	add(&small, 0, cu, rewritten)
	add(&small, 0, []byte("\x0e"), nil) // COM_PING
	tests := []struct {
		name string
		s    script
		size int
	}{
		{"LOAD DATA read 1 byte at a time", small, 1},
		{"LOAD DATA read 7 bytes at a time", small, 7},
		{"LOAD DATA read 4 KiB at a time", small, 4096},
		{"16 MiB command read 4 KiB at a time", big, 4096},
		{"16 MiB command read 1 MiB at a time", big, 1 << 20},
	}
	for _, tt := range tests {
		c := &scriptConn{r: bytes.NewReader(tt.s.in)}
		s := &packetStream{Conn: c, filter: &clientFilter{ph: &commandPhase{route: &dbproxy.Route{Host: "db.test"}, charset: 45}}}
		var got bytes.Buffer
		buf := make([]byte, tt.size)
		for {
			n, err := s.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		}
		if !bytes.Equal(got.Bytes(), tt.s.want) {
			t.Errorf("%s: %d bytes out differ from the %d wanted", tt.name, got.Len(), len(tt.s.want))
		}
	}
}

// A stream cut in the middle of a packet it holds ends with an unexpected
// EOF; a read timeout loses nothing.
func TestMySQLPacketStreamErrors(t *testing.T) {
	cu := appendPacket(nil, 0, changeUserFor("bob", nil, "", "x"))
	s := &packetStream{Conn: &scriptConn{r: bytes.NewReader(cu[:10])}, filter: &clientFilter{ph: &commandPhase{}}}
	if _, err := s.Read(make([]byte, 100)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut packet: %v, want unexpected EOF", err)
	}
	r := &timeoutReader{data: cu, every: 3}
	s = &packetStream{Conn: &scriptConn{r: r}, filter: &clientFilter{ph: &commandPhase{}}}
	var got bytes.Buffer
	buf := make([]byte, 5)
	for {
		n, err := s.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
	}
	want, _ := rewriteChangeUser(cu[4:], 0)
	if !bytes.Equal(got.Bytes(), appendPacket(nil, 0, want)) {
		t.Errorf("through timeouts: got %q, want the rewritten packet", got.Bytes())
	}
}

// timeoutReader returns a few bytes at a time, with a deadline error
// every so often, as a connection with read deadlines does.
type timeoutReader struct {
	data  []byte
	every int
	calls int
}

func (r *timeoutReader) Read(p []byte) (int, error) {
	r.calls++
	if r.calls%r.every == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 2)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// A COM_CHANGE_USER exchange, driven packet by packet through both
// streams of a session whose client link is encrypted and backend link
// not: the backend's nonce reaches the client, a cleartext password goes
// on RSA-encrypted and cleartext-only plugins are refused.
func TestMySQLChangeUserExchange(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	keyPkt := append([]byte{headerAuthMoreData}, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	sha2Switch := recordedCachingSHA2Switch[4:]
	nonce := recordedCachingSHA2Switch[27:47]
	start := func(t *testing.T, intercept bool) (cl, be *pipeConn, c, b io.Reader) {
		cl, be = newPipeConn(t), newPipeConn(t)
		cs, bs := commandConns(cl, be, &dbproxy.Route{Host: "db.test"}, 45, intercept)
		cl.send(appendPacket(nil, 0, changeUserFor("dave", make([]byte, 20), "app", "mysql_native_password")))
		pkt, seq := readOne(t, cs)
		if want, _ := rewriteChangeUser(changeUserFor("dave", nil, "app", "x"), 45); seq != 0 || !bytes.Equal(pkt, want) {
			t.Fatalf("COM_CHANGE_USER went on as %d %q, want %q", seq, pkt, want)
		}
		return cl, be, cs, bs
	}
	expect := func(t *testing.T, r io.Reader, wantSeq byte, want []byte) {
		t.Helper()
		pkt, seq := readOne(t, r)
		if seq != wantSeq || !bytes.Equal(pkt, want) {
			t.Fatalf("got packet %d %q, want %d %q", seq, pkt, wantSeq, want)
		}
	}

	t.Run("caching_sha2_password full authentication", func(t *testing.T) {
		cl, be, c, b := start(t, true)
		be.send(appendPacket(nil, 1, sha2Switch))
		expect(t, b, 1, sha2Switch)
		cl.send(appendPacket(nil, 2, recordedCachingSHA2Answer))
		expect(t, c, 2, recordedCachingSHA2Answer)
		be.send(appendPacket(nil, 3, []byte{headerAuthMoreData, cachingSHA2FullAuth}))
		expect(t, b, 3, []byte{headerAuthMoreData, cachingSHA2FullAuth})
		cl.send(appendPacket(nil, 4, []byte("secret\x00")))
		expect(t, c, 4, []byte{cachingSHA2RequestKey}) // in the password's place
		be.send(appendPacket(nil, 5, keyPkt), appendPacket(nil, 7, fakeOK(0)))
		expect(t, b, 5, fakeOK(0)) // the key is kept from the client, the OK renumbered
		enc, seq := readOne(t, bytes.NewReader(be.written.Bytes()))
		plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, enc, nil)
		if err != nil || seq != 6 {
			t.Fatalf("backend got packet %d %x: %v", seq, enc, err)
		}
		for i := range plain {
			plain[i] ^= nonce[i%len(nonce)]
		}
		if string(plain) != "secret\x00" {
			t.Errorf("backend decrypts %q", plain)
		}
		// The session goes on; the next command is not filtered.
		cl.send(appendPacket(nil, 0, []byte("\x03SELECT 'secret\x00'")))
		expect(t, c, 0, []byte("\x03SELECT 'secret\x00'"))
	})

	t.Run("sha256_password", func(t *testing.T) {
		cl, be, c, b := start(t, true)
		sw := append([]byte("\xfesha256_password\x00"), append(bytes.Clone(nonce), 0)...)
		be.send(appendPacket(nil, 1, sw))
		expect(t, b, 1, sw)
		cl.send(appendPacket(nil, 2, []byte("secret\x00")))
		expect(t, c, 2, []byte{sha256RequestKey})
		be.send(appendPacket(nil, 3, keyPkt), appendPacket(nil, 5, fakeOK(0)))
		expect(t, b, 3, fakeOK(0))
		if bytes.Contains(be.written.Bytes(), []byte("secret")) || be.written.Len() < 256 {
			t.Errorf("backend got %q, want the password RSA-encrypted", be.written.Bytes())
		}
	})

	t.Run("mysql_clear_password is refused", func(t *testing.T) {
		_, be, _, b := start(t, true)
		be.send(appendPacket(nil, 1, []byte("\xfemysql_clear_password\x00")))
		pkt, seq := readOne(t, b)
		code, _, msg, err := parseERR(pkt)
		if err != nil || seq != 1 || code != erNotSupportedAuth || !strings.Contains(msg, "route db.test") {
			t.Fatalf("got %d %q, want ERR %d naming the route", seq, pkt, erNotSupportedAuth)
		}
		if n, err := b.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("after the ERR: %d, %v; want the end of the stream", n, err)
		}
	})

	t.Run("TLS to the backend: the password goes on inside it", func(t *testing.T) {
		cl, be, c, b := start(t, false)
		be.send(appendPacket(nil, 1, sha2Switch))
		expect(t, b, 1, sha2Switch)
		cl.send(appendPacket(nil, 2, recordedCachingSHA2Answer))
		expect(t, c, 2, recordedCachingSHA2Answer)
		be.send(appendPacket(nil, 3, []byte{headerAuthMoreData, cachingSHA2FullAuth}))
		expect(t, b, 3, []byte{headerAuthMoreData, cachingSHA2FullAuth})
		cl.send(appendPacket(nil, 4, []byte("secret\x00")))
		expect(t, c, 4, []byte("secret\x00"))
		be.send(appendPacket(nil, 5, fakeOK(0)))
		expect(t, b, 5, fakeOK(0))
	})
}

// COM_CHANGE_USER through the proxy to a fake MySQL 8: the client answers
// the backend's nonce, not the greeting's, and a caching_sha2_password
// account needing full authentication gets the password RSA-encrypted
// over the plain backend link.
func TestMySQLChangeUser(t *testing.T) {
	for _, backendTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain backend link", true: "TLS backend link"}[backendTLS], func(t *testing.T) {
			ca := dbtest.NewCA(t)
			fm := &fakeServer{name: "m8", users: fakeUsers}
			r := dbproxy.Route{Host: "db.test"}
			if backendTLS {
				cert, _, _ := ca.Issue(t, "127.0.0.1")
				fm.cert = &cert
				r.TLS, r.RootCAs = dbproxy.TLSVerify, ca.Pool
			}
			startFakeServer(t, fm)
			r.Backend = fm.addr
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{r}})
			c := dialRawClient(t, p.Addr)
			c.startTLS(ca, "db.test", "db.test")
			if pkt := c.login("alice", "alicepw", ""); pkt[0] != headerOK {
				t.Fatalf("login: %x", pkt)
			}
			for len(fm.replies) > 0 {
				<-fm.replies
			}
			// The client answers with the nonce it has: the greeting's.
			pkt := c.command(changeUserPacket("dave", cachingSHA2Scramble("secret", c.greeting.authData), ""))
			if pkt[0] != headerAuthSwitch {
				t.Fatalf("COM_CHANGE_USER: got %x, want the backend's AuthSwitchRequest", pkt)
			}
			if pkt := c.authenticateFrom(pkt, "secret"); pkt[0] != headerOK {
				t.Fatalf("COM_CHANGE_USER: got %x, want OK", pkt)
			}
			if got := c.query("SELECT 1"); got != "m8:dave:"+map[bool]string{false: "false", true: "true"}[backendTLS] {
				t.Errorf("query answered by %q", got)
			}
			for len(fm.replies) > 0 {
				if r := <-fm.replies; !backendTLS && bytes.Contains(r, []byte("secret")) {
					t.Errorf("backend got the password in cleartext over a plain link: %q", r)
				}
			}
			// A cleartext-only plugin is refused on the plain link.
			pkt = c.command(changeUserPacket("frank", nil, ""))
			if backendTLS {
				if pkt[0] != headerAuthSwitch {
					t.Fatalf("COM_CHANGE_USER to frank: %x", pkt)
				}
				return
			}
			if code, _, msg, _ := parseERR(pkt); code != erNotSupportedAuth || !strings.Contains(msg, "mysql_clear_password") {
				t.Errorf("COM_CHANGE_USER to frank: got %q, want ERR %d", pkt, erNotSupportedAuth)
			}
			c.expectClosed()
		})
	}
}

// A connection that cannot half-close is left as it is: the byte pump
// closes it whole at the end.
func TestCloseWriteWithoutHalfClose(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	s := &packetStream{Conn: c1}
	if err := s.CloseWrite(); err != nil {
		t.Errorf("CloseWrite on a connection without half-close: %v, want nil", err)
	}
}
