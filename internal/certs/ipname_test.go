package certs

import (
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

func TestIPFromReverseName(t *testing.T) {
	for _, tt := range []struct {
		name, want string
		ok         bool
	}{
		{"1.0.0.127.in-addr.arpa", "127.0.0.1", true},
		{"4.3.2.1.IN-ADDR.ARPA.", "1.2.3.4", true},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8::1", true},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", "::1", true},
		{"0.0.127.in-addr.arpa", "", false},
		{"256.0.0.127.in-addr.arpa", "", false},
		{"01.0.0.127.in-addr.arpa", "", false},
		{"10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "", false},
		{"www.example.com", "", false},
	} {
		got, ok := ipFromReverseName(tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ipFromReverseName(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// TestIPCertificate: mapping hosts that are IP addresses get certificates
// with an IP SAN from the CA (RFC 8738): 127.0.0.1 by tls-alpn-01 (Pebble
// names it by its reverse-DNS name in SNI), 127.0.0.2 by http-01 (nothing
// answers tls-alpn-01 there); a client that connects to the address sends
// no SNI and is served the address's certificate.
func TestIPCertificate(t *testing.T) {
	httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.StartPebble(t, httpPort, tlsPort)
	m, logs := pebbleManager(t, p, t.TempDir(), "127.0.0.1", "127.0.0.2")
	tlsAddr := listenTLS(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)), m.TLSConfig("http/1.1"))
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(httpPort)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: m.HTTPHandler(http.NotFoundHandler()), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	roots := p.IssuerRoots(t)

	// Go's client sends no SNI for an IP address and verifies the IP SAN.
	cs, err := handshake(tlsAddr, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake to 127.0.0.1 without SNI: %v; log:\n%s", err, logs)
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(leaf.DNSNames) != 0 {
		t.Errorf("certificate for IPs %v names %v, want the IP SAN 127.0.0.1 only", leaf.IPAddresses, leaf.DNSNames)
	}

	c, err := m.GetCertificateFor("127.0.0.2", nil)
	if err != nil {
		t.Fatalf("certificate for 127.0.0.2 by http-01: %v", err)
	}
	if !slices.ContainsFunc(c.Leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("127.0.0.2")) }) {
		t.Errorf("certificate for 127.0.0.2 has IPs %v", c.Leaf.IPAddresses)
	}
	if got := logs.count("certificate obtained", "host=127.0.0.2"); got != 1 {
		t.Errorf("%d \"certificate obtained\" records for 127.0.0.2, want 1; log:\n%s", got, logs)
	}

	// An address not on the allow-list gets nothing, and no order.
	orders := p.Orders()
	if _, err := m.GetCertificateFor("127.0.0.3", nil); err == nil {
		t.Error("certificate for 127.0.0.3, which is not in the mapping")
	}
	if got := p.Orders(); got != orders {
		t.Errorf("%d orders for an address not in the mapping", got-orders)
	}
}

// TestLocalIPCertificate: the local CA issues IP SANs, and a listener
// with a default name serves a client without SNI the certificate of the
// mapped address it reached, and the default name's at another address.
func TestLocalIPCertificate(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"127.0.0.1", "db.localhost"})
	cfg := m.TLSConfigWithDefault("db.localhost")
	atIP := listenTLS(t, "127.0.0.1:0", cfg)
	atOther := listenTLS(t, "127.0.0.2:0", cfg)
	roots := readRoots(t, m.LocalRootPath())

	cs, err := handshake(atIP, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake to 127.0.0.1: %v", err)
	}
	if ips := cs.PeerCertificates[0].IPAddresses; len(ips) != 1 || !ips[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("served IPs %v, want 127.0.0.1", ips)
	}
	if _, err := handshake(atOther, &tls.Config{ServerName: "db.localhost", RootCAs: roots}); err != nil {
		t.Fatalf("handshake to 127.0.0.2: %v", err)
	}
	cs, err = handshake(atOther, &tls.Config{InsecureSkipVerify: true}) // no SNI, an unmapped address
	if err != nil {
		t.Fatalf("handshake without SNI to 127.0.0.2: %v", err)
	}
	if names := cs.PeerCertificates[0].DNSNames; !slices.Equal(names, []string{"db.localhost"}) {
		t.Errorf("no SNI at an unmapped address: served %v, want the default db.localhost", names)
	}
}
