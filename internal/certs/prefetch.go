package certs

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
)

// stopGrace is how long a stopping Prefetch waits for an order in flight.
const stopGrace = 10 * time.Second

// prefetchHello is the ClientHello of a modern client, so that a prefetch
// gets the ECDSA certificate real clients will be served.
func prefetchHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        name,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedPoints:   []uint8{0},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
}

// Prefetch obtains (or loads from the cache) the certificate of each
// allowed name, one after another, so that the first client does not wait
// for an ACME order and health checks see every certificate. It stops when
// ctx ends, after up to stopGrace for the order in flight to be stored. Failures are logged and recorded like a handshake's; the next
// handshake for that name tries again.
func (m *Manager) Prefetch(ctx context.Context, names []string) {
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		if !m.Allowed(name) {
			continue
		}
		hello := prefetchHello(hostname.Normalize(name))
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.GetCertificateFor(hello.ServerName, hello)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			// autocert's order cannot be cancelled and stores the
			// certificate only when it returns: give it a moment, so
			// that a certificate issued just before a stop is kept.
			select {
			case <-done:
			case <-time.After(stopGrace):
			}
			return
		case <-time.After(5 * time.Minute):
			// autocert bounds its own orders; don't let one name stall the rest.
		}
	}
}
