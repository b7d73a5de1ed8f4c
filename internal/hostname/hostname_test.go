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
