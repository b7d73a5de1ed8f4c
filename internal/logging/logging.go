// Package logging builds leproxy's logger: text or JSON records on one
// writer, at a level, with one convention for every value whatever the
// format. A duration (slog.Duration, or a time.Duration passed as a value)
// is written as seconds in a float64, so that "duration=0.0042" in text and
// "duration":0.0042 in JSON mean the same, and JSON consumers get a number
// with a known unit rather than integer nanoseconds.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a logger writing format ("text" or "json") records of level
// ("debug", "info", "warn" or "error") and above to w. The errors name the
// flags that set format and level.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: ReplaceAttr}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

// ReplaceAttr is the slog.HandlerOptions.ReplaceAttr of New's handlers: it
// writes durations as float64 seconds. slog calls it for the attributes
// inside groups too.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.Float64Value(a.Value.Duration().Seconds())
	}
	return a
}
