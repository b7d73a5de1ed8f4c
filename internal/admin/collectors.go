package admin

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/certs"
)

// TCPListenerStats are the counters of one tcp listener of the mapping.
type TCPListenerStats struct {
	// Listen is the listener's address as in the mapping (":5432"); the
	// listener label.
	Listen string
	// Protocol is the listener's protocol ("postgres"); the protocol
	// label.
	Protocol string
	// Stats are the listener's dbproxy.Server counters.
	Stats dbproxy.Stats
}

// tcpCollector exports TCPListenerStats read at scrape time. Entries with
// the same labels (an old and a new Server of one listener while a reload
// drains) are summed, so a scrape never holds a series twice.
type tcpCollector struct {
	stats atomic.Pointer[func() []TCPListenerStats]

	accepted, refused, handled, unrouted *prometheus.Desc
	sessions, active, bytes, routeErrors *prometheus.Desc
	ends                                 *prometheus.Desc
}

func (c *tcpCollector) init() {
	listener := []string{"listener", "protocol"}
	route := []string{"listener", "protocol", "route"}
	c.accepted = prometheus.NewDesc(namespace+"_tcp_connections_accepted_total",
		"Client connections accepted by a tcp listener, refused ones included.", listener, nil)
	c.refused = prometheus.NewDesc(namespace+"_tcp_connections_refused_total",
		"Client connections refused because the listener's max_conns were open.", listener, nil)
	c.handled = prometheus.NewDesc(namespace+"_tcp_connections_handled_total",
		"Client connections the protocol completed itself with nothing to pipe (PostgreSQL cancel requests).", listener, nil)
	c.unrouted = prometheus.NewDesc(namespace+"_tcp_connections_unrouted_total",
		"Client connections that failed before reaching a route: bad or timed-out handshake, unknown server name, plaintext without a default route.", listener, nil)
	c.sessions = prometheus.NewDesc(namespace+"_tcp_sessions_total",
		"Client connections routed to a route, whatever became of them.", route, nil)
	c.active = prometheus.NewDesc(namespace+"_tcp_sessions_active",
		"Sessions of a route piping bytes now.", route, nil)
	c.bytes = prometheus.NewDesc(namespace+"_tcp_bytes_total",
		`Bytes piped after the handshake, by direction: "in" client to backend, "out" backend to client.`,
		append(route, "direction"), nil)
	c.routeErrors = prometheus.NewDesc(namespace+"_tcp_errors_total",
		"Routed sessions that ended with an error, handshake included (backend down, authentication refused).", route, nil)
	c.ends = prometheus.NewDesc(namespace+"_tcp_session_ends_total",
		`Sessions ended, by who ended them (closed_by: client, backend, leproxy) and how (reason: closed, reset, refused, unreachable, handshake_timeout, idle_timeout, drain, shutdown); route "" for sessions that never reached one.`,
		append(route, "closed_by", "reason"), nil)
}

// Describe implements prometheus.Collector.
func (c *tcpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.refused, c.handled, c.unrouted, c.sessions, c.active, c.bytes, c.routeErrors, c.ends} {
		ch <- d
	}
}

type listenerKey struct{ listen, protocol string }

type endKey struct {
	routeKey
	end dbproxy.End
}

type routeKey struct {
	listenerKey
	route string
}

type listenerSums struct{ accepted, refused, handled, unrouted uint64 }

type routeSums struct {
	sessions, bytesIn, bytesOut, errors uint64
	active                              int64
}

// Collect implements prometheus.Collector.
func (c *tcpCollector) Collect(ch chan<- prometheus.Metric) {
	f := loadFunc(&c.stats)
	if f == nil {
		return
	}
	var (
		listeners = make(map[listenerKey]*listenerSums)
		routes    = make(map[routeKey]*routeSums)
		ends      = make(map[endKey]uint64)
		lOrder    []listenerKey
		rOrder    []routeKey
	)
	addEnds := func(rk routeKey, m map[dbproxy.End]uint64) {
		for e, n := range m {
			ends[endKey{rk, e}] += n
		}
	}
	for _, l := range f() {
		lk := listenerKey{l.Listen, l.Protocol}
		ls := listeners[lk]
		if ls == nil {
			ls = &listenerSums{}
			listeners[lk] = ls
			lOrder = append(lOrder, lk)
		}
		ls.accepted += l.Stats.Accepted
		ls.refused += l.Stats.Refused
		ls.handled += l.Stats.Handled
		ls.unrouted += l.Stats.Unrouted
		addEnds(routeKey{lk, ""}, l.Stats.UnroutedEnds)
		for _, r := range l.Stats.Routes {
			rk := routeKey{lk, r.Host}
			rs := routes[rk]
			if rs == nil {
				rs = &routeSums{}
				routes[rk] = rs
				rOrder = append(rOrder, rk)
			}
			rs.sessions += r.Sessions
			rs.active += r.Active
			rs.bytesIn += r.BytesIn
			rs.bytesOut += r.BytesOut
			rs.errors += r.Errors
			addEnds(rk, r.Ends)
		}
	}
	for _, lk := range lOrder {
		ls := listeners[lk]
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(ls.accepted), lk.listen, lk.protocol)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(ls.refused), lk.listen, lk.protocol)
		ch <- prometheus.MustNewConstMetric(c.handled, prometheus.CounterValue, float64(ls.handled), lk.listen, lk.protocol)
		ch <- prometheus.MustNewConstMetric(c.unrouted, prometheus.CounterValue, float64(ls.unrouted), lk.listen, lk.protocol)
	}
	for _, rk := range rOrder {
		rs := routes[rk]
		labels := []string{rk.listen, rk.protocol, rk.route}
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.CounterValue, float64(rs.sessions), labels...)
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(rs.active), labels...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(rs.bytesIn), append(labels, "in")...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(rs.bytesOut), append(labels, "out")...)
		ch <- prometheus.MustNewConstMetric(c.routeErrors, prometheus.CounterValue, float64(rs.errors), labels...)
	}
	for ek, n := range ends {
		ch <- prometheus.MustNewConstMetric(c.ends, prometheus.CounterValue, float64(n),
			ek.listen, ek.protocol, ek.route, ek.end.By, ek.end.Reason)
	}
}

// certCollector exports the certificates' state read at scrape time.
type certCollector struct {
	status atomic.Pointer[func() []certs.Status]

	notAfter, lastAttempt, lastError, nextAttempt, failures, issuer *prometheus.Desc
}

func (c *certCollector) init() {
	host := []string{"host"}
	c.notAfter = prometheus.NewDesc(namespace+"_certificate_not_after_seconds",
		"Unix time at which the certificate served for a host expires; absent while the host has none.", host, nil)
	c.lastAttempt = prometheus.NewDesc(namespace+"_certificate_last_attempt_timestamp_seconds",
		"Unix time a certificate for a host was last obtained or failed to be; absent before the first attempt.", host, nil)
	c.lastError = prometheus.NewDesc(namespace+"_certificate_last_error",
		"1 if the last attempt to obtain a certificate for a host failed, else 0.", host, nil)
	c.nextAttempt = prometheus.NewDesc(namespace+"_certificate_next_attempt_timestamp_seconds",
		"Unix time of the next renewal or retry the certificate manager has scheduled for a host; absent when none is.", host, nil)
	c.failures = prometheus.NewDesc(namespace+"_certificate_failures",
		"Failed certificate orders for a host since its last success.", host, nil)
	c.issuer = prometheus.NewDesc(namespace+"_certificate_issuer_info",
		"1 for the issuer (the ACME issuer's name, or local) of the certificate served for a host; absent while unknown.", []string{"host", "issuer"}, nil)
}

// Describe implements prometheus.Collector.
func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.notAfter
	ch <- c.lastAttempt
	ch <- c.lastError
	ch <- c.nextAttempt
	ch <- c.failures
	ch <- c.issuer
}

// Collect implements prometheus.Collector. A host listed twice is exported
// once, from its first entry.
func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	f := loadFunc(&c.status)
	if f == nil {
		return
	}
	seen := make(map[string]bool)
	for _, s := range f() {
		if seen[s.Host] {
			continue
		}
		seen[s.Host] = true
		if !s.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.notAfter, prometheus.GaugeValue, unixSeconds(s.NotAfter), s.Host)
		}
		if !s.LastAttempt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastAttempt, prometheus.GaugeValue, unixSeconds(s.LastAttempt), s.Host)
		}
		failed := 0.0
		if s.LastError != "" {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(c.lastError, prometheus.GaugeValue, failed, s.Host)
		if !s.NextAttempt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.nextAttempt, prometheus.GaugeValue, unixSeconds(s.NextAttempt), s.Host)
		}
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(s.Failures), s.Host)
		if s.CA != "" {
			ch <- prometheus.MustNewConstMetric(c.issuer, prometheus.GaugeValue, 1, s.Host, s.CA)
		}
	}
}
