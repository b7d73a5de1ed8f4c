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
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Local CA files, in a directory of the cache directory.
const (
	localCADir      = "local-ca"
	localRootFile   = "root.pem"
	localRootKey    = "root-key.pem"
	localCAOrg      = "leproxy local CA"
	localRootYears  = 10
	localBackdating = time.Hour // leaf and root NotBefore, against clock skew
)

// localLeafValidity is the lifetime of a leaf certificate from the local CA;
// a test seam.
var localLeafValidity = 7 * 24 * time.Hour

// localCA is a certificate authority kept in Storage (keys
// local-ca/root.pem and local-ca/root-key.pem; with DirStorage, files of
// those names in the cache directory). Its root is created once, under the
// Storage lock "local-ca" so that processes sharing the Storage make one,
// and loaded on later starts; the root certificate is also written to
// rootPath (mode 0644) for clients to trust; leaf certificates are issued
// on demand, kept in memory and issued anew when less than a third of
// their validity remains (by the Manager's maintenance loop, or by the
// first handshake after that point if it comes first).
type localCA struct {
	storage  Storage
	rootPath string // the public copy of the root certificate
	keyPath  string // the key's file with DirStorage, for messages
	now      func() time.Time
	validity time.Duration
	// constrain makes a new root name-constrained to localhost, names
	// under .localhost and loopback addresses: the only names it serves
	// without Config.Local.
	constrain bool
	// onIssue, if set, is called after a leaf was issued; renewed reports
	// whether it replaces an earlier leaf for the name.
	onIssue func(name string, leaf *x509.Certificate, renewed bool)
	// onRootCreated, if set, is called after a new root was written.
	onRootCreated func(root *x509.Certificate)

	rootMu sync.Mutex
	root   *x509.Certificate
	key    *ecdsa.PrivateKey

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	flight singleflight.Group
}

// Storage keys of the local CA.
const (
	localRootStorageKey    = localCADir + "/" + localRootFile
	localRootKeyStorageKey = localCADir + "/" + localRootKey
)

// newLocalCA returns the local CA kept in storage (nil: a DirStorage on
// cacheDir), with its public root copy under cacheDir; it touches nothing.
func newLocalCA(cacheDir string, storage Storage) *localCA {
	if storage == nil {
		storage = NewDirStorage(cacheDir)
	}
	dir := filepath.Join(cacheDir, localCADir)
	return &localCA{
		storage:  storage,
		rootPath: filepath.Join(dir, localRootFile),
		keyPath:  filepath.Join(dir, localRootKey),
		now:      time.Now,
		validity: localLeafValidity,
		leaves:   make(map[string]*tls.Certificate),
	}
}

// loadIfExists loads the root if its file exists; a root that exists but
// cannot be used is an error.
func (ca *localCA) loadIfExists() error {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	if _, err := ca.storage.Get(ctx, localRootStorageKey); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_, _, err := ca.ensureRoot()
	return err
}

// ensureRoot returns the root certificate and key, loading them from the
// cache directory or creating them there.
func (ca *localCA) ensureRoot() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca.rootMu.Lock()
	defer ca.rootMu.Unlock()
	if ca.root != nil {
		return ca.root, ca.key, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	root, key, err := ca.loadRoot(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		root, key, err = ca.createRootLocked(ctx)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := ca.exportRoot(root); err != nil {
		return nil, nil, err
	}
	ca.root, ca.key = root, key
	return root, key, nil
}

// createRootLocked creates the root under the Storage lock, unless another
// process sharing the Storage did meanwhile.
func (ca *localCA) createRootLocked(ctx context.Context) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := ca.storage.Lock(ctx, localCADir); err != nil {
		return nil, nil, fmt.Errorf("certs: creating local CA: %w", err)
	}
	defer ca.storage.Unlock(context.WithoutCancel(ctx), localCADir)
	root, key, err := ca.loadRoot(ctx)
	if !errors.Is(err, fs.ErrNotExist) {
		return root, key, err
	}
	root, key, err = ca.createRoot(ctx)
	if err == nil && ca.onRootCreated != nil {
		ca.onRootCreated(root)
	}
	return root, key, err
}

// exportRoot writes the public copy of root to rootPath (mode 0644) unless
// it holds it already.
func (ca *localCA) exportRoot(root *x509.Certificate) error {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	if cur, err := os.ReadFile(ca.rootPath); err == nil && bytes.Equal(cur, certPEM) {
		if fi, err := os.Stat(ca.rootPath); err == nil && fi.Mode().Perm() == 0o644 {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(ca.rootPath), 0o700); err != nil {
		return fmt.Errorf("certs: writing local CA root %s: %w", ca.rootPath, err)
	}
	if err := writeFileAtomic(ca.rootPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("certs: writing local CA root %s: %w", ca.rootPath, err)
	}
	return nil
}

// loadRoot reads the root files; it returns an error wrapping
// fs.ErrNotExist only when the root certificate file does not exist.
func (ca *localCA) loadRoot(ctx context.Context) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := ca.storage.Get(ctx, localRootStorageKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: reading local CA root: %w", err)
	}
	root, err := parseRootPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: loading local CA root %s: %w (delete %s and %s to create a new local CA)",
			ca.rootPath, err, ca.rootPath, ca.keyPath)
	}
	keyPEM, err := ca.storage.Get(ctx, localRootKeyStorageKey)
	if err != nil {
		// %v, not %w: a missing key must not read as a missing root, which
		// would be replaced.
		return nil, nil, fmt.Errorf("certs: local CA root %s exists but its key cannot be read: %v", ca.rootPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: loading local CA key %s: %w", ca.keyPath, err)
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, nil, fmt.Errorf("certs: loading local CA: key %s does not match root %s", ca.keyPath, ca.rootPath)
	}
	if now := ca.now(); now.After(root.NotAfter) {
		return nil, nil, fmt.Errorf("certs: local CA root %s expired on %s (delete %s and %s to create a new local CA)",
			ca.rootPath, root.NotAfter.Format(time.RFC3339), ca.rootPath, ca.keyPath)
	}
	return root, key, nil
}

// parseRootPEM parses the first certificate of a PEM file and checks that
// it is a CA with an ECDSA key.
func parseRootPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	if !root.IsCA {
		return nil, errors.New("certificate is not a CA")
	}
	if _, ok := root.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("root key is %T, want ECDSA", root.PublicKey)
	}
	return root, nil
}

// parseKeyPEM parses an ECDSA private key in PKCS #8 or SEC 1 form.
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PKCS #8 key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want ECDSA", k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing EC key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
}

// createRoot creates a new root and writes it to Storage: the key first,
// then the certificate, each atomically.
func (ca *localCA) createRoot(ctx context.Context) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generating local CA key: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	var random [4]byte
	if _, err := rand.Read(random[:]); err != nil {
		return nil, nil, fmt.Errorf("certs: generating local CA name: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   fmt.Sprintf("%s %s %s", localCAOrg, host, hex.EncodeToString(random[:])),
			Organization: []string{localCAOrg},
		},
		NotBefore:             now.Add(-localBackdating),
		NotAfter:              now.AddDate(localRootYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if ca.constrain {
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = []string{"localhost"} // and every name under it
		tmpl.PermittedIPRanges = []*net.IPNet{
			{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
			{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: creating local CA root: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parsing new local CA root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: encoding local CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := ca.storage.Put(ctx, localRootKeyStorageKey, keyPEM); err != nil {
		return nil, nil, fmt.Errorf("certs: writing local CA key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := ca.storage.Put(ctx, localRootStorageKey, certPEM); err != nil {
		return nil, nil, fmt.Errorf("certs: writing local CA root: %w", err)
	}
	return root, key, nil
}

// certificate returns a leaf certificate for name, issuing one when there
// is none in memory or less than a third of its validity remains.
// Concurrent calls for one name issue once.
func (ca *localCA) certificate(name string) (*tls.Certificate, error) {
	if c := ca.fresh(name); c != nil {
		return c, nil
	}
	v, err, _ := ca.flight.Do(name, func() (any, error) {
		if c := ca.fresh(name); c != nil {
			return c, nil // issued by a flight that ended just before ours
		}
		c, err := ca.issue(name)
		if err != nil {
			return nil, err
		}
		ca.mu.Lock()
		_, renewed := ca.leaves[name]
		ca.leaves[name] = c
		ca.mu.Unlock()
		if ca.onIssue != nil {
			ca.onIssue(name, c.Leaf, renewed)
		}
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// due returns the names whose leaves in memory are due for renewal, and
// the earliest renewal time of the others (zero if none).
func (ca *localCA) due() (names []string, next time.Time) {
	now := ca.now()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for name, c := range ca.leaves {
		t := leafRenewAt(c)
		if !now.Before(t) {
			names = append(names, name)
		} else if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	slices.Sort(names)
	return names, next
}

// leafRenewAt returns when a local leaf is due: a third of its validity
// left.
func leafRenewAt(c *tls.Certificate) time.Time {
	return c.Leaf.NotAfter.Add(-c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 3)
}

// fresh returns the leaf in memory for name unless it is due for renewal.
func (ca *localCA) fresh(name string) *tls.Certificate {
	ca.mu.Lock()
	c := ca.leaves[name]
	ca.mu.Unlock()
	if c == nil {
		return nil
	}
	now := ca.now()
	if now.Before(c.Leaf.NotBefore) || !now.Before(leafRenewAt(c)) {
		return nil
	}
	return c
}

// issue creates a leaf certificate for name with a new ECDSA P-256 key.
func (ca *localCA) issue(name string) (*tls.Certificate, error) {
	root, rootKey, err := ca.ensureRoot()
	if err != nil {
		return nil, err
	}
	if !rootPermits(root, name) {
		return nil, fmt.Errorf("certs: the local CA root %s is limited to localhost names (it was created without -acme local), so it cannot issue for %s; delete %s and %s to create one for every name",
			ca.rootPath, name, ca.rootPath, ca.keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generating key for %s: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	notAfter := now.Add(ca.validity)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-localBackdating),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("certs: issuing local certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parsing local certificate for %s: %w", name, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// rootPermits reports whether root's name constraints, if any, allow a
// leaf for name (localhost and .localhost names, loopback addresses: what
// a constrained root permits).
func rootPermits(root *x509.Certificate, name string) bool {
	if len(root.PermittedDNSDomains) == 0 && len(root.PermittedIPRanges) == 0 {
		return true
	}
	if ip := net.ParseIP(name); ip != nil {
		for _, r := range root.PermittedIPRanges {
			if r.Contains(ip) {
				return true
			}
		}
		return false
	}
	for _, d := range root.PermittedDNSDomains {
		if name == d || strings.HasSuffix(name, "."+strings.TrimPrefix(d, ".")) {
			return true
		}
	}
	return false
}

// forgetExcept drops leaves for names no longer allowed.
func (ca *localCA) forgetExcept(allowed hostSet) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for name := range ca.leaves {
		if _, ok := allowed[name]; !ok {
			delete(ca.leaves, name)
		}
	}
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certs: generating serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeFileAtomic writes data to a temporary file next to path, sets perm
// and renames it over path.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
