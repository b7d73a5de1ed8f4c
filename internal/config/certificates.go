package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
	"gopkg.in/yaml.v3"
)

// Challenge types of a "certificates:" entry.
const (
	ChallengeDNS01    = "dns-01"
	ChallengeTLSALPN1 = "tls-alpn-01"
	ChallengeHTTP01   = "http-01"
)

// challenges lists the valid values of a certificates entry's "challenge".
var challenges = []string{ChallengeDNS01, ChallengeTLSALPN1, ChallengeHTTP01}

// tsigAlgorithms lists the valid values of "tsig_algorithm", BIND's names.
var tsigAlgorithms = []string{"hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"}

// maxSecretFileSize bounds a TSIG secret file; tsig-keygen writes ~100 bytes.
const maxSecretFileSize = 64 << 10

// CertificateRule is one entry of the "certificates:" section: which
// challenge the certificates of its names are obtained with. Names not in
// any entry use tls-alpn-01, then http-01.
type CertificateRule struct {
	// Names are hostnames of the mapping (or names a wildcard host of the
	// mapping covers, which then get a certificate of their own),
	// normalised; wildcards as "*.example.com".
	Names []string
	// Challenge is ChallengeDNS01, ChallengeTLSALPN1 or ChallengeHTTP01.
	Challenge string
	// DNS is how dns-01 records are published; set exactly with
	// ChallengeDNS01.
	DNS  *DNSChallenge
	Line int // line of the list item in File
}

// DNSChallenge is the "dns:" key of a dns-01 certificates entry: one of
// RFC2136 and Hook.
type DNSChallenge struct {
	// RFC2136 publishes records with signed dynamic updates.
	RFC2136 *RFC2136
	// Hook is an executable run as "Hook present|cleanup FQDN VALUE".
	Hook string
	// HookTimeout bounds one run of Hook (key "hook_timeout"); 0 means
	// the default, 2 minutes.
	HookTimeout time.Duration
	// CheckServers (key "check_servers", host:port) are asked for the
	// record before the CA validates it. With RFC2136 and no
	// check_servers, its server is asked.
	CheckServers []string
	// PropagationTimeout bounds that wait (key "propagation_timeout"); 0
	// means the default, 2 minutes.
	PropagationTimeout time.Duration
}

// RFC2136 is the "rfc2136:" key of a dns: section.
type RFC2136 struct {
	Server        string // host:port of the primary server taking updates
	Zone          string // fully qualified, lower case, "example.com."
	TSIGKey       string // the key's name, fully qualified
	TSIGAlgorithm string // one of tsigAlgorithms; "hmac-sha256" by default
	// TSIGSecret is the key's secret, base64, read from tsig_secret_file,
	// tsig_secret_env or tsig_secret. Never printed.
	TSIGSecret string
	// SecretFrom says where TSIGSecret came from, for the summary:
	// "file /path", "env NAME" or "inline".
	SecretFrom string
}

// certificatesSection walks the "certificates:" list.
func (l *loader) certificatesSection(v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !l.is(v, "certificates", yaml.SequenceNode, "a list of certificate entries") {
		return
	}
	for i, item := range v.Content {
		path := fmt.Sprintf("certificates[%d]", i)
		if !l.is(item, path, yaml.MappingNode, "a certificate entry (a mapping with names and challenge)") {
			continue
		}
		l.certificateRule(item, path)
	}
}

// certificateRule walks one entry of the certificates section.
func (l *loader) certificateRule(m *yaml.Node, path string) {
	r := CertificateRule{Line: m.Line}
	f := l.fields(m, path, "names", "challenge", "dns")
	for _, req := range []string{"names", "challenge"} {
		if f[req] == nil {
			l.el.add(m.Line, path, "", fmt.Sprintf("missing key %q", req))
		}
	}
	if n := f["names"]; n != nil && l.is(n, path+".names", yaml.SequenceNode, "a list of hostnames") {
		if len(n.Content) == 0 {
			l.el.add(n.Line, path+".names", "", "no names")
		}
		for i, item := range n.Content {
			key := fmt.Sprintf("%s.names[%d]", path, i)
			s, ok := l.string(item, key, "a hostname")
			if !ok {
				continue
			}
			name, err := normalizeHostname(s)
			if err != nil {
				l.el.add(item.Line, key, s, fmt.Sprintf("invalid hostname %q: %v", s, err))
				continue
			}
			r.Names = append(r.Names, name)
			l.certNames = append(l.certNames, certName{name: name, raw: s, key: key, line: item.Line})
		}
	}
	if n := f["challenge"]; n != nil {
		key := path + ".challenge"
		if s, ok := l.string(n, key, "a challenge type"); ok {
			if slices.Contains(challenges, s) {
				r.Challenge = s
			} else {
				l.el.add(n.Line, key, s, fmt.Sprintf("unknown challenge %q (known: %s)", s, strings.Join(challenges, ", ")))
			}
		}
	}
	dns := f["dns"]
	switch {
	case r.Challenge == ChallengeDNS01 && dns == nil:
		l.el.add(m.Line, path, "", `missing key "dns": dns-01 needs rfc2136 or hook`)
	case r.Challenge != "" && r.Challenge != ChallengeDNS01 && dns != nil:
		l.el.add(dns.Line, path+".dns", "", fmt.Sprintf("dns is for challenge dns-01, not %s", r.Challenge))
	case dns != nil:
		r.DNS = l.dnsChallenge(dns, path+".dns")
	}
	l.cfg.Certificates = append(l.cfg.Certificates, r)
}

// dnsChallenge walks the dns: key of a dns-01 entry.
func (l *loader) dnsChallenge(m *yaml.Node, path string) *DNSChallenge {
	if !l.is(m, path, yaml.MappingNode, "a mapping with rfc2136 or hook") {
		return nil
	}
	d := &DNSChallenge{}
	f := l.fields(m, path, "rfc2136", "hook", "hook_timeout", "check_servers", "propagation_timeout")
	switch {
	case f["rfc2136"] != nil && f["hook"] != nil:
		l.el.add(f["hook"].Line, path+".hook", "", "set rfc2136 or hook, not both")
	case f["rfc2136"] == nil && f["hook"] == nil:
		l.el.add(m.Line, path, "", `missing key "rfc2136" or "hook"`)
	}
	if n := f["rfc2136"]; n != nil {
		d.RFC2136 = l.rfc2136(n, path+".rfc2136")
	}
	if n := f["hook"]; n != nil {
		key := path + ".hook"
		if s, ok := l.string(n, key, "an executable's path"); ok {
			if err := checkExecutable(s); err != nil {
				l.el.add(n.Line, key, s, fmt.Sprintf("invalid hook %q: %v", s, err))
			}
			d.Hook = s
		}
	}
	if n := f["hook_timeout"]; n != nil {
		if f["hook"] == nil {
			l.el.add(n.Line, path+".hook_timeout", "", "hook_timeout without hook")
		}
		d.HookTimeout = l.duration(n, path+".hook_timeout")
	}
	if n := f["propagation_timeout"]; n != nil {
		d.PropagationTimeout = l.duration(n, path+".propagation_timeout")
	}
	if n := f["check_servers"]; n != nil && l.is(n, path+".check_servers", yaml.SequenceNode, "a list of host:port") {
		for i, item := range n.Content {
			key := fmt.Sprintf("%s.check_servers[%d]", path, i)
			if s, ok := l.string(item, key, "a host:port"); ok {
				if err := checkHostPort(s); err != nil || strings.HasPrefix(s, ":") {
					l.el.add(item.Line, key, s, fmt.Sprintf("invalid DNS server %q: want host:port", s))
					continue
				}
				d.CheckServers = append(d.CheckServers, s)
			}
		}
	}
	if d.RFC2136 != nil && len(d.CheckServers) == 0 {
		d.CheckServers = []string{d.RFC2136.Server}
	}
	return d
}

// rfc2136 walks an rfc2136: key.
func (l *loader) rfc2136(m *yaml.Node, path string) *RFC2136 {
	if !l.is(m, path, yaml.MappingNode, "a mapping with server, zone, tsig_key and the secret") {
		return nil
	}
	r := &RFC2136{TSIGAlgorithm: "hmac-sha256"}
	f := l.fields(m, path, "server", "zone", "tsig_key", "tsig_algorithm", "tsig_secret_file", "tsig_secret_env", "tsig_secret")
	for _, req := range []string{"server", "zone", "tsig_key"} {
		if f[req] == nil {
			l.el.add(m.Line, path, "", fmt.Sprintf("missing key %q", req))
		}
	}
	if n := f["server"]; n != nil {
		key := path + ".server"
		if s, ok := l.string(n, key, "a host:port"); ok {
			if err := checkHostPort(s); err != nil || strings.HasPrefix(s, ":") {
				l.el.add(n.Line, key, s, fmt.Sprintf("invalid DNS server %q: want host:port, such as ns1.example.com:53", s))
			}
			r.Server = s
		}
	}
	for _, k := range []string{"zone", "tsig_key"} {
		n := f[k]
		if n == nil {
			continue
		}
		key := path + "." + k
		s, ok := l.string(n, key, "a domain name")
		if !ok {
			continue
		}
		name, err := normalizeDomain(s)
		if err != nil {
			l.el.add(n.Line, key, s, fmt.Sprintf("invalid %s %q: %v", k, s, err))
			continue
		}
		if k == "zone" {
			r.Zone = name
		} else {
			r.TSIGKey = name
		}
	}
	if n := f["tsig_algorithm"]; n != nil {
		key := path + ".tsig_algorithm"
		if s, ok := l.string(n, key, "an HMAC name"); ok {
			if s = strings.ToLower(strings.TrimSuffix(s, ".")); slices.Contains(tsigAlgorithms, s) {
				r.TSIGAlgorithm = s
			} else {
				l.el.add(n.Line, key, s, fmt.Sprintf("unknown tsig_algorithm %q (known: %s)", s, strings.Join(tsigAlgorithms, ", ")))
			}
		}
	}
	var sources []string
	for _, k := range []string{"tsig_secret_file", "tsig_secret_env", "tsig_secret"} {
		if f[k] != nil {
			sources = append(sources, k)
		}
	}
	switch len(sources) {
	case 0:
		l.el.add(m.Line, path, "", "missing TSIG secret: set tsig_secret_file (or tsig_secret_env)")
		return r
	case 1:
	default:
		l.el.add(f[sources[1]].Line, path+"."+sources[1], "", fmt.Sprintf("set one of tsig_secret_file, tsig_secret_env and tsig_secret, not %s", strings.Join(sources, " and ")))
		return r
	}
	n := f[sources[0]]
	key := path + "." + sources[0]
	s, ok := l.string(n, key, "a string")
	if !ok {
		return r
	}
	var secret string
	var err error
	switch sources[0] {
	case "tsig_secret_file":
		secret, err = readSecretFile(s)
		r.SecretFrom = "file " + s
	case "tsig_secret_env":
		secret = strings.TrimSpace(os.Getenv(s))
		if secret == "" {
			err = fmt.Errorf("environment variable %s is empty or not set", s)
		}
		r.SecretFrom = "env " + s
	default:
		secret = strings.TrimSpace(s)
		r.SecretFrom = "inline"
		s = "" // never echo a secret
	}
	if err == nil {
		if _, derr := base64.StdEncoding.DecodeString(secret); derr != nil || secret == "" {
			err = errors.New("the secret is not base64 (as tsig-keygen writes it)")
		}
	}
	if err != nil {
		l.el.add(n.Line, key, s, fmt.Sprintf("invalid TSIG secret: %v", err)).Err = err
		return r
	}
	r.TSIGSecret = secret
	return r
}

// bindSecret finds the secret of a BIND key statement, as tsig-keygen
// writes it.
var bindSecret = regexp.MustCompile(`secret\s+"([^"]*)"`)

// readSecretFile reads a TSIG secret: the base64 secret alone, or a BIND
// key file (tsig-keygen's output).
func readSecretFile(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", errors.New("relative path; write an absolute path")
	}
	f, err := os.Open(path) // #nosec G304 -- the operator's own secret file, named by the mapping; read bounded
	if errors.Is(err, fs.ErrNotExist) {
		return "", causeError{fmt.Sprintf("%s does not exist", path), err}
	}
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	if len(data) > maxSecretFileSize {
		return "", fmt.Errorf("%s is larger than %d KiB", path, maxSecretFileSize>>10)
	}
	if m := bindSecret.FindSubmatch(data); m != nil {
		return string(m[1]), nil
	}
	return strings.TrimSpace(string(data)), nil
}

// checkExecutable checks that path is an absolute path to an executable
// regular file.
func checkExecutable(path string) error {
	if !filepath.IsAbs(path) {
		return errors.New("relative path; write an absolute path")
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return causeError{fmt.Sprintf("%s does not exist", path), err}
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case fi.Mode()&0o111 == 0:
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

// normalizeDomain checks a zone or key name and returns it lower case and
// fully qualified.
func normalizeDomain(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" {
		return "", errors.New("empty name")
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return name + ".", nil
}

// certName is a name of the certificates section, for the checks made
// once the whole mapping is read.
type certName struct {
	name, raw, key string
	line           int
}

// checkCertificates checks the certificates section against the hosts of
// the whole mapping: each name is mapped (or covered by a mapped
// wildcard) and in one entry only, and each wildcard host outside
// .localhost has a dns-01 entry.
func (l *loader) checkCertificates() {
	mapped := make(map[string]bool)
	for _, h := range l.cfg.Hosts {
		mapped[h.Name] = true
	}
	for _, ln := range l.cfg.TCP {
		for _, r := range ln.Routes {
			mapped[r.Host] = true
		}
	}
	first := make(map[string]int)
	challenge := make(map[string]string)
	for _, r := range l.cfg.Certificates {
		for _, n := range r.Names {
			if _, dup := first[n]; !dup {
				challenge[n] = r.Challenge
			}
		}
	}
	for _, c := range l.certNames {
		if line, dup := first[c.name]; dup {
			l.el.add(c.line, c.key, c.raw, duplicateMsg("certificate name", c.raw, c.name, line))
			continue
		}
		first[c.name] = c.line
		_, _, covered := hostname.Lookup(mapped, c.name)
		if !covered {
			l.el.add(c.line, c.key, c.raw, fmt.Sprintf("%q is not a host of the mapping (nor covered by a wildcard host)", c.raw))
		}
		if hostname.IsWildcard(c.name) && challenge[c.name] != "" && challenge[c.name] != ChallengeDNS01 {
			l.el.add(c.line, c.key, c.raw, fmt.Sprintf("wildcard %q can only be validated with dns-01, not %s", c.raw, challenge[c.name]))
		}
	}
	needsDNS := func(name string, line int, key string) {
		if !hostname.IsWildcard(name) || strings.HasSuffix(name, ".localhost") || challenge[name] == ChallengeDNS01 {
			return
		}
		if _, listed := first[name]; listed {
			return // reported above
		}
		l.el.add(line, key, name, fmt.Sprintf("wildcard host %q needs a dns-01 challenge: list it in a certificates: entry with challenge: dns-01", name))
	}
	for _, h := range l.cfg.Hosts {
		needsDNS(h.Name, h.Line, "")
	}
	for i, ln := range l.cfg.TCP {
		for _, r := range ln.Routes {
			needsDNS(r.Host, r.Line, fmt.Sprintf("tcp[%d].routes", i))
		}
	}
}
