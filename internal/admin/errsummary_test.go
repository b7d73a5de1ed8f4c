package admin

import "testing"

func TestErrorSummary(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{`tls-alpn-01: authorization: acme: authorization error for b.example.test: 403 urn:ietf:params:acme:error:unauthorized: Cannot negotiate ALPN protocol "acme-tls/1" for tls-alpn-01 challenge`,
			`The CA refused the order (tls-alpn-01): Cannot negotiate ALPN protocol "acme-tls/1" for tls-alpn-01 challenge [unauthorized]`},
		{`creating order: 400 urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order :: Cannot issue for "x.test"`,
			`The CA refused the order: Error creating new order :: Cannot issue for "x.test" [rejectedIdentifier]`},
		{`http-01: creating order: 429 urn:ietf:params:acme:error:rateLimited:`, "The CA refused the order: rateLimited (http-01)"},
		{`certs: certificate for a.example.test: acme: Post "https://127.0.0.1:14000/dir": dial tcp 127.0.0.1:14000: connect: connection refused`,
			"The CA refused the connection"},
		{`Get "https://acme.example/dir": tls: failed to verify certificate: x509: certificate signed by unknown authority`,
			"The CA's HTTPS certificate is not trusted (see -acme-ca)"},
		{`dial tcp: lookup acme.invalid on 127.0.0.53:53: no such host`, "The CA's host name does not resolve"},
		{`tls-alpn-01: waiting for order: context deadline exceeded`, "Timed out (tls-alpn-01)"},
		{`local CA: signing: key too short`, "Key too short"},
	}
	for _, tt := range tests {
		if got := errorSummary(tt.in); got != tt.want {
			t.Errorf("errorSummary(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
	}
}
