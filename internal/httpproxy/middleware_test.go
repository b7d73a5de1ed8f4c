package httpproxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
)

// mwHost maps name to srv with the middleware m.
func mwHost(name string, srv interface{ Addr() string }, m *config.Middleware) config.Host {
	h := config.Host{Name: name, Backend: config.Backend{Kind: config.BackendTCP, Raw: srv.Addr(), Addr: srv.Addr()}}
	h.Middleware = m
	return h
}

// addrOf adapts an httptest.Server to mwHost.
type addrOf string

func (a addrOf) Addr() string { return string(a) }

// serveMW serves one host, a.example.test, with middleware m in front of
// backend over HTTPS and returns a client for it.
func serveMW(t *testing.T, backend http.Handler, m *config.Middleware) *http.Client {
	t.Helper()
	srv := startBackend(t, backend)
	h := mustNew(t, []config.Host{mwHost("a.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{})
	_, c := serve(t, h, false, false)
	return c
}

// countHandler counts the requests that reach next.
func countHandler(n *atomic.Int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		next.ServeHTTP(w, r)
	})
}

func TestClientIP(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:1234", "192.0.2.1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[fe80::1%eth0]:80", "fe80::1"},
		{"192.0.2.9", "192.0.2.9"},
		{"@", "invalid IP"},
		{"", "invalid IP"},
	} {
		r := &http.Request{RemoteAddr: tc.remote}
		if got := peerIP(r).String(); got != tc.want {
			t.Errorf("peerIP(%q) = %s, want %s", tc.remote, got, tc.want)
		}
	}
}

func TestIPFilterAllowed(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		allow, deny []netip.Prefix
		ip          string
		want        bool
	}{
		{pp("10.0.0.0/8"), nil, "10.1.2.3", true},
		{pp("10.0.0.0/8"), nil, "11.1.2.3", false},
		{pp("10.0.0.0/8"), pp("10.9.0.0/16"), "10.9.1.1", false}, // deny wins
		{pp("10.0.0.0/8"), pp("10.9.0.0/16"), "10.8.1.1", true},
		{nil, pp("192.0.2.0/24"), "192.0.2.200", false},
		{nil, pp("192.0.2.0/24"), "198.51.100.1", true},
		{pp("2001:db8::/32"), nil, "2001:db8:1::5", true},
		{pp("2001:db8::/32"), nil, "10.0.0.1", false},
		{nil, pp("192.0.2.0/24"), "", false}, // no address: refused
	} {
		ip, _ := netip.ParseAddr(tc.ip)
		f := ipFilter{allow: tc.allow, deny: tc.deny}
		if got := f.allowed(ip); got != tc.want {
			t.Errorf("allow %v deny %v: allowed(%q) = %t, want %t", tc.allow, tc.deny, tc.ip, got, tc.want)
		}
	}
}

func TestIPFilter(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny []string
		want        int
	}{
		{"allowed loopback", []string{"127.0.0.0/8"}, nil, http.StatusOK},
		{"not in allow", []string{"10.0.0.0/8", "2001:db8::/32"}, nil, http.StatusForbidden},
		{"denied", nil, []string{"127.0.0.1/32"}, http.StatusForbidden},
		{"deny wins over allow", []string{"127.0.0.0/8"}, []string{"127.0.0.1/32"}, http.StatusForbidden},
		{"deny elsewhere", nil, []string{"10.0.0.0/8"}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &config.Middleware{}
			for _, s := range tc.allow {
				m.Allow = append(m.Allow, netip.MustParsePrefix(s))
			}
			for _, s := range tc.deny {
				m.Deny = append(m.Deny, netip.MustParsePrefix(s))
			}
			var hits atomic.Int64
			c := serveMW(t, countHandler(&hits, echoHandler("b")), m)
			resp, _ := do(t, c, "https://a.example.test/", nil)
			if resp.StatusCode != tc.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.want)
			}
			if want := int64(0); tc.want != http.StatusOK && hits.Load() != want {
				t.Errorf("a refused request reached the backend")
			}
		})
	}
}

func TestBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	basic := func(user, pass string) http.Header {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth(user, pass)
		return http.Header{"Authorization": r.Header["Authorization"]}
	}
	for _, tc := range []struct {
		name      string
		pass      bool // PassAuthorization
		header    http.Header
		want      int
		wantAuthz bool // backend sees Authorization
	}{
		{"no credentials", false, nil, http.StatusUnauthorized, false},
		{"wrong password", false, basic("alice", "guess"), http.StatusUnauthorized, false},
		{"unknown user", false, basic("mallory", "s3cret pass"), http.StatusUnauthorized, false},
		{"not basic", false, http.Header{"Authorization": {"Bearer abc"}}, http.StatusUnauthorized, false},
		{"garbage", false, http.Header{"Authorization": {"Basic !!!"}}, http.StatusUnauthorized, false},
		{"right", false, basic("alice", "s3cret pass"), http.StatusOK, false},
		{"right, passed on", true, basic("alice", "s3cret pass"), http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newTestLogger()
			srv := startBackend(t, echoHandler("b"))
			m := &config.Middleware{BasicAuth: &config.BasicAuth{
				Realm: "staff", Users: map[string][]byte{"alice": hash}, PassAuthorization: tc.pass,
			}}
			h := mustNew(t, []config.Host{mwHost("a.example.test", addrOf(srv.Listener.Addr().String()), m)}, Options{Logger: logger})
			_, c := serve(t, h, false, false)
			// Twice: the second time a passed login comes from the cache.
			for range 2 {
				resp, body := do(t, c, "https://a.example.test/", tc.header)
				if resp.StatusCode != tc.want {
					t.Fatalf("got %d, want %d", resp.StatusCode, tc.want)
				}
				if tc.want == http.StatusUnauthorized {
					if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="staff", charset="UTF-8"` {
						t.Errorf("WWW-Authenticate = %q", got)
					}
					continue
				}
				if got := decodeEcho(t, body).Header.Get("Authorization") != ""; got != tc.wantAuthz {
					t.Errorf("backend saw Authorization: %t, want %t", got, tc.wantAuthz)
				}
			}
			for _, rec := range logs.records(t) {
				if s := fmt.Sprint(rec); strings.Contains(s, "s3cret") || strings.Contains(s, "czNjcmV0") {
					t.Errorf("the password is in the log: %s", s)
				}
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	var hits atomic.Int64
	backend := countHandler(&hits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d", len(b))
	}))
	c := serveMW(t, backend, &config.Middleware{MaxBody: 100})
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool // no Content-Length: the limit bites while reading
		want    int
		// reached: whether the backend's handler runs. For a chunked body
		// over the limit it may or may not: the head goes to the backend
		// before the body is read, and the request is cut when the limit
		// bites, so whether the backend got as far as its handler is a
		// race; only the 413 is certain.
		reached string // "yes", "no" or "either"
	}{
		{"within", 100, false, http.StatusOK, "yes"},
		{"announced too large", 101, false, http.StatusRequestEntityTooLarge, "no"},
		{"chunked within", 100, true, http.StatusOK, "yes"},
		{"chunked too large", 5000, true, http.StatusRequestEntityTooLarge, "either"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), tc.size))
			if tc.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequest(http.MethodPost, "https://a.example.test/", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, got, tc.want)
			}
			if tc.want == http.StatusOK && string(got) != fmt.Sprint(tc.size) {
				t.Errorf("backend read %s bytes, want %d", got, tc.size)
			}
			if reached := hits.Load() > 0; tc.reached != "either" && reached != (tc.reached == "yes") {
				t.Errorf("backend reached: %t, want %s", reached, tc.reached)
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	m := &config.Middleware{Redirects: []config.Redirect{
		{From: regexp.MustCompile(`^/old/(.*)$`), To: "/new/$1", Code: http.StatusMovedPermanently},
		{From: regexp.MustCompile(`^/(?P<page>about|team)$`), To: "https://www.example.com/${page}?from=a", Code: http.StatusFound},
		{From: regexp.MustCompile(`^/go/(.*)$`), To: "/$1", Code: http.StatusTemporaryRedirect},
	}}
	c := serveMW(t, echoHandler("b"), m)
	for _, tc := range []struct {
		path     string
		code     int
		location string
	}{
		{"/old/a/b.html", 301, "/new/a/b.html"},
		{"/old/x?q=1&r=2", 301, "/new/x?q=1&r=2"},
		{"/old/sp%20ace", 301, "/new/sp%20ace"},
		{"/about", 302, "https://www.example.com/about?from=a"},
		{"/team?x=1", 302, "https://www.example.com/team?from=a"},
		{"/go//evil.example", 307, "/evil.example"}, // cleaned: no scheme-relative URL
		{"/go/%5Cevil.example", 307, "/%5Cevil.example"},
		{"/go/a/../b", 307, "/b"},
		{"/older/a", 200, ""},
		{"/", 200, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, _ := do(t, c, "https://a.example.test"+tc.path, nil)
			if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tc.code, tc.location)
			}
		})
	}
}

func TestPrefixRewrite(t *testing.T) {
	for _, tc := range []struct {
		strip, add string
		path       string // as sent
		want       string // r.URL.Path at the backend
		wantRaw    string // the escaped path at the backend
	}{
		{"/api", "", "/api/users", "/users", "/users"},
		{"/api", "", "/api", "/", "/"},
		{"/api", "", "/apix/users", "/apix/users", "/apix/users"},
		{"/api", "", "/other", "/other", "/other"},
		{"/api", "/v1", "/api/users", "/v1/users", "/v1/users"},
		{"", "/v1", "/users", "/v1/users", "/v1/users"},
		{"/api", "", "/api/a%2Fb", "/a/b", "/a%2Fb"},
		{"/api", "/v2", "/api/a%2Fb", "/v2/a/b", "/v2/a%2Fb"},
	} {
		t.Run(tc.strip+tc.add+tc.path, func(t *testing.T) {
			c := serveMW(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s %s", r.URL.Path, r.URL.EscapedPath())
			}), &config.Middleware{StripPrefix: tc.strip, AddPrefix: tc.add})
			_, body := do(t, c, "https://a.example.test"+tc.path, nil)
			if want := tc.want + " " + tc.wantRaw; body != want {
				t.Errorf("backend saw %q, want %q", body, want)
			}
		})
	}
}

func TestHeaderOps(t *testing.T) {
	m := &config.Middleware{
		RequestHeaders: config.HeaderOps{
			Remove: []string{"X-Debug"},
			Set:    []config.HeaderField{{Name: "X-Env", Value: "prod"}},
			Add:    []config.HeaderField{{Name: "X-Tag", Value: "proxy"}},
		},
		ResponseHeaders: config.HeaderOps{
			Remove: []string{"Server"},
			Set:    []config.HeaderField{{Name: "X-Frame-Options", Value: "DENY"}},
			Add:    []config.HeaderField{{Name: "X-Served-By", Value: "leproxy"}},
		},
	}
	c := serveMW(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "backend/1.0")
		w.Header().Set("X-Frame-Options", "SAMEORIGIN")
		w.Header().Set("X-Served-By", "backend")
		echoHandler("b").ServeHTTP(w, r)
	}), m)
	resp, body := do(t, c, "https://a.example.test/", http.Header{
		"X-Debug": {"1"}, "X-Env": {"dev"}, "X-Tag": {"client"},
	})
	got := decodeEcho(t, body).Header
	if got.Get("X-Debug") != "" || fmt.Sprint(got["X-Env"]) != "[prod]" || fmt.Sprint(got["X-Tag"]) != "[client proxy]" {
		t.Errorf("backend saw X-Debug %q, X-Env %q, X-Tag %q; want none, [prod], [client proxy]",
			got["X-Debug"], got["X-Env"], got["X-Tag"])
	}
	h := resp.Header
	if h.Get("Server") != "" || fmt.Sprint(h["X-Frame-Options"]) != "[DENY]" || fmt.Sprint(h["X-Served-By"]) != "[backend leproxy]" {
		t.Errorf("client got Server %q, X-Frame-Options %q, X-Served-By %q", h["Server"], h["X-Frame-Options"], h["X-Served-By"])
	}

	// A refusal of the stack gets the response headers too.
	m.Allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	c = serveMW(t, echoHandler("b"), m)
	resp, _ = do(t, c, "https://a.example.test/", nil)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("refusal: got %d with X-Frame-Options %q, want 403 with DENY", resp.StatusCode, resp.Header.Get("X-Frame-Options"))
	}
}

// TestClientIPTrustedProxy: behind a trusted proxy the IP filter judges
// the client X-Forwarded-For names, elsewhere the peer, whatever the
// header says.
func TestClientIPTrustedProxy(t *testing.T) {
	h := &Handler{clients: clientlimit.New(clientlimit.Policy{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	}, clientlimit.Options{})}
	for _, tc := range []struct{ remote, xff, want string }{
		{"10.1.2.3:4000", "198.51.100.7", "198.51.100.7"},
		{"10.1.2.3:4000", "203.0.113.9, 198.51.100.7", "198.51.100.7"},
		{"192.0.2.1:4000", "198.51.100.7", "192.0.2.1"},
		{"10.1.2.3:4000", "", "10.1.2.3"},
	} {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := h.clientIP(r).String(); got != tc.want {
			t.Errorf("clientIP(%s, X-Forwarded-For %q) = %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}
