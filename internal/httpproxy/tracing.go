package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/leproxy/leproxy/internal/hostname"
)

// With Options.Tracer set, every request gets a server span, named by its
// method as the HTTP semantic conventions say for a server that knows no
// route template ("GET"; "HTTP" for a method outside the standard ones),
// that continues the W3C trace context (traceparent, tracestate) the
// client sent, and every proxied request a client span around the backend
// round trip, whose context the backend receives in traceparent in place
// of the client's. Their attributes are the conventions' (server:
// http.request.method, url.path, url.scheme, http.response.status_code,
// server.address, server.port, network.protocol.version, client.address,
// user_agent.original, error.type on 5xx; client: the same for the
// backend, url.full without its query) and never a query string, a header
// other than User-Agent, a body, or an error's text, which may quote the
// URL. Without a Tracer none of this code runs and the trace headers go to
// the backend as the client sent them.

// traceContext is the W3C Trace Context propagator: traceparent and
// tracestate.
var traceContext = propagation.TraceContext{}

// serveTraced serves r inside a server span.
func (h *Handler) serveTraced(w http.ResponseWriter, r *http.Request) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	method, original := spanMethod(r.Method)
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	if original != "" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(original))
	}
	attrs = append(attrs,
		semconv.URLPath(r.URL.EscapedPath()),
		semconv.URLScheme(requestScheme(r)),
		semconv.NetworkProtocolVersion(protocolVersion(r)),
	)
	if host, port := serverHostPort(r); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	if ip := h.clientIP(r); ip.IsValid() {
		attrs = append(attrs, semconv.ClientAddress(ip.String()))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	ctx, span := h.tracer.Start(ctx, spanName(method), trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	sw := &statusWriter{ResponseWriter: w}
	completed := false
	defer func() {
		status := sw.status
		if status == 0 && completed {
			status = http.StatusOK // what net/http sends for a handler that wrote nothing
		}
		if status != 0 {
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		}
		switch {
		case !completed:
			// ReverseProxy aborts a response whose backend failed mid-body.
			span.SetAttributes(semconv.ErrorTypeKey.String("aborted"))
			span.SetStatus(codes.Error, "response aborted")
		case status >= 500:
			span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
			span.SetStatus(codes.Error, "")
		}
		span.End()
	}()
	h.serve(sw, r.WithContext(ctx))
	completed = true
}

// spanMethod returns the http.request.method of method: itself when it is
// one the conventions know, "_OTHER" and the method otherwise.
func spanMethod(method string) (name, original string) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodConnect, http.MethodOptions, http.MethodTrace, http.MethodPatch, "QUERY":
		return method, ""
	}
	return "_OTHER", method
}

// spanName is the span name of a request with http.request.method method.
func spanName(method string) string {
	if method == "_OTHER" {
		return "HTTP"
	}
	return method
}

func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// protocolVersion is network.protocol.version: "1.0", "1.1", "2", "3".
func protocolVersion(r *http.Request) string {
	if r.ProtoMajor >= 2 {
		return strconv.Itoa(r.ProtoMajor)
	}
	return strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor)
}

// serverHostPort is server.address and server.port of r: the host name of
// its Host (normalised as routing does) and its port, or the port the
// connection came to when Host has none.
func serverHostPort(r *http.Request) (string, int) {
	host := hostname.FromHostHeader(r.Host)
	if _, p, err := net.SplitHostPort(r.Host); err == nil {
		if port, err := strconv.Atoi(p); err == nil {
			return host, port
		}
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := a.(*net.TCPAddr); ok {
			return host, ta.Port
		}
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			port, _ := strconv.Atoi(p)
			return host, port
		}
	}
	return host, 0
}

// statusWriter notes the final status of a response for its span. Like
// admin's recorder it keeps Flush and Hijack, and Unwrap for
// http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int // 0 until the final status is sent
}

var (
	_ http.Flusher  = (*statusWriter)(nil)
	_ http.Hijacker = (*statusWriter)(nil)
)

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// FlushError flushes the response, as http.ResponseController.Flush does.
func (w *statusWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() { _ = w.FlushError() }

// Hijack takes over the connection of a protocol upgrade.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// tracedTransport is a backend transport that wraps each round trip in a
// client span and sends the backend that span's trace context.
type tracedTransport struct {
	next   http.RoundTripper
	tracer trace.Tracer
}

func (t tracedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	method, original := spanMethod(req.Method)
	attrs := make([]attribute.KeyValue, 0, 10)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	if original != "" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(original))
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	attrs = append(attrs, semconv.ServerAddress(host))
	if n, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPort(n))
	} else if req.URL.Scheme == "https" {
		attrs = append(attrs, semconv.ServerPort(443))
	} else {
		attrs = append(attrs, semconv.ServerPort(80))
	}
	// url.full without the query (and without userinfo, which a backend
	// URL never has here): the query may hold a token.
	full := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path, RawPath: req.URL.RawPath}
	attrs = append(attrs, semconv.URLFull(full.String()))
	ctx, span := t.tracer.Start(req.Context(), spanName(method), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	// A RoundTripper must not change the request it is given.
	out := req.Clone(ctx)
	out.Header.Del("Traceparent")
	out.Header.Del("Tracestate")
	traceContext.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(roundTripErrorType(err)))
		span.SetStatus(codes.Error, "")
		span.End()
		return resp, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode), semconv.NetworkProtocolVersion(responseVersion(resp)))
	if resp.StatusCode >= 400 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	// The span ends with the body; a 101's body is the upgraded
	// connection, which ReverseProxy needs as it is.
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		span.End()
		return resp, nil
	}
	resp.Body = &spanBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

// roundTripErrorType is the error.type of a failed round trip: its Go
// type, never its text (which quotes the URL).
func roundTripErrorType(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return semconv.ErrorType(err).Value.AsString()
}

func responseVersion(resp *http.Response) string {
	if resp.ProtoMajor >= 2 {
		return strconv.Itoa(resp.ProtoMajor)
	}
	return strconv.Itoa(resp.ProtoMajor) + "." + strconv.Itoa(resp.ProtoMinor)
}

// spanBody is a backend response body that ends its client span at EOF,
// at a read error or when closed, whichever comes first.
type spanBody struct {
	io.ReadCloser
	span trace.Span
	once sync.Once
}

func (b *spanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.end(nil)
	default:
		b.end(err)
	}
	return n, err
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	b.end(nil)
	return err
}

func (b *spanBody) end(err error) {
	b.once.Do(func() {
		if err != nil {
			b.span.SetAttributes(semconv.ErrorTypeKey.String("response_body"))
			b.span.SetStatus(codes.Error, "")
		}
		b.span.End()
	})
}
