package dbproxy_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// TestListenerTLSPolicy checks that a database listener has leproxy's TLS
// policy (internal/tlspolicy): a TLS 1.2 client offering only CBC suites is
// refused; TLS 1.2 AEAD and TLS 1.3 clients connect.
func TestListenerTLSPolicy(t *testing.T) {
	echo := dbtest.StartEcho(t, "a", nil)
	ca := dbtest.NewCA(t)
	p := dbtest.StartProxy(t, ca, dbproxy.Config{
		Protocol: tlsProto(t),
		Routes:   []dbproxy.Route{{Host: "a.test", Backend: echo.Addr}},
	})
	connect := func(cfg *tls.Config) (tls.ConnectionState, error) {
		conn, err := net.DialTimeout("tcp", p.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return tls.ConnectionState{}, err
		}
		return tc.ConnectionState(), nil
	}
	for _, suite := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	} {
		cfg := ca.ClientConfig("a.test", "a.test")
		cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, []uint16{suite}
		if cs, err := connect(cfg); err == nil {
			t.Errorf("client offering only %s: connected with %s, want refused", tls.CipherSuiteName(suite), tls.CipherSuiteName(cs.CipherSuite))
		}
	}
	cfg := ca.ClientConfig("a.test", "a.test")
	cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	if cs, err := connect(cfg); err != nil {
		t.Errorf("TLS 1.2 AEAD client: %v", err)
	} else if cs.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 AEAD client: version %x", cs.Version)
	}
	cfg = ca.ClientConfig("a.test", "a.test")
	cfg.MinVersion = tls.VersionTLS13
	if cs, err := connect(cfg); err != nil {
		t.Errorf("TLS 1.3 client: %v", err)
	} else if cs.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 client: version %x", cs.Version)
	}
}
