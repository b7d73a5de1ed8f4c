package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	in := filepath.Join("testdata", "summary.yml")
	cfg, err := Parse(in, readInput(t, in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cfg.Summary(&b)
	got := strings.ReplaceAll(b.String(), testdataDir(t), "{{testdata}}")
	checkGolden(t, filepath.Join("testdata", "summary.golden"), got)

	// Every host, backend and route appears.
	for _, h := range cfg.Hosts {
		if !strings.Contains(b.String(), h.Name) || !strings.Contains(b.String(), h.Backend.Raw) {
			t.Errorf("summary lacks host %s → %s", h.Name, h.Backend.Raw)
		}
	}
	for _, l := range cfg.TCP {
		for _, r := range l.Routes {
			if !strings.Contains(b.String(), r.Host) || !strings.Contains(b.String(), r.Backend) {
				t.Errorf("summary lacks route %s → %s", r.Host, r.Backend)
			}
		}
	}
}

func TestSummaryTCPOnly(t *testing.T) {
	cfg, err := Parse("m.yml", []byte("tcp:\n- listen: :6379\n  protocol: redis\n  routes: {cache.example.com: 127.0.0.1:6380}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cfg.Summary(&b)
	want := "m.yml: 0 HTTP hosts, 1 tcp listener, 1 certificate name\n" +
		"tcp listener :6379, redis:\n" +
		"  cache.example.com  → 127.0.0.1:6380\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
