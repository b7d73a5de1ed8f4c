package admin

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FleetStatus is a fleet node's view of the fleet (-store), shown on
// /certificates (JSON "fleet") and exported as metrics.
type FleetStatus struct {
	// Node is this node's name; Prefix the fleet's key prefix in etcd.
	Node   string `json:"node"`
	Prefix string `json:"prefix"`
	// Connected reports that etcd answered the last call.
	Connected bool `json:"connected"`
	// LastSync is when etcd last answered; nil if never.
	LastSync *time.Time `json:"last_sync,omitempty"`
	// LastError is etcd's last error.
	LastError string `json:"last_error,omitempty"`
	// Locks are the locks held in the fleet and the node holding each.
	Locks []FleetLock `json:"locks"`
}

// FleetLock is one lock held in the fleet.
type FleetLock struct {
	Name string `json:"name"`
	Node string `json:"node"`
}

// fleetCollector exports the fleet state read at scrape time.
type fleetCollector struct {
	status atomic.Pointer[func() *FleetStatus]

	connected, lastSync, locks *prometheus.Desc
}

func (c *fleetCollector) init() {
	c.connected = prometheus.NewDesc(namespace+"_fleet_connected",
		"1 if etcd answered this node's last call (fleet mode, -store), else 0.", []string{"node"}, nil)
	c.lastSync = prometheus.NewDesc(namespace+"_fleet_last_sync_timestamp_seconds",
		"Unix time etcd last answered this node; absent if never.", []string{"node"}, nil)
	c.locks = prometheus.NewDesc(namespace+"_fleet_lock_held",
		"1 for each lock held in the fleet, labelled with the lock and the node holding it.", []string{"lock", "holder"}, nil)
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connected
	ch <- c.lastSync
	ch <- c.locks
}

// Collect implements prometheus.Collector.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	f := loadFunc(&c.status)
	if f == nil {
		return
	}
	st := f()
	up := 0.0
	if st.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, up, st.Node)
	if st.LastSync != nil {
		ch <- prometheus.MustNewConstMetric(c.lastSync, prometheus.GaugeValue, unixSeconds(*st.LastSync), st.Node)
	}
	for _, l := range st.Locks {
		ch <- prometheus.MustNewConstMetric(c.locks, prometheus.GaugeValue, 1, l.Name, l.Node)
	}
}

// SetFleetStatus makes every scrape read the fleet state from f; nil
// stops it. f must be safe to call from any goroutine.
func (m *Metrics) SetFleetStatus(f func() *FleetStatus) {
	if m == nil {
		return
	}
	m.fleet.status.Store(&f)
}
