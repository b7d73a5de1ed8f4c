package certs

import (
	"context"
	"crypto/tls"

	"github.com/leproxy/leproxy/internal/hostname"
)

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

// Prefetch obtains (or loads from Storage) the certificate of each
// allowed name, one after another, so that the first client does not wait
// for an ACME order and health checks see every certificate. It stops when
// ctx ends, which also stops waiting for the order in flight (the order
// itself goes on, bounded by Close). Failures are logged and recorded like
// a handshake's.
func (m *Manager) Prefetch(ctx context.Context, names []string) {
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		if !m.Allowed(name) {
			continue
		}
		hello := prefetchHello(hostname.Normalize(name))
		m.certificate(ctx, hello)
	}
}
