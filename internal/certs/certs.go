// Package certs is leproxy's one certificate manager. It obtains and renews
// certificates by ACME (tls-alpn-01 and http-01, and dns-01 for the names
// of a dns-01 ChallengeRule, wildcards included) with its own client on
// golang.org/x/crypto/acme, keeps them in a Storage (autocert's cache
// format on disk), issues certificates for
// localhost and names under .localhost (every name, with Config.Local) from
// a local CA kept in the cache directory, and serves them to every
// listener, so a host name has one certificate whichever port it is used on.
//
// Only names on the allow-list (SetHosts) ever get a certificate; no other
// name ever starts an ACME order. A wildcard on it, "*.example.com",
// serves the names one label under it that are not on it themselves.
//
// Orders go to an ordered list of issuers (Config.Issuers, see
// ParseIssuers and issuer.go): an unavailable issuer passes the order on
// to the next at once, repeated failures at one move the next orders on,
// and a renewal starts at the first again. Each issuer has its own
// account, External Account Binding and ACME profile. Mapping hosts that
// are IP addresses get IP certificates (RFC 8738, ipname.go).
//
// One maintenance goroutine renews each certificate (ARI first, else when
// a third of its lifetime is left; the local CA's leaves too) and retries
// a failed order with exponential backoff (1 minute doubling to 6 hours,
// with jitter); there is never more than one order in flight per
// certificate. Each certificate's schedule (issuer, ARI window, backoff,
// last error) is kept in Storage next to it (schedule.go), so a restart
// obeys it. A certificate is served until it expires whatever the CA
// answers. Every order's outcome is logged and shows in Status.
//
// A Storage shared by several processes (a fleet: internal/etcdstore)
// makes them one: an order runs under the Storage lock of its name and
// reads Storage again once it holds it, so the fleet orders once; with a
// ChallengeStorage the challenge answers are published before the CA is
// told to validate, so any process answers; with a Watcher a certificate
// another process stored replaces the one in memory (see shared.go).
package certs

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/leproxy/leproxy/internal/hostname"
	"github.com/leproxy/leproxy/internal/tlspolicy"
	"golang.org/x/crypto/acme"
)

// ErrNoServerName is returned by GetCertificate for a client that sent no
// server name (SNI). Listeners with a default name use GetCertificateFor.
var ErrNoServerName = errors.New("certs: client sent no server name (SNI)")

// ErrNotMapped is wrapped by the error GetCertificate returns for a server
// name that is not in the mapping.
var ErrNotMapped = errNotAllowed

// acmeChallengePrefix is the URL path prefix of http-01 challenges.
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// Config configures a Manager. The zero value of each field is its default.
type Config struct {
	// CacheDir holds certificates, the ACME account key and the local CA.
	// It is created (mode 0700) if missing. Its format is autocert.DirCache,
	// so the cache of an earlier leproxy or any autocert program is reused.
	CacheDir string
	// Issuers are the ACME CAs, in order of preference (see
	// ParseIssuers): a certificate is ordered from the first; when an
	// issuer is unavailable (see unavailable) the order goes on at the
	// next one, and after fallbackAfter consecutive failed orders at one
	// issuer, the next orders start at the next one. A renewal starts at
	// the first again. Empty means one issuer from DirectoryURL, EABKeyID
	// and EABHMAC. Ignored when Local is set.
	Issuers []IssuerConfig
	// DirectoryURL is the ACME directory (see ResolveDirectory) when
	// Issuers is empty; empty means Let's Encrypt.
	DirectoryURL string
	// Local makes every name get its certificate from the local CA; no
	// ACME server is contacted.
	Local bool
	// Email is the contact address registered with the ACME account.
	Email string
	// EABKeyID and EABHMAC are the External Account Binding credentials
	// some CAs (ZeroSSL) require, for the issuer of DirectoryURL, or for
	// the first of Issuers if it has none of its own; both or neither.
	// EABHMAC is base64url, padded or not (standard base64 is accepted
	// too).
	EABKeyID, EABHMAC string
	// RootCAs are trusted for the ACME server's own HTTPS; nil means the
	// system roots.
	RootCAs *x509.CertPool
	// Logger receives a record for every certificate obtained, renewed or
	// failed; nil discards them.
	Logger *slog.Logger
	// OnACMEOrder, if set, is called once for each certificate ACME
	// issued (err nil) and each failed order (err set), for metrics; not
	// for certificates loaded from Storage, nor for orders cut short by
	// Close or by the host leaving the allow-list.
	OnACMEOrder func(host string, err error)
	// OnACMEEvent, if set, is called for each ACME step, for metrics: a
	// new order placed, a CSR sent to finalize one, an order that failed.
	// It must not block.
	OnACMEEvent func(ACMEEvent)
	// Storage keeps the certificates, the ACME account key and the local
	// CA; nil means a DirStorage on CacheDir. The local root certificate
	// is also written to CacheDir/local-ca/root.pem for clients to trust.
	Storage Storage

	clock clock // nil: the wall clock; a test seam
	noARI bool  // never ask the CA for renewal info; a test seam
}

// Manager serves certificates for the names on its allow-list. Its methods
// are safe for concurrent use. It owns one maintenance goroutine (renewals
// and retries) and the orders in flight; Close stops them.
type Manager struct {
	log   *slog.Logger
	local bool // every name from the local CA
	clock clock

	hosts   atomic.Pointer[hostSet]
	rules   atomic.Pointer[challengeRules] // SetChallenges; nil: none
	setMu   sync.Mutex                     // serializes SetHosts
	storage Storage
	issuers []*issuer // in order of preference; at least one
	ca      *localCA
	status  statusBook // local CA certificates

	challenges challenges
	http01     atomic.Bool // HTTPHandler was called: offer http-01

	stateMu sync.Mutex // serializes saveState, so the last schedule written is the latest
	mu      sync.Mutex // guards entries and closed
	entries map[certKey]*entry
	closed  bool

	wake   chan struct{} // pokes the maintenance loop
	passes atomic.Int64  // maintenance passes done, for tests

	onACMEOrder func(host string, err error)
	onACMEEvent func(ACMEEvent)

	ctx       context.Context // ends with Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the maintenance loop and the orders
	closeOnce sync.Once
}

// New checks the cache directory, loads the local CA if it exists (creating
// it when cfg.Local is set) and returns a Manager with an empty allow-list
// and its maintenance loop running.
func New(cfg Config) (*Manager, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("certs: cache directory not set")
	}
	issuers := slices.Clone(cfg.Issuers)
	if len(issuers) == 0 {
		dirURL := cfg.DirectoryURL
		if dirURL == "" {
			dirURL = LetsEncryptURL
		}
		issuers = []IssuerConfig{{DirectoryURL: dirURL}}
	}
	if cfg.EABKeyID != "" || cfg.EABHMAC != "" {
		if issuers[0].EABKeyID != "" || issuers[0].EABHMAC != "" {
			return nil, fmt.Errorf("certs: issuer %s: External Account Binding given twice (-eab-kid/-eab-hmac and -acme-eab)", cmp.Or(issuers[0].Name, issuers[0].DirectoryURL))
		}
		issuers[0].EABKeyID, issuers[0].EABHMAC = cfg.EABKeyID, cfg.EABHMAC
	}
	eabs := make([]*acme.ExternalAccountBinding, len(issuers))
	for i, ic := range issuers {
		eab, err := externalAccountBinding(ic.EABKeyID, ic.EABHMAC)
		if err != nil {
			if len(issuers) > 1 {
				return nil, fmt.Errorf("issuer %s: %w", cmp.Or(ic.Name, ic.DirectoryURL), err)
			}
			return nil, err
		}
		eabs[i] = eab
	}
	if err := checkCacheDir(cfg.CacheDir); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	clk := cfg.clock
	if clk == nil {
		clk = realClock{}
	}
	storage := cfg.Storage
	if storage == nil {
		storage = NewDirStorage(cfg.CacheDir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:     logger,
		local:   cfg.Local,
		clock:   clk,
		storage: storage,
		ca:      newLocalCA(cfg.CacheDir, storage),
		entries: make(map[certKey]*entry),
		wake:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,

		onACMEOrder: cfg.OnACMEOrder,
		onACMEEvent: cfg.OnACMEEvent,
	}
	m.hosts.Store(&hostSet{})
	m.ca.now = clk.Now
	m.ca.constrain = !cfg.Local
	m.ca.onIssue = m.localIssued
	m.ca.onRootCreated = func(root *x509.Certificate) {
		m.log.Info("local CA created", "file", m.ca.rootPath, "subject", root.Subject.CommonName, "not_after", root.NotAfter)
	}
	var err error
	if cfg.Local {
		_, _, err = m.ca.ensureRoot()
	} else {
		err = m.ca.loadIfExists()
	}
	if err != nil {
		cancel()
		return nil, err
	}

	httpc := newACMEHTTPClient(cfg.RootCAs, ctx)
	for i, ic := range issuers {
		is := newIssuer(ic.DirectoryURL, cfg.Email, eabs[i], httpc, storage)
		is.index, is.name, is.profile, is.noARI = i, cmp.Or(ic.Name, ic.DirectoryURL), ic.Profile, cfg.noARI
		if i == 0 {
			// What a single-issuer leproxy, and autocert, wrote.
			is.keyName, is.legacy = acmeAccountKey, true
		}
		m.issuers = append(m.issuers, is)
	}
	if !cfg.Local {
		for _, is := range m.issuers {
			pctx, pcancel := context.WithTimeout(ctx, profileCheckTimeout)
			err := m.checkProfile(pctx, is)
			pcancel()
			if err != nil {
				cancel()
				return nil, err
			}
		}
	}
	m.wg.Go(m.maintain)
	if w, ok := storage.(Watcher); ok && !cfg.Local {
		m.wg.Go(func() { m.watchStorage(w) })
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
//
// A client that sent no SNI but reached an IP address on the allow-list
// gets that address's certificate (clients send no SNI for an address).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		if ip := m.localIPName(hello); ip != "" {
			return m.GetCertificateFor(ip, hello)
		}
		return nil, ErrNoServerName
	}
	if wantsChallengeCert(hello) {
		return m.challengeCert(hello)
	}
	return m.certificate(helloContext(hello), hello)
}

// helloContext returns the handshake's context, which ends with the
// handshake's deadline; Background for a hello not from a handshake.
func helloContext(hello *tls.ClientHelloInfo) context.Context {
	if hello != nil {
		if ctx := hello.Context(); ctx != nil {
			return ctx
		}
	}
	return context.Background()
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
	return m.certificate(helloContext(hello), &h)
}

// certificate serves the certificate for hello.ServerName, waiting for an
// order no longer than ctx allows.
func (m *Manager) certificate(ctx context.Context, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	host := m.certName(hostname.Normalize(hello.ServerName))
	if host == "" {
		return nil, fmt.Errorf("certs: no certificate for %q: %w", hello.ServerName, ErrNotMapped)
	}
	if m.local || isLocalhostName(host) {
		c, err := m.ca.certificate(host)
		if err != nil {
			m.failed(host, err)
			return nil, err
		}
		return c, nil
	}
	c, err := m.acmeCertificate(ctx, certKey{host: host, rsa: !supportsECDSA(hello)})
	if err != nil {
		return nil, fmt.Errorf("certs: certificate for %s: %w", host, err)
	}
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
// gets the certificate of the IP address it reached if that is on the
// allow-list, else that of defaultName (none if defaultName is empty).
// nextProtos is the listener's ALPN list, possibly empty. It has
// leproxy's TLS policy (see tlspolicy).
func (m *Manager) TLSConfigWithDefault(defaultName string, nextProtos ...string) *tls.Config {
	cfg := &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if wantsChallengeCert(hello) {
				return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q on a listener that answers none", hello.ServerName)
			}
			if hello.ServerName == "" && defaultName != "" && m.localIPName(hello) == "" {
				return m.GetCertificateFor(defaultName, hello)
			}
			return m.GetCertificate(hello)
		},
		NextProtos: slices.Clone(nextProtos),
	}
	tlspolicy.Apply(cfg)
	return cfg
}

// LocalRootPath returns the path of the local CA's root certificate (PEM),
// which clients of .localhost names, or of every name with Config.Local,
// must trust. The file may not exist yet when Config.Local is not set.
func (m *Manager) LocalRootPath() string {
	return m.ca.rootPath
}

// Close stops the maintenance loop and every order in flight, and waits
// for them; ACME requests after Close fail with ErrClosed. Certificates
// already obtained are still served.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.cancel()
		m.wg.Wait()
	})
	return nil
}

// localIssued logs and records a leaf certificate from the local CA.
func (m *Manager) localIssued(host string, leaf *x509.Certificate, renewed bool) {
	msg := "certificate obtained"
	if renewed {
		msg = "certificate renewed"
	}
	m.log.Info(msg, "host", host, "key", "ecdsa", "issuer", "local", "cert_issuer", issuerName(leaf), "not_after", leaf.NotAfter, "source", "local")
	m.status.obtained(host, leaf, true, m.clock.Now())
}

// failed logs (at most once per failureLogInterval for a repeated error)
// and records a failure of the local CA for an allowed host.
func (m *Manager) failed(host string, err error) {
	if m.status.failed(host, err.Error(), m.clock.Now()) {
		m.log.Error("certificate failed", "host", host, "error", err, "source", "local")
	}
}
