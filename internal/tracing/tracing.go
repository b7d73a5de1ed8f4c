// Package tracing is leproxy's OpenTelemetry set-up: a TracerProvider
// exporting spans over OTLP (HTTP/protobuf or gRPC), configured by the
// standard OTEL_* environment variables, and the spans of the tcp
// listeners' sessions (SessionObserver). The HTTPS spans are made by
// internal/httpproxy from the Tracer.
//
// Tracing is off unless Options.Enable (the -otel flag) or
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT says
// otherwise; then New returns a nil *Provider, whose methods all work and
// do nothing: no exporter, no goroutine, and a nil Tracer, which the
// callers check before doing any tracing work at all.
//
// The variables honoured:
//
//	OTEL_SDK_DISABLED=true               tracing off, whatever else says
//	OTEL_TRACES_EXPORTER                 otlp (default) or none
//	OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL  http/protobuf (default) or grpc
//	OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION,
//	_CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY, _INSECURE   (the exporters')
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG  (default parentbased_always_on)
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   (service.name default leproxy)
//	OTEL_BSP_*                           the batch span processor's
//
// A value New cannot use is an error naming the variable, not a silent
// default.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Protocols of the OTLP exporter.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// instrumentationName names leproxy's tracer (the instrumentation scope).
const instrumentationName = "github.com/leproxy/leproxy"

// Options configure New. The zero value turns tracing on only when an
// endpoint variable is set.
type Options struct {
	// Enable turns tracing on without an endpoint variable: spans go to
	// the exporter's default endpoint (localhost:4318 over HTTP,
	// localhost:4317 over gRPC) or where the variables say.
	Enable bool
	// Version is the service.version resource attribute; "" for none.
	Version string
	// Logger receives the errors of span export (a collector that is
	// down); nil discards them.
	Logger *slog.Logger
}

// A Provider exports leproxy's spans. A nil *Provider is tracing off.
type Provider struct {
	tp       *sdktrace.TracerProvider
	tracer   trace.Tracer
	protocol string
	endpoint string
}

// New returns the Provider the environment and opts ask for, or nil when
// tracing is off. It starts the exporter's batching goroutine but
// contacts no collector.
func New(ctx context.Context, opts Options) (*Provider, error) {
	s, err := settingsFromEnv(os.Getenv, opts.Enable)
	if err != nil || !s.enabled {
		return nil, err
	}
	var client otlptrace.Client
	switch s.protocol {
	case ProtocolGRPC:
		client = otlptracegrpc.NewClient()
	default:
		client = otlptracehttp.NewClient()
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("tracing: starting the OTLP %s exporter: %w", s.protocol, err)
	}
	res, err := newResource(ctx, opts.Version)
	if err != nil {
		exp.Shutdown(ctx)
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The SDK reports export failures through the global handler only.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing: exporting spans", "error", err)
	}))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(s.sampler),
	)
	return &Provider{
		tp:       tp,
		tracer:   tp.Tracer(instrumentationName, trace.WithInstrumentationVersion(opts.Version), trace.WithSchemaURL(semconv.SchemaURL)),
		protocol: s.protocol,
		endpoint: s.endpoint,
	}, nil
}

// Tracer is the tracer of leproxy's spans; nil when tracing is off.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tracer
}

// Protocol is the exporter's protocol (ProtocolHTTP or ProtocolGRPC); ""
// when tracing is off.
func (p *Provider) Protocol() string {
	if p == nil {
		return ""
	}
	return p.protocol
}

// Endpoint is the endpoint variable in force without userinfo or query
// (which may hold a credential), "" when the exporter uses its default,
// for the start-up log line.
func (p *Provider) Endpoint() string {
	if p == nil {
		return ""
	}
	return p.endpoint
}

// ForceFlush exports the spans ended so far.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Shutdown exports the spans still queued and stops the exporter; ctx
// bounds how long it may take (a collector that does not answer).
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutting down: %w", err)
	}
	return nil
}

// settings are what the environment says of tracing.
type settings struct {
	enabled  bool
	protocol string
	endpoint string
	sampler  sdktrace.Sampler
}

// settingsFromEnv reads the variables New honours through getenv; enable
// is Options.Enable.
func settingsFromEnv(getenv func(string) string, enable bool) (settings, error) {
	s := settings{enabled: enable}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			s.enabled, s.endpoint = true, redactEndpoint(v)
			break
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); v != "" {
		disabled, err := strconv.ParseBool(v)
		if err != nil {
			return settings{}, fmt.Errorf("tracing: OTEL_SDK_DISABLED=%q: want true or false", v)
		}
		if disabled {
			return settings{}, nil
		}
	}
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); v {
	case "", "otlp":
	case "none":
		return settings{}, nil
	default:
		return settings{}, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: leproxy exports traces over OTLP only (otlp or none)", v)
	}
	if !s.enabled {
		return s, nil
	}
	s.protocol = ProtocolHTTP
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			continue
		}
		if v != ProtocolHTTP && v != ProtocolGRPC {
			return settings{}, fmt.Errorf("tracing: %s=%q: want %s or %s", k, v, ProtocolHTTP, ProtocolGRPC)
		}
		s.protocol = v
		break
	}
	var err error
	if s.sampler, err = samplerFromEnv(getenv); err != nil {
		return settings{}, err
	}
	return s, nil
}

// samplerFromEnv is the sampler OTEL_TRACES_SAMPLER and _ARG name,
// parentbased_always_on by default: a request that arrives with a trace
// context follows its sampling decision, one without is sampled. The SDK
// reads the same variables but falls back to its default on a bad value;
// here a bad value is an error.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1 for %s", arg, name)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", name)
}

// newResource describes this leproxy: service.name leproxy (unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise), its
// version, the host name and the SDK.
func newResource(ctx context.Context, version string) (*resource.Resource, error) {
	attrs := []resource.Option{
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName("leproxy")),
	}
	if version != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(version)))
	}
	attrs = append(attrs, resource.WithHost(), resource.WithTelemetrySDK(), resource.WithFromEnv())
	res, err := resource.New(ctx, attrs...)
	if err != nil {
		if errors.Is(err, resource.ErrPartialResource) {
			return nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", err)
		}
		return nil, fmt.Errorf("tracing: describing the resource: %w", err)
	}
	return res, nil
}

// redactEndpoint is endpoint without what may be a credential (userinfo,
// query), for the log.
func redactEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		if strings.ContainsAny(endpoint, "@?") {
			return "(set)"
		}
		return endpoint
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
