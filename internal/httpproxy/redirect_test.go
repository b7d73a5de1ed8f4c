package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRedirect(t *testing.T) {
	known := func(host string) bool { return host == "a.example.test" }
	for _, tc := range []struct {
		name         string
		port         string
		host         string
		target       string
		method       string
		wantStatus   int
		wantLocation string
	}{
		{"root", "443", "a.example.test", "/", "GET", 308, "https://a.example.test/"},
		{"path and query kept", "443", "a.example.test", "/a/b%2Fc/../d?x=1&y=%20z&x=2", "GET", 308, "https://a.example.test/a/b%2Fc/../d?x=1&y=%20z&x=2"},
		{"unusual bytes kept", "443", "a.example.test", "/p{x}|%41?q={y}", "GET", 308, "https://a.example.test/p{x}|%41?q={y}"},
		{"empty query kept", "443", "a.example.test", "/p?", "GET", 308, "https://a.example.test/p?"},
		{"double slash kept", "443", "a.example.test", "//p", "GET", 308, "https://a.example.test//p"},
		{"other https port", "8443", "a.example.test", "/p?q", "GET", 308, "https://a.example.test:8443/p?q"},
		{"port with colon", ":8443", "a.example.test", "/", "GET", 308, "https://a.example.test:8443/"},
		{"empty port", "", "a.example.test", "/", "GET", 308, "https://a.example.test/"},
		{"host header port stripped", "443", "a.example.test:8080", "/p", "GET", 308, "https://a.example.test/p"},
		{"host case and dot", "443", "A.Example.Test.:80", "/p", "GET", 308, "https://a.example.test/p"},
		{"post keeps method via 308", "443", "a.example.test", "/form", "POST", 308, "https://a.example.test/form"},
		{"unknown host", "443", "b.example.test", "/", "GET", 404, ""},
		{"no host", "443", "", "/", "GET", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			Redirect(known, tc.port).ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Errorf("got status %d, want %d", rec.Code, tc.wantStatus)
			}
			if got := rec.Header().Get("Location"); got != tc.wantLocation {
				t.Errorf("got Location %q, want %q", got, tc.wantLocation)
			}
			if tc.wantStatus == 404 && rec.Body.String() != "unknown host\n" {
				t.Errorf("got body %q, want %q", rec.Body.String(), "unknown host\n")
			}
		})
	}
}

func TestRedirectNilKnown(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	req.Host = "a.example.test"
	rec := httptest.NewRecorder()
	Redirect(nil, "443").ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("got status %d, want 404", rec.Code)
	}
}

func TestRedirectAbsoluteForm(t *testing.T) {
	// A request line with an absolute URI redirects to its path and query.
	srv := httptest.NewServer(Redirect(func(string) bool { return true }, "8443"))
	t.Cleanup(srv.Close)
	resp, _ := rawRequest(t, srv.Listener.Addr().String(),
		"GET http://a.example.test/p%20q?x=1 HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("got status %d, want 308", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Location"), "https://a.example.test:8443/p%20q?x=1"; got != want {
		t.Errorf("got Location %q, want %q", got, want)
	}
}
