package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/leproxy/leproxy/internal/tracing/otlptest"
)

// otelVars are every variable these tests set; each test starts with them
// empty, whatever the environment of the test process says.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}

func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
}

func TestSettingsFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		enable   bool
		want     bool   // enabled
		protocol string // when enabled
		endpoint string
		sampler  string // Sampler.Description, when enabled
		err      string // substring of the error; "" for none
	}{
		{name: "nothing set: off"},
		{name: "flag", enable: true, want: true, protocol: ProtocolHTTP,
			sampler: "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want: true, protocol: ProtocolHTTP, endpoint: "http://collector:4318"},
		{name: "traces endpoint wins, credentials redacted", env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://a:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:pw@b:4318/v1/traces?key=secret",
		}, want: true, protocol: ProtocolHTTP, endpoint: "https://b:4318/v1/traces"},
		{name: "grpc", enable: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: true, protocol: ProtocolGRPC},
		{name: "traces protocol wins", enable: true, env: map[string]string{
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
		}, want: true, protocol: ProtocolHTTP},
		{name: "http/json refused", enable: true, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			err: `OTEL_EXPORTER_OTLP_PROTOCOL="http/json": want http/protobuf or grpc`},
		{name: "SDK disabled beats the flag", enable: true, env: map[string]string{
			"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
		}},
		{name: "SDK disabled false", enable: true, env: map[string]string{"OTEL_SDK_DISABLED": "false"}, want: true, protocol: ProtocolHTTP},
		{name: "SDK disabled bad", env: map[string]string{"OTEL_SDK_DISABLED": "maybe"}, err: `OTEL_SDK_DISABLED="maybe"`},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}},
		{name: "exporter zipkin refused", enable: true, env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: `OTEL_TRACES_EXPORTER="zipkin"`},
		{name: "ratio sampler", enable: true, env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: true, protocol: ProtocolHTTP, sampler: "TraceIDRatioBased{0.25}"},
		{name: "always off", enable: true, env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			want: true, protocol: ProtocolHTTP, sampler: "AlwaysOffSampler"},
		{name: "bad ratio", enable: true, env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
			err: `OTEL_TRACES_SAMPLER_ARG="2"`},
		{name: "unknown sampler", enable: true, env: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"},
			err: `OTEL_TRACES_SAMPLER="jaeger_remote"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := settingsFromEnv(func(k string) string { return tc.env[k] }, tc.enable)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			if s.enabled != tc.want {
				t.Fatalf("enabled: got %v, want %v", s.enabled, tc.want)
			}
			if !s.enabled {
				return
			}
			if s.protocol != tc.protocol {
				t.Errorf("protocol: got %q, want %q", s.protocol, tc.protocol)
			}
			if s.endpoint != tc.endpoint {
				t.Errorf("endpoint: got %q, want %q", s.endpoint, tc.endpoint)
			}
			if tc.sampler != "" && s.sampler.Description() != tc.sampler {
				t.Errorf("sampler: got %s, want %s", s.sampler.Description(), tc.sampler)
			}
		})
	}
}

// TestOffIsNothing checks that with nothing set New makes no provider and
// starts no goroutine, and that the nil Provider's methods are safe.
func TestOffIsNothing(t *testing.T) {
	clearEnv(t)
	before := runtime.NumGoroutine()
	p, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		t.Fatalf("got a provider %+v with tracing off", p)
	}
	if p.Tracer() != nil || p.SessionObserver() != nil || p.Protocol() != "" {
		t.Error("a nil Provider hands out a tracer, an observer or a protocol")
	}
	if err := p.ForceFlush(t.Context()); err != nil {
		t.Error(err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Error(err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before New, %d after", before, after)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct{ k, v, want string }{
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign", "OTEL_RESOURCE_ATTRIBUTES"},
	} {
		t.Run(tc.k, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.k, tc.v)
			p, err := New(t.Context(), Options{Enable: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				p.Shutdown(t.Context())
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// exportOne makes one span with p and shuts p down, which flushes it.
func exportOne(t *testing.T, p *Provider) {
	t.Helper()
	_, span := p.Tracer().Start(context.Background(), "test span", trace.WithSpanKind(trace.SpanKindInternal))
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestExportOverHTTP(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k1")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.name=from-attrs")
	t.Setenv("OTEL_SERVICE_NAME", "edge")
	p, err := New(t.Context(), Options{Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Protocol() != ProtocolHTTP {
		t.Errorf("protocol %q, want %s", p.Protocol(), ProtocolHTTP)
	}
	exportOne(t, p)
	spans := r.Spans() // Shutdown has flushed
	if len(spans) != 1 || spans[0].Name != "test span" {
		t.Fatalf("received:\n%s\nwant the one test span", otlptest.Dump(spans))
	}
	s := spans[0]
	for k, want := range map[string]any{
		"service.name":                "edge", // OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES
		"service.version":             "v9.9.9",
		"deployment.environment.name": "test",
		"telemetry.sdk.language":      "go",
	} {
		if got := s.Resource[k]; got != want {
			t.Errorf("resource %s: got %v, want %v", k, got, want)
		}
	}
	if s.Scope != instrumentationName || s.Kind != tracepb.Span_SPAN_KIND_INTERNAL {
		t.Errorf("scope %q kind %v", s.Scope, s.Kind)
	}
	if h := r.Headers(); len(h) == 0 || h[0].Get("X-Collector-Key") != "k1" {
		t.Errorf("export request headers %v, want x-collector-key: k1 from OTEL_EXPORTER_OTLP_HEADERS", h)
	}
}

func TestExportOverGRPC(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartGRPC(t)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.Addr) // http: plaintext gRPC
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k2")
	p, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Protocol() != ProtocolGRPC {
		t.Errorf("protocol %q, want %s", p.Protocol(), ProtocolGRPC)
	}
	exportOne(t, p)
	spans := r.Spans()
	if len(spans) != 1 || spans[0].Name != "test span" || spans[0].Resource["service.name"] != "leproxy" {
		t.Fatalf("received:\n%s\nwant the one test span of service leproxy", otlptest.Dump(spans))
	}
	if h := r.Headers(); len(h) == 0 || h[0].Get("x-collector-key") != "k2" {
		t.Errorf("export metadata %v, want x-collector-key: k2", h)
	}
}

// TestShutdownBounded checks that Shutdown gives up when its context ends
// with a collector that never answers.
func TestShutdownBounded(t *testing.T) {
	clearEnv(t)
	hang := make(chan struct{})
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(collector.Close)
	t.Cleanup(func() { close(hang) }) // before Close, which waits for the handler
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	p, err := New(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer().Start(context.Background(), "stuck")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	if err == nil {
		t.Error("Shutdown returned nil with a collector that never answered")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v with a 300ms context", d)
	}
}
