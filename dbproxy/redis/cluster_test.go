package redis

import (
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// Tests of the cluster node map (cluster.go); its rewrites are
// tested through the reply stream in respreply_test.go.

func TestRedisNodeKey(t *testing.T) {
	tests := []struct{ host, port, want string }{
		{"127.0.0.1", "6379", "127.0.0.1:6379"},
		{"Node.Example.COM.", "06379", "node.example.com:6379"},
		{"::ffff:10.0.0.1", "1", "10.0.0.1:1"},
		{"[::1]", "2", "[::1]:2"},
		{"0:0:0:0:0:0:0:1", "2", "[::1]:2"},
	}
	for _, tt := range tests {
		if got := nodeKey(tt.host, tt.port); got != tt.want {
			t.Errorf("nodeKey(%q, %q) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
}

func TestRedisNodeMap(t *testing.T) {
	ctx := t.Context()
	routes := []dbproxy.Route{{Host: "a.test", Backend: "10.0.0.1:7001"}}
	builds := 0
	current := func() []dbproxy.Route { builds++; return routes }
	var n nodeMap
	if m := n.get(ctx, current); m["10.0.0.1:7001"] != "a.test" || builds != 1 {
		t.Fatalf("first get: %v after %d builds", m, builds)
	}
	routes = []dbproxy.Route{{Host: "b.test", Backend: "10.0.0.1:7001"}}
	if m := n.get(ctx, current); m["10.0.0.1:7001"] != "a.test" || builds != 1 {
		t.Errorf("IP backends: the map was rebuilt without a change of routes: %v after %d builds", m, builds)
	}
	n.invalidate()
	if m := n.get(ctx, current); m["10.0.0.1:7001"] != "b.test" || builds != 2 {
		t.Errorf("after invalidate: %v after %d builds, want b.test from a second build", m, builds)
	}

	// Routes that change while a map is being built: that map serves its
	// session but is not kept.
	n.invalidate()
	reloading := func() []dbproxy.Route {
		r := routes
		routes = []dbproxy.Route{{Host: "c.test", Backend: "10.0.0.1:7001"}}
		n.invalidate()
		return r
	}
	if m := n.get(ctx, reloading); m["10.0.0.1:7001"] != "b.test" {
		t.Errorf("map built during a reload: %v, want the routes read", m)
	}
	if m := n.get(ctx, current); m["10.0.0.1:7001"] != "c.test" {
		t.Errorf("after a reload during a build: %v, want c.test", m)
	}
	if !n.expires.IsZero() {
		t.Errorf("a map of IP backends expires at %v, want never", n.expires)
	}

	// A backend named by hostname: the map expires, to follow its
	// addresses.
	routes = []dbproxy.Route{{Host: "l.test", Backend: "localhost:7001"}}
	n.invalidate()
	n.get(ctx, current)
	if until := time.Until(n.expires); until <= 0 || until > nodesTTL {
		t.Errorf("a map with a named backend expires in %v, want within %v", until, nodesTTL)
	}
}

func TestRedisBuildNodes(t *testing.T) {
	m, named := buildNodes(t.Context(), []dbproxy.Route{
		{Host: "a.test", Backend: "10.0.0.1:7001"},
		{Host: "dup.test", Backend: "10.0.0.1:07001"}, // first route wins
		{Host: "bad.test", Backend: "no port"},
	})
	if named || len(m) != 1 || m["10.0.0.1:7001"] != "a.test" {
		t.Errorf("IP backends: got %v, named %t; want only a.test, not named", m, named)
	}
	m, named = buildNodes(t.Context(), []dbproxy.Route{{Host: "l.test", Backend: "localhost:7001"}})
	if !named || m["localhost:7001"] != "l.test" || (m["127.0.0.1:7001"] != "l.test" && m["[::1]:7001"] != "l.test") {
		t.Errorf("hostname backend: got %v, named %t; want the name and its loopback address, named", m, named)
	}
}
