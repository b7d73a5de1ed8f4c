package main

import (
	"slices"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/config"
)

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

// TestDBRoutes checks that every route option of the mapping reaches
// dbproxy.
func TestDBRoutes(t *testing.T) {
	cfg, err := config.Parse("m.yml", []byte(`
tcp:
- listen: ":2525"
  protocol: smtp
  routes:
    a.example.com:
      backend: 127.0.0.1:25
      tls: insecure
      plaintext: allow
      proxy_protocol: v1
    b.example.com: 127.0.0.1:26
`))
	if err != nil {
		t.Fatal(err)
	}
	routes, names := dbRoutes(cfg.TCP[0])
	want := []dbproxy.Route{
		{Host: "a.example.com", Backend: "127.0.0.1:25", TLS: dbproxy.TLSInsecure, AllowPlaintext: true, ProxyProtocol: dbproxy.ProxyV1},
		{Host: "b.example.com", Backend: "127.0.0.1:26", TLS: dbproxy.TLSNone, ProxyProtocol: dbproxy.ProxyNone},
	}
	if !slices.Equal(routes, want) || len(names) != 2 {
		t.Errorf("dbRoutes = %+v, %q; want %+v", routes, names, want)
	}
}
