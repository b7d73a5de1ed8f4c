package httpproxy

import (
	"slices"
	"strings"
	"testing"
)

func TestNegotiateEncoding(t *testing.T) {
	zg := []string{"zstd", "gzip"}
	for _, tc := range []struct {
		header string
		offers []string
		want   string
	}{
		{"", zg, ""},
		{"gzip", zg, "gzip"},
		{"zstd", zg, "zstd"},
		{"gzip, zstd", zg, "zstd"}, // tie: server order
		{"gzip, zstd", []string{"gzip", "zstd"}, "gzip"}, // the configured order
		{"deflate, gzip, br, zstd", zg, "zstd"},          // curl --compressed
		{"gzip, deflate, br, zstd", zg, "zstd"},          // browsers
		{"gzip;q=1.0, zstd;q=0.5", zg, "gzip"},
		{"zstd;q=0, gzip", zg, "gzip"},
		{"zstd;q=0, gzip;q=0", zg, ""},
		{"*", zg, "zstd"},
		{"*;q=0.1, gzip;q=0.5", zg, "gzip"},
		{"*;q=0, gzip", zg, "gzip"},
		{"*;q=0", zg, ""},
		{"identity", zg, ""},
		{"GZIP", zg, "gzip"},
		{"gzip;q=2", zg, ""},   // invalid q: ignored
		{"gzip;q=abc", zg, ""}, // invalid q: ignored
		{"gzip;q=0.001", zg, "gzip"},
		{"gzip ; q=0.8 , zstd ; q=0.9", zg, "zstd"},
		{"br", zg, ""},
		{"gzip", []string{"zstd"}, ""},
		{",,, ,gzip,", zg, "gzip"},
	} {
		if got := negotiateEncoding(strings.Split(tc.header, "\n"), tc.offers); got != tc.want {
			t.Errorf("negotiateEncoding(%q, %v) = %q, want %q", tc.header, tc.offers, got, tc.want)
		}
	}
	// Several header lines count together.
	if got := negotiateEncoding([]string{"gzip;q=0.5", "zstd;q=0.4"}, []string{"zstd", "gzip"}); got != "gzip" {
		t.Errorf("two lines: got %q, want gzip", got)
	}
}

func TestParseQ(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want int
		ok   bool
	}{
		{"0", 0, true}, {"1", 1000, true}, {"1.", 1000, true}, {"1.000", 1000, true},
		{"0.5", 500, true}, {"0.123", 123, true}, {"0.0001", 0, false}, {"1.001", 0, false},
		{"2", 0, false}, {"", 0, false}, {".5", 0, false}, {"0.a", 0, false}, {"01", 0, false},
	} {
		got, ok := parseQ(tc.s)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseQ(%q) = %d, %t; want %d, %t", tc.s, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzNegotiateEncoding checks that any Accept-Encoding yields one of the
// offers or none, never one the header refuses outright or does not name.
func FuzzNegotiateEncoding(f *testing.F) {
	for _, s := range []string{"gzip", "zstd;q=0.5, gzip;q=0.4", "*;q=0", "deflate, gzip, br, zstd", "gzip;q=1.", ";;,=q"} {
		f.Add(s)
	}
	offers := []string{"zstd", "gzip"}
	f.Fuzz(func(t *testing.T, header string) {
		got := negotiateEncoding([]string{header}, offers)
		if got == "" {
			return
		}
		if !slices.Contains(offers, got) {
			t.Fatalf("got %q, not an offer", got)
		}
		lower := strings.ToLower(header)
		if !strings.Contains(lower, got) && !strings.Contains(lower, "*") {
			t.Fatalf("got %q for %q, which does not name it", got, header)
		}
	})
}
