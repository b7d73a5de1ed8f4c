package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/testenv"
)

// TestIssuerListFlag runs leproxy with two issuers, the first one down:
// the certificate comes from the second, and /certificates and /metrics
// say which issuer issued it and which one failed.
func TestIssuerListFlag(t *testing.T) {
	addr, adminAddr := addrFor(t), addrFor(t)
	_, port, _ := net.SplitHostPort(addr)
	p := testenv.StartPebble(t, testenv.FreePort(t), atoi(t, port))
	down := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t))) + "/dir"
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.test: "+backend(t, "a")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-admin", adminAddr,
		"-acme", down+","+p.DirectoryURL, "-acme-ca", p.ServerCAFile)

	c := clientFor(addr, p.IssuerRoots(t))
	if resp, body := get(t, c, "https://a.test/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "a host=a.test") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	waitLog(t, d, "issuer unavailable; ordering from the next one", 1)

	plain := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+adminAddr+"/certificates", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Certificates []struct {
			Host  string `json:"host"`
			State string `json:"state"`
			CA    string `json:"ca"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("/certificates JSON: %v", err)
	}
	if len(doc.Certificates) != 1 || doc.Certificates[0].CA != p.DirectoryURL || doc.Certificates[0].State != "ok" {
		t.Errorf("/certificates: %+v, want a.test ok from %s", doc.Certificates, p.DirectoryURL)
	}
	_, metrics := get(t, plain, "http://"+adminAddr+"/metrics")
	for _, want := range []string{
		`leproxy_acme_failures_total{challenge="",issuer="` + down + `"} 1`,
		`leproxy_acme_finalizations_total{issuer="` + p.DirectoryURL + `"} 1`,
		`leproxy_certificate_issuer_info{host="a.test",issuer="` + p.DirectoryURL + `"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
