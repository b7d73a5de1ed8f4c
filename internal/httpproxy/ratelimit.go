package httpproxy

import (
	"errors"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/hostname"
)

// requestLimits builds the per-client request limiter of each host with a
// rate_limit, keeping prev's for hosts whose rate_limit is unchanged, so
// that a reload does not hand every client a fresh bucket.
func requestLimits(hosts []config.Host, clients *clientlimit.Clients, prev *Handler) map[string]*clientlimit.Limiter {
	if clients == nil {
		return nil
	}
	out := make(map[string]*clientlimit.Limiter)
	for _, host := range hosts {
		l := limitsOf(host.RateLimit)
		if l.IsZero() {
			continue
		}
		name := hostname.FromHostHeader(host.Name)
		if prev != nil {
			if old := prev.limiters[name]; old != nil && old.Limits() == l {
				out[name] = old
				continue
			}
		}
		out[name] = clients.Limiter(l)
	}
	return out
}

func limitsOf(r config.RateLimit) clientlimit.Limits {
	return clientlimit.Limits{Rate: rateOf(r.Requests), Burst: r.Burst, Concurrent: r.InFlight}
}

// limit applies host name's request limits to r: it reports whether r
// may go on, and when it may, the function to call when it is done. A
// client over its rate gets 429 with Retry-After (whole seconds until
// its next token); one at its in_flight cap 429 with Retry-After: 1. The
// client is the connection's peer, or what a trusted proxy's
// X-Forwarded-For says.
func (h *Handler) limit(w http.ResponseWriter, r *http.Request, name string) (done func(), ok bool) {
	lim := h.limiters[name]
	if lim == nil {
		return nil, true
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil, true // not a TCP peer (a test's handler call)
	}
	client := h.clients.Client(peer.Addr(), r.Header.Values("X-Forwarded-For"))
	if h.clients.Exempt(client) {
		return nil, true
	}
	release, retry, err := lim.Acquire(h.clients.Key(client))
	if err == nil {
		return release, true
	}
	kind := "concurrency"
	if errors.Is(err, clientlimit.ErrRate) {
		kind = "rate"
	}
	if h.onLimited != nil {
		h.onLimited(name, kind)
	}
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter(retry)))
	http.Error(w, "429 too many requests", http.StatusTooManyRequests)
	return nil, false
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// rateOf is a rate per second for golang.org/x/time/rate.
func rateOf(perSecond float64) rate.Limit { return rate.Limit(perSecond) }
