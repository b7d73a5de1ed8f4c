package dbproxy

import (
	"errors"
	"testing"
)

// TestRouterWildcard checks that a wildcard route serves the names one
// label under it and that an exact route beats it.
func TestRouterWildcard(t *testing.T) {
	rt, err := newRouter([]Route{
		{Host: "*.example.test", Backend: "127.0.0.1:1"},
		{Host: "a.example.test", Backend: "127.0.0.1:2"},
	}, "*.example.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sni, want string }{
		{"a.example.test", "127.0.0.1:2"},
		{"b.example.test", "127.0.0.1:1"},
		{"B.Example.Test.", "127.0.0.1:1"},
		{"", "127.0.0.1:1"}, // the default
		{"x.b.example.test", ""},
		{"example.test", ""},
	} {
		r, err := rt.lookup(tc.sni)
		switch {
		case tc.want == "" && !errors.Is(err, ErrNoRoute):
			t.Errorf("lookup(%q) = %v, %v; want ErrNoRoute", tc.sni, r, err)
		case tc.want != "" && (err != nil || r.Backend != tc.want):
			t.Errorf("lookup(%q) = %v, %v; want backend %s", tc.sni, r, err, tc.want)
		}
	}
	if rt.certName != "*.example.test" {
		t.Errorf("certName = %q, want the default's *.example.test", rt.certName)
	}
}
