package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// Fuzz tests for every parser of bytes from MySQL clients and backends.

func FuzzMySQLReadPacket(f *testing.F) {
	f.Add([]byte{3, 0, 0, 1, 'a', 'b', 'c'}, 16)
	f.Add([]byte{0xff, 0xff, 0xff, 0}, 1<<16)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, in []byte, limit int) {
		if limit < 0 || limit >= maxPayload {
			return
		}
		payload, _, err := readPacket(bytes.NewReader(in), limit)
		if err != nil {
			return
		}
		if len(payload) > limit || !bytes.Equal(payload, in[4:4+len(payload)]) {
			t.Errorf("payload %x from %x under limit %d", payload, in, limit)
		}
	})
}

func FuzzMySQLHandshakeResponse(f *testing.F) {
	r := &handshakeResponse{caps: rawClientCaps | capConnectWithDB, maxPacket: 1 << 24, charset: 45, user: "alice",
		authResp: []byte("0123456789abcdefghij"), database: "app", plugin: "mysql_native_password",
		attrs: []byte("\x0c_client_name\x05rawMy")}
	f.Add(r.append(nil))
	f.Add(r.appendSSLRequest(nil))
	r.caps &^= capPluginAuthLenencData
	f.Add(r.append(nil))
	r.caps &^= capSecureConnection
	f.Add(r.append(nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseHandshakeResponse(in)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Errorf("error %v is not a malformed packet", err)
			}
			return
		}
		// What parses re-encodes to something that parses the same
		// (authentication data over 255 bytes needs the lenenc form).
		if got.caps&(capPluginAuthLenencData|capSecureConnection) == capSecureConnection && len(got.authResp) > 255 ||
			got.caps&(capPluginAuthLenencData|capSecureConnection) == 0 && bytes.IndexByte(got.authResp, 0) >= 0 {
			return
		}
		again, err := parseHandshakeResponse(got.append(nil))
		if err != nil {
			t.Fatalf("re-encoded %+v does not parse: %v", got, err)
		}
		if !reflect.DeepEqual(normalizeResponse(again), normalizeResponse(got)) {
			t.Errorf("re-encoded\n%+v\nparses as\n%+v", got, again)
		}
	})
}

// normalizeResponse maps the fields a flag leaves out to what the
// encoder writes for them.
func normalizeResponse(r *handshakeResponse) handshakeResponse {
	n := *r
	if n.attrs == nil && n.caps&capConnectAttrs != 0 {
		n.attrs = []byte{}
	}
	if len(n.authResp) == 0 {
		n.authResp = nil
	}
	if len(n.attrs) == 0 {
		n.attrs = nil
	}
	return n
}

func FuzzMySQLGreeting(f *testing.F) {
	f.Add(recordedMariaDBGreeting)
	f.Add((&greeting{version: "8.0.36", caps: mysql8Caps, charset: 255, authData: []byte("abcdefghijklmnopqrst"), plugin: pluginCachingSHA2}).append(nil))
	f.Add([]byte("\x0a4.1\x00\x01\x00\x00\x0012345678\x00\x00\x02"))
	f.Fuzz(func(t *testing.T, in []byte) {
		g, err := parseGreeting(in)
		if err != nil {
			return
		}
		if len(g.authData) > len(in) {
			t.Errorf("scramble of %d bytes from %d bytes", len(g.authData), len(in))
		}
		if len(g.authData) < 255 {
			g.append(nil)
		}
	})
}

func FuzzMySQLAuthSwitch(f *testing.F) {
	f.Add(recordedMariaDBNativeSwitch)
	f.Add(recordedMariaDBEd25519Switch)
	f.Add(recordedCachingSHA2Switch[4:])
	f.Fuzz(func(t *testing.T, in []byte) {
		sw, err := parseAuthSwitch(in)
		if err != nil {
			return
		}
		if sw.plugin == "" || len(sw.nonce()) > len(in) {
			t.Errorf("parsed %q with a nonce of %d bytes from %d bytes", sw.plugin, len(sw.nonce()), len(in))
		}
	})
}

func FuzzMySQLERR(f *testing.F) {
	f.Add([]byte("\xff\x15\x04#28000Access denied"))
	f.Add([]byte("\xff\x10\x04Too many"))
	f.Fuzz(func(t *testing.T, in []byte) {
		code, state, msg, err := parseERR(in)
		if err != nil {
			return
		}
		b := appendERR(nil, code, state, msg)
		if state != "" && !bytes.Equal(b, in) {
			t.Errorf("%q re-encodes as %q", in, b)
		}
	})
}

func FuzzMySQLPublicKey(f *testing.F) {
	f.Add([]byte("\x01-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		parsePublicKey(in)
	})
}

// scriptConn is a connection whose reads come from a script and whose
// writes are kept.
type scriptConn struct {
	net.Conn
	r       io.Reader
	written bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *scriptConn) Close() error                { return nil }
func (*scriptConn) SetDeadline(time.Time) error   { return nil }

// FuzzMySQLAuthRelay relays arbitrary backend and client packets through the
// authentication relay, with the client on TLS and the backend link
// plain, where the relay parses the most: it must end, without panicking,
// with the backend's OK or an error.
func FuzzMySQLAuthRelay(f *testing.F) {
	pkt := func(seq byte, payload []byte) []byte { return appendPacket(nil, seq, payload) }
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	keyPkt := append([]byte{headerAuthMoreData}, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	// A native switch, then OK.
	f.Add(append(pkt(2, recordedMariaDBNativeSwitch), pkt(4, fakeOK(0))...), pkt(4, make([]byte, 20)))
	// caching_sha2_password full authentication, which the relay turns
	// into a key request and an RSA-encrypted password.
	fullAuth := pkt(2, recordedCachingSHA2Switch[4:])
	fullAuth = append(fullAuth, pkt(4, []byte{headerAuthMoreData, cachingSHA2FullAuth})...)
	fullAuth = append(fullAuth, pkt(6, keyPkt)...)
	fullAuth = append(fullAuth, pkt(8, fakeOK(0))...)
	f.Add(fullAuth, append(pkt(4, recordedCachingSHA2Answer), pkt(6, []byte("secret\x00"))...))
	// The fast path.
	fast := pkt(2, recordedCachingSHA2Switch[4:])
	fast = append(fast, pkt(4, []byte{headerAuthMoreData, cachingSHA2FastAuthOK})...)
	fast = append(fast, pkt(5, fakeOK(0))...)
	f.Add(fast, pkt(4, recordedCachingSHA2Answer))
	f.Add(pkt(2, appendERR(nil, 1045, "28000", "Access denied")), []byte{})
	f.Fuzz(func(t *testing.T, backendIn, clientIn []byte) {
		client := &scriptConn{r: bytes.NewReader(clientIn)}
		backend := &scriptConn{r: bytes.NewReader(backendIn)}
		h := &clientSide{raw: client, conn: client, tls: tls.Server(client, &tls.Config{}), seq: 3}
		b := &backendSide{conn: backend, seq: 2, route: &dbproxy.Route{Host: "db.test"}}
		err := relayAuth(h, b, b.route)
		if err == nil && client.written.Len() == 0 {
			t.Error("relay succeeded without answering the client")
		}
	})
}

// FuzzMySQLCommandStreams reads arbitrary client and backend bytes through
// the command-phase streams of a session whose client link is encrypted
// and backend link is not: they must end without panicking, and pass on
// no more than they read, but for rewritten COM_CHANGE_USER packets and
// key requests.
func FuzzMySQLCommandStreams(f *testing.F) {
	cu := appendPacket(nil, 0, changeUserFor("dave", make([]byte, 20), "app", "mysql_native_password"))
	f.Add(append(cu, appendPacket(nil, 2, recordedCachingSHA2Answer)...),
		scriptBytes(scriptPacket{1, recordedCachingSHA2Switch[4:]}, scriptPacket{3, []byte{headerAuthMoreData, cachingSHA2FullAuth}}))
	f.Add(append(appendPacket(nil, 0, []byte("\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE t")), appendPacket(nil, 2, []byte("1,a\n"))...),
		appendPacket(nil, 1, []byte("\xfbx")))
	f.Add(cu, appendPacket(nil, 1, []byte("\xfemysql_clear_password\x00")))
	f.Fuzz(func(t *testing.T, clientIn, backendIn []byte) {
		client := &scriptConn{r: bytes.NewReader(clientIn)}
		backend := &scriptConn{r: bytes.NewReader(backendIn)}
		c, b := commandConns(client, backend, &dbproxy.Route{Host: "db.test"}, 45, true)
		// Alternate between the streams, as the pump's two directions
		// interleave.
		buf := make([]byte, 7)
		var cOut, bOut int
		cDone, bDone := false, false
		for !cDone || !bDone {
			if !cDone {
				n, err := c.Read(buf)
				cOut += n
				cDone = err != nil
			}
			if !bDone {
				n, err := b.Read(buf)
				bOut += n
				bDone = err != nil
			}
		}
		if limit := len(clientIn) + 64*(1+bytes.Count(clientIn, []byte{comChangeUser})); cOut > limit {
			t.Errorf("client stream passed on %d bytes of %d", cOut, len(clientIn))
		}
		if limit := len(backendIn) + 1024; bOut > limit {
			t.Errorf("backend stream passed on %d bytes of %d", bOut, len(backendIn))
		}
	})
}
