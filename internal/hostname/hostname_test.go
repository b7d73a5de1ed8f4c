package hostname

import "testing"

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"db.example.com", "db.example.com"},
		{"DB.Example.COM.", "db.example.com"},
		{" db.example.com ", "db.example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"XN--BCHER-KVA.example", "xn--bcher-kva.example"},
		{"BÜCHER.example", "xn--bcher-kva.example"},
		{"", ""},
		{"under_score.example", "under_score.example"},
	} {
		if got := Normalize(tc.in); got != tc.want {
			t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFromHostHeader(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"www.example.com", "www.example.com"},
		{"WWW.Example.com.:8443", "www.example.com"},
		{"[::1]:443", "::1"},
		{"[::1]", "::1"},
		{"a.example.test.:443", "a.example.test"},
		{"", ""},
		{"127.0.0.1:80", "127.0.0.1"},
	} {
		if got := FromHostHeader(tc.in); got != tc.want {
			t.Errorf("FromHostHeader(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestNormalizePlain checks that the plain-name shortcut answers what idna
// does.
func TestNormalizePlain(t *testing.T) {
	for _, name := range []string{
		"db.example.com", "a", "xn--bcher-kva.example", "xn--invalid-.example",
		"-leading.example", "trailing-.example", "a..b", "under_score.example",
		"127.0.0.1", "0.example", "x--y.example", "xn--.example", "",
		"Upper.example", "bücher.example", "a b.example", "::1",
	} {
		if got, want := Normalize(name), normalizeIDNA(name); got != want {
			t.Errorf("Normalize(%q) = %q, idna gives %q", name, got, want)
		}
	}
}

func BenchmarkFromHostHeader(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		FromHostHeader("app.example.com:8443")
	}
}

func TestWildcard(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a.example.com", "*.example.com"},
		{"a.b.example.com", "*.b.example.com"},
		{"example.com", ""}, // "*.com" is no wildcard a mapping may hold
		{"com", ""},
		{"*.example.com", ""},
		{".example.com", ""},
		{"a..example", ""},
		{"", ""},
	} {
		if got := Wildcard(tc.in); got != tc.want {
			t.Errorf("Wildcard(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLookup(t *testing.T) {
	m := map[string]string{
		"*.example.com":     "wild",
		"a.example.com":     "exact",
		"*.b.example.com":   "deeper wild",
		"other.example.net": "other",
	}
	for _, tc := range []struct{ in, want, key string }{
		{"a.example.com", "exact", "a.example.com"}, // exact beats wildcard
		{"z.example.com", "wild", "*.example.com"},  // one label under the wildcard
		{"x.b.example.com", "deeper wild", "*.b.example.com"},
		{"x.y.example.com", "", ""},                // *.example.com covers one label only
		{"example.com", "", ""},                    // nor the bare domain
		{"*.example.com", "wild", "*.example.com"}, // the wildcard itself (a default name)
		{"other.example.net", "other", "other.example.net"},
		{"a.other.example.net", "", ""},
	} {
		got, key, ok := Lookup(m, tc.in)
		if got != tc.want || key != tc.key || ok != (tc.key != "") {
			t.Errorf("Lookup(%q) = %q, %q, %v; want %q, %q", tc.in, got, key, ok, tc.want, tc.key)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	m := map[string]int{"app.example.com": 1, "*.example.com": 2}
	for _, name := range []string{"app.example.com", "other.example.com"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Lookup(m, name)
			}
		})
	}
}
