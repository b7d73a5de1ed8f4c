package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
)

// BenchmarkLimitsOff compares the handler chain without per-client limits
// ("none": Options.Clients nil) with the chain that has them but whose
// host has no rate_limit ("off"), and with a rate_limit no request
// reaches ("on"), serving a small static file so that the chain, not a
// backend, is what is measured. Run with -bench LimitsOff -count 10 and
// compare with benchstat: "off" must cost at most 2% over "none".
func BenchmarkLimitsOff(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	host := config.Host{Name: "a.example.com", Backend: config.Backend{Kind: config.BackendStatic, Raw: dir + "/", Dir: dir + "/"}}
	limited := host
	limited.RateLimit = config.RateLimit{Requests: 1e9, Burst: 1 << 30, InFlight: 1 << 20}
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{})
	for _, bc := range []struct {
		name string
		host config.Host
		opts Options
	}{
		{"none", host, Options{}},
		{"off", host, Options{Clients: clients}},
		{"on", limited, Options{Clients: clients}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, err := New([]config.Host{bc.host}, bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "https://a.example.com/", nil)
			req.RemoteAddr = "192.0.2.1:4242"
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
