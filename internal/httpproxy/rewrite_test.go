package httpproxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzPrefixRewrite rewrites arbitrary request paths: the backend's path
// always starts with a slash, its escaped form always decodes to it, and
// a path the prefix does not match is passed on as it came (add_prefix
// aside).
func FuzzPrefixRewrite(f *testing.F) {
	for _, s := range []string{"/api/x", "/api", "/apix", "/api/a%2Fb", "/%61pi/x", "/api//x", "/", "/api%2F"} {
		f.Add(s, "/api", "/v1")
		f.Add(s, "/api", "")
	}
	f.Fuzz(func(t *testing.T, path, strip, add string) {
		if !validPrefix(strip) || !validPrefix(add) || strip == "" && add == "" {
			return
		}
		u, err := url.ParseRequestURI(path)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		var got *url.URL
		h := prefixRewrite{strip: strip, add: add, next: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got = r.URL
		})}
		in := *u
		h.ServeHTTP(nil, &http.Request{URL: u})
		if *u != in {
			t.Fatalf("the client's URL changed: %+v, was %+v", u, in)
		}
		if !strings.HasPrefix(got.Path, "/") {
			t.Fatalf("%q → path %q", path, got.Path)
		}
		if dec, err := url.PathUnescape(got.EscapedPath()); err != nil || dec != got.Path {
			t.Fatalf("%q → path %q, escaped %q decodes to %q, %v", path, got.Path, got.EscapedPath(), dec, err)
		}
		if _, ok := cutPathPrefix(in.Path, strip); (!ok || strip == "") && got.Path != add+in.Path {
			t.Fatalf("%q (no match for %q) → %q, want %q", path, strip, got.Path, add+in.Path)
		}
	})
}

// validPrefix reports whether s is "" or a prefix the config accepts.
func validPrefix(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != '/' || strings.HasSuffix(s, "/") || strings.Contains(s, "//") || strings.Contains(s, "/.") {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~") == ""
}
