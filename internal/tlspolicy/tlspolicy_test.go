package tlspolicy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testCert is a self-signed ECDSA certificate for "policy.test" and a pool
// trusting it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "policy.test"},
		DNSNames:              []string{"policy.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// handshake runs a handshake between a tls.Server with srv and a tls.Client
// with cli over a pipe; the server then writes a byte, which the client
// reads so that it also takes the TLS 1.3 session ticket.
func handshake(t *testing.T, srv, cli *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	sc, cc := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer sc.Close()
		s := tls.Server(sc, srv)
		if s.Handshake() == nil {
			s.Write([]byte{'x'})
			var b [1]byte
			s.Read(b[:]) // until the client closes
		}
	})
	defer cc.Close()
	c := tls.Client(cc, cli)
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

func policyConfig(t *testing.T, now func() time.Time) (*tls.Config, *x509.CertPool) {
	cert, pool := testCert(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	newTicketKeys(now).apply(cfg, true)
	return cfg, pool
}

func TestApply(t *testing.T) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS10}
	Apply(cfg)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	if !cfg.SessionTicketsDisabled || cfg.WrapSession != nil {
		t.Error("session tickets on by default")
	}
	SetSessionTickets(true)
	t.Cleanup(func() { SetSessionTickets(false) })
	Apply(cfg)
	if cfg.SessionTicketsDisabled || cfg.WrapSession == nil || cfg.UnwrapSession == nil {
		t.Error("SetSessionTickets(true): tickets off, or WrapSession/UnwrapSession not set")
	}
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if insecure[id] || !slices.Contains(CipherSuites, id) {
			t.Errorf("suite %s allowed", name)
		}
	}
	if len(cfg.CipherSuites) != 6 {
		t.Errorf("CipherSuites = %d suites, want the 6 ECDHE AEAD ones", len(cfg.CipherSuites))
	}
}

func TestRefusesCBCAndRSAKeyExchange(t *testing.T) {
	srv, pool := policyConfig(t, time.Now)
	for _, suite := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	} {
		cli := &tls.Config{
			ServerName:   "policy.test",
			RootCAs:      pool,
			MaxVersion:   tls.VersionTLS12,
			CipherSuites: []uint16{suite},
		}
		if cs, err := handshake(t, srv, cli); err == nil {
			t.Errorf("client offering only %s: handshake succeeded with %s, want refused",
				tls.CipherSuiteName(suite), tls.CipherSuiteName(cs.CipherSuite))
		}
	}
	cli := &tls.Config{ServerName: "policy.test", RootCAs: pool, MaxVersion: tls.VersionTLS11}
	if _, err := handshake(t, srv, cli); err == nil {
		t.Error("TLS 1.1 client: handshake succeeded, want refused")
	}
}

func TestAcceptsAEADAndTLS13(t *testing.T) {
	srv, pool := policyConfig(t, time.Now)
	for _, suite := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	} {
		cli := &tls.Config{ServerName: "policy.test", RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}
		cs, err := handshake(t, srv, cli)
		if err != nil {
			t.Errorf("TLS 1.2 %s: %v", tls.CipherSuiteName(suite), err)
		} else if cs.CipherSuite != suite || cs.Version != tls.VersionTLS12 {
			t.Errorf("TLS 1.2 %s: got %s, version %x", tls.CipherSuiteName(suite), tls.CipherSuiteName(cs.CipherSuite), cs.Version)
		}
	}
	cli := &tls.Config{ServerName: "policy.test", RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cs, err := handshake(t, srv, cli); err != nil {
		t.Errorf("TLS 1.3: %v", err)
	} else if cs.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 client: version %x", cs.Version)
	}
}

func TestSessionTicketLifetime(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
			srv, pool := policyConfig(t, clock.now)
			// steps: advance the clock by d since the ticket was issued,
			// then connect with that ticket (a fresh cache each time,
			// primed at the start of the step).
			steps := []struct {
				name   string
				after  time.Duration
				resume bool
			}{
				{"fresh ticket", 0, true},
				{"ticket of the previous key", KeyRotation + time.Hour, true},
				{"ticket at the lifetime", TicketLifetime - time.Minute, true},
				{"ticket older than the lifetime", TicketLifetime + time.Second, false},
			}
			for _, st := range steps {
				cli := &tls.Config{
					ServerName:         "policy.test",
					RootCAs:            pool,
					MinVersion:         version,
					MaxVersion:         version,
					ClientSessionCache: tls.NewLRUClientSessionCache(4),
				}
				start := clock.now()
				// Align so that the ticket is issued at a period's start:
				// the previous key then still exists after KeyRotation+1h.
				period := KeyRotation
				clock.add(start.Truncate(period).Add(period).Sub(start))
				cs, err := handshake(t, srv, cli)
				if err != nil {
					t.Fatalf("%s: first handshake: %v", st.name, err)
				}
				if cs.DidResume {
					t.Fatalf("%s: first handshake resumed", st.name)
				}
				clock.add(st.after)
				cs, err = handshake(t, srv, cli)
				if err != nil {
					t.Fatalf("%s: second handshake: %v", st.name, err)
				}
				if cs.DidResume != st.resume {
					t.Errorf("%s (after %v): DidResume = %v, want %v", st.name, st.after, cs.DidResume, st.resume)
				}
			}
		})
	}
}

func TestRotation(t *testing.T) {
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	k := newTicketKeys(clock.now)
	cur, prev, err := k.keys(clock.now())
	if err != nil || prev != nil {
		t.Fatalf("first keys: prev %v, err %v", prev, err)
	}
	clock.add(KeyRotation)
	cur2, prev2, _ := k.keys(clock.now())
	if cur2 == cur || prev2 != cur {
		t.Errorf("after KeyRotation: the key did not rotate (current %p→%p, previous %p)", cur, cur2, prev2)
	}
	clock.add(TicketLifetime)
	_, prev3, _ := k.keys(clock.now())
	if prev3 == cur || prev3 == cur2 {
		t.Error("a key lived longer than TicketLifetime")
	}
}
