// Package admin is leproxy's operations side, served on the -admin address:
// liveness and readiness probes (/health/live, /health/ready), Prometheus
// metrics (/metrics) and the state of every certificate (/certificates, as
// JSON and as an HTML page). It also instruments the HTTPS handler: request
// metrics and the access log.
//
// The package reads live state through functions main gives it (the
// certificate manager's status, the tcp listeners' counters, readiness
// problems), so it depends on internal/certs and dbproxy for their types
// only, and nothing depends on it but main.
package admin

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leproxy/leproxy/internal/certs"
)

// namespace prefixes every leproxy metric.
const namespace = "leproxy"

// httpDurationBuckets are the bounds, in seconds, of the request latency
// histogram: from a cache hit on a near backend (1 ms) to a slow report or
// a long poll (5 min).
var httpDurationBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 300,
}

// Metrics holds leproxy's Prometheus metrics in a registry of its own (the
// global default registry is left alone), with the Go runtime and process
// collectors. Its methods are safe for concurrent use. A nil *Metrics
// records nothing: every method may be called on it, so main can leave it
// nil when -admin is off.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	now     func() time.Time

	httpRequests      *prometheus.CounterVec
	httpDuration      *prometheus.HistogramVec
	httpInFlight      *prometheus.GaugeVec
	httpRequestBytes  *prometheus.CounterVec
	httpResponseBytes *prometheus.CounterVec
	backendErrors     *prometheus.CounterVec

	reloads           *prometheus.CounterVec
	lastReloadSuccess prometheus.Gauge
	lastReloadOK      prometheus.Gauge

	tlsHandshakes *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec

	acmeOrders   *prometheus.CounterVec
	acmeFailures *prometheus.CounterVec

	acmeNewOrders, acmeFinalizations, acmeStepFailures *prometheus.CounterVec
	limits                                             clientMetrics

	buildInfo *prometheus.GaugeVec

	tcp   tcpCollector
	certs certCollector
	fleet fleetCollector
}

// BuildInfo describes the running binary, for leproxy_build_info.
type BuildInfo struct {
	Version   string // the release ("1.2.3"), "devel" when not a release
	Commit    string // the git revision, "" when unknown
	GoVersion string // runtime.Version()
}

// BinaryBuildInfo is what the Go toolchain recorded in this binary: the
// module version (go install …@v1.2.3, else "devel"), vcs.revision and the
// Go version. A release build that stamps its version with -ldflags passes
// that to SetBuildInfo instead.
func BinaryBuildInfo() BuildInfo {
	b := BuildInfo{Version: "devel", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		b.Version = v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			b.Commit = s.Value
		}
	}
	return b
}

// NewMetrics returns Metrics with every collector registered. Call it once
// the mapping has been loaded at start: that load counts as the last
// successful one (leproxy_last_reload_successful 1, its time in
// leproxy_last_reload_success_timestamp_seconds) but not as a reload.
func NewMetrics() *Metrics {
	return newMetrics(time.Now)
}

func newMetrics(now func() time.Time) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		now: now,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_requests_total",
			Help:      `HTTPS requests served, by host ("other" for names not in the mapping), status code, method and HTTP version (protocol: http/1.0, http/1.1, h2, h3).`,
		}, []string{"host", "code", "method", "protocol"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "http_request_duration_seconds",
			Help:      "Time from a request's arrival to the end of its response, by host, method and HTTP version (protocol); protocol upgrades (websockets) are not observed.",
			Buckets:   httpDurationBuckets,
		}, []string{"host", "method", "protocol"}),
		httpInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "http_requests_in_flight",
			Help:      "HTTPS requests being served now (websockets included until they close), by host.",
		}, []string{"host"}),
		httpRequestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_request_bytes_total",
			Help:      "Bytes of HTTPS request bodies read from clients (after a protocol upgrade, all bytes read), by host and protocol (http/1.1, h2, h3), counted when a request ends.",
		}, []string{"host", "protocol"}),
		httpResponseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_response_bytes_total",
			Help:      "Bytes of HTTPS response bodies written to clients (after a protocol upgrade, all bytes written), by host and protocol, counted when a request ends.",
		}, []string{"host", "protocol"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "http_backend_errors_total",
			Help:      "Requests whose backend could not be reached or failed, by host.",
		}, []string{"host"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "reloads_total",
			Help:      `Mapping reloads (SIGHUP or -watch), by result: "success" or "failure" (the old mapping kept serving).`,
		}, []string{"result"}),
		lastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "last_reload_success_timestamp_seconds",
			Help:      "Unix time of the last successful load of the mapping, at start or by a reload.",
		}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "last_reload_successful",
			Help:      "1 if the last load of the mapping succeeded, 0 if it was refused.",
		}),
		tlsHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "tls_handshakes_total",
			Help:      "TLS handshakes attempted, failed ones included, by listener.",
		}, []string{"listener"}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "tls_handshake_failures_total",
			Help:      "TLS handshakes that failed, by listener.",
		}, []string{"listener"}),
		acmeOrders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "acme_orders_total",
			Help:      "ACME certificate orders completed or failed, by host.",
		}, []string{"host"}),
		acmeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "acme_order_failures_total",
			Help:      "ACME certificate orders that failed, by host.",
		}, []string{"host"}),
		acmeNewOrders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "acme_new_orders_total",
			Help:      "ACME newOrder requests the CA accepted (one per challenge type tried), by issuer (directory URL).",
		}, []string{"issuer"}),
		acmeFinalizations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "acme_finalizations_total",
			Help:      "ACME orders finalized (CSR sent), by issuer.",
		}, []string{"issuer"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "build_info",
			Help:      "Always 1; the labels describe the running leproxy: version, commit (git revision) and goversion.",
		}, []string{"version", "commit", "goversion"}),
		acmeStepFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "acme_failures_total",
			Help:      "ACME certificate orders that failed, by issuer and the last challenge type tried (empty: failed before a challenge).",
		}, []string{"issuer", "challenge"}),
	}
	m.tcp.init()
	m.certs.init()
	m.fleet.init()
	for _, result := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(result)
	}
	m.lastReloadOK.Set(1)
	m.lastReloadSuccess.Set(unixSeconds(now()))
	m.SetBuildInfo(BinaryBuildInfo())

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration, m.httpInFlight, m.httpRequestBytes, m.httpResponseBytes, m.backendErrors,
		m.reloads, m.lastReloadSuccess, m.lastReloadOK,
		m.tlsHandshakes, m.tlsFailures,
		m.acmeOrders, m.acmeFailures,
		m.acmeNewOrders, m.acmeFinalizations, m.acmeStepFailures,
		m.buildInfo, &m.tcp, &m.certs, &m.fleet,
	)
	m.limits.register(m.reg)
	m.handler = promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
	}))
	return m
}

// Handler serves the metrics in the Prometheus exposition formats (text by
// default, OpenMetrics or protobuf when asked), compressed when the client
// accepts it. On a nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// Registry returns the registry behind Handler, for tests and for
// collectors of other packages; nil on a nil *Metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// SetBuildInfo makes leproxy_build_info describe b (NewMetrics starts
// with BinaryBuildInfo).
func (m *Metrics) SetBuildInfo(b BuildInfo) {
	if m == nil {
		return
	}
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(b.Version, b.Commit, b.GoVersion).Set(1)
}

// BackendError counts a request to host whose backend failed
// (leproxy_http_backend_errors_total). host is a mapped name.
func (m *Metrics) BackendError(host string) {
	if m == nil {
		return
	}
	m.backendErrors.WithLabelValues(host).Inc()
}

// Reload counts a reload of the mapping and its result
// (leproxy_reloads_total); a success also sets
// leproxy_last_reload_success_timestamp_seconds to now, and
// leproxy_last_reload_successful follows ok.
func (m *Metrics) Reload(ok bool) {
	if m == nil {
		return
	}
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadSuccess.Set(unixSeconds(m.now()))
}

// TLSHandshake counts one TLS handshake on listener (a name such as
// "https" or a tcp listener's address) and, when err is not nil, its
// failure. The HTTPS listener calls it from
// httpproxy.TLSListenerOptions.OnHandshake.
func (m *Metrics) TLSHandshake(listener string, err error) {
	m.handshake(listener, err == nil)
}

func (m *Metrics) handshake(listener string, ok bool) {
	if m == nil {
		return
	}
	m.tlsHandshakes.WithLabelValues(listener).Inc()
	failures := m.tlsFailures.WithLabelValues(listener) // present at 0 too
	if !ok {
		failures.Inc()
	}
}

// ACMEOrder counts one ACME certificate order for host and, when err is not
// nil, its failure (leproxy_acme_orders_total,
// leproxy_acme_order_failures_total). Certificates from the local CA are
// not ACME orders.
func (m *Metrics) ACMEOrder(host string, err error) {
	if m == nil {
		return
	}
	m.acmeOrders.WithLabelValues(host).Inc()
	failures := m.acmeFailures.WithLabelValues(host)
	if err != nil {
		failures.Inc()
	}
}

// ACMEEvent counts one step of an ACME order (certs.Config.OnACMEEvent):
// leproxy_acme_new_orders_total, leproxy_acme_finalizations_total,
// leproxy_acme_failures_total.
func (m *Metrics) ACMEEvent(ev certs.ACMEEvent) {
	if m == nil {
		return
	}
	switch ev.Kind {
	case certs.ACMEOrderPlaced:
		m.acmeNewOrders.WithLabelValues(ev.Issuer).Inc()
		m.acmeFinalizations.WithLabelValues(ev.Issuer) // present at 0
	case certs.ACMEFinalized:
		m.acmeFinalizations.WithLabelValues(ev.Issuer).Inc()
	case certs.ACMEFailed:
		m.acmeStepFailures.WithLabelValues(ev.Issuer, ev.Challenge).Inc()
	}
}

// SetTCPStats makes every scrape read the tcp listeners' counters from f
// (see TCPListenerStats); nil stops it. f is called once per scrape and
// must be safe to call from any goroutine.
func (m *Metrics) SetTCPStats(f func() []TCPListenerStats) {
	if m == nil {
		return
	}
	m.tcp.stats.Store(&f)
}

// SetCertStatus makes every scrape read the certificates' state from f,
// typically (*certs.Manager).Status; nil stops it. f is called once per
// scrape and must be safe to call from any goroutine.
func (m *Metrics) SetCertStatus(f func() []certs.Status) {
	if m == nil {
		return
	}
	m.certs.status.Store(&f)
}

// unixSeconds returns t as fractional seconds since the Unix epoch.
func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// loadFunc returns the function in p, or nil.
func loadFunc[F any](p *atomic.Pointer[F]) F {
	var zero F
	if f := p.Load(); f != nil {
		return *f
	}
	return zero
}
