package main

import "testing"

func TestListenKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{":5432", "0.0.0.0:5432"},
		{":5432", "[::]:5432"},
		{"127.0.0.1:5432", "[::ffff:127.0.0.1]:5432"},
	} {
		if ka, kb := listenKey(tc.a), listenKey(tc.b); ka != kb {
			t.Errorf("listenKey(%q) = %q, listenKey(%q) = %q; want the same", tc.a, ka, tc.b, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{":5432", ":5433"},
		{"127.0.0.1:5432", "127.0.0.2:5432"},
		{"127.0.0.1:5432", ":5432"},
	} {
		if ka, kb := listenKey(tc.a), listenKey(tc.b); ka == kb {
			t.Errorf("listenKey(%q) = listenKey(%q) = %q; want different", tc.a, tc.b, ka)
		}
	}
}
