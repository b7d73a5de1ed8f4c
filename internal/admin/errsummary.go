package admin

import (
	"regexp"
	"strings"
)

// acmeProblem finds an RFC 8555 problem document in an error's text, as
// golang.org/x/crypto/acme writes one: "403 urn:ietf:params:acme:error:TYPE:
// DETAIL".
var acmeProblem = regexp.MustCompile(`urn:ietf:params:acme:error:([A-Za-z]+):? ?(.*)$`)

// challengePrefix finds the challenge type certs puts before an order's
// error ("tls-alpn-01: ...").
var challengePrefix = regexp.MustCompile(`^(tls-alpn-01|http-01|dns-01|dns-account-01): `)

// causes maps what the innermost part of a network or TLS error says to a
// sentence for the page; the first match wins.
var causes = []struct{ contains, says string }{
	{"certificate signed by unknown authority", "the CA's HTTPS certificate is not trusted (see -acme-ca)"},
	{"x509:", "the CA's HTTPS certificate was refused"},
	{"no such host", "the CA's host name does not resolve"},
	{"connection refused", "the CA refused the connection"},
	{"network is unreachable", "the CA is unreachable"},
	{"no route to host", "the CA is unreachable"},
	{"i/o timeout", "timed out talking to the CA"},
	{"context deadline exceeded", "timed out"},
	{"connection reset", "the connection to the CA was reset"},
}

// errorSummary turns the last error of a certificate (a Go error chain,
// "op: op: cause") into one sentence for a person: the CA's own words when
// it refused, else what the network or TLS error means, else the
// innermost part of the chain. The full text stays on the page beside it.
func errorSummary(msg string) string {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return ""
	}
	via := ""
	if m := challengePrefix.FindStringSubmatch(msg); m != nil {
		via = " (" + m[1] + ")"
	}
	if m := acmeProblem.FindStringSubmatch(msg); m != nil {
		detail := strings.TrimSpace(m[2])
		if detail == "" {
			return "The CA refused the order: " + m[1] + via
		}
		return "The CA refused the order" + via + ": " + detail + " [" + m[1] + "]"
	}
	for _, c := range causes {
		if strings.Contains(msg, c.contains) {
			return capitalize(c.says) + via
		}
	}
	parts := strings.Split(msg, ": ")
	return capitalize(parts[len(parts)-1]) + via
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
