package httpproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/leproxy/leproxy/internal/config"
)

// Limits of every backend transport. Responses get no header timeout: long
// polls and slow reports are legitimate, and the client's own disconnect
// cancels the backend request.
const (
	dialTimeout            = 10 * time.Second
	dialKeepAlive          = 30 * time.Second
	tlsHandshakeTimeout    = 10 * time.Second
	idleConnTimeout        = 90 * time.Second
	expectContinueTimeout  = 1 * time.Second
	maxResponseHeaderBytes = 1 << 20
	// maxIdleConnsPerHost keeps a backend connection for every stream of
	// four HTTP/2 clients at their MaxConcurrentStreams: below the number
	// of requests in flight, each one that finishes past the limit closes
	// its connection and the next one dials again, and under a 32x16
	// stream load that churn was a fifth of leproxy's CPU. Idle
	// connections still close after idleConnTimeout.
	maxIdleConnsPerHost = 4 * MaxConcurrentStreams
)

// upstream is how one proxied host reaches its backend: the URL requests
// are rewritten to and the key of the transport that carries them. Hosts
// whose backends share a key share one transport and its idle connections.
type upstream struct {
	target *url.URL
	key    string
}

// backendUpstream returns the upstream of a proxied (non-static) host.
func backendUpstream(h config.Host) (upstream, error) {
	b := h.Backend
	switch b.Kind {
	case config.BackendTCP:
		if b.Addr == "" {
			return upstream{}, errors.New("tcp backend without address")
		}
		return upstream{
			target: &url.URL{Scheme: "http", Host: b.Addr},
			key:    "tcp " + b.Addr,
		}, nil
	case config.BackendURL:
		if b.URL == nil || b.URL.Host == "" {
			return upstream{}, errors.New("url backend without host")
		}
		if b.URL.Scheme != "http" && b.URL.Scheme != "https" {
			return upstream{}, fmt.Errorf("url backend scheme %q: want http or https", b.URL.Scheme)
		}
		u := *b.URL
		return upstream{target: &u, key: u.Scheme + " " + u.Host}, nil
	case config.BackendUnix, config.BackendAbstract:
		if b.Addr == "" {
			return upstream{}, errors.New("unix socket backend without path")
		}
		// The dialer ignores the URL's host; it names the backend in the
		// Host header when RewriteHost is set.
		return upstream{
			target: &url.URL{Scheme: "http", Host: h.Name},
			key:    "unix " + b.Addr,
		}, nil
	}
	return upstream{}, fmt.Errorf("unsupported backend kind %d", b.Kind)
}

// newTransport returns the transport for backend b, which backendUpstream
// accepted. Environment proxy settings are ignored: backends are reached
// directly. Compression is left to the client and the backend. https URL
// backends are verified against rootCAs (system roots when nil) and spoken
// to over HTTP/2 when they offer it.
func newTransport(b config.Backend, rootCAs *x509.CertPool) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive}
	t := &http.Transport{
		DialContext:            d.DialContext,
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		IdleConnTimeout:        idleConnTimeout,
		ExpectContinueTimeout:  expectContinueTimeout,
		MaxIdleConnsPerHost:    maxIdleConnsPerHost,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		DisableCompression:     true,
	}
	switch b.Kind {
	case config.BackendURL:
		if b.URL.Scheme == "https" {
			t.TLSClientConfig = &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
			t.ForceAttemptHTTP2 = true
		}
	case config.BackendUnix:
		path := b.Addr
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
	case config.BackendAbstract:
		// A leading "@" selects the Linux abstract namespace. uwsgi and
		// the original leproxy count a trailing NUL in the address length,
		// Go servers do not: the two are different names to the kernel, so
		// when the exact name refuses, try the NUL-terminated one.
		name := b.Addr
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", name)
			if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
				if c2, err2 := d.DialContext(ctx, "unix", name+"\x00"); err2 == nil {
					return c2, nil
				}
			}
			return c, err
		}
	}
	return t
}
