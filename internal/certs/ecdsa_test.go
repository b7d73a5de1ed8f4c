package certs

import (
	"crypto/tls"
	"testing"
)

func TestSupportsECDSA(t *testing.T) {
	tls13 := []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256}
	for _, tc := range []struct {
		name  string
		hello tls.ClientHelloInfo
		want  bool
	}{
		{"TLS 1.3 only (QUIC)", tls.ClientHelloInfo{
			CipherSuites:      tls13,
			SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256},
			SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
		}, true},
		{"TLS 1.3 without ECDSA signatures", tls.ClientHelloInfo{
			CipherSuites:      tls13,
			SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes:  []tls.SignatureScheme{tls.PSSWithSHA256},
		}, false},
		{"TLS 1.3 without P-256", tls.ClientHelloInfo{
			CipherSuites:      tls13,
			SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:   []tls.CurveID{tls.X25519},
		}, false},
		{"TLS 1.2 ECDSA suite", tls.ClientHelloInfo{
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS12},
		}, true},
		{"TLS 1.2 RSA suites only", tls.ClientHelloInfo{
			CipherSuites:      []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS12},
		}, false},
	} {
		if got := supportsECDSA(&tc.hello); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
