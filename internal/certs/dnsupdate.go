package certs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsTimeout bounds one DNS exchange (an update or a query).
const dnsTimeout = 10 * time.Second

// dnsTXTTTL is the TTL of the challenge records: short, they live for
// one validation.
const dnsTXTTTL = 60

// TSIGAlgorithms are the HMACs an RFC2136 key may use, by BIND's names.
var TSIGAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// RFC2136Config configures an RFC2136 provider.
type RFC2136Config struct {
	// Server is the primary server of Zone that takes updates, host:port.
	Server string
	// Zone is the zone the records are updated in, "example.com.".
	Zone string
	// KeyName is the TSIG key's name, "leproxy.".
	KeyName string
	// Algorithm is a key of TSIGAlgorithms; "" means hmac-sha256.
	Algorithm string
	// Secret is the TSIG key, base64.
	Secret string
}

// RFC2136 is a DNSProvider that adds and deletes the TXT records with
// RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP.
type RFC2136 struct {
	server, zone, key, alg, secret string
}

var _ DNSProvider = (*RFC2136)(nil)

// NewRFC2136 checks cfg and returns its provider.
func NewRFC2136(cfg RFC2136Config) (*RFC2136, error) {
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("rfc2136: server %q: %w", cfg.Server, err)
	}
	if cfg.Zone == "" || cfg.KeyName == "" {
		return nil, errors.New("rfc2136: zone and TSIG key name are required")
	}
	algName := cfg.Algorithm
	if algName == "" {
		algName = "hmac-sha256"
	}
	alg, ok := TSIGAlgorithms[strings.ToLower(algName)]
	if !ok {
		return nil, fmt.Errorf("rfc2136: unsupported TSIG algorithm %q", cfg.Algorithm)
	}
	if _, err := base64.StdEncoding.DecodeString(cfg.Secret); err != nil || cfg.Secret == "" {
		return nil, errors.New("rfc2136: the TSIG secret is not base64")
	}
	return &RFC2136{
		server: cfg.Server,
		zone:   dns.Fqdn(strings.ToLower(cfg.Zone)),
		key:    dns.Fqdn(strings.ToLower(cfg.KeyName)),
		alg:    alg,
		secret: cfg.Secret,
	}, nil
}

// Present adds the TXT record fqdn → value to the zone.
func (p *RFC2136) Present(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, true)
}

// CleanUp deletes exactly the TXT record fqdn → value from the zone.
func (p *RFC2136) CleanUp(ctx context.Context, fqdn, value string) error {
	return p.update(ctx, fqdn, value, false)
}

func (p *RFC2136) update(ctx context.Context, fqdn, value string, add bool) error {
	fqdn = dns.Fqdn(strings.ToLower(fqdn))
	if !dns.IsSubDomain(p.zone, fqdn) {
		return fmt.Errorf("rfc2136: %s is not in zone %s", fqdn, p.zone)
	}
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: dnsTXTTTL}, Txt: []string{value}}
	m := new(dns.Msg)
	m.SetUpdate(p.zone)
	op := "adding"
	if add {
		m.Insert([]dns.RR{rr})
	} else {
		op = "deleting"
		m.Remove([]dns.RR{rr})
	}
	m.SetTsig(p.key, p.alg, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: dnsTimeout, TsigSecret: map[string]string{p.key: p.secret}}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, p.server)
	if r != nil && r.Rcode != dns.RcodeSuccess {
		// A refused signature comes back unsigned: the rcode and the TSIG
		// error say more than the failed verification of the answer.
		return &DNSError{Op: op + " " + fqdn + " TXT", Server: p.server, Rcode: r.Rcode, TSIGError: tsigError(r)}
	}
	if err != nil {
		return fmt.Errorf("rfc2136: %s %s TXT on %s: %w", op, fqdn, p.server, err)
	}
	return nil
}

// tsigError returns the TSIG error code of r's TSIG record; 0 if none.
func tsigError(r *dns.Msg) int {
	if t := r.IsTsig(); t != nil {
		return int(t.Error)
	}
	return 0
}

// DNSError is a DNS server's refusal of an update or a query: its rcode,
// and the TSIG error (BADSIG, BADKEY, BADTIME) when it refused the
// signature.
type DNSError struct {
	Op        string // what was asked, "adding _acme-challenge.example.com. TXT"
	Server    string // host:port
	Rcode     int
	TSIGError int // 0 when none
}

func (e *DNSError) Error() string {
	msg := fmt.Sprintf("%s refused by %s: rcode %s", e.Op, e.Server, dns.RcodeToString[e.Rcode])
	if e.TSIGError != 0 {
		msg += ", TSIG error " + dns.RcodeToString[e.TSIGError]
	}
	return msg
}

// RcodeName is the rcode as DNS names it, "NOTAUTH".
func (e *DNSError) RcodeName() string { return dns.RcodeToString[e.Rcode] }

// queryTXT asks server (no recursion) for the TXT records of fqdn, over
// UDP and again over TCP if the answer is truncated; each record's strings
// are joined.
func queryTXT(ctx context.Context, server, fqdn string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(fqdn), dns.TypeTXT)
	m.RecursionDesired = false
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	r, _, err := (&dns.Client{Timeout: dnsTimeout}).ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp", Timeout: dnsTimeout}).ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("querying %s for %s TXT: %w", server, fqdn, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, &DNSError{Op: "query of " + fqdn + " TXT", Server: server, Rcode: r.Rcode}
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
