package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/leproxy/leproxy/internal/config"
)

// BenchmarkServeHTTP measures Handler.ServeHTTP in process with the
// default Options: a request for an unknown host (the shortest path
// through the chain, where a fixed cost shows most) and a small static
// file. It uses only the API of builds without tracing, so that
// bench/tracing-off.sh can run it on both and show what the tracing code
// costs when it is off.
func BenchmarkServeHTTP(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	h, err := New([]config.Host{{Name: "a.example.com", Backend: config.Backend{Kind: config.BackendStatic, Raw: dir + "/", Dir: dir + "/"}}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, url string
		want      int
	}{
		{"notfound", "https://other.example.com/", http.StatusNotFound},
		{"static", "https://a.example.com/", http.StatusOK},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, bc.url, nil)
			req.RemoteAddr = "192.0.2.1:4242"
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != bc.want {
					b.Fatalf("status %d, want %d", w.Code, bc.want)
				}
			}
		})
	}
}
