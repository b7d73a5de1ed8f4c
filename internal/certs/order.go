package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/acme"
)

// ACMEEvent kinds.
const (
	ACMEOrderPlaced = "order"    // a newOrder request the CA accepted
	ACMEFinalized   = "finalize" // a CSR sent to finalize an order
	ACMEFailed      = "failure"  // an order (all its challenge types tried) that failed
)

// ACMEEvent is one step of an ACME order, as Config.OnACMEEvent sees it.
type ACMEEvent struct {
	// Kind is ACMEOrderPlaced, ACMEFinalized or ACMEFailed.
	Kind string
	// Issuer is the issuer's name (IssuerConfig.Name: "letsencrypt",
	// "zerossl", or the CA's directory URL).
	Issuer string
	// Host is the name ordered.
	Host string
	// Challenge is the challenge type of the failed attempt (ACMEFailed;
	// empty if the order failed before one was tried).
	Challenge string
}

// event reports an ACME step at is to Config.OnACMEEvent.
func (m *Manager) event(kind string, is *issuer, host, challenge string) {
	if m.onACMEEvent != nil {
		m.onACMEEvent(ACMEEvent{Kind: kind, Issuer: is.name, Host: host, Challenge: challenge})
	}
}

// deactivateTimeout bounds the clean-up of an order's pending
// authorizations after a failure.
const deactivateTimeout = 30 * time.Second

// orderError is a failed order: which CA, which challenge (empty before one
// was tried) and the error, which wraps the CA's problem document
// (*acme.Error) when there is one.
type orderError struct {
	issuer    *issuer
	challenge string
	err       error
}

func (e *orderError) Error() string {
	if e.challenge == "" {
		return e.err.Error()
	}
	return e.challenge + ": " + e.err.Error()
}

func (e *orderError) Unwrap() error { return e.err }

// obtainAny orders a certificate for k from the issuers, starting at the
// one of index start: while an issuer is unavailable (see unavailable),
// the order goes on at the next one, wrapping around, each tried once.
// replaces (the ARI CertID of the certificate being renewed) is sent only
// to replacesAt, the issuer of that certificate. It returns the issuer
// that issued the certificate, or that of the last failure.
func (m *Manager) obtainAny(ctx context.Context, k certKey, start int, replaces string, replacesAt *issuer) (*tls.Certificate, *issuer, error) {
	n := len(m.issuers)
	var is *issuer
	var err error
	for i := range n {
		is = m.issuers[(start+i)%n]
		rep := ""
		if is == replacesAt {
			rep = replaces
		}
		var c *tls.Certificate
		c, err = m.obtain(ctx, is, k, rep)
		if err == nil {
			return c, is, nil
		}
		if ctx.Err() != nil || !unavailable(err) || i == n-1 {
			break
		}
		next := m.issuers[(start+i+1)%n]
		m.log.Warn("issuer unavailable; ordering from the next one", "host", k.host, "key", k.keyType(),
			"issuer", is.name, "ca", is.dirURL, "error", err, "next_issuer", next.name)
		m.event(ACMEFailed, is, k.host, challengeOf(err))
	}
	return nil, is, err
}

// challengeOf returns the challenge type of a failed order, "" if none
// was tried.
func challengeOf(err error) string {
	var oe *orderError
	if errors.As(err, &oe) {
		return oe.challenge
	}
	return ""
}

// obtain orders a certificate for k from the issuer is and returns it. It
// tries each challenge type in turn (tls-alpn-01, then http-01 if the
// http-01 handler is wired), each in a new order, like autocert, unless
// the issuer is unavailable.
//
// With replaces (the ARI CertID of the certificate being renewed), the
// first order carries it (RFC 9773 §5); if the CA refuses that order, it is
// placed again without.
func (m *Manager) obtain(ctx context.Context, is *issuer, k certKey, replaces string) (*tls.Certificate, error) {
	client, err := is.acmeClient(ctx)
	if err != nil {
		return nil, &orderError{issuer: is, err: err}
	}
	var key crypto.Signer
	if k.rsa {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", k.keyType(), err)
	}
	csr, err := certRequest(key, k.host)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	types, dns01, err := m.challengeTypes(k.host)
	if err != nil {
		return nil, &orderError{issuer: is, err: err}
	}
	var last error
	var opts []acme.OrderOption
	if is.profile != "" {
		opts = append(opts, acme.WithOrderIssuanceProfile(acme.ProfileName(is.profile)))
	}
	plain := func() (*acme.Order, error) { return client.AuthorizeOrder(ctx, identifiers(k.host), opts...) }
	for _, typ := range types {
		newOrder := plain
		if replaces != "" {
			id := replaces
			replaces = "" // the first order only
			newOrder = func() (*acme.Order, error) {
				o, err := newOrderReplacing(ctx, client, is.httpc, k.host, id, is.profile)
				if err == nil || ctx.Err() != nil {
					return o, err
				}
				m.log.Warn("order replacing a certificate refused; ordering without replaces", "host", k.host, "key", k.keyType(), "issuer", is.name, "ca", is.dirURL, "replaces", id, "error", err)
				return plain()
			}
		}
		o, err := m.authorize(ctx, is, client, k.host, newOrder, typ, dns01)
		if err != nil {
			last = &orderError{issuer: is, challenge: typ, err: err}
			if ctx.Err() != nil || unavailable(err) {
				break
			}
			continue
		}
		m.event(ACMEFinalized, is, k.host, typ)
		chain, _, err := client.CreateCertFromOrder(ctx, o, csr, true)
		if err != nil {
			return nil, &orderError{issuer: is, challenge: typ, err: fmt.Errorf("finalizing order: %w", err)}
		}
		leaf, err := validCert(k, chain, key, m.clock.Now())
		if err != nil {
			return nil, &orderError{issuer: is, challenge: typ, err: fmt.Errorf("certificate from CA: %w", err)}
		}
		return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
	}
	return nil, last
}

// authorizedHook, when set by a test, sees every order authorize returns
// ready, with the client that placed it.
var authorizedHook func(client *acme.Client, o *acme.Order)

// authorize places a new order with newOrder and satisfies its authorizations
// with challenge type typ (answered by dns01 for dns-01); it returns the
// order once it is ready to be finalized. On failure the order's pending
// authorizations are deactivated.
func (m *Manager) authorize(ctx context.Context, is *issuer, client *acme.Client, host string, newOrder func() (*acme.Order, error), typ string, dns01 *DNS01) (*acme.Order, error) {
	o, err := newOrder()
	if err != nil {
		return nil, fmt.Errorf("creating order: %w", err)
	}
	m.event(ACMEOrderPlaced, is, host, typ)
	ok := false
	defer func() {
		if !ok {
			m.deactivate(client, o.AuthzURLs)
		} else if authorizedHook != nil {
			authorizedHook(client, o)
		}
	}()
	switch o.Status {
	case acme.StatusReady:
		ok = true
		return o, nil
	case acme.StatusPending:
	default:
		return nil, fmt.Errorf("new order %s has status %q", o.URI, o.Status)
	}
	for _, zurl := range o.AuthzURLs {
		z, err := client.GetAuthorization(ctx, zurl)
		if err != nil {
			return nil, fmt.Errorf("fetching authorization: %w", err)
		}
		if z.Status != acme.StatusPending {
			continue
		}
		var chal *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == typ {
				chal = c
			}
		}
		if chal == nil {
			return nil, fmt.Errorf("CA offers no %s challenge for %s", typ, z.Identifier.Value)
		}
		var cleanup func()
		if typ == challengeDNS01 {
			cleanup, err = m.fulfillDNS01(ctx, client, chal, z.Identifier.Value, dns01)
		} else {
			cleanup, err = m.fulfill(ctx, client, chal, z.Identifier.Value)
		}
		if err != nil {
			return nil, err
		}
		defer cleanup()
		if challengeHook != nil {
			challengeHook(host, typ)
		}
		if _, err := client.Accept(ctx, chal); err != nil {
			return nil, fmt.Errorf("accepting challenge: %w", err)
		}
		if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
			return nil, fmt.Errorf("authorization: %w", err)
		}
	}
	uri := o.URI
	o, err = client.WaitOrder(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("waiting for order: %w", err)
	}
	o.URI = uri // not in the order's body
	ok = true
	return o, nil
}

// challengeHook, when set by a test, is called once the answer to a
// challenge is published and before the CA is told to validate it.
var challengeHook func(host, typ string)

// fulfill publishes the answer to chal for name, in memory and, with a
// ChallengeStorage, in Storage (acknowledged before it returns, so any
// process can answer the CA); the returned function withdraws it.
func (m *Manager) fulfill(ctx context.Context, client *acme.Client, chal *acme.Challenge, name string) (func(), error) {
	switch chal.Type {
	case challengeTLSALPN01:
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return nil, fmt.Errorf("creating tls-alpn-01 certificate: %w", err)
		}
		var unpublish func()
		if m.shared() != nil {
			data, err := encodeEntry(&cert)
			if err != nil {
				return nil, fmt.Errorf("encoding tls-alpn-01 certificate: %w", err)
			}
			if unpublish, err = m.publishChallenge(ctx, certTokenKey(name), data); err != nil {
				return nil, fmt.Errorf("publishing tls-alpn-01 certificate: %w", err)
			}
		}
		drop := m.challenges.putCert(name, &cert)
		return func() {
			drop()
			if unpublish != nil {
				unpublish()
			}
		}, nil
	case challengeHTTP01:
		resp, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return nil, fmt.Errorf("creating http-01 response: %w", err)
		}
		unpublish, err := m.publishChallenge(ctx, httpTokenKey(chal.Token), []byte(resp))
		if err != nil {
			return nil, fmt.Errorf("publishing http-01 response: %w", err)
		}
		drop := m.challenges.putHTTP(client.HTTP01ChallengePath(chal.Token), resp)
		return func() {
			drop()
			unpublish()
		}, nil
	}
	return nil, fmt.Errorf("unsupported challenge type %q", chal.Type)
}

// deactivate deactivates the pending authorizations among urls, so that
// they do not count against the CA's limits; best effort, bounded by
// deactivateTimeout and by Close.
func (m *Manager) deactivate(client *acme.Client, urls []string) {
	ctx, cancel := context.WithTimeout(m.ctx, deactivateTimeout)
	defer cancel()
	for _, u := range urls {
		z, err := client.GetAuthorization(ctx, u)
		if err == nil && z.Status == acme.StatusPending {
			client.RevokeAuthorization(ctx, u)
		}
	}
}

// identifiers returns the ACME identifiers of host: an IP address or a DNS
// name.
func identifiers(host string) []acme.AuthzID {
	if net.ParseIP(host) != nil {
		return acme.IPIDs(host)
	}
	return acme.DomainIDs(host)
}

// certRequest returns a DER CSR for host signed by key.
func certRequest(key crypto.Signer, host string) ([]byte, error) {
	req := &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}
	if ip := net.ParseIP(host); ip != nil {
		req.Subject = pkix.Name{}
		req.IPAddresses = []net.IP{ip}
	} else {
		req.DNSNames = []string{host}
	}
	return x509.CreateCertificateRequest(rand.Reader, req, key)
}

// problem returns the CA's problem document in err, if any.
func problem(err error) *acme.Error {
	var ae *acme.Error
	if errors.As(err, &ae) {
		return ae
	}
	var aze *acme.AuthorizationError
	if errors.As(err, &aze) {
		for _, e := range aze.Errors {
			if errors.As(e, &ae) {
				return ae
			}
		}
	}
	return nil
}
