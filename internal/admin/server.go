package admin

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/clientlimit"
)

// HandlerOptions configures the admin handler. The zero value serves the
// health endpoints only, always ready.
type HandlerOptions struct {
	// Metrics is served on /metrics; nil leaves /metrics out (404).
	Metrics *Metrics
	// Ready lists what keeps leproxy from being ready (listeners down, no
	// mapping, certificates missing or expiring: see CertProblems); none
	// means ready. It is called on every /health/ready request and must
	// be safe to call from any goroutine. nil means always ready.
	Ready func() []Problem
	// Certificates returns the state of every certificate, typically
	// (*certs.Manager).Status, for /certificates; nil leaves /certificates
	// out (404).
	Certificates func() []certs.Status
	// MinValidity is the remaining validity under which /certificates
	// shows a certificate as expiring; zero means DefaultMinValidity.
	MinValidity time.Duration
	// Logger receives errors rendering a response; nil discards them.
	Logger *slog.Logger
	// Fleet, if set, returns the fleet state (fleet mode, -store), shown
	// in /certificates' JSON as "fleet".
	Fleet func() *FleetStatus
	// Blocks is served on /blocks (GET lists, DELETE ?client= lifts);
	// nil leaves /blocks out (404).
	Blocks *clientlimit.Blocklist
}

// NewHandler returns the handler of the -admin address:
//
//	GET /                index of the endpoints
//	GET /health/live     200 "ok" while the process serves
//	GET /health/ready    200 {"ready":true}, or 503 {"ready":false,"problems":[{"what","host","detail"}…]}
//	GET /metrics         Prometheus metrics (opts.Metrics)
//	GET /blocks          clients blocked now, as JSON (opts.Blocks)
//	DELETE /blocks?client=ADDR  lifts ADDR's block (an IP address, or an
//	                     IPv6 prefix as listed): 204, or 404 when not blocked
//	GET /certificates    every certificate, as JSON (?format=json, or an
//	                     Accept without text/html) or an HTML page
//	                     (?format=html, or a browser's Accept)
//
// HEAD works wherever GET does; other methods get 405. The handler sets no
// timeouts: serve it with an http.Server that does.
func NewHandler(opts HandlerOptions) http.Handler {
	return newHandler(opts, time.Now)
}

func newHandler(opts HandlerOptions, now func() time.Time) http.Handler {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	minValid := opts.MinValidity
	if minValid <= 0 {
		minValid = DefaultMinValidity
	}
	endpoints := []string{"/health/live", "/health/ready"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", liveHandler)
	mux.Handle("GET /health/ready", readyHandler(opts.Ready, logger))
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics.Handler())
		endpoints = append(endpoints, "/metrics")
	}
	if opts.Certificates != nil {
		mux.Handle("GET /certificates", certificatesHandler(opts.Certificates, opts.Fleet, minValid, now, logger))
		endpoints = append(endpoints, "/certificates")
	}
	if opts.Blocks != nil {
		mux.Handle("GET /blocks", blocksList(opts.Blocks, logger))
		mux.Handle("DELETE /blocks", blocksLift(opts.Blocks))
		endpoints = append(endpoints, "/blocks")
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "leproxy admin:")
		for _, e := range endpoints {
			fmt.Fprintln(w, " ", e)
		}
	})
	return mux
}

// WarnIfPublic logs a warning, and returns true, when addr (the -admin
// address, host:port) may be reachable from beyond this machine: its host
// is empty, unspecified (0.0.0.0, ::), an IP address that is not loopback,
// or a name other than "localhost" (which may resolve to anything). The
// admin endpoints have no authentication. An addr that does not parse
// returns false: listening on it fails anyway.
func WarnIfPublic(addr string, logger *slog.Logger) bool {
	return warnIfPublic("-admin", "admin endpoints", addr, logger)
}

// WarnIfDebugPublic is WarnIfPublic for the -debug-addr listener.
func WarnIfDebugPublic(addr string, logger *slog.Logger) bool {
	return warnIfPublic("-debug-addr", "profiling endpoints", addr, logger)
}

func warnIfPublic(flagName, what, addr string, logger *slog.Logger) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return false
	}
	if logger != nil {
		logger.Warn(what+" reachable beyond loopback, without authentication",
			"listen", addr, "hint", "bind "+flagName+" to 127.0.0.1:PORT or [::1]:PORT, or firewall it")
	}
	return true
}
