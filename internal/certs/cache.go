package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"

	"golang.org/x/crypto/acme/autocert"
)

// Cache keys that autocert uses for other things than certificates.
const (
	acmeAccountKey       = "acme_account+key"
	acmeAccountKeyLegacy = "acme_account.key"
	rsaKeySuffix         = "+rsa"
)

// observedCache is autocert's DirCache (the cache format of leproxy and of
// any autocert user) that reports every certificate written to it, which is
// how the Manager learns that autocert obtained or renewed a certificate.
type observedCache struct {
	dir autocert.DirCache
	// stored is called after a certificate was written under key: host is
	// its name, rsa whether it is the RSA variant, leaf the parsed first
	// certificate (nil with err set if it could not be parsed) and renewed
	// whether an entry existed before.
	stored func(host string, rsa bool, leaf *x509.Certificate, err error, renewed bool)
	// storeFailed is called when writing a certificate failed (autocert
	// ignores that error).
	storeFailed func(host string, err error)
}

var _ autocert.Cache = (*observedCache)(nil)

// Get implements autocert.Cache.
func (c *observedCache) Get(ctx context.Context, key string) ([]byte, error) {
	return c.dir.Get(ctx, key)
}

// Put implements autocert.Cache.
func (c *observedCache) Put(ctx context.Context, key string, data []byte) error {
	host, rsa, ok := certCacheKey(key)
	if !ok {
		return c.dir.Put(ctx, key, data)
	}
	_, err := c.dir.Get(ctx, key)
	renewed := err == nil
	if err := c.dir.Put(ctx, key, data); err != nil {
		if c.storeFailed != nil {
			c.storeFailed(host, err)
		}
		return err
	}
	if c.stored != nil {
		leaf, err := parseLeafPEM(data)
		c.stored(host, rsa, leaf, err, renewed)
	}
	return nil
}

// Delete implements autocert.Cache.
func (c *observedCache) Delete(ctx context.Context, key string) error {
	return c.dir.Delete(ctx, key)
}

// leaf returns the ECDSA certificate cached for host, or nil.
func (c *observedCache) leaf(ctx context.Context, host string) *x509.Certificate {
	data, err := c.dir.Get(ctx, host)
	if err != nil {
		return nil
	}
	leaf, err := parseLeafPEM(data)
	if err != nil {
		return nil
	}
	return leaf
}

// certCacheKey reports whether key names a certificate in autocert's cache
// ("example.com" or "example.com+rsa"; not the account key, nor
// "+token" and "+http-01" challenge entries), and for which host.
func certCacheKey(key string) (host string, rsa bool, ok bool) {
	if key == acmeAccountKey || key == acmeAccountKeyLegacy {
		return "", false, false
	}
	if h, found := strings.CutSuffix(key, rsaKeySuffix); found {
		key, rsa = h, true
	}
	if key == "" || strings.Contains(key, "+") {
		return "", false, false
	}
	return key, rsa, true
}

// parseLeafPEM parses the first certificate of an autocert cache entry
// (a private key block followed by the certificate chain).
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
