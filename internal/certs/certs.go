// Package certs is leproxy's one certificate manager. It obtains and renews
// certificates by ACME (tls-alpn-01 and http-01), issues certificates for
// localhost and names under .localhost (every name, with Config.Local) from
// a local CA kept in the cache directory, and serves them to every
// listener, so a host name has one certificate whichever port it is used on.
//
// Only names on the allow-list (SetHosts) ever get a certificate; no other
// name ever starts an ACME order.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
	"github.com/leproxy/leproxy/internal/tlspolicy"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ErrNoServerName is returned by GetCertificate for a client that sent no
// server name (SNI). Listeners with a default name use GetCertificateFor.
var ErrNoServerName = errors.New("certs: client sent no server name (SNI)")

// acmeChallengePrefix is the URL path prefix of http-01 challenges.
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// Config configures a Manager. The zero value of each field is its default.
type Config struct {
	// CacheDir holds certificates, the ACME account key and the local CA.
	// It is created (mode 0700) if missing. Its format is autocert.DirCache,
	// so the cache of an earlier leproxy or any autocert program is reused.
	CacheDir string
	// DirectoryURL is the ACME directory (see ResolveDirectory); empty
	// means Let's Encrypt. Ignored when Local is set.
	DirectoryURL string
	// Local makes every name get its certificate from the local CA; no
	// ACME server is contacted.
	Local bool
	// Email is the contact address registered with the ACME account.
	Email string
	// EABKeyID and EABHMAC are the External Account Binding credentials
	// some CAs (ZeroSSL) require; both or neither. EABHMAC is base64url,
	// padded or not (standard base64 is accepted too).
	EABKeyID, EABHMAC string
	// RootCAs are trusted for the ACME server's own HTTPS; nil means the
	// system roots.
	RootCAs *x509.CertPool
	// Logger receives a record for every certificate obtained, renewed or
	// failed; nil discards them.
	Logger *slog.Logger
	// OnACMEOrder, if set, is called once for each certificate ACME
	// issued (err nil) and each failed attempt (err set), for metrics.
	OnACMEOrder func(host string, err error)
}

// Manager serves certificates for the names on its allow-list. Its methods
// are safe for concurrent use.
type Manager struct {
	log   *slog.Logger
	local bool // every name from the local CA
	now   func() time.Time

	hosts  atomic.Pointer[hostSet]
	setMu  sync.Mutex // serializes SetHosts
	acme   *autocert.Manager
	cache  *observedCache
	ca     *localCA
	status statusBook

	onACMEOrder func(host string, err error)

	close     context.CancelFunc // ends every ACME request
	closeOnce sync.Once
}

// New checks the cache directory, loads the local CA if it exists (creating
// it when cfg.Local is set) and returns a Manager with an empty allow-list.
func New(cfg Config) (*Manager, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("certs: cache directory not set")
	}
	eab, err := externalAccountBinding(cfg.EABKeyID, cfg.EABHMAC)
	if err != nil {
		return nil, err
	}
	if err := checkCacheDir(cfg.CacheDir); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	done, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:   logger,
		local: cfg.Local,
		now:   time.Now,
		ca:    newLocalCA(cfg.CacheDir),
		close: cancel,

		onACMEOrder: cfg.OnACMEOrder,
	}
	m.hosts.Store(&hostSet{})
	m.ca.onIssue = m.localIssued
	m.ca.onRootCreated = func(root *x509.Certificate) {
		m.log.Info("local CA created", "root", m.ca.rootPath, "subject", root.Subject.CommonName, "not_after", root.NotAfter)
	}
	if cfg.Local {
		_, _, err = m.ca.ensureRoot()
	} else {
		err = m.ca.loadIfExists()
	}
	if err != nil {
		cancel()
		return nil, err
	}

	dirURL := cfg.DirectoryURL
	if dirURL == "" {
		dirURL = LetsEncryptURL
	}
	m.cache = &observedCache{
		dir:         autocert.DirCache(cfg.CacheDir),
		stored:      m.acmeStored,
		storeFailed: m.acmeStoreFailed,
	}
	m.acme = &autocert.Manager{
		Prompt:                 autocert.AcceptTOS,
		Cache:                  m.cache,
		HostPolicy:             m.hostPolicy,
		Email:                  cfg.Email,
		ExternalAccountBinding: eab,
		Client: &acme.Client{
			DirectoryURL: dirURL,
			HTTPClient:   newACMEHTTPClient(cfg.RootCAs, done),
			UserAgent:    "leproxy",
		},
	}
	return m, nil
}

// checkCacheDir creates dir if needed and checks that a file can be
// created in it.
func checkCacheDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: cache directory %s is not writable: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".leproxy-write-check-*")
	if err != nil {
		return fmt.Errorf("certs: cache directory %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("certs: cache directory %s: removing write check file: %w", dir, err)
	}
	return nil
}

// GetCertificate is tls.Config.GetCertificate for every listener whose
// clients send SNI. It answers tls-alpn-01 challenges, serves localhost
// and names under .localhost (every name, with Config.Local) from the local
// CA and the others by ACME, obtaining a certificate on the first
// handshake. A name that is not on the allow-list gets an error and never
// an ACME order; so does a hello without a server name (ErrNoServerName).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		return nil, ErrNoServerName
	}
	if wantsChallengeCert(hello) {
		if m.local {
			return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q, but ACME is off (local CA only)", hello.ServerName)
		}
		return m.acme.GetCertificate(hello)
	}
	return m.certificate(hello)
}

// GetCertificateFor serves the certificate for name whatever server name
// hello carries; hello (which may be nil) only tells which key types the
// client supports. Listeners use it for clients that send no SNI, with
// their default name. It never answers a tls-alpn-01 challenge.
func (m *Manager) GetCertificateFor(name string, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var h tls.ClientHelloInfo
	if hello != nil {
		h = *hello
	} else {
		// Assume a current client: ECDSA.
		h.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	}
	h.ServerName = name
	h.SupportedProtos = nil
	if name == "" {
		return nil, ErrNoServerName
	}
	return m.certificate(&h)
}

// certificate serves the certificate for hello.ServerName.
func (m *Manager) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	host := hostname.Normalize(hello.ServerName)
	if !m.Allowed(host) {
		return nil, fmt.Errorf("certs: no certificate for %q: host is not in the mapping", hello.ServerName)
	}
	if m.local || isLocalhostName(host) {
		c, err := m.ca.certificate(host)
		if err != nil {
			m.failed(host, err)
			return nil, err
		}
		return c, nil
	}
	c, err := m.acme.GetCertificate(hello)
	if err != nil {
		if m.onACMEOrder != nil && err.Error() != autocertPendingRetry {
			m.onACMEOrder(host, err)
		}
		m.failed(host, err)
		return nil, fmt.Errorf("certs: certificate for %s: %w", host, err)
	}
	m.status.serving(host, c.Leaf, false)
	return c, nil
}

// wantsChallengeCert reports whether hello is a tls-alpn-01 validation
// (RFC 8737): it offers acme-tls/1 and nothing else.
func wantsChallengeCert(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// TLSConfig returns the configuration for the HTTPS listener: certificates
// from GetCertificate, ALPN nextProtos (callers pass "h2", "http/1.1") plus
// acme-tls/1 for tls-alpn-01, and leproxy's TLS policy (see tlspolicy).
func (m *Manager) TLSConfig(nextProtos ...string) *tls.Config {
	protos := slices.Clone(nextProtos)
	if !slices.Contains(protos, acme.ALPNProto) {
		protos = append(protos, acme.ALPNProto)
	}
	cfg := &tls.Config{
		GetCertificate: m.GetCertificate,
		NextProtos:     protos,
	}
	tlspolicy.Apply(cfg)
	return cfg
}

// TLSConfigWithDefault returns the configuration for a listener that does
// not answer ACME challenges (a database listener): a client without SNI
// gets the certificate of defaultName (none if defaultName is empty).
// nextProtos is the listener's ALPN list, possibly empty. It has
// leproxy's TLS policy (see tlspolicy).
func (m *Manager) TLSConfigWithDefault(defaultName string, nextProtos ...string) *tls.Config {
	cfg := &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if wantsChallengeCert(hello) {
				return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q on a listener that answers none", hello.ServerName)
			}
			if hello.ServerName == "" && defaultName != "" {
				return m.GetCertificateFor(defaultName, hello)
			}
			return m.GetCertificate(hello)
		},
		NextProtos: slices.Clone(nextProtos),
	}
	tlspolicy.Apply(cfg)
	return cfg
}

// HTTPHandler answers http-01 challenges (for allowed names, whatever the
// port in the Host header) and passes every other request to fallback. A
// nil fallback redirects GET and HEAD to https on port 443 and refuses
// other methods.
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	h := m.acme.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, acmeChallengePrefix) {
			// autocert checks the allow-list against r.Host, port included.
			r = r.WithContext(r.Context())
			r.Host = stripPort(r.Host)
		}
		h.ServeHTTP(w, r)
	})
}

// LocalRootPath returns the path of the local CA's root certificate (PEM),
// which clients of .localhost names, or of every name with Config.Local,
// must trust. The file may not exist yet when Config.Local is not set.
func (m *Manager) LocalRootPath() string {
	return m.ca.rootPath
}

// Status returns what is known about the certificate of each allowed host,
// sorted by host.
func (m *Manager) Status() []Status {
	hosts := m.hosts.Load().sorted()
	out := make([]Status, 0, len(hosts))
	for _, host := range hosts {
		s := m.status.status(host)
		if s.NotAfter.IsZero() && !m.local && !isLocalhostName(host) {
			// Not served since start: look in the cache.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			leaf := m.cache.leaf(ctx, host)
			cancel()
			if leaf != nil {
				m.status.serving(host, leaf, false)
				s = m.status.status(host)
			}
		}
		out = append(out, s)
	}
	return out
}

// Close makes every ACME request, in flight or later, fail with ErrClosed;
// certificates already obtained are still served. autocert's renewal
// timers cannot be stopped from outside autocert; when one fires after
// Close its requests fail at once.
func (m *Manager) Close() error {
	m.closeOnce.Do(m.close)
	return nil
}

// acmeStored logs and records a certificate autocert wrote to the cache.
func (m *Manager) acmeStored(host string, rsa bool, leaf *x509.Certificate, err error, renewed bool) {
	keyType := "ecdsa"
	if rsa {
		keyType = "rsa"
	}
	if err != nil {
		m.log.Warn("certificate stored but unreadable", "host", host, "key", keyType, "error", err)
		return
	}
	msg := "certificate obtained"
	if renewed {
		msg = "certificate renewed"
	}
	m.log.Info(msg, "host", host, "key", keyType, "issuer", issuerName(leaf), "not_after", leaf.NotAfter, "source", "acme")
	if m.onACMEOrder != nil {
		m.onACMEOrder(host, nil)
	}
	m.status.obtained(host, leaf, false, m.now())
}

// acmeStoreFailed logs a certificate that could not be written to the
// cache: it is served, but will be obtained again after a restart.
func (m *Manager) acmeStoreFailed(host string, err error) {
	m.log.Error("certificate not cached", "host", host, "error", err)
}

// localIssued logs and records a leaf certificate from the local CA.
func (m *Manager) localIssued(host string, leaf *x509.Certificate, renewed bool) {
	msg := "certificate obtained"
	if renewed {
		msg = "certificate renewed"
	}
	m.log.Info(msg, "host", host, "key", "ecdsa", "issuer", issuerName(leaf), "not_after", leaf.NotAfter, "source", "local")
	m.status.obtained(host, leaf, true, m.now())
}

// autocertPendingRetry is the error autocert returns, for a minute after a
// failed attempt, instead of the failure itself; not a new failure.
const autocertPendingRetry = "acme/autocert: missing certificate"

// failed logs (at most once per failureLogInterval for a repeated error)
// and records a failure to get a certificate for an allowed host.
func (m *Manager) failed(host string, err error) {
	if err.Error() == autocertPendingRetry {
		return
	}
	if m.status.failed(host, err.Error(), m.now()) {
		m.log.Error("certificate failed", "host", host, "error", err)
	}
}
