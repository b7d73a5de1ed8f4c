package config

import (
	"slices"
	"strings"
	"testing"
)

func TestNormalizeHostname(t *testing.T) {
	tests := []struct {
		in, want string
		err      string // substring; "" for success
	}{
		{"www.example.com", "www.example.com", ""},
		{"WWW.Example.COM", "www.example.com", ""},
		{"www.example.com.", "www.example.com", ""},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", ""},
		{"a-b.c0.example", "a-b.c0.example", ""},
		{"app.localhost", "app.localhost", ""},
		{"1.example.com", "1.example.com", ""},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com", ""},
		{"", "", "empty hostname"},
		{".", "", "empty label"},
		{"example.com..", "", "empty label"},
		{"localhost", "", "no dot"},
		{"localhost.", "", "no dot"},
		{"www.example.com:443", "", "no port"},
		{"*.example.com", "*.example.com", ""},
		{"*.Example.COM.", "*.example.com", ""},
		{"*.a.example.com", "*.a.example.com", ""},
		{"a*.example.com", "", "the whole first label only"},
		{"*a.example.com", "", "the whole first label only"},
		{"a.*.example.com", "", "the whole first label only"},
		{"*.*.example.com", "", "the whole first label only"},
		{"*.com", "", "no dot"},
		{"*.", "", "empty hostname"},
		{"*.192.0.2.1", "", "not IP addresses"},
		{"192.0.2.1", "192.0.2.1", ""},
		{"[2001:db8::1]", "2001:db8::1", ""},
		{"2001:DB8:0::1", "2001:db8::1", ""},
		{"fe80::1%eth0", "", "has a zone"},
		{"::ffff:192.0.2.1", "", "write it as 192.0.2.1"},
		{"0.0.0.0", "", "not a unicast address"},
		{"ff02::1", "", "not a unicast address"},
		{"bücher.example", "", "punycode"},
		{"a_b.example.com", "", "invalid character '_'"},
		{"a b.example.com", "", "invalid character ' '"},
		{"/prod", "", "invalid character '/'"},
		{"-a.example.com", "", "hyphen"},
		{"a-.example.com", "", "hyphen"},
		{strings.Repeat("a", 64) + ".com", "", "longer than 63"},
		{strings.Repeat("a.", 127) + "com", "", "longer than 253"},
		{"example.123", "", "numeric top-level label"},
	}
	for _, tt := range tests {
		got, err := normalizeHostname(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("normalizeHostname(%q): got error %v, want %q", tt.in, err, tt.want)
		case tt.err == "" && got != tt.want:
			t.Errorf("normalizeHostname(%q): got %q, want %q", tt.in, got, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("normalizeHostname(%q): got %q, %v, want an error containing %q", tt.in, got, err, tt.err)
		}
	}
}

func TestCheckAddrHost(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1", "::1", "fe80::1%eth0", "localhost", "db.internal", "my_service", "Backend-1.example.com."} {
		if err := checkAddrHost(ok); err != nil {
			t.Errorf("checkAddrHost(%q): got %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"a b", "a/b", "x..y", "bad!host", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "com"} {
		if err := checkAddrHost(bad); err == nil {
			t.Errorf("checkAddrHost(%q): got nil, want an error", bad)
		}
	}
}

func TestHostnames(t *testing.T) {
	cfg, err := Parse("m.yml", []byte(`
b.example.com: :80
a.example.com: :81
tcp:
- listen: :5432
  protocol: postgres
  routes:
    c.example.com: 10.0.0.1:5432
    a.example.com: 10.0.0.1:5432
- listen: :3306
  protocol: mysql
  routes:
    C.example.com: 10.0.0.1:3306
`))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Hostnames()
	want := []string{"a.example.com", "b.example.com", "c.example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (&Config{}).Hostnames(); len(got) != 0 {
		t.Errorf("empty config: got %q, want none", got)
	}
}
