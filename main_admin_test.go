package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAdminEndpoints runs leproxy with -admin and checks the wiring: the
// access log, request and tcp-free metrics after known traffic, readiness
// once the prefetched certificates are there, and /certificates.
func TestAdminEndpoints(t *testing.T) {
	addr, adminAddr, tlsAddr := addrFor(t), addrFor(t), addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.localhost: "+backend(t, "a")+"\nb.localhost: 127.0.0.1:1\n"+
		fmt.Sprintf("tcp:\n  - listen: %q\n    protocol: tls\n    routes:\n      t.localhost: %s\n", tlsAddr, backend(t, "t")))
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-admin", adminAddr)
	roots := loadPool(t, localRootFromLog(t, d.log.String()))
	c := clientFor(addr, roots)
	// One good handshake on the tcp listener, one refused by the client.
	if tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "t.localhost", RootCAs: roots}); err != nil {
		t.Fatalf("tls listener: %v", err)
	} else {
		tc.Close()
	}
	if tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "t.localhost"}); err == nil {
		tc.Close()
		t.Fatal("handshake without the local CA succeeded")
	}
	for i := 0; i < 3; i++ {
		if resp, body := get(t, c, "https://a.localhost/path?secret=1"); resp.StatusCode != 200 {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, c, "https://b.localhost/"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("b.localhost: got %d, want 502", resp.StatusCode)
	}

	plain := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := get(t, plain, "http://"+adminAddr+"/health/ready")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health/ready still %d after 20s: %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, _ := get(t, plain, "http://"+adminAddr+"/health/live"); resp.StatusCode != 200 {
		t.Errorf("/health/live: %d", resp.StatusCode)
	}
	if err := runIO(context.Background(), []string{"-probe", "http://" + adminAddr + "/health/ready"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-probe on a ready leproxy: %v", err)
	}
	if err := runIO(context.Background(), []string{"-probe", "http://" + adminAddr + "/nonexistent"}, io.Discard, io.Discard); err == nil {
		t.Errorf("-probe on a 404: got nil, want an error")
	}

	// Counters move as each request or handshake finishes, which may be a
	// moment after the client saw its end: scrape until they are all there.
	wants := []string{
		`leproxy_http_requests_total{code="200",host="a.localhost",method="GET",proto="h2"} 3`,
		`leproxy_http_requests_total{code="502",host="b.localhost",method="GET",proto="h2"} 1`,
		`leproxy_http_backend_errors_total{host="b.localhost"} 1`,
		`leproxy_certificate_not_after_seconds{host="a.localhost"}`,
		`leproxy_tls_handshake_failures_total{listener="https"} 0`,
		fmt.Sprintf(`leproxy_tls_handshakes_total{listener=%q} 2`, tlsAddr),
		fmt.Sprintf(`leproxy_tls_handshake_failures_total{listener=%q} 1`, tlsAddr),
		fmt.Sprintf(`leproxy_tcp_session_ends_total{closed_by="client",listener=%q,protocol="tls",reason="closed",route="t.localhost"} 1`, tlsAddr),
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, metrics := get(t, plain, "http://"+adminAddr+"/metrics")
		var missing []string
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s", strings.Join(missing, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}

	req, _ := http.NewRequest("GET", "http://"+adminAddr+"/certificates", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var certsDoc struct {
		Certificates []struct {
			Host  string `json:"host"`
			State string `json:"state"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&certsDoc); err != nil {
		t.Fatalf("/certificates JSON: %v", err)
	}
	got := fmt.Sprint(certsDoc.Certificates)
	if len(certsDoc.Certificates) != 3 || !strings.Contains(got, "a.localhost ok") || !strings.Contains(got, "t.localhost ok") {
		t.Errorf("/certificates: got %s, want a, b and t.localhost ok", got)
	}

	waitLog(t, d, "msg=request", 4)
	log := d.log.String()
	if !strings.Contains(log, "path=/path") || strings.Contains(log, "secret=1") {
		t.Errorf("access log: want 4 request lines with path and without the query:\n%s", log)
	}
}

// TestDebugAddr checks that -debug-addr serves pprof on its own address
// and that the admin listener does not.
func TestDebugAddr(t *testing.T) {
	addr, adminAddr, debugAddr := addrFor(t), addrFor(t), addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.localhost: "+backend(t, "a")+"\n")
	startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "",
		"-admin", adminAddr, "-debug-addr", debugAddr)
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, body := get(t, plain, "http://"+debugAddr+"/debug/pprof/goroutine?debug=1"); resp.StatusCode != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("-debug-addr goroutine profile: %d %.200q", resp.StatusCode, body)
	}
	if resp, body := get(t, plain, "http://"+debugAddr+"/debug/pprof/profile?seconds=1"); resp.StatusCode != 200 || len(body) == 0 {
		t.Errorf("-debug-addr CPU profile: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := get(t, plain, "http://"+adminAddr+"/debug/pprof/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("admin listener /debug/pprof/: got %d, want 404", resp.StatusCode)
	}
}
