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

// IsWildcard reports whether name is a wildcard name, "*." followed by a
// name.
func IsWildcard(name string) bool {
	return len(name) > 2 && strings.HasPrefix(name, "*.")
}

// Wildcard returns the wildcard name that covers name under RFC 6125
// §6.4.3: its first label replaced by "*" ("a.example.com" →
// "*.example.com"), so that a wildcard covers exactly one label. It
// returns "" for a name with fewer than three labels, a wildcard, or a
// name with an empty label: no wildcard of a mapping covers them.
func Wildcard(name string) string {
	first, rest, ok := strings.Cut(name, ".")
	if !ok || first == "" || first == "*" || !strings.Contains(rest, ".") || strings.HasPrefix(rest, ".") {
		return ""
	}
	return "*." + rest
}

// Lookup returns the value of name in m, normalised: the exact name if m
// holds it, else the wildcard covering it (see Wildcard), so that an exact
// name beats a wildcard. key is the entry of m that matched.
func Lookup[V any](m map[string]V, name string) (v V, key string, ok bool) {
	if v, ok := m[name]; ok {
		return v, name, true
	}
	if w := Wildcard(name); w != "" {
		if v, ok := m[w]; ok {
			return v, w, true
		}
	}
	return v, "", false
}
