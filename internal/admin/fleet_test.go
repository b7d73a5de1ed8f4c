package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
)

// TestFleetOnCertificatesAndMetrics: in fleet mode /certificates (JSON and
// HTML) and /metrics show the node, etcd's state and the lock holders;
// without Fleet, the JSON has no "fleet".
func TestFleetOnCertificatesAndMetrics(t *testing.T) {
	sync := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	fleet := &FleetStatus{Node: "n1", Prefix: "/leproxy/", Connected: true, LastSync: &sync,
		Locks: []FleetLock{{Name: "issue/a.example.com", Node: "n2"}}}
	m := NewMetrics()
	m.SetFleetStatus(func() *FleetStatus { return fleet })
	srv := httptest.NewServer(NewHandler(HandlerOptions{
		Metrics:      m,
		Certificates: func() []certs.Status { return nil },
		Fleet:        func() *FleetStatus { return fleet },
	}))
	defer srv.Close()
	getBody := func(path, accept string) string {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var body struct {
		Fleet *FleetStatus `json:"fleet"`
	}
	if err := json.Unmarshal([]byte(getBody("/certificates?format=json", "")), &body); err != nil {
		t.Fatal(err)
	}
	if body.Fleet == nil || body.Fleet.Node != "n1" || len(body.Fleet.Locks) != 1 || body.Fleet.Locks[0].Node != "n2" || !body.Fleet.LastSync.Equal(sync) {
		t.Errorf("fleet in JSON = %+v, want node n1 and the lock held by n2", body.Fleet)
	}
	page := getBody("/certificates?format=html", "")
	if !strings.Contains(page, "<h2>Fleet</h2>") || !strings.Contains(page, "<td>issue/a.example.com</td><td>n2</td>") {
		t.Errorf("HTML page lacks the fleet section:\n%s", page)
	}
	metrics := getBody("/metrics", "text/plain")
	for _, want := range []string{
		`leproxy_fleet_connected{node="n1"} 1`,
		`leproxy_fleet_lock_held{holder="n2",lock="issue/a.example.com"} 1`,
		`leproxy_fleet_last_sync_timestamp_seconds{node="n1"} 1.7963784e+09`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	plain := httptest.NewServer(NewHandler(HandlerOptions{Certificates: func() []certs.Status { return nil }}))
	defer plain.Close()
	resp, err := http.Get(plain.URL + "/certificates?format=json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "fleet") {
		t.Errorf("JSON without a fleet mentions one: %s", b)
	}
}
