package certs

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/leproxy/leproxy/internal/hostname"
)

// Challenge types, as ACME names them.
const (
	challengeTLSALPN01 = "tls-alpn-01"
	challengeHTTP01    = "http-01"
)

// challenges holds the answers to the challenges of orders in flight: the
// tls-alpn-01 certificate per name and the http-01 key authorization per
// URL path. Safe for concurrent use.
type challenges struct {
	mu    sync.Mutex
	certs map[string]*tls.Certificate // host → tls-alpn-01 certificate
	http  map[string]string           // URL path → key authorization
}

func (c *challenges) putCert(host string, cert *tls.Certificate) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certs == nil {
		c.certs = make(map[string]*tls.Certificate)
	}
	c.certs[host] = cert
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.certs[host] == cert {
			delete(c.certs, host)
		}
	}
}

func (c *challenges) cert(host string) *tls.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.certs[host]
}

func (c *challenges) putHTTP(path, keyAuth string) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.http == nil {
		c.http = make(map[string]string)
	}
	c.http[path] = keyAuth
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.http, path)
	}
}

func (c *challenges) httpResponse(path string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.http[path]
	return s, ok
}

// challengeCert answers a tls-alpn-01 validation for hello.ServerName.
func (m *Manager) challengeCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.local {
		return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q, but ACME is off (local CA only)", hello.ServerName)
	}
	host := hostname.Normalize(hello.ServerName)
	if ip, ok := ipFromReverseName(host); ok {
		host = ip // RFC 8738 §6: the address's reverse-DNS name
	}
	if !m.Allowed(host) {
		return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q: host is not in the mapping", hello.ServerName)
	}
	if c := m.challenges.cert(host); c != nil {
		return c, nil
	}
	// Another process of a fleet may have placed the order.
	if c, err := m.sharedChallengeCert(helloContext(hello), host); err == nil {
		return c, nil
	}
	return nil, fmt.Errorf("certs: tls-alpn-01 challenge for %q: no order in flight", hello.ServerName)
}

// HTTPHandler answers http-01 challenges (for allowed names, whatever the
// port in the Host header) and passes every other request to fallback. A
// nil fallback redirects GET and HEAD to https on port 443 and refuses
// other methods (and answers 404 for a host not in the mapping). Once it
// has been called, orders offer http-01 after tls-alpn-01.
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	m.http01.Store(true)
	if fallback == nil {
		fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !m.Allowed(stripPort(r.Host)) {
				http.NotFound(w, r)
				return
			}
			redirectToHTTPS(w, r)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, acmeChallengePrefix) {
			fallback.ServeHTTP(w, r)
			return
		}
		host := stripPort(r.Host)
		if !m.Allowed(host) {
			http.Error(w, fmt.Sprintf("certs: host %q is not in the mapping", host), http.StatusForbidden)
			return
		}
		resp, ok := m.challenges.httpResponse(r.URL.Path)
		if !ok {
			// Another process of a fleet may have placed the order.
			resp, ok = m.sharedHTTPResponse(r.Context(), strings.TrimPrefix(r.URL.Path, acmeChallengePrefix))
		}
		if !ok {
			http.Error(w, "certs: no such challenge token", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(resp)) // #nosec G705 -- a key authorization (possibly from the shared store), served as text/plain
	})
}

// redirectToHTTPS redirects GET and HEAD to the same URL on https, port
// 443, and refuses other methods (autocert's behaviour). The caller checks
// the host is mapped.
func redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "Use HTTPS", http.StatusBadRequest)
		return
	}
	target := "https://" + net.JoinHostPort(stripPort(r.Host), "443") + r.URL.RequestURI()
	http.Redirect(w, r, target, http.StatusFound) // #nosec G710 -- same host the client asked for, checked to be mapped by the caller, on https
}
