package httpproxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// Limits of the HTTP/2 stream guard (CVE-2023-44487, "rapid reset"). A
// stream counts as reset when the client cancelled it (RST_STREAM, or the
// connection went away) before leproxy finished its response.
const (
	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS leproxy
	// advertises on its HTTP/2 connections (http.HTTP2Config).
	MaxConcurrentStreams = 128
	// MaxResets is how many reset streams a connection may accumulate
	// over its lifetime while resets make up at least half of its streams.
	MaxResets = 200
	// MaxResetsPerSecond is how many streams a connection may reset within
	// one second while resets make up at least half of that second's
	// streams.
	MaxResetsPerSecond = 100
	// MaxStreamsPerSecond is how many new streams a connection may open
	// within one second.
	MaxStreamsPerSecond = 2000
)

// guardCloseDelay is how long after a connection goes over its budget it
// is closed outright: time for the GOAWAY to reach the client, and the
// bound on a client that does not open another stream (which is how the
// GOAWAY is sent) or does not read.
const guardCloseDelay = time.Second

// connGuardKey is the context key of a connection's *connGuard.
type connGuardKey struct{}

// ConnContext suits http.Server.ConnContext: it gives each connection the
// stream accounting that Handler.ServeHTTP uses to close HTTP/2
// connections whose clients reset streams en masse or open them faster
// than MaxStreamsPerSecond. Without it a Handler does no such accounting.
//
// On a connection from NewTLSListener it also hands ServeHTTP the HTTP/1.x
// framing verdicts, by which requests that could smuggle another get 400.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	g := &connGuard{closeConn: func() { _ = c.Close() }}
	if hc, ok := c.(*h1Conn); ok {
		g.framing = hc.scan
		g.h1 = hc
	}
	return context.WithValue(ctx, connGuardKey{}, g)
}

// connGuard is the stream accounting of one connection.
type connGuard struct {
	closeConn func()          // closes the connection (TCP, or QUIC in h3.go)
	framing   *framingScanner // HTTP/1.x connections of NewTLSListener
	h1        *h1Conn         // the same

	mu         sync.Mutex
	streams    int // streams seen
	resets     int // of which reset
	winStart   time.Time
	winStreams int // streams opened since winStart
	winResets  int // streams reset since winStart
	tripped    bool
}

// window moves g's one-second window on to now if it has run out. g.mu is
// held.
func (g *connGuard) window(now time.Time) {
	if now.Sub(g.winStart) >= time.Second || now.Before(g.winStart) {
		g.winStart = now
		g.winStreams = 0
		g.winResets = 0
	}
}

// check trips g if it is over budget, reporting why on the transition.
// g.mu is held.
func (g *connGuard) check() (reason string) {
	if g.tripped {
		return ""
	}
	switch {
	case g.resets > MaxResets && 2*g.resets >= g.streams:
		reason = "too many reset streams"
	case g.winResets > MaxResetsPerSecond && 2*g.winResets >= g.winStreams:
		reason = "too many reset streams per second"
	case g.winStreams > MaxStreamsPerSecond:
		reason = "too many new streams per second"
	default:
		return ""
	}
	g.tripped = true
	return reason
}

// stream records a new stream, reset already when reset, and reports
// whether the connection is within its budget, and why it went over now.
func (g *connGuard) stream(now time.Time, reset bool) (ok bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.window(now)
	g.streams++
	g.winStreams++
	if reset {
		g.resets++
		g.winResets++
	}
	reason = g.check()
	return !g.tripped, reason
}

// reset records that a stream g has already counted was reset, and reports
// why the connection went over its budget if it did now.
func (g *connGuard) reset(now time.Time) (reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.window(now)
	g.resets++
	g.winResets++
	return g.check()
}

// trip logs that g's connection goes over budget and closes it after
// guardCloseDelay.
func (h *Handler) trip(g *connGuard, r *http.Request, reason string) {
	g.mu.Lock()
	streams, resets := g.streams, g.resets
	g.mu.Unlock()
	msg := "http2 rapid reset: closing connection"
	if r.ProtoMajor == 3 {
		msg = "http3 rapid reset: closing connection"
	}
	h.logger.Warn(msg, "client", r.RemoteAddr, "reason", reason, "streams", streams, "resets", resets)
	time.AfterFunc(guardCloseDelay, g.closeConn)
}

// guardStream accounts for HTTP/2 request r on its connection. It reports
// whether r may go on to be served; when not, it has answered r with
// "Connection: close", which makes net/http send GOAWAY. A stream already
// reset is never served. After serving r, call the returned func (nil when
// there is no accounting), which counts r as reset if it was cancelled.
func (h *Handler) guardStream(w http.ResponseWriter, r *http.Request) (ok bool, done func()) {
	if r.ProtoMajor < 2 { // HTTP/2, and HTTP/3 through H3Server
		return true, nil
	}
	g, _ := r.Context().Value(connGuardKey{}).(*connGuard)
	if g == nil {
		return true, nil
	}
	cancelled := r.Context().Err() != nil
	ok, reason := g.stream(time.Now(), cancelled)
	if reason != "" {
		h.trip(g, r, reason)
	}
	if !ok {
		w.Header().Set("Connection", "close")
		http.Error(w, "too many requests on this connection", http.StatusTooManyRequests)
		return false, nil
	}
	if cancelled {
		return false, nil
	}
	return true, func() {
		if r.Context().Err() == nil {
			return
		}
		if reason := g.reset(time.Now()); reason != "" {
			h.trip(g, r, reason)
		}
	}
}
