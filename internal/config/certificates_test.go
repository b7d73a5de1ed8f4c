package config

import (
	"strings"
	"testing"
)

// TestCertificatesErrors checks that every mistake in a certificates
// section is reported at its file, line and key.
func TestCertificatesErrors(t *testing.T) {
	td := testdataDir(t)
	hosts := "'*.example.com': :80\nwww.example.com: :81\n" // lines 1, 2
	rfc := func(secret string) string {
		return "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    rfc2136:\n      server: ns1.example.com:53\n      zone: example.com\n      tsig_key: leproxy\n" + secret
	} // the secret line is line 11 after hosts
	t.Setenv("LEPROXY_TEST_TSIG", "c2VjcmV0")
	tests := []struct {
		name, input string
		line        int
		key, msg    string
	}{
		{"unknown challenge", hosts + "certificates:\n- names: [www.example.com]\n  challenge: dns-02\n", 5, "certificates[0].challenge", `unknown challenge "dns-02" (known: dns-01, tls-alpn-01, http-01)`},
		{"name not mapped", hosts + "certificates:\n- names: [www.example.com, db.example.net]\n  challenge: tls-alpn-01\n", 4, "certificates[0].names[1]", `"db.example.net" is not a host of the mapping`},
		{"name two labels under a wildcard", hosts + "certificates:\n- names: [a.b.example.com]\n  challenge: tls-alpn-01\n", 4, "certificates[0].names[0]", "is not a host of the mapping"},
		{"invalid name", hosts + "certificates:\n- names: ['a*.example.com']\n  challenge: tls-alpn-01\n", 4, "certificates[0].names[0]", "invalid hostname"},
		{"name twice", hosts + "certificates:\n- names: [www.example.com]\n  challenge: tls-alpn-01\n- names: [WWW.example.com]\n  challenge: http-01\n", 6, "certificates[1].names[0]", `duplicate certificate name "WWW.example.com": it is "www.example.com", first at line 4`},
		{"wildcard not dns-01", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: http-01\n", 4, "certificates[0].names[0]", "can only be validated with dns-01, not http-01"},
		{"wildcard host with no entry", "x.example.com: :80\n'*.example.com': :80\ncertificates:\n- names: [x.example.com]\n  challenge: tls-alpn-01\n", 2, "", `wildcard host "*.example.com" needs a dns-01 challenge`},
		{"dns-01 without dns", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n", 4, "certificates[0]", `missing key "dns"`},
		{"dns with http-01", hosts + "certificates:\n- names: [www.example.com]\n  challenge: http-01\n  dns: {hook: /bin/true}\n", 6, "certificates[0].dns", "dns is for challenge dns-01, not http-01"},
		{"missing names", hosts + "certificates:\n- challenge: http-01\n", 4, "certificates[0]", `missing key "names"`},
		{"no names", hosts + "certificates:\n- names: []\n  challenge: http-01\n", 4, "certificates[0].names", "no names"},
		{"not a list", hosts + "certificates: {a: b}\n", 3, "certificates", "expected a list of certificate entries"},
		{"unknown entry key", hosts + "certificates:\n- names: [www.example.com]\n  challenge: http-01\n  provider: x\n", 6, "certificates[0]", `unknown key "provider"`},
		{"neither rfc2136 nor hook", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {check_servers: ['ns1.example.com:53']}\n", 6, "certificates[0].dns", `missing key "rfc2136" or "hook"`},
		{"both rfc2136 and hook", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    hook: /bin/true\n    rfc2136: {server: 'ns1.example.com:53', zone: example.com, tsig_key: k, tsig_secret: c2VjcmV0}\n", 7, "certificates[0].dns.hook", "set rfc2136 or hook, not both"},
		{"hook relative", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: dns-hook.sh}\n", 6, "certificates[0].dns.hook", "relative path"},
		{"hook missing", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: " + td + "/nope.sh}\n", 6, "certificates[0].dns.hook", "does not exist"},
		{"hook not executable", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: " + td + "/tsig.key}\n", 6, "certificates[0].dns.hook", "is not executable"},
		{"bad check server", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: /bin/true, check_servers: [ns1.example.com]}\n", 6, "certificates[0].dns.check_servers[0]", "want host:port"},
		{"bad propagation_timeout", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: /bin/true, propagation_timeout: 10}\n", 6, "certificates[0].dns.propagation_timeout", "positive duration"},
		{"missing tsig secret", hosts + rfc(""), 8, "certificates[0].dns.rfc2136", "missing TSIG secret: set tsig_secret_file (or tsig_secret_env)"},
		{"two tsig secrets", hosts + rfc("      tsig_secret_env: X\n      tsig_secret: c2VjcmV0\n"), 12, "certificates[0].dns.rfc2136.tsig_secret", "set one of tsig_secret_file, tsig_secret_env and tsig_secret"},
		{"tsig secret file missing", hosts + rfc("      tsig_secret_file: "+td+"/none.key\n"), 11, "certificates[0].dns.rfc2136.tsig_secret_file", "does not exist"},
		{"tsig secret file relative", hosts + rfc("      tsig_secret_file: tsig.key\n"), 11, "certificates[0].dns.rfc2136.tsig_secret_file", "relative path"},
		{"tsig secret env unset", hosts + rfc("      tsig_secret_env: LEPROXY_TEST_NO_SUCH_VAR\n"), 11, "certificates[0].dns.rfc2136.tsig_secret_env", "LEPROXY_TEST_NO_SUCH_VAR is empty or not set"},
		{"tsig secret not base64", hosts + rfc("      tsig_secret: not-base64!\n"), 11, "certificates[0].dns.rfc2136.tsig_secret", "not base64"},
		{"tsig algorithm", hosts + rfc("      tsig_secret_env: LEPROXY_TEST_TSIG\n      tsig_algorithm: hmac-md5\n"), 12, "certificates[0].dns.rfc2136.tsig_algorithm", `unknown tsig_algorithm "hmac-md5"`},
		{"rfc2136 missing server", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    rfc2136: {zone: example.com, tsig_key: k, tsig_secret: c2VjcmV0}\n", 7, "certificates[0].dns.rfc2136", `missing key "server"`},
		{"rfc2136 bad server", hosts + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    rfc2136: {server: ns1, zone: example.com, tsig_key: k, tsig_secret: c2VjcmV0}\n", 7, "certificates[0].dns.rfc2136.server", "want host:port"},
		{"rfc2136 bad zone", hosts + rfc("      tsig_secret_env: LEPROXY_TEST_TSIG\n")[:0] + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    rfc2136: {server: 'ns1:53', zone: 'exa mple.com', tsig_key: k, tsig_secret: c2VjcmV0}\n", 7, "certificates[0].dns.rfc2136.zone", "invalid zone"},
		{"wildcard kafka route", "tcp:\n- listen: :9093\n  protocol: kafka\n  routes:\n    '*.example.com': 127.0.0.1:2\n" + "certificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns: {hook: /bin/true}\n", 5, "tcp[0].routes", "a kafka route cannot be a wildcard"},
		{"wildcard smtp route", "tcp:\n- listen: :587\n  protocol: smtp\n  routes:\n    '*.example.com': 127.0.0.1:2\n", 5, "tcp[0].routes", "a smtp route cannot be a wildcard"},
		{"unquoted wildcard in a list", hosts + "certificates:\n- names: [*.example.com]\n  challenge: dns-01\n", 4, "", `quote wildcard names ("*.example.com")`},
		{"duplicate section", hosts + "certificates: []\ncertificates: []\n", 4, "", "duplicate certificates section (first at line 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m.yml", []byte(tt.input))
			if err == nil {
				t.Fatal("got no error")
			}
			errs := checkErrorShape(t, err)
			for _, e := range errs {
				if e.Line == tt.line && e.Key == tt.key && strings.Contains(e.Msg, tt.msg) {
					return
				}
			}
			t.Errorf("got %q, want an error at line %d, key %q, with message containing %q", err, tt.line, tt.key, tt.msg)
		})
	}
}

// TestTSIGSecretSources reads the secret from a BIND key file, from the
// environment and inline, and never echoes an inline secret in an error.
func TestTSIGSecretSources(t *testing.T) {
	td := testdataDir(t)
	t.Setenv("LEPROXY_TEST_TSIG", " c2VjcmV0 \n")
	base := "'*.example.com': :80\ncertificates:\n- names: ['*.example.com']\n  challenge: dns-01\n  dns:\n    rfc2136:\n      server: ns1.example.com:53\n      zone: example.com\n      tsig_key: leproxy\n"
	for _, tc := range []struct{ line, want, from string }{
		{"      tsig_secret_file: " + td + "/tsig.key\n", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg==", "file " + td + "/tsig.key"},
		{"      tsig_secret_env: LEPROXY_TEST_TSIG\n", "c2VjcmV0", "env LEPROXY_TEST_TSIG"},
		{"      tsig_secret: c2VjcmV0\n", "c2VjcmV0", "inline"},
	} {
		cfg, err := Parse("m.yml", []byte(base+tc.line))
		if err != nil {
			t.Fatalf("%s: %v", tc.from, err)
		}
		u := cfg.Certificates[0].DNS.RFC2136
		if u.TSIGSecret != tc.want || u.SecretFrom != tc.from || u.TSIGKey != "leproxy." || u.Zone != "example.com." {
			t.Errorf("%s: got %+v, want secret %q", tc.from, u, tc.want)
		}
	}
	_, err := Parse("m.yml", []byte(base+"      tsig_secret: 'sekrit value!'\n"))
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("bad inline secret: %v, want an error that does not echo it", err)
	}
}

// TestCertificatesSummary: -check shows each entry's challenge and how it
// is answered, and never the TSIG secret.
func TestCertificatesSummary(t *testing.T) {
	in := "testdata/ok/certificates.yml"
	cfg, err := Parse(in, readInput(t, in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cfg.Summary(&b)
	got := b.String()
	for _, want := range []string{
		"*.example.com, *.db.example.com, api.example.com: dns-01 by RFC 2136 updates to ns1.example.com:53, zone example.com., TSIG key leproxy. (hmac-sha256, secret from file ",
		"app.example.org: dns-01 by hook " + testdataDir(t) + "/dns-hook.sh, checked on ns1.example.org:53, ns2.example.org:53",
		"www.example.com: http-01\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if s := cfg.Certificates[0].DNS.RFC2136.TSIGSecret; strings.Contains(got, s) {
		t.Errorf("summary shows the TSIG secret:\n%s", got)
	}
}
