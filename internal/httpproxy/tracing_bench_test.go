package httpproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/leproxy/leproxy/internal/config"
)

// discardExporter drops every span, so that "on" measures the spans'
// making and batching, not a collector.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// benchTracers are the tracing settings the benchmarks compare: off (no
// Tracer, what every leproxy without -otel runs), on with every request
// sampled, and on with none sampled (OTEL_TRACES_SAMPLER=always_off).
func benchTracers(b *testing.B) []struct {
	name   string
	tracer trace.Tracer
} {
	tracer := func(s sdktrace.Sampler) trace.Tracer {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}), sdktrace.WithSampler(s))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp.Tracer("bench")
	}
	return []struct {
		name   string
		tracer trace.Tracer
	}{
		{"off", nil},
		{"on", tracer(sdktrace.AlwaysSample())},
		{"unsampled", tracer(sdktrace.NeverSample())},
	}
}

// BenchmarkTracing measures the handler chain in process, serving a small
// static file as BenchmarkLimitsOff does, with tracing off and on. "off"
// against a build without the tracing code is BenchmarkLimitsOff/none on
// both trees (bench/README.md); "on" is for information. Run with
//
//	go test -run '^$' -bench BenchmarkTracing -benchmem ./internal/httpproxy
func BenchmarkTracing(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	host := config.Host{Name: "a.example.com", Backend: config.Backend{Kind: config.BackendStatic, Raw: dir + "/", Dir: dir + "/"}}
	for _, bc := range benchTracers(b) {
		b.Run(bc.name, func(b *testing.B) {
			h, err := New([]config.Host{host}, Options{Tracer: bc.tracer})
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "https://a.example.com/", nil)
			req.RemoteAddr = "192.0.2.1:4242"
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
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

// BenchmarkTracingProxied is BenchmarkGET's proxied request with tracing
// off and on: the server span, the client span and the traceparent sent
// to the backend.
func BenchmarkTracingProxied(b *testing.B) {
	body := strings.Repeat("x", 1024)
	backend := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	for _, bc := range benchTracers(b) {
		b.Run(bc.name, func(b *testing.B) {
			h := mustNew(b, []config.Host{tcpHost("a.example.test", backend)}, Options{Tracer: bc.tracer})
			proxy, _ := serve(b, h, true, false)
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			req, err := http.NewRequest(http.MethodGet, proxy.URL+"/", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "a.example.test"
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(body)) {
					b.Fatalf("got status %d, %d bytes, error %v; want 200, %d bytes", resp.StatusCode, n, err, len(body))
				}
			}
		})
	}
}

// BenchmarkTracingOffCheck isolates what the tracing code adds to every
// request when tracing is off: "serve" calls the chain below ServeHTTP
// directly, as a build without tracing would, "ServeHTTP" goes through
// the nil-Tracer check first. A request for an unknown host keeps the
// chain short, so that a fixed cost shows. Compare with -count 10: the
// rounds interleave.
func BenchmarkTracingOffCheck(b *testing.B) {
	h, err := New([]config.Host{{Name: "a.example.com", Backend: config.Backend{Kind: config.BackendTCP, Raw: "127.0.0.1:1", Addr: "127.0.0.1:1"}}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		serve func(http.ResponseWriter, *http.Request)
	}{{"serve", h.serve}, {"ServeHTTP", h.ServeHTTP}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "https://other.example.com/", nil)
			req.RemoteAddr = "192.0.2.1:4242"
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				bc.serve(w, req)
				if w.code != http.StatusNotFound {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
}
