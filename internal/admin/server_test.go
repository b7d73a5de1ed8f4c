package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/leproxy/leproxy/internal/certs"
)

func TestWarnIfPublic(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9090", false},
		{"127.0.0.2:9090", false},
		{"[::1]:9090", false},
		{"[::ffff:127.0.0.1]:9090", false},
		{"localhost:9090", false},
		{"LocalHost:9090", false},
		{":9090", true},
		{"0.0.0.0:9090", true},
		{"[::]:9090", true},
		{"192.168.1.10:9090", true},
		{"[2001:db8::1]:9090", true},
		{"admin.example.test:9090", true},
		{"9090", false}, // does not parse: listening fails anyway
	}
	for _, tt := range tests {
		logger, logs := newLogger()
		got := WarnIfPublic(tt.addr, logger)
		if got != tt.want {
			t.Errorf("WarnIfPublic(%q): got %v, want %v", tt.addr, got, tt.want)
		}
		recs := logs.records(t)
		warned := len(recs) == 1 && recs[0]["level"] == "WARN" && recs[0]["listen"] == tt.addr
		if warned != tt.want || len(recs) > 1 {
			t.Errorf("WarnIfPublic(%q): logged %v, want a warning: %v", tt.addr, recs, tt.want)
		}
	}
	if !WarnIfPublic(":9090", nil) {
		t.Error("WarnIfPublic with a nil logger: got false, want true")
	}
}

func TestHandlerRoutes(t *testing.T) {
	full := NewHandler(HandlerOptions{
		Metrics:      NewMetrics(),
		Certificates: func() []certs.Status { return nil },
	})
	bare := NewHandler(HandlerOptions{})
	tests := []struct {
		name         string
		h            http.Handler
		method, path string
		want         int
	}{
		{"full", full, "GET", "/", 200},
		{"full", full, "GET", "/metrics", 200},
		{"full", full, "HEAD", "/metrics", 200},
		{"full", full, "GET", "/certificates", 200},
		{"full", full, "POST", "/health/ready", 405},
		{"full", full, "DELETE", "/certificates", 405},
		{"full", full, "GET", "/nowhere", 404},
		{"bare", bare, "GET", "/health/live", 200},
		{"bare", bare, "GET", "/health/ready", 200},
		{"bare", bare, "GET", "/metrics", 404},
		{"bare", bare, "GET", "/certificates", 404},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		tt.h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.want {
			t.Errorf("%s: %s %s: got %d, want %d", tt.name, tt.method, tt.path, rec.Code, tt.want)
		}
	}

	rec := httptest.NewRecorder()
	full.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if want := "leproxy admin:\n  /health/live\n  /health/ready\n  /metrics\n  /certificates\n"; rec.Body.String() != want {
		t.Errorf("index: got %q, want %q", rec.Body.String(), want)
	}
}
