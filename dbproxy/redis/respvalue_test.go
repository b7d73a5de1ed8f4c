package redis

import (
	"bytes"
	"strings"
	"testing"
)

// Tests of the RESP value parser and encoder (respvalue.go).

func TestRedisParseRESPRoundTrip(t *testing.T) {
	tests := []string{
		"+OK\r\n", "-ERR x\r\n", ":-12\r\n", "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n", "_\r\n",
		",1.5\r\n", "#t\r\n", "(12345678901234567890\r\n", "!3\r\nerr\r\n", "=7\r\ntxt:abc\r\n",
		"%1\r\n+k\r\n*2\r\n:1\r\n$1\r\n\n\r\n", "~1\r\n+a\r\n", ">2\r\n+a\r\n+b\r\n",
		"|1\r\n+ttl\r\n:3\r\n$1\r\nx\r\n", "*1\r\n|1\r\n+a\r\n+b\r\n:1\r\n",
	}
	for _, in := range tests {
		v, rest, err := parseRESP([]byte(in))
		if err != nil || len(rest) != 0 {
			t.Errorf("parseRESP(%q): rest %q, error %v", in, rest, err)
			continue
		}
		if got := string(appendRESP(nil, v)); got != in {
			t.Errorf("round trip of %q gave %q", in, got)
		}
	}
	bad := []string{"", "+OK", "$3\r\nab\r\n", "$3\r\nabcd\r\n", "*2\r\n:1\r\n", "%-1\r\n", "*99999\r\n:1\r\n",
		"?\r\n", "|1\r\n+a\r\n+b\r\n", strings.Repeat("*1\r\n", maxRESPDepth+2) + ":1\r\n"}
	for _, in := range bad {
		if _, _, err := parseRESP([]byte(in)); err == nil {
			t.Errorf("parseRESP(%q) succeeded, want an error", in)
		}
	}
}

// FuzzRedisParseRESP checks that parsing never panics and that re-encoding a
// parsed value is stable.
func FuzzRedisParseRESP(f *testing.F) {
	f.Add([]byte("*2\r\n%1\r\n+a\r\n:1\r\n|1\r\n+x\r\n+y\r\n$1\r\nz\r\n"))
	f.Add([]byte("=7\r\ntxt:abc\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		v, _, err := parseRESP(in)
		if err != nil {
			return
		}
		enc := appendRESP(nil, v)
		v2, rest, err := parseRESP(enc)
		if err != nil || len(rest) != 0 {
			t.Fatalf("re-parsing %q (from %q): rest %q, error %v", enc, in, rest, err)
		}
		if enc2 := appendRESP(nil, v2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %q then %q", enc, enc2)
		}
	})
}
