package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Storage keys that are not certificates (autocert's names).
const (
	acmeAccountKey       = "acme_account+key"
	acmeAccountKeyLegacy = "acme_account.key"
	rsaKeySuffix         = "+rsa"
)

// certKey names one certificate of the Manager: a host's ECDSA one, or its
// RSA one for clients without ECDSA.
type certKey struct {
	host string
	rsa  bool
}

// storageKey is the key of the certificate in Storage (autocert's name).
func (k certKey) storageKey() string {
	if k.rsa {
		return k.host + rsaKeySuffix
	}
	return k.host
}

// keyType names the key type in logs.
func (k certKey) keyType() string {
	if k.rsa {
		return "rsa"
	}
	return "ecdsa"
}

// certCacheKey reports whether key names a certificate in Storage
// ("example.com" or "example.com+rsa"; not the account key, nor "+token"
// and "+http-01" challenge entries), and for which host.
func certCacheKey(key string) (host string, rsa bool, ok bool) {
	if key == acmeAccountKey || key == acmeAccountKeyLegacy {
		return "", false, false
	}
	if h, found := strings.CutSuffix(key, rsaKeySuffix); found {
		key, rsa = h, true
	}
	if key == "" || strings.Contains(key, "+") || strings.Contains(key, "/") {
		return "", false, false
	}
	return key, rsa, true
}

// encodeEntry encodes c as a Storage value: the private key in PEM (SEC 1
// "EC PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY", as autocert writes them),
// then the chain, leaf first.
func encodeEntry(c *tls.Certificate) ([]byte, error) {
	var buf bytes.Buffer
	var block *pem.Block
	switch key := c.PrivateKey.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding key: %w", err)
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	default:
		return nil, fmt.Errorf("encoding key: unsupported key type %T", c.PrivateKey)
	}
	if err := pem.Encode(&buf, block); err != nil {
		return nil, err
	}
	for _, der := range c.Certificate {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// decodeEntry parses a Storage value written by encodeEntry (or by
// autocert) and checks it with validCert for k at now.
func decodeEntry(data []byte, k certKey, now time.Time) (*tls.Certificate, error) {
	priv, rest := pem.Decode(data)
	if priv == nil || !strings.Contains(priv.Type, "PRIVATE") {
		return nil, errors.New("no private key")
	}
	key, err := parsePrivateKey(priv.Bytes)
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for len(rest) > 0 {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		chain = append(chain, b.Bytes)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("trailing data after the chain")
	}
	leaf, err := validCert(k, chain, key, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// parsePrivateKey parses a PKCS #1, PKCS #8 or SEC 1 private key.
func parsePrivateKey(der []byte) (crypto.Signer, error) {
	if key, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return key, nil
	}
	if key, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		switch key := key.(type) {
		case *rsa.PrivateKey:
			return key, nil
		case *ecdsa.PrivateKey:
			return key, nil
		default:
			return nil, fmt.Errorf("unsupported PKCS #8 key type %T", key)
		}
	}
	if key, err := x509.ParseECPrivateKey(der); err == nil {
		return key, nil
	}
	return nil, errors.New("unparsable private key")
}

// validCert parses chain and checks that its leaf is valid at now, names
// k.host, and has the public key of key, of k's type.
func validCert(k certKey, chain [][]byte, key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	for _, der := range chain[1:] {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("parsing chain: %w", err)
		}
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("certificate not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := leaf.VerifyHostname(k.host); err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("private key does not match the certificate")
	}
	_, isRSA := key.(*rsa.PrivateKey)
	if isRSA != k.rsa {
		return nil, fmt.Errorf("certificate has a %s key, want %s", certKey{rsa: isRSA}.keyType(), k.keyType())
	}
	return leaf, nil
}

// parseLeafPEM parses the first certificate of a Storage value (a private
// key block followed by the certificate chain).
func parseLeafPEM(data []byte) (*x509.Certificate, error) {
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
	return nil, errors.New("no certificate in cache entry")
}

// supportsECDSA reports whether the client of hello accepts an ECDSA
// P-256 certificate (autocert's test, plus TLS 1.3): otherwise it gets
// the RSA one.
func supportsECDSA(hello *tls.ClientHelloInfo) bool {
	if hello.SignatureSchemes != nil {
		ok := false
		for _, s := range hello.SignatureSchemes {
			switch s {
			case tls.ECDSAWithSHA1, tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.ECDSAWithP521AndSHA512:
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if hello.SupportedCurves != nil && !slices.Contains(hello.SupportedCurves, tls.CurveP256) {
		return false
	}
	// TLS 1.3 suites do not name a key type: the signature schemes above
	// decide. A QUIC client offers only TLS 1.3 suites, and would
	// otherwise get (and order) the RSA certificate.
	if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
		return true
	}
	for _, suite := range hello.CipherSuites {
		switch suite {
		case tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305:
			return true
		}
	}
	return false
}
