// Package hostname holds the one host-name normaliser of leproxy, so that
// the mapping, the certificate allow-list, the HTTP router and the tcp
// routers agree on when two spellings are the same name.
package hostname

import (
	"net"
	"strings"

	"golang.org/x/net/idna"
)

// Normalize returns name in the form leproxy compares and stores names
// in: surrounding space and one trailing dot removed, an internationalized
// name converted to its ASCII (punycode) form, lower case. Like a TLS
// server name as autocert sees it, it never fails: a name idna refuses is
// only trimmed and lower-cased, and then matches nothing it should not.
func Normalize(name string) string {
	name = strings.TrimSuffix(strings.TrimSpace(name), ".")
	if isPlain(name) {
		return name // what idna and ToLower would make of it; every HTTPS request comes here
	}
	return normalizeIDNA(name)
}

func normalizeIDNA(name string) string {
	if ascii, err := idna.Lookup.ToASCII(name); err == nil {
		name = ascii
	}
	return strings.ToLower(name)
}

// isPlain reports whether name is made of lower-case letters, digits,
// '-', '_' and '.' only, with no punycode label: idna maps none of them, so
// it either returns such a name unchanged or refuses it, which leaves it
// unchanged too.
func isPlain(name string) bool {
	if strings.Contains(name, "xn--") {
		return false // idna decodes and checks punycode labels
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// FromHostHeader returns the normalised host of an HTTP Host header or
// URL host: its port and IPv6 brackets removed, then Normalize.
func FromHostHeader(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return Normalize(host)
}
