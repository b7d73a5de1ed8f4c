package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLocalCARootCreatedAndReloaded(t *testing.T) {
	dir := t.TempDir()
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{CacheDir: dir, Local: true, Logger: logger})

	if got, want := m.LocalRootPath(), filepath.Join(dir, "local-ca", "root.pem"); got != want {
		t.Errorf("LocalRootPath() = %q, want %q", got, want)
	}
	keyPath := filepath.Join(dir, "local-ca", "root-key.pem")
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("root key: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("root key mode = %v, want 0600", got)
	}
	root := readCert(t, m.LocalRootPath())
	host, _ := os.Hostname()
	if want := "leproxy local CA " + host + " "; !strings.HasPrefix(root.Subject.CommonName, want) {
		t.Errorf("root CN = %q, want prefix %q", root.Subject.CommonName, want)
	}
	if !root.IsCA {
		t.Error("root is not a CA")
	}
	if pub, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}
	if life := root.NotAfter.Sub(root.NotBefore); life < 10*365*24*time.Hour || life > 10*366*24*time.Hour+2*time.Hour {
		t.Errorf("root validity = %v, want 10 years", life)
	}
	if got := logs.count("local CA created", "file="+m.LocalRootPath()); got != 1 {
		t.Errorf("%d \"local CA created\" records, want 1; log:\n%s", got, logs)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("log contains a private key")
	}

	rootPEM, err := os.ReadFile(m.LocalRootPath())
	if err != nil {
		t.Fatal(err)
	}
	logger2, logs2 := newTestLogger()
	m2 := newTestManager(t, Config{CacheDir: dir, Local: true, Logger: logger2})
	rootPEM2, err := os.ReadFile(m2.LocalRootPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rootPEM, rootPEM2) {
		t.Error("second New replaced the root, want it loaded")
	}
	if got := logs2.count("local CA created"); got != 0 {
		t.Errorf("second New logged %d \"local CA created\", want 0", got)
	}

	// A leaf from the second Manager verifies against the first root.
	m2.SetHosts([]string{"app.localhost"})
	c, err := m2.GetCertificate(ecdsaHello("app.localhost"))
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if err := verifyChain(c.Certificate, "app.localhost", readRoots(t, m.LocalRootPath())); err != nil {
		t.Errorf("leaf from reloaded CA does not verify: %v", err)
	}
}

func TestLocalCABadRootFiles(t *testing.T) {
	otherKey := func(t *testing.T, dir string) {
		// A valid key that does not belong to the root.
		ca := newLocalCA(t.TempDir(), nil)
		if _, _, err := ca.ensureRoot(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(ca.keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "local-ca", "root-key.pem"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string
	}{
		{
			name: "corrupt root",
			damage: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "local-ca", "root.pem"), []byte("garbage"), 0o644)
			},
			wantErr: "loading local CA root",
		},
		{
			name: "corrupt key",
			damage: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "local-ca", "root-key.pem"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
			},
			wantErr: "loading local CA key",
		},
		{
			name: "missing key",
			damage: func(t *testing.T, dir string) {
				os.Remove(filepath.Join(dir, "local-ca", "root-key.pem"))
			},
			wantErr: "key cannot be read",
		},
		{name: "mismatched key", damage: otherKey, wantErr: "does not match"},
	}
	for _, tt := range tests {
		for _, local := range []bool{true, false} {
			name := tt.name + "/acme"
			if local {
				name = tt.name + "/local"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				m := newTestManager(t, Config{CacheDir: dir, Local: true})
				rootPath := m.LocalRootPath()
				tt.damage(t, dir)
				before, err := os.ReadFile(rootPath)
				if err != nil {
					t.Fatal(err)
				}
				_, err = New(Config{CacheDir: dir, Local: local})
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: got error %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), dir) {
					t.Errorf("error %q does not name the file", err)
				}
				if after, err := os.ReadFile(rootPath); err != nil || !bytes.Equal(before, after) {
					t.Errorf("root file changed by a failed New (err %v), want it left alone", err)
				}
			})
		}
	}
}

func TestLocalLeafVerifiesInHandshake(t *testing.T) {
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true, Logger: logger})
	m.SetHosts([]string{"App.Localhost", "db.example.com"})
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("h2", "http/1.1"))
	roots := readRoots(t, m.LocalRootPath())

	for _, name := range []string{"app.localhost", "APP.localhost", "db.example.com"} {
		t.Run(name, func(t *testing.T) {
			cs, err := handshake(addr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"h2"}})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
				t.Errorf("leaf does not verify for %s: %v", name, err)
			}
			if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("leaf key is %T, want ECDSA P-256", leaf.PublicKey)
			}
			if life := time.Until(leaf.NotAfter); life < 7*24*time.Hour-time.Hour || life > 7*24*time.Hour+time.Hour {
				t.Errorf("leaf valid for %v more, want about 7 days", life)
			}
			if cs.NegotiatedProtocol != "h2" {
				t.Errorf("negotiated %q, want h2", cs.NegotiatedProtocol)
			}
		})
	}
	for _, host := range []string{"app.localhost", "db.example.com"} {
		if got := logs.count("certificate obtained", "host="+host, "source=local"); got != 1 {
			t.Errorf("%d \"certificate obtained\" records for %s, want 1; log:\n%s", got, host, logs)
		}
	}
}

func TestLocalLeafRenewal(t *testing.T) {
	logger, logs := newTestLogger()
	clock := newFakeClock(time.Now())
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true, Logger: logger, clock: clock})
	m.SetHosts([]string{"app.localhost"})

	get := func() *x509.Certificate {
		t.Helper()
		c, err := m.GetCertificate(ecdsaHello("app.localhost"))
		if err != nil {
			t.Fatalf("GetCertificate: %v", err)
		}
		return c.Leaf
	}
	first := get()
	// The renewal point is when a third of the lifetime remains.
	renewAt := first.NotAfter.Add(-first.NotAfter.Sub(first.NotBefore) / 3)

	clock.Set(renewAt.Add(-time.Minute))
	if got := get(); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("leaf renewed a minute before a third of its validity remains, want the same leaf")
	}
	clock.Set(renewAt.Add(time.Minute))
	second := get()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("leaf not renewed when less than a third of its validity remains")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed leaf expires %v, want after %v", second.NotAfter, first.NotAfter)
	}
	if got := logs.count("certificate renewed", "host=app.localhost"); got != 1 {
		t.Errorf("%d \"certificate renewed\" records, want 1; log:\n%s", got, logs)
	}
	if got := get(); got.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Error("renewed leaf not kept")
	}
}

func TestLocalLeafValiditySeam(t *testing.T) {
	old := localLeafValidity
	localLeafValidity = time.Hour
	t.Cleanup(func() { localLeafValidity = old })
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"a.localhost"})
	c, err := m.GetCertificate(ecdsaHello("a.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(c.Leaf.NotAfter); life > time.Hour {
		t.Errorf("leaf valid for %v, want at most 1h", life)
	}
}

func TestLocalRefusesNameNotAllowed(t *testing.T) {
	logger, logs := newTestLogger()
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true, Logger: logger})
	m.SetHosts([]string{"app.localhost"})
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	roots := readRoots(t, m.LocalRootPath())

	for _, name := range []string{"other.localhost", "example.com", "localhost"} {
		if _, err := m.GetCertificate(ecdsaHello(name)); err == nil || !strings.Contains(err.Error(), "not in the mapping") {
			t.Errorf("GetCertificate(%q): got error %v, want \"not in the mapping\"", name, err)
		}
		if _, err := handshake(addr, &tls.Config{ServerName: name, RootCAs: roots}); err == nil {
			t.Errorf("handshake for %q succeeded, want it refused", name)
		}
	}
	if got := logs.count("certificate obtained"); got != 0 {
		t.Errorf("%d certificates issued for names not allowed, want 0", got)
	}
	if got := logs.count("certificate failed"); got != 0 {
		t.Errorf("%d failures logged for names not allowed, want 0 (not our names)", got)
	}
}

func TestLocalConcurrentHandshakesIssueOnce(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	var issued atomic.Int32
	inner := m.ca.onIssue
	m.ca.onIssue = func(name string, leaf *x509.Certificate, renewed bool) {
		issued.Add(1)
		inner(name, leaf, renewed)
	}
	m.SetHosts([]string{"app.localhost"})
	addr := listenTLS(t, "127.0.0.1:0", m.TLSConfig("http/1.1"))
	roots := readRoots(t, m.LocalRootPath())

	const n = 16
	serials := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cs, err := handshake(addr, &tls.Config{ServerName: "app.localhost", RootCAs: roots})
			if err != nil {
				errs[i] = err
				return
			}
			serials[i] = cs.PeerCertificates[0].SerialNumber.String()
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("handshake %d: %v", i, errs[i])
		}
		if serials[i] != serials[0] {
			t.Errorf("handshake %d got serial %s, handshake 0 got %s; want one certificate", i, serials[i], serials[0])
		}
	}
	if got := issued.Load(); got != 1 {
		t.Errorf("issued %d certificates, want 1", got)
	}
}

// TestLocalhostNamesInACMEMode: .localhost names come from the local CA,
// created on first use, without contacting the ACME server.
func TestLocalhostNamesInACMEMode(t *testing.T) {
	var acmeRequests atomic.Int32
	acmeSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acmeRequests.Add(1)
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(acmeSrv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(acmeSrv.Certificate())

	m := newTestManager(t, Config{CacheDir: t.TempDir(), DirectoryURL: acmeSrv.URL + "/dir", RootCAs: roots})
	if _, err := os.Stat(m.LocalRootPath()); err == nil {
		t.Fatal("local CA created at start without Local, want it created on first use")
	}
	m.SetHosts([]string{"app.localhost", "localhost"})
	for _, name := range []string{"app.localhost", "localhost"} {
		c, err := m.GetCertificate(ecdsaHello(name))
		if err != nil {
			t.Fatalf("GetCertificate(%q): %v", name, err)
		}
		if err := verifyChain(c.Certificate, name, readRoots(t, m.LocalRootPath())); err != nil {
			t.Errorf("%s: leaf does not verify against the local root: %v", name, err)
		}
	}
	if got := acmeRequests.Load(); got != 0 {
		t.Errorf("%d requests to the ACME server, want 0", got)
	}

	// That root is name-constrained to localhost: a leaf its key signs for
	// another name does not verify, and the CA refuses to issue one.
	root := readCert(t, m.LocalRootPath())
	if !root.PermittedDNSDomainsCritical || !slices.Equal(root.PermittedDNSDomains, []string{"localhost"}) || len(root.PermittedIPRanges) != 2 {
		t.Errorf("root constraints: critical %v, DNS %q, IP %v; want critical, [localhost], loopback", root.PermittedDNSDomainsCritical, root.PermittedDNSDomains, root.PermittedIPRanges)
	}
	_, rootKey, err := m.ca.ensureRoot()
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "www.example.com"}, DNSNames: []string{"www.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, forged, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	var cie x509.CertificateInvalidError
	if err := verifyChain([][]byte{der}, "www.example.com", readRoots(t, m.LocalRootPath())); !errors.As(err, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
		t.Errorf("leaf for www.example.com signed by the constrained root: verify gave %v, want CANotAuthorizedForThisName", err)
	}
	if _, err := m.ca.issue("www.example.com"); err == nil || !strings.Contains(err.Error(), "limited to localhost names") {
		t.Errorf("issuing www.example.com from the constrained root: %v, want a refusal", err)
	}
}

// TestLocalModeRootUnconstrained: with Local, the root serves every name;
// a constrained root from an earlier run without Local is refused with
// what to do.
func TestLocalModeRootUnconstrained(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	root := readCert(t, m.LocalRootPath())
	if len(root.PermittedDNSDomains) != 0 || len(root.PermittedIPRanges) != 0 {
		t.Errorf("Local root has name constraints %q %v, want none", root.PermittedDNSDomains, root.PermittedIPRanges)
	}
	m.SetHosts([]string{"www.example.com", "127.0.0.2"})
	for _, name := range []string{"www.example.com", "127.0.0.2"} {
		if _, err := m.GetCertificate(ecdsaHello(name)); err != nil {
			t.Errorf("%s from the Local root: %v", name, err)
		}
	}

	dir := t.TempDir()
	acmeMode := newTestManager(t, Config{CacheDir: dir})
	if _, err := acmeMode.EnsureLocalCA(); err != nil {
		t.Fatal(err)
	}
	local := newTestManager(t, Config{CacheDir: dir, Local: true})
	local.SetHosts([]string{"www.example.com", "app.localhost"})
	if _, err := local.GetCertificate(ecdsaHello("app.localhost")); err != nil {
		t.Errorf("app.localhost from a constrained root: %v", err)
	}
	if _, err := local.GetCertificate(ecdsaHello("www.example.com")); err == nil || !strings.Contains(err.Error(), "delete") {
		t.Errorf("www.example.com from a constrained root: %v, want an error saying to delete the root", err)
	}
}

func TestLocalModeRefusesChallenge(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	m.SetHosts([]string{"app.localhost"})
	hello := ecdsaHello("app.localhost")
	hello.SupportedProtos = []string{"acme-tls/1"}
	if _, err := m.GetCertificate(hello); err == nil || !strings.Contains(err.Error(), "ACME is off") {
		t.Errorf("tls-alpn-01 hello in local mode: got %v, want an \"ACME is off\" error", err)
	}
}

// TestLocalCAInStorage: the local CA lives in Storage; two Managers with
// their own cache directories sharing one Storage (as fleet nodes would)
// use one root, whose public copy each writes to its cache directory.
func TestLocalCAInStorage(t *testing.T) {
	shared := NewDirStorage(t.TempDir())
	dirA, dirB := t.TempDir(), t.TempDir()
	a := newTestManager(t, Config{CacheDir: dirA, Local: true, Storage: shared})
	b := newTestManager(t, Config{CacheDir: dirB, Local: true, Storage: shared})
	ctx := context.Background()
	if _, err := shared.Get(ctx, "local-ca/root-key.pem"); err != nil {
		t.Fatalf("root key not in the Storage: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "local-ca", "root-key.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root key written to the cache directory too (%v), want it in the Storage only", err)
	}
	rootA, rootB := readCert(t, a.LocalRootPath()), readCert(t, b.LocalRootPath())
	if !rootA.Equal(rootB) {
		t.Error("two Managers sharing a Storage made two roots")
	}
	for _, p := range []string{a.LocalRootPath(), b.LocalRootPath()} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("public root copy: %v", err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("public root copy %s has mode %v, want 0644", p, fi.Mode().Perm())
		}
	}
	b.SetHosts([]string{"app.localhost"})
	c, err := b.GetCertificate(ecdsaHello("app.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(c.Certificate, "app.localhost", readRoots(t, a.LocalRootPath())); err != nil {
		t.Errorf("b's leaf does not verify against a's root: %v", err)
	}
}
