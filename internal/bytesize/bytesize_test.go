package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512", 512, true},
		{"16MiB", 16 << 20, true},
		{" 2 KiB ", 2048, true},
		{"1GB", 1e9, true},
		{"10B", 10, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"1.5MiB", 0, false},
		{"MiB", 0, false},
		{"+5", 0, false},
		{"9999999999GiB", 0, false},
		{"", 0, false},
	} {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, ok %t", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
