package testenv

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStartEtcd: three members elect a leader; with two stopped the last
// has none (no quorum); restarted, the cluster has one again.
func TestStartEtcd(t *testing.T) {
	e := StartEtcd(t, 3)
	if got := len(e.Endpoints()); got != 3 {
		t.Fatalf("got %d endpoints, want 3", got)
	}
	if u := e.StoreURL("/p"); !strings.HasPrefix(u, "etcd://127.0.0.1:") || !strings.HasSuffix(u, "/p") || strings.Count(u, ",") != 2 {
		t.Fatalf("StoreURL = %q", u)
	}
	e.Stop(0)
	e.Kill(1)
	last := e.Endpoints()[2]
	deadline := time.Now().Add(10 * time.Second)
	for etcdHealthy(last) {
		if time.Now().After(deadline) {
			t.Fatal("member 2 still reports a leader with two of three members stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.RestartAll()
	for _, u := range e.Endpoints() {
		if !etcdHealthy(u) {
			t.Fatalf("%s not healthy after RestartAll", u)
		}
	}
}

func etcdHealthy(url string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b [256]byte
	n, _ := resp.Body.Read(b[:])
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b[:n]), `"health":"true"`)
}
