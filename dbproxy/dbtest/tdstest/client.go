package tdstest

import (
	"crypto/tls"
	"fmt"
	"net"
)

// A ClientOptions says how Connect logs in.
type ClientOptions struct {
	// TLS configures encryption; nil sends ENCRYPTION NOT_SUP and speaks
	// plaintext (when the server answers NOT_SUP).
	TLS *tls.Config
	// Strict starts TLS with the first byte (TDS 8.0), offering tds/8.0.
	Strict bool
	// Encryption, when not nil, is the ENCRYPTION byte sent (default ON,
	// or NOT_SUP without TLS).
	Encryption *byte
	Login      LoginInfo
	// Raw7, when set, is sent as the LOGIN7 payload instead of Login's.
	Raw7 []byte
}

// Connect logs in over conn as a TDS client does: PRELOGIN, TLS inside
// PRELOGIN packets (or first, for Strict), LOGIN7, then the login
// response. It returns the connection the session goes on over. A server
// ERROR is returned as a *ServerError; the client then hangs up.
func Connect(conn net.Conn, o ClientOptions) (_ net.Conn, err error) {
	defer func(raw net.Conn) {
		if err != nil {
			raw.Close()
		}
	}(conn)
	if o.Strict {
		cfg := o.TLS.Clone()
		cfg.NextProtos = []string{"tds/8.0"}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake (TDS 8.0): %w", err)
		}
		conn = tc
	}
	enc := byte(EncryptOn)
	if o.TLS == nil {
		enc = EncryptNotSup
	}
	if o.Encryption != nil {
		enc = *o.Encryption
	}
	pre := Prelogin([]byte{optVersion}, []byte{11, 0, 0, 0, 0, 0},
		[]byte{optEncryption}, []byte{enc},
		[]byte{optInstOpt}, []byte{0},
		[]byte{optThreadID}, []byte{0, 0, 0, 1},
		[]byte{optMARS}, []byte{0})
	if _, err := conn.Write(Packets(PacketPrelogin, pre, 4096)); err != nil {
		return nil, err
	}
	typ, _, answer, err := ReadMessage(conn, 4096)
	if err != nil {
		return nil, fmt.Errorf("reading the PRELOGIN answer: %w", err)
	}
	if e := FirstError(answer); e != nil {
		return nil, e
	}
	if typ != PacketReply {
		return nil, fmt.Errorf("PRELOGIN answered with packet type 0x%02x", typ)
	}
	opts, err := PreloginOptions(answer)
	if err != nil {
		return nil, err
	}
	if e := opts[optEncryption]; !o.Strict && (len(e) != 1 || e[0] != EncryptNotSup) {
		if o.TLS == nil {
			return nil, fmt.Errorf("server wants encryption (0x%02x), the client has no TLS", e)
		}
		hc := &handshakeConn{Conn: conn}
		cfg := o.TLS.Clone()
		cfg.MaxVersion = tls.VersionTLS12
		tc := tls.Client(hc, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake in PRELOGIN: %w", err)
		}
		if err := hc.finish(); err != nil {
			return nil, err
		}
		conn = tc
	}
	li := o.Login
	if li.TDSVersion == 0 {
		li.TDSVersion = 0x74000004
		if o.Strict {
			li.TDSVersion = 0x08000000
		}
	}
	if li.PacketSize == 0 {
		li.PacketSize = 4096
	}
	login := Login7(li)
	if o.Raw7 != nil {
		login = o.Raw7
	}
	if _, err := conn.Write(Packets(PacketLogin7, login, 4096)); err != nil {
		return nil, err
	}
	_, _, reply, err := ReadMessage(conn, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("reading the login answer: %w", err)
	}
	if e := FirstError(reply); e != nil {
		return nil, e
	}
	return conn, nil
}
