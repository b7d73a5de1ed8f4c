package admin

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/hostname"
	"github.com/leproxy/leproxy/internal/requestid"
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

// HTTPOptions configures InstrumentHTTP. The zero value counts every
// request under host "other", writes no access log and trusts no peer's
// X-Request-Id.
type HTTPOptions struct {
	// Known reports whether a host name is in the mapping, so that it gets
	// a host label of its own.
	Known func(host string) bool
	// BackendOf returns the backend of a host, for the access log.
	BackendOf func(host string) string
	// AccessLog receives one line per request; nil writes none.
	AccessLog *slog.Logger
	// TrustedPeer reports whether a connection's peer is a trusted proxy
	// (the mapping's trusted_proxies), whose X-Request-Id is kept.
	TrustedPeer func(netip.Addr) bool
}

// InstrumentHTTP wraps next, the HTTPS handler, to name each request, count
// it and observe its latency, and to write one access log line per request.
//
// Request id: every request gets an id (package requestid) in its
// X-Request-Id header, which the backend receives, and in its context. A
// client's own X-Request-Id is kept when its peer is a trusted proxy and
// the id is valid, and replaced otherwise.
//
// Metrics: leproxy_http_requests_total{host,code,method,protocol},
// leproxy_http_request_duration_seconds{host,method,protocol},
// leproxy_http_requests_in_flight{host} and
// leproxy_http_request_bytes_total / leproxy_http_response_bytes_total
// {host,protocol}. host is the request's host name (port and trailing dot
// stripped, lower case) when Known(host) is true and "other" otherwise, so
// that names clients make up cannot blow up the number of series. A method
// other than the standard ones is "OTHER"; protocol is the HTTP version as
// its ALPN name: "http/1.1" (or "http/1.0"), "h2" or "h3". Bytes are those
// of the bodies (request body read, response body written), and after a
// protocol upgrade everything read from and written to the connection. A
// request whose connection is taken over (a websocket upgrade) counts with
// code 101, once its handler returns, and is not observed in the histogram.
//
// Access log: one Info line "request" when the handler returns, with host
// (as sent, canonicalized), method, path (without the query, which may
// carry secrets), protocol (r.Proto: HTTP/1.1, HTTP/2.0, HTTP/3.0), status,
// bytes_in and bytes_out (the counted bytes above), duration, backend
// (BackendOf(host)), client (the remote address), tls_version (1.2, 1.3),
// user_agent and request_id. A handler that panics
// (http.ErrAbortHandler, with which httputil.ReverseProxy ends a response
// cut by its backend) is logged with aborted=true and the status already
// sent, else 500; the panic goes on.
//
// The wrapper keeps what the handler needs from the ResponseWriter:
// Flush, Hijack (websockets) and, through Unwrap, everything
// http.ResponseController reaches (deadlines, full duplex), over HTTP/1.1
// and HTTP/2. On a nil *Metrics only the request id and the access log
// are done.
func (m *Metrics) InstrumentHTTP(next http.Handler, opts HTTPOptions) http.Handler {
	return &instrumented{next: next, m: m, opts: opts}
}

type instrumented struct {
	next http.Handler
	m    *Metrics
	opts HTTPOptions
}

func (h *instrumented) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	trusted := false
	if h.opts.TrustedPeer != nil {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			trusted = h.opts.TrustedPeer(ap.Addr().Unmap())
		}
	}
	id := requestid.Assign(r.Header, trusted)
	r = r.WithContext(requestid.NewContext(r.Context(), id))
	rec := &responseRecorder{w: w}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &rec.bytesIn}
	}
	host := hostname.FromHostHeader(r.Host)
	label := h.hostLabel(host)
	if h.m != nil {
		inFlight := h.m.httpInFlight.WithLabelValues(label)
		inFlight.Inc()
		defer inFlight.Dec()
	}
	completed := false
	defer func() { h.done(r, rec, start, host, label, id, !completed) }()
	h.next.ServeHTTP(rec, r)
	completed = true
}

// hostLabel is the host label of a request for host.
func (h *instrumented) hostLabel(host string) string {
	if h.opts.Known != nil && host != "" && h.opts.Known(host) {
		return host
	}
	return otherHost
}

// done records a finished request. aborted means the handler panicked.
func (h *instrumented) done(r *http.Request, rec *responseRecorder, start time.Time, host, label, id string, aborted bool) {
	elapsed := time.Since(start)
	status := rec.status
	switch {
	case status != 0:
	case aborted:
		status = http.StatusInternalServerError
	default:
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	bytesIn, bytesOut := rec.bytesIn.Load(), rec.bytes.Load()
	if h.m != nil {
		method := r.Method
		if !knownMethods[method] {
			method = otherMethod
		}
		proto := protoLabel(r)
		h.m.httpRequests.WithLabelValues(label, strconv.Itoa(status), method, proto).Inc()
		h.m.httpRequestBytes.WithLabelValues(label, proto).Add(float64(bytesIn))
		h.m.httpResponseBytes.WithLabelValues(label, proto).Add(float64(bytesOut))
		if !rec.hijacked {
			h.m.httpDuration.WithLabelValues(label, method, proto).Observe(elapsed.Seconds())
		}
	}
	if h.opts.AccessLog == nil {
		return
	}
	backend := ""
	if h.opts.BackendOf != nil {
		backend = h.opts.BackendOf(host)
	}
	tlsVersion := ""
	if r.TLS != nil {
		tlsVersion = strings.TrimPrefix(tls.VersionName(r.TLS.Version), "TLS ")
	}
	attrs := []slog.Attr{
		slog.String("host", host),
		slog.String("method", r.Method),
		slog.String("path", r.URL.EscapedPath()),
		slog.String("protocol", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes_in", bytesIn),
		slog.Int64("bytes_out", bytesOut),
		slog.Duration("duration", elapsed),
		slog.String("backend", backend),
		slog.String("client", r.RemoteAddr),
		slog.String("tls_version", tlsVersion),
		slog.String("user_agent", r.UserAgent()),
		slog.String("request_id", id),
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	h.opts.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// countingBody is a request body that adds the bytes read from it to n;
// atomic, as the transport's goroutine reads it while done may run.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
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
