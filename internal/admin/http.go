package admin

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
)

// otherHost is the host label of requests for names not in the mapping:
// the host label must stay bounded whatever clients send.
const otherHost = "other"

// otherMethod is the method label of requests with a method outside
// knownMethods, for the same reason.
const otherMethod = "OTHER"

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true,
	http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true,
	http.MethodConnect: true, http.MethodOptions: true, http.MethodTrace: true,
}

// InstrumentHTTP wraps next, the HTTPS handler, to count its requests and
// observe their latency, and to write one access log line per request.
//
// Metrics: leproxy_http_requests_total{host,code,method,proto} and
// leproxy_http_request_duration_seconds{host,method,proto}. proto is the
// HTTP version as its ALPN name: "http/1.1" (or "http/1.0"), "h2" or
// "h3". host is the
// request's host name (port and trailing dot stripped, lower case) when
// known(host) is true and "other" otherwise, so that names clients make up
// cannot blow up the number of series; nil known puts every request under
// "other". A method other than the standard ones is "OTHER". A request
// whose connection is taken over (a websocket upgrade) counts with code
// 101, once its handler returns, and is not observed in the histogram.
//
// Access log, when accessLog is true and logger is not nil: one Info line
// "request" when the handler returns, with host (as sent, canonicalized),
// method, path (without the query, which may carry secrets), proto (as
// for the metrics), status,
// bytes (response bytes written to the client: the body, or everything
// written on the connection after an upgrade), duration, backend
// (backendOf(host); "" when backendOf is nil) and client (the remote
// address). A handler that panics (http.ErrAbortHandler, with which
// httputil.ReverseProxy ends a response cut by its backend) is logged with
// aborted=true and the status already sent, else 500; the panic goes on.
//
// The wrapper keeps what the handler needs from the ResponseWriter:
// Flush, Hijack (websockets) and, through Unwrap, everything
// http.ResponseController reaches (deadlines, full duplex), over HTTP/1.1
// and HTTP/2. On a nil *Metrics only the access log is written.
func (m *Metrics) InstrumentHTTP(next http.Handler, known func(host string) bool, backendOf func(host string) string, logger *slog.Logger, accessLog bool) http.Handler {
	if !accessLog {
		logger = nil
	}
	return &instrumented{next: next, m: m, known: known, backendOf: backendOf, logger: logger}
}

type instrumented struct {
	next      http.Handler
	m         *Metrics
	known     func(string) bool
	backendOf func(string) string
	logger    *slog.Logger // nil: no access log
}

func (h *instrumented) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &responseRecorder{w: w}
	completed := false
	defer func() { h.done(r, rec, start, !completed) }()
	h.next.ServeHTTP(rec, r)
	completed = true
}

// done records a finished request. aborted means the handler panicked.
func (h *instrumented) done(r *http.Request, rec *responseRecorder, start time.Time, aborted bool) {
	elapsed := time.Since(start)
	status := rec.status
	switch {
	case status != 0:
	case aborted:
		status = http.StatusInternalServerError
	default:
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	host := hostname.FromHostHeader(r.Host)
	if h.m != nil {
		label := otherHost
		if h.known != nil && host != "" && h.known(host) {
			label = host
		}
		method := r.Method
		if !knownMethods[method] {
			method = otherMethod
		}
		proto := protoLabel(r)
		h.m.httpRequests.WithLabelValues(label, strconv.Itoa(status), method, proto).Inc()
		if !rec.hijacked {
			h.m.httpDuration.WithLabelValues(label, method, proto).Observe(elapsed.Seconds())
		}
	}
	if h.logger == nil {
		return
	}
	backend := ""
	if h.backendOf != nil {
		backend = h.backendOf(host)
	}
	attrs := []slog.Attr{
		slog.String("host", host),
		slog.String("method", r.Method),
		slog.String("path", r.URL.EscapedPath()),
		slog.String("proto", protoLabel(r)),
		slog.Int("status", status),
		slog.Int64("bytes", rec.bytes.Load()),
		slog.Duration("duration", elapsed),
		slog.String("backend", backend),
		slog.String("client", r.RemoteAddr),
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	h.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// protoLabel is the HTTP version of r as its ALPN protocol ID, a bounded
// label whatever the request line said.
func protoLabel(r *http.Request) string {
	switch {
	case r.ProtoMajor == 3:
		return "h3"
	case r.ProtoMajor == 2:
		return "h2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "http/1.0"
	}
	return "http/1.1"
}
