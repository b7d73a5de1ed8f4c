package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leproxy/leproxy/internal/clientlimit"
)

// clientMetrics count what per-client limits refused and blocked.
type clientMetrics struct {
	limited *prometheus.CounterVec
	blocks  *prometheus.CounterVec
}

func (c *clientMetrics) register(reg *prometheus.Registry) {
	c.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "client_limited_total",
		Help:      `Connections and requests refused by per-client limits, by what was refused ("connection", "request") and why ("rate", "concurrency", "blocked").`,
	}, []string{"what", "kind"})
	c.blocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "client_blocks_total",
		Help:      `Clients blocked, by the failure that blocked them ("tls", "protocol", "auth").`,
	}, []string{"reason"})
	reg.MustRegister(c.limited, c.blocks)
}

// ClientLimited counts one connection or request ("connection",
// "request") refused by a per-client limit of kind.
func (m *Metrics) ClientLimited(what, kind string) {
	if m == nil {
		return
	}
	m.limits.limited.WithLabelValues(what, kind).Inc()
}

// ClientBlocked counts one block, for clientlimit.BlocklistOptions.OnBlock.
func (m *Metrics) ClientBlocked(reason string) {
	if m == nil {
		return
	}
	m.limits.blocks.WithLabelValues(reason).Inc()
}

// blocksList serves GET /blocks: {"blocks":[{client, listener, reason,
// since, until, offences}…]}.
func blocksList(b *clientlimit.Blocklist, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		list := b.List()
		if list == nil {
			list = []clientlimit.Block{}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err := json.NewEncoder(w).Encode(struct {
			Blocks []clientlimit.Block `json:"blocks"`
		}{list}); err != nil {
			logger.Debug("writing /blocks", "error", err)
		}
	})
}

// blocksLift serves DELETE /blocks?client=ADDR: 204 when ADDR's client
// was blocked and no longer is, 404 when it was not blocked, 400 when
// ADDR is no address.
func blocksLift(b *clientlimit.Blocklist) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := r.URL.Query().Get("client")
		for _, blk := range b.List() {
			if blk.Client == s {
				k, _ := clientlimit.ParseKey(s, 0)
				b.Lift(k)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		k, ok := clientlimit.ParseKey(s, 0)
		if !ok {
			http.Error(w, "client: expected an IP address or a listed prefix", http.StatusBadRequest)
			return
		}
		// An address inside a listed IPv6 prefix.
		for _, blk := range b.List() {
			if p, ok := clientlimit.ParseKey(blk.Client, 0); ok && p.Contains(k.Addr()) {
				b.Lift(p)
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		http.Error(w, "not blocked", http.StatusNotFound)
	})
}
