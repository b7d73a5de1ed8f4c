package admin

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/certs"
)

// everyMetric returns Metrics in which every metric family has a series:
// one request served, one of each event, tcp listener and certificate
// state.
func everyMetric(t *testing.T) *Metrics {
	t.Helper()
	m := NewMetrics()
	srv := httptest.NewServer(m.InstrumentHTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	}), HTTPOptions{Known: known}))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL, "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	m.BackendError("a.example.test")
	m.Reload(false)
	m.TLSHandshake("https", errors.New("bad certificate"))
	m.ACMEOrder("a.example.test", errors.New("refused"))
	for _, k := range []string{certs.ACMEOrderPlaced, certs.ACMEFinalized, certs.ACMEFailed} {
		m.ACMEEvent(certs.ACMEEvent{Kind: k, Issuer: "https://acme.example.test/dir", Challenge: "tls-alpn-01"})
	}
	m.ClientLimited("request", "rate")
	m.ClientBlocked("tls")
	m.SetTCPStats(func() []TCPListenerStats {
		return []TCPListenerStats{{Listen: ":5432", Protocol: "postgres", Stats: dbproxy.Stats{
			Accepted: 1,
			Routes: []dbproxy.RouteStats{{Host: "db.example.test", Sessions: 1, BytesIn: 1, BytesOut: 1,
				Ends: map[dbproxy.End]uint64{{By: "client", Reason: "closed"}: 1}}},
		}}}
	})
	now := time.Now()
	m.SetCertStatus(func() []certs.Status {
		return []certs.Status{{Host: "a.example.test", CA: "letsencrypt", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			LastAttempt: now, LastError: "refused", Failures: 1, NextAttempt: now.Add(time.Minute)}}
	})
	return m
}

// metricsText returns what /metrics serves m as, in the text format.
func metricsText(t *testing.T, m *Metrics) []byte {
	t.Helper()
	srv := httptest.NewServer(NewHandler(HandlerOptions{Metrics: m}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(readAll(t, resp))
}

// TestMetricsConventions runs Prometheus's own linter (the checks of
// "promtool check metrics") over /metrics with every family present: names,
// units, _total on counters and nowhere else, help text.
func TestMetricsConventions(t *testing.T) {
	problems, err := promlint.New(bytes.NewReader(metricsText(t, everyMetric(t)))).Lint()
	if err != nil {
		t.Fatalf("linting /metrics: %v", err)
	}
	for _, p := range problems {
		t.Errorf("/metrics: %s: %s", p.Metric, p.Text)
	}
}

// readmeMetrics returns the metric table of README.md: name → type.
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(leproxy_[a-z_]+)` \\| (counter|gauge|histogram|summary) \\| ?([a-z_, ]*?) ?\\|")
	out := make(map[string]string)
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = m[2] + " " + strings.ReplaceAll(m[3], " ", "")
	}
	if len(out) == 0 {
		t.Fatal("README.md: no metric table found")
	}
	return out
}

// TestMetricsDocumented checks that the README's metric table lists every
// leproxy_ family /metrics serves, with its type and labels, and nothing
// that /metrics does not serve (a renamed metric's old name).
func TestMetricsDocumented(t *testing.T) {
	doc := readmeMetrics(t)
	served := make(map[string]string)
	for name, mf := range scrape(t, everyMetric(t)) {
		if !strings.HasPrefix(name, namespace+"_") {
			continue
		}
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		served[name] = strings.ToLower(mf.GetType().String()) + " " + strings.Join(labels, ",")
	}
	for name, what := range served {
		d, ok := doc[name]
		switch {
		case !ok:
			t.Errorf("README.md does not list %s (%s)", name, what)
		case !sameLabels(d, what):
			t.Errorf("README.md lists %s as %q, /metrics serves %q", name, d, what)
		}
	}
	for name := range doc {
		if _, ok := served[name]; !ok {
			t.Errorf("README.md lists %s, which /metrics does not serve", name)
		}
	}
}

// sameLabels compares "type l1,l2" descriptions, labels in any order.
func sameLabels(a, b string) bool {
	ta, la, _ := strings.Cut(a, " ")
	tb, lb, _ := strings.Cut(b, " ")
	sa, sb := strings.Split(la, ","), strings.Split(lb, ",")
	slices.Sort(sa)
	slices.Sort(sb)
	return ta == tb && slices.Equal(sa, sb)
}

func TestBuildInfo(t *testing.T) {
	m := NewMetrics()
	one := func() *dto.Metric {
		t.Helper()
		mf := scrape(t, m)["leproxy_build_info"]
		if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Fatalf("leproxy_build_info: got %v, want one series of value 1", mf)
		}
		return mf.GetMetric()[0]
	}
	labels := func(mt *dto.Metric) map[string]string {
		out := make(map[string]string)
		for _, lp := range mt.GetLabel() {
			out[lp.GetName()] = lp.GetValue()
		}
		return out
	}
	// A test binary is not a release and has no vcs stamp.
	if got := labels(one()); got["version"] != "devel" || got["goversion"] != runtime.Version() {
		t.Errorf("leproxy_build_info of a test binary: got %v, want version devel, goversion %s", got, runtime.Version())
	}
	m.SetBuildInfo(BuildInfo{Version: "1.2.3", Commit: "0123abc", GoVersion: "go1.99"})
	if got, want := labels(one()), map[string]string{"version": "1.2.3", "commit": "0123abc", "goversion": "go1.99"}; !maps.Equal(got, want) {
		t.Errorf("after SetBuildInfo: got %v, want %v", got, want)
	}
}
