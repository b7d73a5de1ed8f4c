package certs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
	"golang.org/x/crypto/acme"
)

// challengeDNS01 is the dns-01 challenge type (RFC 8555 §8.4).
const challengeDNS01 = "dns-01"

// Bounds of a dns-01 challenge.
const (
	// defaultPropagationTimeout bounds the wait for the check servers to
	// answer the TXT record.
	defaultPropagationTimeout = 2 * time.Minute
	// dnsCleanupTimeout bounds the removal of a TXT record, which runs even
	// when the order was cancelled.
	dnsCleanupTimeout = 30 * time.Second
)

// DNSProvider publishes and removes the TXT records of dns-01 challenges.
// Its methods must honour ctx and be safe for concurrent use.
type DNSProvider interface {
	// Present publishes a TXT record of fqdn ("_acme-challenge.example.com.")
	// holding value, beside any other TXT records of fqdn.
	Present(ctx context.Context, fqdn, value string) error
	// CleanUp removes exactly that record.
	CleanUp(ctx context.Context, fqdn, value string) error
}

// DNS01 is how the names of a ChallengeRule answer dns-01 challenges.
type DNS01 struct {
	// Provider publishes the records.
	Provider DNSProvider
	// CheckServers are DNS servers (host:port), normally the zone's
	// authoritative ones, that are asked for the record until each
	// answers it, before the CA is told to validate. None: the CA is told
	// as soon as Present returns.
	CheckServers []string
	// PropagationTimeout bounds that wait; 0 means 2 minutes.
	PropagationTimeout time.Duration
}

// ChallengeRule says which challenge the certificates of Names are
// obtained with.
type ChallengeRule struct {
	// Names are host names of the allow-list, wildcards ("*.example.com")
	// included.
	Names []string
	// Type is "dns-01", "tls-alpn-01" or "http-01".
	Type string
	// DNS01 answers dns-01 challenges; required with that Type.
	DNS01 *DNS01
}

// challengeRules is an immutable set of ChallengeRules by normalised name.
type challengeRules map[string]*ChallengeRule

// SetChallenges replaces the challenge rules. Names without a rule get
// their certificates with tls-alpn-01 (then http-01 when HTTPHandler is
// wired); a wildcard name needs a dns-01 rule. Orders started afterwards
// use the new rules. Call it before SetHosts allows new names, so that
// they are never ordered with the old rules.
func (m *Manager) SetChallenges(rules []ChallengeRule) error {
	s := make(challengeRules)
	for i := range rules {
		r := &rules[i]
		switch r.Type {
		case challengeDNS01:
			if r.DNS01 == nil || r.DNS01.Provider == nil {
				return fmt.Errorf("certs: challenge rule for %s: dns-01 without a DNS provider", strings.Join(r.Names, ", "))
			}
		case challengeTLSALPN01, challengeHTTP01:
		default:
			return fmt.Errorf("certs: challenge rule for %s: unknown challenge type %q", strings.Join(r.Names, ", "), r.Type)
		}
		for _, n := range r.Names {
			n = hostname.Normalize(n)
			if hostname.IsWildcard(n) && r.Type != challengeDNS01 {
				return fmt.Errorf("certs: wildcard %s can only be validated with dns-01, not %s", n, r.Type)
			}
			s[n] = r
		}
	}
	m.rules.Store(&s)
	return nil
}

// challengeTypes returns the challenge types to try, in order, for the
// certificate of host (a name of the allow-list), and its dns-01
// configuration when that is the type.
func (m *Manager) challengeTypes(host string) ([]string, *DNS01, error) {
	if rs := m.rules.Load(); rs != nil {
		if r := (*rs)[host]; r != nil {
			switch r.Type {
			case challengeDNS01:
				return []string{challengeDNS01}, r.DNS01, nil
			case challengeHTTP01:
				if !m.http01.Load() {
					return nil, nil, fmt.Errorf("http-01 chosen for %s, but no HTTP listener answers it", host)
				}
			}
			return []string{r.Type}, nil, nil
		}
	}
	if hostname.IsWildcard(host) {
		return nil, nil, fmt.Errorf("wildcard %s needs a dns-01 challenge rule", host)
	}
	types := []string{challengeTLSALPN01}
	if m.http01.Load() {
		types = append(types, challengeHTTP01)
	}
	return types, nil, nil
}

// dns01Name is the name of the TXT record answering the dns-01 challenge
// of an authorization for domain (a wildcard's authorization holds the
// name without "*.", RFC 8555 §7.1.3).
func dns01Name(domain string) string {
	return "_acme-challenge." + strings.TrimSuffix(strings.TrimPrefix(domain, "*."), ".") + "."
}

// fulfillDNS01 publishes the answer to the dns-01 challenge chal for domain
// with cfg and waits until cfg's check servers serve it; the returned
// function removes the record, bounded by dnsCleanupTimeout whatever ctx
// says.
func (m *Manager) fulfillDNS01(ctx context.Context, client *acme.Client, chal *acme.Challenge, domain string, cfg *DNS01) (func(), error) {
	value, err := client.DNS01ChallengeRecord(chal.Token)
	if err != nil {
		return nil, fmt.Errorf("creating dns-01 record: %w", err)
	}
	fqdn := dns01Name(domain)
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dnsCleanupTimeout)
		defer cancel()
		if err := cfg.Provider.CleanUp(cctx, fqdn, value); err != nil {
			m.log.Warn("dns-01 record not removed", "record", fqdn, "error", err)
		}
	}
	if err := cfg.Provider.Present(ctx, fqdn, value); err != nil {
		cleanup() // a hook may have done half of it
		return nil, &dnsSideError{fmt.Errorf("publishing %s TXT: %w", fqdn, err)}
	}
	timeout := cfg.PropagationTimeout
	if timeout <= 0 {
		timeout = defaultPropagationTimeout
	}
	if err := waitForTXT(ctx, cfg.CheckServers, fqdn, value, timeout); err != nil {
		cleanup()
		return nil, &dnsSideError{err}
	}
	return cleanup, nil
}

// dnsSideError is a failure on leproxy's side of a dns-01 challenge (the
// DNS server, the hook), not the CA's: it hides the network errors in it
// from the issuer fallback (unavailable), since every issuer would meet
// the same DNS, while a DNSError and the context's errors stay visible.
type dnsSideError struct{ err error }

func (e *dnsSideError) Error() string { return e.err.Error() }

// Is reports the context's errors (and any other) the wrapped error holds.
func (e *dnsSideError) Is(target error) bool { return errors.Is(e.err, target) }

// As finds a *DNSError only.
func (e *dnsSideError) As(target any) bool {
	if t, ok := target.(**DNSError); ok {
		return errors.As(e.err, t)
	}
	return false
}

// waitForTXT polls each of servers until it answers value among the TXT
// records of fqdn, for no longer than timeout.
func waitForTXT(ctx context.Context, servers []string, fqdn, value string, timeout time.Duration) error {
	if len(servers) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := slices.Clone(servers)
	delay := 100 * time.Millisecond
	var last error
	for {
		pending = slices.DeleteFunc(pending, func(server string) bool {
			txts, err := queryTXT(ctx, server, fqdn)
			if err != nil {
				last = err
				return false
			}
			if slices.Contains(txts, value) {
				return true
			}
			last = fmt.Errorf("%s does not serve the record yet", server)
			return false
		})
		if len(pending) == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s TXT on %s: %w (last: %w)", fqdn, strings.Join(pending, ", "), ctx.Err(), last)
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}
