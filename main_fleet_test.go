package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleetNodeArgs are the flags of fleet node i: its own cache, HTTPS and
// admin address, the fleet's store, no -map.
func fleetNodeArgs(store, cache, addr, adminAddr, node string) []string {
	return []string{"-store", store, "-store-node", node, "-cache", cache, "-addr", addr, "-http", "", "-admin", adminAddr, "-acme", "local"}
}

// rawEtcd returns a client of the test cluster.
func rawEtcd(t *testing.T, e *testenv.Etcd) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestFleetMapping: -map-put refuses an invalid mapping and writes a valid
// one; three nodes started with -store and no -map serve it, share one
// local CA, route a host added by -map-put within a second, and keep the
// old mapping with the error on /health/ready when an invalid one reaches
// etcd anyway.
func TestFleetMapping(t *testing.T) {
	e := testenv.StartEtcd(t, 3)
	store := e.StoreURL("fleetmap")
	dir := t.TempDir()
	a, b := backend(t, "a"), backend(t, "b")
	ctx := context.Background()

	bad := writeFile(t, dir, "bad.yml", "a.localhost: "+a+"\nb.localhost:\n  backend: "+b+"\n  bogus: 1\n")
	err := runIO(ctx, []string{"-store", store, "-cache", t.TempDir(), "-map-put", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "bad.yml:4") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("-map-put of an invalid mapping: %v, want an error naming bad.yml:4 and the key", err)
	}
	// With no mapping in the store, a node refuses to start.
	err = runIO(ctx, fleetNodeArgs(store, t.TempDir(), addrFor(t), addrFor(t), "x"), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-map-put") {
		t.Fatalf("a node with an empty store: %v, want an error pointing to -map-put", err)
	}
	good := writeFile(t, dir, "good.yml", "a.localhost: "+a+"\n")
	if err := runIO(ctx, []string{"-store", store, "-cache", t.TempDir(), "-map-put", good}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-map-put: %v", err)
	}

	type node struct {
		addr, admin string
		d           *daemon
	}
	var nodes []node
	for _, name := range []string{"n0", "n1", "n2"} {
		n := node{addr: addrFor(t), admin: addrFor(t)}
		n.d = startDaemon(t, n.addr, fleetNodeArgs(store, filepath.Join(t.TempDir(), "cache"), n.addr, n.admin, name)...)
		nodes = append(nodes, n)
	}
	roots := loadPool(t, localRootFromLog(t, nodes[0].d.log.String()))
	for i, n := range nodes {
		// One local CA for the fleet: node 0's root verifies every node.
		resp, body := get(t, clientFor(n.addr, roots), "https://a.localhost/")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "a ") {
			t.Fatalf("node %d: a.localhost: %d %q", i, resp.StatusCode, body)
		}
	}

	routes := func(n node, host string) bool {
		c := clientFor(n.addr, roots)
		c.Timeout = time.Second
		resp, err := c.Get("https://" + host + "/")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.HasPrefix(string(body), "b ")
	}
	good2 := writeFile(t, dir, "good2.yml", "a.localhost: "+a+"\nb.localhost: "+b+"\n")
	if err := runIO(ctx, []string{"-store", store, "-cache", t.TempDir(), "-map-put", good2}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-map-put: %v", err)
	}
	start := time.Now()
	for i, n := range nodes {
		for !routes(n, "b.localhost") {
			if time.Since(start) > time.Second {
				t.Fatalf("node %d does not route b.localhost 1 s after -map-put", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("every node routes the new host %v after -map-put", time.Since(start))

	// Invalid, written behind -map-put's back.
	if _, err := rawEtcd(t, e).Put(ctx, "/fleetmap/config/mapping", "a.localhost: [\n"); err != nil {
		t.Fatal(err)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	for i, n := range nodes {
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := plain.Get("http://" + n.admin + "/health/ready")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "mapping") && strings.Contains(string(body), "etcd:/fleetmap/config/mapping") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d /health/ready = %d %s, want 503 naming the store's mapping", i, resp.StatusCode, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !routes(n, "b.localhost") {
			t.Errorf("node %d dropped b.localhost after an invalid mapping", i)
		}
	}

	// /certificates shows the fleet.
	resp, err := plain.Get("http://" + nodes[1].admin + "/certificates?format=json")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Fleet *struct {
			Node      string `json:"node"`
			Connected bool   `json:"connected"`
			LastSync  string `json:"last_sync"`
		} `json:"fleet"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body.Fleet == nil || body.Fleet.Node != "n1" || !body.Fleet.Connected || body.Fleet.LastSync == "" {
		t.Errorf("/certificates fleet = %+v, want node n1, connected, with a last sync", body.Fleet)
	}
	_, metrics := get(t, plain, "http://"+nodes[1].admin+"/metrics")
	if !strings.Contains(metrics, `leproxy_fleet_connected{node="n1"} 1`) {
		t.Errorf("metrics lack leproxy_fleet_connected for n1:\n%s", grepLines(metrics, "fleet"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFleetBackupRestore: -backup with -store archives the store's cache
// keys; -restore with -store replaces another store's cache with them.
func TestFleetBackupRestore(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	c := rawEtcd(t, e)
	ctx := context.Background()
	for k, v := range map[string]string{"/src/cache/a.test": "A", "/src/cache/local-ca/root.pem": "R", "/src/config/mapping": "m", "/dst/cache/stale.test": "S"} {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "correct horse battery staple")
	archive := filepath.Join(t.TempDir(), "fleet.lpb")
	if err := runIO(ctx, []string{"-store", e.StoreURL("src"), "-cache", t.TempDir(), "-backup", archive}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-backup: %v", err)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Size() == 0 {
		t.Fatalf("archive: %v", err)
	}
	if err := runIO(ctx, []string{"-store", e.StoreURL("dst"), "-cache", t.TempDir(), "-restore", archive}, io.Discard, io.Discard); err != nil {
		t.Fatalf("-restore: %v", err)
	}
	resp, err := c.Get(ctx, "/dst/cache/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	want := map[string]string{"/dst/cache/a.test": "A", "/dst/cache/local-ca/root.pem": "R"}
	if len(got) != len(want) || got["/dst/cache/a.test"] != "A" || got["/dst/cache/local-ca/root.pem"] != "R" {
		t.Errorf("restored store holds %v, want %v (stale keys removed)", got, want)
	}
}

// TestFleetStoreTLS: -store-ca, -store-cert and -store-key reach a cluster
// that requires client certificates; without the client certificate the
// same command fails.
func TestFleetStoreTLS(t *testing.T) {
	e := testenv.StartEtcdTLS(t, 1)
	mapping := writeFile(t, t.TempDir(), "m.yml", "a.localhost: 127.0.0.1:1\n")
	args := []string{"-store", e.StoreURL("tls"), "-cache", t.TempDir(), "-store-ca", e.CAFile, "-map-put", mapping}
	if err := runIO(context.Background(), append(args, "-store-cert", e.ClientCertFile, "-store-key", e.ClientKeyFile), io.Discard, io.Discard); err != nil {
		t.Fatalf("-map-put over TLS with a client certificate: %v", err)
	}
	if err := runIO(context.Background(), args, io.Discard, io.Discard); err == nil {
		t.Error("-map-put without the client certificate succeeded against a cluster that requires one")
	}
}
