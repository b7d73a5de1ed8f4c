package mysql

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// Packets recorded from MariaDB 10.11.19 (Debian 12), in answer to
// leproxy's HandshakeResponse41 naming the plugin leproxy_auth_relay.
var (
	// recordedMariaDBGreeting is its Initial Handshake (payload).
	recordedMariaDBGreeting = mustHex("0a352e352e352d31302e31312e31392d4d6172696144422d302b64656231327531002600000060342147257d6c2600fef7080200ff81150000000000001d000000753e71402d5f744d632b4b75006d7973716c5f6e61746976655f70617373776f726400")
	// recordedMariaDBNativeSwitch is the AuthSwitchRequest for a
	// mysql_native_password user: the greeting's nonce again.
	recordedMariaDBNativeSwitch = mustHex("fe6d7973716c5f6e61746976655f70617373776f72640060342147257d6c26753e71402d5f744d632b4b7500")
	// recordedMariaDBEd25519Switch is the AuthSwitchRequest for a
	// client_ed25519 user: a 32-byte nonce of its own, no NUL.
	recordedMariaDBEd25519Switch = mustHex("fe636c69656e745f656432353531390075a55a6e166125e278cee54acde83708d6de3a3da04b8e04842c8d11bba72eb8")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// stepReader counts the bytes read from it.
type stepReader struct {
	r io.Reader
	n int
}

func (s *stepReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += n
	return n, err
}

func TestMySQLReadPacket(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		limit    int
		want     []byte
		wantSeq  byte
		wantErr  error
		wantRead int // bytes consumed
	}{
		{name: "one packet", in: []byte{3, 0, 0, 7, 'a', 'b', 'c', 'x'}, limit: 10, want: []byte("abc"), wantSeq: 7, wantRead: 7},
		{name: "empty payload", in: []byte{0, 0, 0, 1}, limit: 10, want: []byte{}, wantSeq: 1, wantRead: 4},
		{name: "length is little-endian", in: append([]byte{0x01, 0x01, 0, 2}, make([]byte, 257)...), limit: 300, want: make([]byte, 257), wantSeq: 2, wantRead: 261},
		{name: "over the limit is refused before reading it", in: append([]byte{0xff, 0xff, 0xff, 0}, make([]byte, 64)...), limit: 1000, wantErr: errMalformed, wantRead: 4},
		{name: "short payload", in: []byte{5, 0, 0, 0, 'a'}, limit: 10, wantErr: io.ErrUnexpectedEOF},
		{name: "short header", in: []byte{5, 0}, limit: 10, wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", in: nil, limit: 10, wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &stepReader{r: bytes.NewReader(tt.in)}
			got, seq, err := readPacket(r, tt.limit)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err == nil && (!bytes.Equal(got, tt.want) || seq != tt.wantSeq) {
				t.Errorf("got %x seq %d, want %x seq %d", got, seq, tt.want, tt.wantSeq)
			}
			if tt.wantRead != 0 && r.n != tt.wantRead {
				t.Errorf("read %d bytes, want %d", r.n, tt.wantRead)
			}
		})
	}
	if got, want := appendPacket([]byte{9}, 3, []byte("hi")), []byte{9, 2, 0, 0, 3, 'h', 'i'}; !bytes.Equal(got, want) {
		t.Errorf("appendPacket: got %x, want %x", got, want)
	}
}

func TestMySQLLenencInt(t *testing.T) {
	for _, v := range []uint64{0, 1, 250, 251, 0xffff, 0x10000, 0xffffff, 0x1000000, 1 << 40, 1<<64 - 1} {
		b := appendLenencInt(nil, v)
		got, rest, err := readLenencInt(append(b, 'z'))
		if err != nil || got != v || string(rest) != "z" {
			t.Errorf("%d encoded as %x decodes to %d, %q, %v", v, b, got, rest, err)
		}
		for i := range b {
			if _, _, err := readLenencInt(b[:i]); err == nil {
				t.Errorf("%d truncated to %x decodes", v, b[:i])
			}
		}
	}
	for _, b := range [][]byte{{0xfb}, {0xff}} {
		if _, _, err := readLenencInt(b); err == nil {
			t.Errorf("%x decodes as a length", b)
		}
	}
	if _, _, err := readLenencBytes([]byte{3, 'a', 'b'}); err == nil {
		t.Error("a string longer than its packet decodes")
	}
}

func TestMySQLParseGreeting(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    *greeting
		wantErr bool
	}{{
		name: "MariaDB 10.11 (recorded)",
		in:   recordedMariaDBGreeting,
		want: &greeting{version: "5.5.5-10.11.19-MariaDB-0+deb12u1", connID: 38, caps: 0x81fff7fe, charset: 8, status: 2,
			authData: []byte("`4!G%}l&u>q@-_tMc+Ku"), plugin: "mysql_native_password"},
	}, {
		// From go-sql-driver/mysql's regression test #801: the plugin
		// name has no NUL.
		name: "MySQL 5.5.8, plugin name unterminated",
		in: []byte{10, 53, 46, 53, 46, 56, 0, 165, 0, 0, 0,
			60, 70, 63, 58, 68, 104, 34, 97, 0, 223, 247, 33, 2, 0, 15, 128, 21, 0,
			0, 0, 0, 0, 0, 0, 0, 0, 0, 98, 120, 114, 47, 85, 75, 109, 99, 51, 77,
			50, 64, 0, 109, 121, 115, 113, 108, 95, 110, 97, 116, 105, 118, 101, 95,
			112, 97, 115, 115, 119, 111, 114, 100},
		want: &greeting{version: "5.5.8", connID: 165, caps: 2148530143, charset: 33, status: 2,
			authData: []byte{60, 70, 63, 58, 68, 104, 34, 97, 98, 120, 114, 47, 85, 75, 109, 99, 51, 77, 50, 64},
			plugin:   "mysql_native_password"},
	}, {
		name: "only the lower capabilities",
		in:   append([]byte("\x0a4.1\x00\x01\x00\x00\x0012345678\x00"), 0x00, 0x02),
		want: &greeting{version: "4.1", connID: 1, caps: capProtocol41, authData: []byte("12345678")},
	},
		{name: "empty", in: nil, wantErr: true},
		{name: "protocol 9", in: []byte("\x093.20\x00"), wantErr: true},
		{name: "no version terminator", in: []byte("\x0a5.7"), wantErr: true},
		{name: "short after capabilities", in: append([]byte("\x0a8\x00\x01\x00\x00\x0012345678\x00\xff\xff"), 8), wantErr: true},
		{name: "short scramble", in: recordedMariaDBGreeting[:60], wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGreeting(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %t", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	// leproxy's greeting parses back as written, as clients parse it.
	g := &greeting{version: "8.0.36", caps: offeredCaps, charset: 45, status: statusAutocommit,
		authData: []byte("abcdefghijklmnopqrst"), plugin: greetingPlugin}
	got, err := parseGreeting(g.append(nil))
	if err != nil || !reflect.DeepEqual(got, g) {
		t.Errorf("round trip: got %+v, %v; want %+v", got, err, g)
	}
}

func TestMySQLParseHandshakeResponse(t *testing.T) {
	base := &handshakeResponse{caps: capProtocol41 | capSecureConnection | capPluginAuth | capLongPassword,
		maxPacket: 1 << 24, charset: 45, user: "alice", authResp: []byte("0123456789abcdefghij"), plugin: "mysql_native_password"}
	with := func(mod func(*handshakeResponse)) *handshakeResponse {
		r := *base
		mod(&r)
		return &r
	}
	roundTrips := []struct {
		name string
		r    *handshakeResponse
	}{
		{"one-byte authentication length", base},
		{"length-encoded authentication data", with(func(r *handshakeResponse) {
			r.caps |= capPluginAuthLenencData
			r.authResp = bytes.Repeat([]byte{7}, 300)
		})},
		{"NUL-terminated authentication data", with(func(r *handshakeResponse) {
			r.caps &^= capSecureConnection
			r.authResp = []byte("scrambled")
		})},
		{"database", with(func(r *handshakeResponse) { r.caps |= capConnectWithDB; r.database = "app" })},
		{"attributes", with(func(r *handshakeResponse) {
			r.caps |= capConnectAttrs
			r.attrs = []byte("\x0c_client_name\x05rawMy\x01k\x00")
		})},
		{"zstd level", with(func(r *handshakeResponse) { r.caps |= capZstdCompression; r.zstdLevel = 3 })},
		{"empty password", with(func(r *handshakeResponse) { r.authResp = []byte{} })},
	}
	for _, tt := range roundTrips {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHandshakeResponse(tt.r.append(nil))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.r) {
				t.Errorf("got %+v, want %+v", got, tt.r)
			}
		})
	}
	fixed := base.appendSSLRequest(nil)
	lenient := []struct {
		name string
		in   []byte
		want func(*handshakeResponse) bool
	}{
		{"database flag without a database", append(append(bytes.Clone(fixed[:0]),
			with(func(r *handshakeResponse) { r.caps |= capConnectWithDB; r.plugin = "" }).appendSSLRequest(nil)...),
			"alice\x00\x00"...),
			func(r *handshakeResponse) bool { return r.database == "" && r.plugin == "" }},
		{"plugin name without NUL", append(bytes.Clone(fixed), "alice\x00\x00mysql_native_password"...),
			func(r *handshakeResponse) bool { return r.plugin == "mysql_native_password" }},
	}
	for _, tt := range lenient {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHandshakeResponse(tt.in)
			if err != nil || !tt.want(got) {
				t.Errorf("got %+v, %v", got, err)
			}
		})
	}
	malformed := []struct {
		name, in, want string
	}{
		{"pre-4.1", "\x8f\xa0\x00\x00\x00alice\x00", "without CLIENT_PROTOCOL_41"},
		{"only the fixed part", string(fixed), "handshake response of 32 bytes"},
		{"unterminated user", string(fixed) + "alice", "unterminated user name"},
		{"authentication longer than the packet", string(fixed) + "alice\x00\x14abc", "bad authentication response length"},
		{"bad attributes length", string(with(func(r *handshakeResponse) { r.caps |= capConnectAttrs }).appendSSLRequest(nil)) +
			"alice\x00\x00mysql_native_password\x00\x10ab", "bad connection attributes length"},
		{"attribute without a value", string(with(func(r *handshakeResponse) { r.caps |= capConnectAttrs }).appendSSLRequest(nil)) +
			"alice\x00\x00mysql_native_password\x00\x02\x01k", "bad connection attribute"},
		{"unterminated database", string(with(func(r *handshakeResponse) { r.caps |= capConnectWithDB }).appendSSLRequest(nil)) +
			"alice\x00\x00app", "unterminated database name"},
	}
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHandshakeResponse([]byte(tt.in))
			if !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a malformed packet error containing %q", err, tt.want)
			}
		})
	}
}

func TestMySQLIsSSLRequest(t *testing.T) {
	r := &handshakeResponse{caps: capProtocol41 | capSSL, maxPacket: 1 << 24, charset: 45}
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"SSLRequest", r.appendSSLRequest(nil), true},
		{"without CLIENT_SSL", (&handshakeResponse{caps: capProtocol41}).appendSSLRequest(nil), false},
		{"full handshake response", r.append(nil), false},
		{"short", r.appendSSLRequest(nil)[:31], false},
	}
	for _, tt := range tests {
		if got := isSSLRequest(tt.in); got != tt.want {
			t.Errorf("%s: got %t, want %t", tt.name, got, tt.want)
		}
	}
}

func TestMySQLParseAuthSwitch(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		wantPlugin string
		wantNonce  []byte
		wantErr    bool
	}{
		{"MariaDB native (recorded)", recordedMariaDBNativeSwitch, "mysql_native_password", []byte("`4!G%}l&u>q@-_tMc+Ku"), false},
		{"MariaDB ed25519 (recorded)", recordedMariaDBEd25519Switch, "client_ed25519", recordedMariaDBEd25519Switch[16:], false},
		{"MySQL 8 caching_sha2_password (recorded)", recordedCachingSHA2Switch[4:], pluginCachingSHA2, recordedCachingSHA2Switch[27:47], false},
		{"old one-byte form", []byte{0xfe}, "", nil, true},
		{"no plugin name", []byte{0xfe, 0}, "", nil, true},
		{"unterminated name", []byte("\xfemysql"), "", nil, true},
		{"not a switch", []byte{0x01, 0x04}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAuthSwitch(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %t", err, tt.wantErr)
			}
			if err == nil && (got.plugin != tt.wantPlugin || !bytes.Equal(got.nonce(), tt.wantNonce)) {
				t.Errorf("got %q nonce %x, want %q nonce %x", got.plugin, got.nonce(), tt.wantPlugin, tt.wantNonce)
			}
		})
	}
	// The recorded MariaDB exchange: the native switch repeats the
	// greeting's nonce.
	g, _ := parseGreeting(recordedMariaDBGreeting)
	sw, _ := parseAuthSwitch(recordedMariaDBNativeSwitch)
	if !bytes.Equal(sw.nonce(), g.authData) {
		t.Errorf("switch nonce %q, greeting nonce %q", sw.nonce(), g.authData)
	}
}

func TestMySQLERR(t *testing.T) {
	b := appendERR(nil, erSecureTransport, stateGeneral, "leproxy: TLS is required for db.test")
	if want := "\xff\x57\x0c#HY000leproxy: TLS is required for db.test"; string(b) != want {
		t.Errorf("ERR packet %q, want %q", b, want)
	}
	tests := []struct {
		in        string
		code      uint16
		state     string
		msg       string
		wantError bool
	}{
		{"\xff\x15\x04#28000Access denied", 1045, "28000", "Access denied", false},
		{"\xff\x10\x04Too many connections", 1040, "", "Too many connections", false},
		{"\xff\x10", 0, "", "", true},
		{"\x00\x00\x00", 0, "", "", true},
	}
	for _, tt := range tests {
		code, state, msg, err := parseERR([]byte(tt.in))
		if (err != nil) != tt.wantError || code != tt.code || state != tt.state || msg != tt.msg {
			t.Errorf("parseERR(%q) = %d %q %q %v", tt.in, code, state, msg, err)
		}
	}
}

func TestMySQLPasswordEncryption(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	tests := []struct {
		name    string
		pkt     []byte
		wantErr bool
	}{
		{"PKIX after AuthMoreData", append([]byte{headerAuthMoreData}, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})...), false},
		{"PKCS #1", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)}), false},
		{"no PEM", []byte{headerAuthMoreData, 'x'}, true},
		{"garbage in PEM", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nonsense")}), true},
	}
	nonce := []byte("abcdefghijklmnopqrst")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := parsePublicKey(tt.pkt)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			password := []byte("a password longer than the twenty-byte nonce\x00")
			enc, err := encryptPassword(password, nonce, pub)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, enc, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range plain {
				plain[i] ^= nonce[i%len(nonce)]
			}
			if !bytes.Equal(plain, password) {
				t.Errorf("decrypted %q, want %q", plain, password)
			}
		})
	}
}
