package config

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/leproxy/leproxy/internal/hostname"
)

// Hostnames returns every hostname of the mapping, HTTP hosts and tcp
// routes alike, plus the names of the certificates section, deduplicated
// and sorted: the certificate allow-list. Wildcards appear as
// "*.example.com".
func (c *Config) Hostnames() []string {
	seen := make(map[string]bool)
	var out []string
	add := func(name string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, h := range c.Hosts {
		add(h.Name)
	}
	for _, l := range c.TCP {
		for _, r := range l.Routes {
			add(r.Host)
		}
	}
	// A name of the certificates section that only a wildcard host covers
	// gets a certificate of its own.
	for _, r := range c.Certificates {
		for _, n := range r.Names {
			add(n)
		}
	}
	slices.Sort(out)
	return out
}

// normalizeHostname checks that s is a hostname a public certificate can
// be issued for and returns it in canonical form: lower case, without a
// trailing dot. An IP address (IPv6 with or without brackets) is a host
// too, for CAs that issue for addresses (RFC 8738); its canonical form
// is netip's (IPv6 compressed, no brackets).
func normalizeHostname(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty hostname")
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		switch {
		case ip.Zone() != "":
			return "", errors.New("IP address " + s + " has a zone; a certificate names an address without one")
		case ip.Is4In6():
			return "", errors.New("IPv4-mapped address " + s + "; write it as " + ip.Unmap().String())
		case ip.IsUnspecified() || ip.IsMulticast():
			return "", errors.New("IP address " + s + " is not a unicast address")
		}
		return ip.String(), nil
	}
	if strings.Contains(s, ":") {
		return "", errors.New("a hostname has no port; the port of a tcp listener goes in its listen address")
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok && !strings.Contains(rest, "*") {
		// A wildcard: the whole first label, over a name of at least two
		// labels (no CA issues *.com), RFC 6125 §6.4.3.
		name, err := normalizeHostname(rest)
		if err != nil {
			return "", err
		}
		if _, err := netip.ParseAddr(name); err == nil {
			return "", errors.New("a wildcard covers names, not IP addresses")
		}
		return "*." + name, nil
	}
	if strings.Contains(s, "*") {
		return "", errors.New(`a wildcard is "*." followed by a name ("*.example.com"): the whole first label only`)
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", errors.New("non-ASCII hostname; write it in its punycode (xn--) form")
		}
	}
	name := hostname.Normalize(s)
	if len(name) > 253 {
		return "", errors.New("hostname longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for _, label := range labels {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	if len(labels) < 2 {
		return "", errors.New("hostname has no dot; a certificate needs a fully qualified name")
	}
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return "", errors.New("numeric top-level label " + strconv.Quote(tld))
	}
	return name, nil
}

// checkLabel checks one lower-case DNS label of a hostname.
func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("empty label (two dots in a row, or a leading dot)")
	case len(label) > 63:
		return errors.New("label " + strconv.Quote(label) + " longer than 63 characters")
	case label[0] == '-' || label[len(label)-1] == '-':
		return errors.New("label " + strconv.Quote(label) + " starts or ends with a hyphen")
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return errors.New("invalid character " + strconv.QuoteRune(rune(c)) + " (want letters, digits, hyphens and dots)")
		}
	}
	return nil
}

// checkAddrHost checks the host part of a backend or listen address: empty
// (all local addresses), an IP address, or a DNS name. Backend names may
// contain underscores (container and service names often do).
func checkAddrHost(host string) error {
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if len(host) > 253 {
		return errors.New("host longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("invalid host " + strconv.Quote(host))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errors.New("invalid host " + strconv.Quote(host))
			}
		}
	}
	return nil
}
