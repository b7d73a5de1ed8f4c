package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sync"

	"golang.org/x/crypto/acme"
)

// issuer is one ACME CA with its account: created on first use (the key
// generated and stored under keyName if Storage has none, then
// registered; an account that already exists for the key is fine) and kept
// for the Manager's life. The first issuer also loads the account key of
// a cache from before there were several issuers (acme_account+key).
type issuer struct {
	index   int    // position in Config.Issuers
	name    string // in logs, metrics and Status
	dirURL  string
	profile string // ACME profile of every order; "" for the CA's default
	email   string
	eab     *acme.ExternalAccountBinding
	httpc   *http.Client
	storage Storage
	keyName string // Storage key of the account key
	legacy  bool   // also read acme_account+key (the first issuer)

	sem    chan struct{} // capacity 1: held while the account is set up
	client *acme.Client  // registered; nil until then

	noARI    bool       // never use ARI (a test seam)
	ariMu    sync.Mutex // guards ariURL and ariKnown
	ariURL   string     // the directory's renewalInfo, "" if none
	ariKnown bool       // the directory was read
}

// newIssuer returns the issuer of the ACME directory dirURL.
func newIssuer(dirURL, email string, eab *acme.ExternalAccountBinding, httpc *http.Client, storage Storage) *issuer {
	return &issuer{name: dirURL, dirURL: dirURL, email: email, eab: eab, httpc: httpc, storage: storage,
		keyName: accountKeyName(dirURL), sem: make(chan struct{}, 1)}
}

// acmeClient returns the issuer's registered client, loading or creating
// the account on the first call (and on the next call after a failure).
// Its errors are *accountError.
func (is *issuer) acmeClient(ctx context.Context) (*acme.Client, error) {
	select {
	case is.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the ACME account: %w", ctx.Err())
	}
	defer func() { <-is.sem }()
	if is.client != nil {
		return is.client, nil
	}
	key, err := is.accountKey(ctx)
	if err != nil {
		return nil, &accountError{err}
	}
	c := &acme.Client{Key: key, DirectoryURL: is.dirURL, HTTPClient: is.httpc, UserAgent: "leproxy"}
	acct := &acme.Account{ExternalAccountBinding: is.eab}
	if is.email != "" {
		acct.Contact = []string{"mailto:" + is.email}
	}
	if _, err := c.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		how := "without External Account Binding"
		if is.eab != nil {
			how = fmt.Sprintf("with External Account Binding key ID %q", is.eab.KID)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("registering ACME account with %s: %w", is.name, err)
		}
		return nil, &accountError{fmt.Errorf("registering ACME account with %s (%s) %s: %w", is.name, is.dirURL, how, err)}
	}
	is.client = c
	return c, nil
}

// accountKey reads the account key from Storage, under a lock, creating it
// if absent.
func (is *issuer) accountKey(ctx context.Context) (crypto.Signer, error) {
	if k, err := is.readAccountKey(ctx); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := is.storage.Lock(ctx, is.keyName); err != nil {
		return nil, fmt.Errorf("loading ACME account key: %w", err)
	}
	defer is.storage.Unlock(context.WithoutCancel(ctx), is.keyName)
	ctx = ContextWithLock(ctx, is.keyName)
	// Another process may have created it meanwhile.
	if k, err := is.readAccountKey(ctx); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ACME account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding ACME account key: %w", err)
	}
	if err := is.storage.Put(ctx, is.keyName, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, fmt.Errorf("storing ACME account key: %w", err)
	}
	return key, nil
}

// readAccountKey reads the account key under its name or, for the first
// issuer, autocert's names; the error wraps fs.ErrNotExist if none exists.
func (is *issuer) readAccountKey(ctx context.Context) (crypto.Signer, error) {
	names := []string{is.keyName}
	if is.legacy {
		names = append(names, acmeAccountKey, acmeAccountKeyLegacy)
	}
	var data []byte
	var err error
	var name string
	for _, name = range names {
		if data, err = is.storage.Get(ctx, name); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading ACME account key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "EC PRIVATE KEY" && block.Type != "PRIVATE KEY" && block.Type != "RSA PRIVATE KEY" {
		return nil, fmt.Errorf("loading ACME account key %s: no PEM private key", name)
	}
	key, err := parsePrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("loading ACME account key %s: %w", name, err)
	}
	return key, nil
}
