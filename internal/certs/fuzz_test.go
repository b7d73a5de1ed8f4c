package certs

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeEntry: a Storage value (from disk, or later from a shared
// store) never panics the decoder, and whatever decodes encodes back to a
// value that decodes to the same certificate.
func FuzzDecodeEntry(f *testing.F) {
	src, err := New(Config{CacheDir: f.TempDir(), Local: true})
	if err != nil {
		f.Fatal(err)
	}
	defer src.Close()
	src.SetHosts([]string{"www.example.com"})
	c, err := src.GetCertificate(ecdsaHello("www.example.com"))
	if err != nil {
		f.Fatal(err)
	}
	good, err := encodeEntry(c)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte{})
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range []certKey{{host: "www.example.com"}, {host: "www.example.com", rsa: true}} {
			got, err := decodeEntry(data, k, now)
			if err != nil {
				continue
			}
			again, err := encodeEntry(got)
			if err != nil {
				t.Fatalf("re-encoding a decoded entry: %v", err)
			}
			back, err := decodeEntry(again, k, now)
			if err != nil || !back.Leaf.Equal(got.Leaf) {
				t.Fatalf("round trip: %v", err)
			}
		}
		parseLeafPEM(data)
	})
}

// FuzzParseRenewalInfo: the CA's renewalInfo body never panics the parser,
// and an accepted window is never empty.
func FuzzParseRenewalInfo(f *testing.F) {
	f.Add([]byte(`{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"},"explanationURL":"https://example.com/"}`))
	f.Add([]byte(`{"suggestedWindow":{"start":"2026-01-02T00:00:00Z","end":"2026-01-01T00:00:00Z"}}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		start, end, _, err := parseRenewalInfo(body)
		if err == nil && !start.Before(end) {
			t.Fatalf("accepted an empty window [%v, %v]", start, end)
		}
	})
}

// FuzzRetryAfter: any Retry-After value gives a delay within the clamp.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "21600", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := ariRetryAfter(v, now); d < ariRetryMin || d > ariRetryMax {
			t.Fatalf("ariRetryAfter(%q) = %v, outside [%v, %v]", v, d, ariRetryMin, ariRetryMax)
		}
	})
}

// FuzzProblemFromBody: an error response of any shape gives a bounded
// problem, never a panic.
func FuzzProblemFromBody(f *testing.F) {
	f.Add(409, []byte(`{"type":"urn:ietf:params:acme:error:alreadyReplaced","detail":"already replaced"}`))
	f.Add(500, []byte(strings.Repeat("x", 1000)))
	f.Add(400, []byte{})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		p := problemFromBody(status, body)
		if p.StatusCode != status {
			t.Fatalf("status %d, want %d", p.StatusCode, status)
		}
		if p.ProblemType == "" && len(p.Detail) > 200 {
			t.Fatalf("detail of %d bytes from a non-JSON body, want at most 200", len(p.Detail))
		}
	})
}

// FuzzIPFromReverseName: a tls-alpn-01 server name from any client. An
// accepted name is an address whose own reverse-DNS name gives it back.
func FuzzIPFromReverseName(f *testing.F) {
	for _, s := range []string{"1.0.0.127.in-addr.arpa", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "a.in-addr.arpa", "www.example.com", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ip, ok := ipFromReverseName(name)
		if !ok {
			return
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			t.Fatalf("ipFromReverseName(%q) = %q, not an address: %v", name, ip, err)
		}
		back, ok := ipFromReverseName(reverseName(addr))
		if !ok || back != ip {
			t.Fatalf("ipFromReverseName(%q) = %q, but its reverse name gives %q, %v", name, ip, back, ok)
		}
	})
}

// reverseName returns the reverse-DNS name of addr (RFC 1035 §3.5, RFC
// 3596 §2.5).
func reverseName(addr netip.Addr) string {
	var b strings.Builder
	if addr.Is4() {
		a := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa", a[3], a[2], a[1], a[0])
		return b.String()
	}
	a := addr.As16()
	for i := 15; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", a[i]&0xf, a[i]>>4)
	}
	b.WriteString("ip6.arpa")
	return b.String()
}
