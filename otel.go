package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/leproxy/leproxy/internal/tracing"
)

// tracingShutdownTimeout bounds how long a stopping leproxy spends
// exporting the spans still queued.
const tracingShutdownTimeout = 5 * time.Second

// startTracing sets up tracing as -otel and the OTEL_* variables say; the
// Provider is nil when tracing is off.
func startTracing(ctx context.Context, enable bool, logger *slog.Logger) (*tracing.Provider, error) {
	tp, err := tracing.New(ctx, tracing.Options{Enable: enable, Version: serviceVersion(), Logger: logger})
	if err != nil {
		return nil, err
	}
	if tp != nil {
		endpoint := tp.Endpoint()
		if endpoint == "" {
			endpoint = "(exporter default)"
		}
		logger.Info("tracing on: exporting spans over OTLP", "protocol", tp.Protocol(), "endpoint", endpoint)
	}
	return tp, nil
}

// stopTracing exports the spans still queued, within
// tracingShutdownTimeout.
func stopTracing(tp *tracing.Provider, logger *slog.Logger) {
	if tp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		logger.Warn("tracing: spans lost at stop", "error", err)
	}
}

// serviceVersion is the module version, for the service.version resource
// attribute; "" when unknown.
func serviceVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return ""
}
