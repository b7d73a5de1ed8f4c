package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// testHash is a bcrypt hash of "secret" at the lowest cost.
func testHash(t *testing.T) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestMiddlewareParse(t *testing.T) {
	hash := testHash(t)
	src := fmt.Sprintf(`app.example.com:
  backend: 127.0.0.1:8080
  middleware:
    ip_allow: [10.0.0.0/8, 192.0.2.7, "::ffff:198.51.100.0/120"]
    ip_deny: 10.9.0.0/16
    basic_auth:
      realm: staff only
      users:
        alice: %q
      pass_authorization: true
    max_body: 10MiB
    redirect:
      - from: ^/old/(.*)$
        to: /new/$1
        code: 301
      - from: ^/(?P<page>about)$
        to: https://www.example.com/${page}
    strip_prefix: /api
    add_prefix: /v1
    request_headers:
      remove: [X-Debug]
      set: {x-env: prod}
      add: {X-Tag: a}
    response_headers:
      set: {X-Frame-Options: DENY}
    compress:
      encodings: [gzip]
      min_length: 1KiB
plain.example.com:
  backend: 127.0.0.1:8081
  middleware:
    compress: true
`, hash)
	cfg, err := Parse("m.yml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m := cfg.Hosts[0].Middleware
	if m == nil {
		t.Fatal("no middleware")
	}
	wantAllow := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("198.51.100.0/24"),
	}
	if fmt.Sprint(m.Allow) != fmt.Sprint(wantAllow) {
		t.Errorf("Allow = %v, want %v", m.Allow, wantAllow)
	}
	if fmt.Sprint(m.Deny) != "[10.9.0.0/16]" {
		t.Errorf("Deny = %v", m.Deny)
	}
	ba := m.BasicAuth
	if ba == nil || ba.Realm != "staff only" || string(ba.Users["alice"]) != hash || !ba.PassAuthorization {
		t.Errorf("BasicAuth = %+v", ba)
	}
	if m.MaxBody != 10<<20 {
		t.Errorf("MaxBody = %d", m.MaxBody)
	}
	if len(m.Redirects) != 2 || m.Redirects[0].Code != 301 || m.Redirects[0].To != "/new/$1" ||
		m.Redirects[1].Code != 302 || m.Redirects[1].From.String() != "^/(?P<page>about)$" || m.Redirects[0].Line != 13 {
		t.Errorf("Redirects = %+v", m.Redirects)
	}
	if m.StripPrefix != "/api" || m.AddPrefix != "/v1" {
		t.Errorf("prefixes = %q, %q", m.StripPrefix, m.AddPrefix)
	}
	rq := m.RequestHeaders
	if fmt.Sprint(rq.Remove) != "[X-Debug]" || fmt.Sprint(rq.Set) != "[{X-Env prod}]" || fmt.Sprint(rq.Add) != "[{X-Tag a}]" {
		t.Errorf("RequestHeaders = %+v", rq)
	}
	if fmt.Sprint(m.ResponseHeaders.Set) != "[{X-Frame-Options DENY}]" {
		t.Errorf("ResponseHeaders = %+v", m.ResponseHeaders)
	}
	if c := m.Compress; c == nil || fmt.Sprint(c.Encodings) != "[gzip]" || c.MinLength != 1024 {
		t.Errorf("Compress = %+v", c)
	}
	var sum strings.Builder
	cfg.Summary(&sum)
	if want := "(HTTP over TCP, IP filter (3 allowed, 1 denied networks), basic auth (1 users), max_body 10485760 bytes, " +
		"2 redirects, strip_prefix /api, add_prefix /v1, request headers, response headers, compress gzip)"; !strings.Contains(sum.String(), want) {
		t.Errorf("Summary:\n%s\nwant it to contain %s", sum.String(), want)
	}
	if c := cfg.Hosts[1].Middleware.Compress; c == nil || fmt.Sprint(c.Encodings) != "[zstd gzip]" || c.MinLength != DefaultCompressMinLength {
		t.Errorf("compress: true = %+v", c)
	}
}

func TestMiddlewareErrors(t *testing.T) {
	hash := testHash(t)
	for _, tc := range []struct {
		name, mw string // mw is indented under "middleware:" at line 4
		line     int
		want     string
	}{
		{"unknown name", "    gzip: true", 4, `app.example.com.middleware: unknown key "gzip" (known: ip_allow,`},
		{"not a mapping", "    - compress", 4, "expected a mapping of middleware names to settings"},
		{"bad cidr", "    ip_allow: [10.0.0.0/33]", 4, `ip_allow: invalid network "10.0.0.0/33"`},
		{"host bits", "    ip_deny: [10.0.0.1/8]", 4, "did you mean 10.0.0.0/8?"},
		{"not an ip", "    ip_allow: [example.com]", 4, "not an IP address or network"},
		{"empty list", "    ip_allow: []", 4, "empty list"},
		{"plaintext password", "    basic_auth:\n      users:\n        alice: hunter2", 6, "basic_auth.users.alice: not a bcrypt hash (plaintext passwords are refused)"},
		{"no users", "    basic_auth:\n      realm: x", 5, `missing key "users"`},
		{"empty users", "    basic_auth:\n      users: {}", 5, "no users"},
		{"colon in user", fmt.Sprintf("    basic_auth:\n      users:\n        \"a:b\": %q", hash), 6, `invalid user name "a:b"`},
		{"quote in realm", fmt.Sprintf("    basic_auth:\n      realm: 'a\"b'\n      users: {alice: %q}", hash), 5, "invalid realm"},
		{"bad size", "    max_body: ten", 4, `max_body: invalid size "ten"`},
		{"negative size", "    max_body: -1", 4, "invalid size"},
		{"zero size", "    max_body: 0", 4, "must be positive"},
		{"bad regexp", "    redirect: {from: '^/(', to: /x}", 4, "redirect.from: invalid regular expression"},
		{"missing to", "    redirect: {from: ^/a}", 4, `missing key "to"`},
		{"relative target", "    redirect: {from: ^/a, to: b}", 4, "want a path starting with /"},
		{"bad code", "    redirect: {from: ^/a, to: /b, code: 200}", 4, `invalid code "200"`},
		{"missing group", "    redirect:\n      - from: ^/a\n        to: /b/$1", 6, "redirect[0].to: target refers to group $1, but from has 0 groups"},
		{"unknown named group", "    redirect: {from: '^/(?P<x>a)', to: '/$xy'}", 4, `group "xy"`},
		{"strip trailing slash", "    strip_prefix: /api/", 4, `strip_prefix: invalid path prefix "/api/"`},
		{"add relative", "    add_prefix: v1", 4, "add_prefix: invalid path prefix"},
		{"dotdot prefix", "    add_prefix: /a/../b", 4, "invalid path prefix"},
		{"bad header name", "    request_headers:\n      set: {\"X Bad\": 1}", 5, `invalid header name "X Bad"`},
		{"reserved header", "    response_headers:\n      remove: [content-length]", 5, "frames or routes the message"},
		{"host header", "    request_headers:\n      set: {Host: x}", 5, `header "Host"`},
		{"forwarding header", "    request_headers:\n      remove: [x-forwarded-for]", 5, "set by leproxy"},
		{"unknown header op", "    request_headers:\n      replace: {X: y}", 5, `unknown key "replace"`},
		{"unknown encoding", "    compress: {encodings: [br]}", 4, `unknown encoding "br"`},
		{"compress not bool", "    compress: yes please", 4, "expected true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "app.example.com:\n  backend: 127.0.0.1:8080\n  middleware:\n" + tc.mw + "\n"
			_, err := Parse("m.yml", []byte(src))
			if err == nil {
				t.Fatalf("Parse succeeded on\n%s", src)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if e.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v (line %d), want line %d and %q", err, e.Line, tc.line, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes the plaintext password", err)
			}
		})
	}
}

func TestExampleMiddleware(t *testing.T) {
	cfg, err := Load("../../mapping.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range cfg.Hosts {
		if m := h.Middleware; m != nil && len(m.notes()) == len(middlewareKeys)-1 { // ip_allow and ip_deny share a note
			return
		}
	}
	t.Error("the example has no host that shows every middleware")
}
