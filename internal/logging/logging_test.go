package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestDurationsAsSeconds checks that every way a duration reaches a record
// (a key-value pair, slog.Duration, an attribute of a group, of a logger's
// With) is written as float seconds, in text and in JSON alike.
func TestDurationsAsSeconds(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		logger, err := New(&buf, format, "info")
		if err != nil {
			t.Fatal(err)
		}
		logger.With("drain_timeout", 30*time.Second).Info("m",
			"duration", 1500*time.Millisecond,
			slog.Duration("retry_in", 5*time.Millisecond),
			slog.Group("g", "idle", 2*time.Minute),
			"count", 3)
		line := buf.String()
		if format == "text" {
			for _, want := range []string{"drain_timeout=30 ", "duration=1.5 ", "retry_in=0.005 ", "g.idle=120 ", "count=3"} {
				if !strings.Contains(line, want) {
					t.Errorf("text: %q lacks %q", line, want)
				}
			}
			continue
		}
		var rec struct {
			DrainTimeout any `json:"drain_timeout"`
			Duration     any `json:"duration"`
			RetryIn      any `json:"retry_in"`
			G            struct {
				Idle any `json:"idle"`
			} `json:"g"`
			Count any `json:"count"`
		}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("json: %v: %q", err, line)
		}
		got := []any{rec.DrainTimeout, rec.Duration, rec.RetryIn, rec.G.Idle, rec.Count}
		want := []any{30.0, 1.5, 0.005, 120.0, 3.0}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("json: value %d = %v (%T), want %v; record %q", i, got[i], got[i], want[i], line)
			}
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tt := range []struct{ format, level, want string }{
		{"xml", "info", `-log-format: "xml" is not text or json`},
		{"text", "loud", `-log-level: "loud" is not one of debug, info, warn, error`},
	} {
		if _, err := New(&bytes.Buffer{}, tt.format, tt.level); err == nil || err.Error() != tt.want {
			t.Errorf("New(%q, %q): got %v, want %q", tt.format, tt.level, err, tt.want)
		}
	}
}

func TestLevel(t *testing.T) {
	var buf bytes.Buffer
	logger, err := New(&buf, "text", "warn")
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("quiet")
	logger.Warn("loud")
	if s := buf.String(); strings.Contains(s, "quiet") || !strings.Contains(s, "loud") {
		t.Errorf("-log-level warn: got %q", s)
	}
}
