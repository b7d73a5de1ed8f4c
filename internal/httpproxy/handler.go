// Package httpproxy is the HTTPS side of leproxy: a router from the request's
// host name to its backend, a reverse proxy to TCP, URL, unix socket and
// abstract socket backends, a static file server, HSTS, the per-host
// middleware stack of the mapping (middleware.go: IP filter, basic auth,
// body limit, redirects, prefix rewriting, header changes, compression),
// the plain-HTTP redirect to HTTPS, and HTTP/3 over QUIC (h3.go: H3Server
// serves the same Handler on UDP; AltSvc announces it on TCP).
//
// A Handler is immutable once New returns it. A configuration reload builds
// a new Handler, swaps it in atomically (for example through an
// atomic.Pointer[Handler]) and calls Close on the old one. Every Handler
// shares one package-level buffer pool; each owns the transports of its
// backends, so Close on an old Handler drops only that Handler's idle
// backend connections while its in-flight requests run to completion.
package httpproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/hostname"
)

// hstsValue is the Strict-Transport-Security header leproxy sends: one
// year, without includeSubDomains (sibling names may not be served by
// leproxy) and without preload (an operator's decision, not ours).
const hstsValue = "max-age=31536000"

// badGatewayMsg is the body of every 502; details go to the log only.
const badGatewayMsg = "502 bad gateway: backend unavailable"

// Options configures a Handler. The zero value is usable.
type Options struct {
	// HSTS sends Strict-Transport-Security on every host (the -hsts flag);
	// config.Host.HSTS turns it on for one host. The header is only sent on
	// requests that came over TLS, and a backend's own header wins.
	HSTS bool
	// Logger receives backend errors; nil discards them.
	Logger *slog.Logger
	// RootCAs verifies https URL backends; nil means the system roots.
	RootCAs *x509.CertPool
	// OnBackendError, if set, is called with the host's name for each
	// request that failed at the backend (not for clients that went away).
	OnBackendError func(host string)
	// AllowMisdirected serves a TLS request whose Host names another
	// mapped host than the connection's server name (SNI), as HTTP/2
	// connection coalescing needs (the -allow-misdirected flag). By
	// default such a request gets 421 Misdirected Request.
	AllowMisdirected bool
	// MaxHeaders is the most request header fields (values, counting
	// each repeat; Host and HTTP/2 pseudo-headers do not count) a request
	// may carry; more get 431 Request Header Fields Too Large. Zero means
	// DefaultMaxHeaders.
	MaxHeaders int
	// MaxURI is the longest request URI (the request target as sent) in
	// bytes; longer gets 414 URI Too Long. Zero means DefaultMaxURI.
	MaxURI int
	// KeepUnderscoreHeaders passes request header fields whose names
	// contain an underscore to backends. By default they are dropped, as
	// nginx does, since backends that fold "_" and "-" together (CGI,
	// some frameworks) would take X_Forwarded_For for X-Forwarded-For.
	KeepUnderscoreHeaders bool
	// Clients holds the per-client limits of hosts with a rate_limit;
	// nil applies none.
	Clients *clientlimit.Clients
	// Previous is the Handler this one replaces, if any: hosts whose
	// rate_limit did not change keep its limiters' state.
	Previous *Handler
	// OnLimited, if set, is called with the host's name and "rate" or
	// "concurrency" for each request refused with 429.
	OnLimited func(host, kind string)
	// Tracer, if set, traces every request: a server span continuing the
	// client's W3C trace context and a client span for the backend's
	// round trip, whose context the backend receives (tracing.go). nil
	// traces nothing and passes the client's trace headers on untouched.
	Tracer trace.Tracer
}

// Defaults of Options.MaxHeaders and Options.MaxURI.
const (
	DefaultMaxHeaders = 100
	DefaultMaxURI     = 8 << 10
)

// Handler routes requests by host name to the hosts' backends. It is safe
// for concurrent use and never changes after New.
type Handler struct {
	routes           map[string]http.Handler // canonical host name → route
	transports       []*http.Transport
	allowMisdirected bool
	maxHeaders       int
	maxURI           int
	keepUnderscore   bool
	logger           *slog.Logger
	clients          *clientlimit.Clients
	limiters         map[string]*clientlimit.Limiter // host name → its rate_limit
	onLimited        func(host, kind string)
	tracer           trace.Tracer // nil: no tracing
}

var _ http.Handler = (*Handler)(nil)

// New builds the handler serving every host of hosts. It fails when a
// backend cannot be set up: a static directory that does not exist, a
// backend kind or URL scheme it does not know, or a duplicate host name.
// Backends that listen on sockets are not contacted.
func New(hosts []config.Host, opts Options) (*Handler, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		routes:           make(map[string]http.Handler, len(hosts)),
		allowMisdirected: opts.AllowMisdirected,
		maxHeaders:       opts.MaxHeaders,
		maxURI:           opts.MaxURI,
		keepUnderscore:   opts.KeepUnderscoreHeaders,
		logger:           logger,
		clients:          opts.Clients,
		limiters:         requestLimits(hosts, opts.Clients, opts.Previous),
		onLimited:        opts.OnLimited,
		tracer:           opts.Tracer,
	}
	if h.maxHeaders <= 0 {
		h.maxHeaders = DefaultMaxHeaders
	}
	if h.maxURI <= 0 {
		h.maxURI = DefaultMaxURI
	}
	transports := make(map[string]*http.Transport)
	for _, host := range hosts {
		name := hostname.FromHostHeader(host.Name)
		if name == "" {
			return nil, fmt.Errorf("setting up host %q: empty host name", host.Name)
		}
		if _, dup := h.routes[name]; dup {
			return nil, fmt.Errorf("setting up host %q: duplicate host name", host.Name)
		}
		hsts := opts.HSTS || host.HSTS
		if host.Backend.Kind == config.BackendStatic {
			route, err := newStaticRoute(host.Backend.Dir, hsts)
			if err != nil {
				return nil, fmt.Errorf("setting up host %q: %w", host.Name, err)
			}
			if h.routes[name], err = withMiddleware(host.Middleware, route, h.clientIP); err != nil {
				return nil, fmt.Errorf("setting up host %q: %w", host.Name, err)
			}
			continue
		}
		up, err := backendUpstream(host)
		if err != nil {
			return nil, fmt.Errorf("setting up host %q backend %q: %w", host.Name, host.Backend.Raw, err)
		}
		tr, ok := transports[up.key]
		if !ok {
			tr = newTransport(host.Backend, opts.RootCAs)
			transports[up.key] = tr
			h.transports = append(h.transports, tr)
		}
		var rt http.RoundTripper = tr
		if opts.Tracer != nil {
			rt = tracedTransport{next: tr, tracer: opts.Tracer}
		}
		proxy := newProxy(host, up.target, rt, hsts, logger, opts.OnBackendError)
		if h.routes[name], err = withMiddleware(host.Middleware, proxy, h.clientIP); err != nil {
			return nil, fmt.Errorf("setting up host %q: %w", host.Name, err)
		}
	}
	return h, nil
}

// ServeHTTP routes r by its host name (port and trailing dot stripped,
// case folded). Before routing, an HTTP/1.x request whose framing could
// smuggle another (see NewTLSListener) gets 400 and its connection closed; a request URI longer than Options.MaxURI
// gets 414 and more header fields than Options.MaxHeaders get 431; header
// fields with an underscore in their names are dropped unless
// Options.KeepUnderscoreHeaders. Unknown hosts get a plain 404. A TLS
// request for a mapped host other than the connection's server name gets
// 421 unless Options.AllowMisdirected. CONNECT is refused with 405 (a websocket's
// extended CONNECT over HTTP/3 with 501) and any protocol
// upgrade other than websocket with 400, before any backend sees the
// request. On an HTTP/2 connection set up with ConnContext (and on every
// HTTP/3 connection of an H3Server), a stream the
// client has already reset is dropped, and a connection over its stream
// budget (see MaxResets) gets 429 with GOAWAY and is closed. With
// Options.Tracer, all of it runs inside the request's server span.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.tracer != nil {
		h.serveTraced(w, r)
		return
	}
	h.serve(w, r)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	if !h.checkFraming(w, r) {
		return
	}
	ok, done := h.guardStream(w, r)
	if !ok {
		return
	}
	if done != nil {
		defer done()
	}
	if len(r.RequestURI) > h.maxURI {
		http.Error(w, "URI too long", http.StatusRequestURITooLong)
		return
	}
	if headerFields(r.Header) > h.maxHeaders {
		http.Error(w, "too many request header fields", http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if !h.keepUnderscore {
		h.dropUnderscoreHeaders(r.Header)
	}
	// name is the mapping's host that serves r: its own, else the
	// wildcard covering it.
	host := hostname.FromHostHeader(r.Host)
	route, name, ok := hostname.Lookup(h.routes, host)
	if !ok || hostname.IsWildcard(host) { // "Host: *.example.com" names no host
		http.Error(w, "unknown host", http.StatusNotFound)
		return
	}
	if !h.allowMisdirected && h.misdirected(r, name) {
		http.Error(w, "misdirected request", http.StatusMisdirectedRequest)
		return
	}
	if done, ok := h.limit(w, r, name); !ok {
		return
	} else if done != nil {
		defer done()
	}
	if r.Method == http.MethodConnect {
		refuseConnect(w, r) // 405; 501 for a websocket over HTTP/3 (h3.go)
		return
	}
	if !upgradeAllowed(r.Header) {
		http.Error(w, "unsupported upgrade", http.StatusBadRequest)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// In the context too: ReverseProxy hands its error handler the
		// outgoing request, whose body wraps this one.
		cb := &clientBody{ReadCloser: r.Body}
		r = r.WithContext(context.WithValue(r.Context(), clientBodyKey{}, cb))
		r.Body = cb
	}
	w, end := coalesce(w, r)
	defer end()
	route.ServeHTTP(w, r)
}

// checkFraming applies the framing verdict on HTTP/1.x request r, when its
// connection has a scanner (NewTLSListener with ConnContext), and reports
// whether r may be served. A head that could smuggle a request (both
// Content-Length and Transfer-Encoding, duplicate Content-Length, obs-fold,
// Transfer-Encoding on HTTP/1.0) gets 400 and the connection is closed; a
// request the scanner cannot vouch for is served, and its connection
// closed after it.
func (h *Handler) checkFraming(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return true
	}
	g, _ := r.Context().Value(connGuardKey{}).(*connGuard)
	if g == nil || g.framing == nil {
		return true
	}
	problem, ok := g.framing.verdict(r.Method, r.RequestURI)
	if !ok || problem != "" {
		w.Header().Set("Connection", "close")
	}
	if problem == "" {
		return true
	}
	h.logger.Info("refused request: ambiguous framing", "client", r.RemoteAddr, "host", r.Host, "reason", problem)
	http.Error(w, "bad request: "+problem, http.StatusBadRequest)
	return false
}

// clientBody is a request body that remembers how reading it failed, so
// that a body the client broke (malformed chunked framing, a connection
// cut mid-body) is answered as the client's fault and not counted as the
// backend's.
// It is read by the transport's goroutine and checked by the error
// handler's.
type clientBody struct {
	io.ReadCloser
	mu  sync.Mutex
	err error // the first read error other than EOF
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *clientBody) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

type clientBodyKey struct{}

// bodyError is the error reading the client's body of r (the incoming
// request or ReverseProxy's outgoing one) failed with, nil if it did not.
func bodyError(r *http.Request) error {
	if b, ok := r.Context().Value(clientBodyKey{}).(*clientBody); ok {
		return b.readErr()
	}
	return nil
}

// Known reports whether host (which may carry a port) is served by h. It
// suits Redirect's known argument.
func (h *Handler) Known(host string) bool {
	_, _, ok := hostname.Lookup(h.routes, hostname.FromHostHeader(host))
	return ok
}

// Close closes the idle connections to h's backends. Requests in flight are
// not interrupted; h stays usable.
func (h *Handler) Close() {
	for _, t := range h.transports {
		t.CloseIdleConnections()
	}
}

// headerFields returns the number of header field values in hdr. Go keeps
// Host and HTTP/2 pseudo-headers out of Request.Header, so they do not
// count; HTTP/2 cookie crumbs arrive joined into one value.
func headerFields(hdr http.Header) int {
	n := 0
	for _, vv := range hdr {
		n += len(vv)
	}
	return n
}

// dropUnderscoreHeaders deletes the fields of hdr whose names contain an
// underscore, logging their names at debug level.
func (h *Handler) dropUnderscoreHeaders(hdr http.Header) {
	for k := range hdr {
		if strings.Contains(k, "_") {
			delete(hdr, k)
			h.logger.Debug("dropped request header with underscore", "header", k)
		}
	}
}

// misdirected reports whether r came over TLS with a server name (SNI)
// served by another host of the mapping than name, the host serving r's
// Host: two names under one wildcard host share its certificate, so a
// client may send both over one connection. A connection without SNI (a
// client dialling an IP address) and a plain-HTTP request are never
// misdirected.
func (h *Handler) misdirected(r *http.Request, name string) bool {
	if r.TLS == nil || r.TLS.ServerName == "" {
		return false
	}
	_, sni, _ := hostname.Lookup(h.routes, hostname.Normalize(r.TLS.ServerName))
	return sni != name
}

// upgradeAllowed reports whether h asks for no protocol upgrade or for a
// websocket one. Upgrade without "Connection: upgrade" is not a request to
// upgrade; the proxy drops it as a hop-by-hop header.
func upgradeAllowed(h http.Header) bool {
	if !hasToken(h["Connection"], "upgrade") {
		return true
	}
	n := 0
	websocket := false
	for _, v := range h["Upgrade"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" {
				continue
			}
			n++
			websocket = strings.EqualFold(tok, "websocket")
		}
	}
	return n == 1 && websocket
}

// hasToken reports whether the comma-separated header values hold token,
// compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}

// newProxy returns the reverse proxy of one host to target over tr.
func newProxy(host config.Host, target *url.URL, tr http.RoundTripper, hsts bool, logger *slog.Logger, onBackendError func(string)) *httputil.ReverseProxy {
	logger = logger.With("host", host.Name, "backend", host.Backend.Raw)
	rewriteHost := host.RewriteHost
	return &httputil.ReverseProxy{
		// ReverseProxy has already removed hop-by-hop headers (keeping
		// Connection and Upgrade of a websocket upgrade) and the client's
		// Forwarded and X-Forwarded-* headers from pr.Out.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			if !rewriteHost {
				pr.Out.Host = pr.In.Host
			}
			pr.Out.Header.Del("X-Real-Ip")
		},
		Transport:     tr,
		FlushInterval: -1,
		BufferPool:    sharedBufPool,
		ErrorLog:      log.New(proxyLogWriter{logger}, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			// resp.Request is the outgoing clone of the client's request
			// and keeps its TLS state.
			if hsts && resp.Request != nil && resp.Request.TLS != nil &&
				resp.Header.Get("Strict-Transport-Security") == "" {
				resp.Header.Set("Strict-Transport-Security", hstsValue)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if berr := bodyError(r); berr != nil {
				if _, ok := errors.AsType[*http.MaxBytesError](berr); ok {
					// The max_body middleware cut the body.
					logger.Info("request body too large", "error", berr)
					w.Header().Set("Connection", "close")
					http.Error(w, "413 request body too large", http.StatusRequestEntityTooLarge)
					return
				}
				// The client's body broke the request, not the backend:
				// 400, the connection closed, no backend error.
				logger.Info("bad request body", "error", berr)
				w.Header().Set("Connection", "close")
				http.Error(w, "bad request body", http.StatusBadRequest)
				return
			}
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				logger.Debug("client went away", "error", err)
			} else {
				logger.Error("backend error", "error", err)
				if onBackendError != nil {
					onBackendError(host.Name)
				}
			}
			if hsts && r.TLS != nil {
				w.Header().Set("Strict-Transport-Security", hstsValue)
			}
			http.Error(w, badGatewayMsg, http.StatusBadGateway)
		},
	}
}

// proxyLogWriter turns the lines ReverseProxy logs by itself (a backend
// that fails while its response body is being copied, after the status has
// gone to the client) into "backend error" records at Warn level.
type proxyLogWriter struct{ logger *slog.Logger }

func (w proxyLogWriter) Write(p []byte) (int, error) {
	w.logger.Warn("backend error", "error", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
