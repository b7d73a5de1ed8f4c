package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
)

func TestCertProblems(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	st := []certs.Status{
		{Host: "valid.example.test", NotAfter: now.Add(60 * 24 * time.Hour)},
		{Host: "edge.example.test", NotAfter: now.Add(DefaultMinValidity)},
		{Host: "missing.example.test"},
		{Host: "failing.example.test", LastError: "acme: unauthorized", LastAttempt: now},
		{Host: "days.example.test", NotAfter: now.Add(3*24*time.Hour + 5*time.Hour)},
		{Host: "hours.example.test", NotAfter: now.Add(5*time.Hour + 30*time.Minute), LastError: "dns timeout"},
		{Host: "minutes.example.test", NotAfter: now.Add(90 * time.Minute)},
		{Host: "expired.example.test", NotAfter: now.Add(-time.Hour)},
	}
	want := []Problem{
		{What: "certificate", Host: "missing.example.test", Detail: "no certificate yet"},
		{What: "certificate", Host: "failing.example.test", Detail: "no certificate yet; last error: acme: unauthorized"},
		{What: "certificate", Host: "days.example.test", Detail: "certificate expires in 3 days (2026-03-13T17:00:00Z)"},
		{What: "certificate", Host: "hours.example.test", Detail: "certificate expires in 5 hours (2026-03-10T17:30:00Z); last error: dns timeout"},
		{What: "certificate", Host: "minutes.example.test", Detail: "certificate expires in 90 minutes (2026-03-10T13:30:00Z)"},
		{What: "certificate", Host: "expired.example.test", Detail: "certificate expired 2026-03-10T11:00:00Z"},
	}
	got := CertProblems(st, now, DefaultMinValidity)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got problems\n%v\nwant\n%v", got, want)
	}
	if got := CertProblems(st[:2], now, DefaultMinValidity); got != nil {
		t.Errorf("valid certificates: got %v, want no problem", got)
	}
}

// TestReadyFollowsCertificates drives /health/ready from not ready (a
// certificate missing) to ready (it arrives) and back (it nears expiry).
func TestReadyFollowsCertificates(t *testing.T) {
	var mu sync.Mutex
	status := []certs.Status{
		{Host: "a.example.test", NotAfter: time.Now().Add(90 * 24 * time.Hour)},
		{Host: "b.example.test", LastError: "acme: connection refused"},
	}
	setStatus := func(i int, s certs.Status) {
		mu.Lock()
		defer mu.Unlock()
		status[i] = s
	}
	current := func() []certs.Status {
		mu.Lock()
		defer mu.Unlock()
		return append([]certs.Status(nil), status...)
	}
	srv := httptest.NewServer(NewHandler(HandlerOptions{
		Ready: func() []Problem { return CertProblems(current(), time.Now(), DefaultMinValidity) },
	}))
	t.Cleanup(srv.Close)

	type body struct {
		Ready    bool `json:"ready"`
		Problems []struct {
			What   string `json:"what"`
			Host   string `json:"host"`
			Detail string `json:"detail"`
		} `json:"problems"`
	}
	get := func() (int, body) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/health/ready")
		if err != nil {
			t.Fatalf("GET /health/ready: %v", err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("got Content-Type %q, want application/json", ct)
		}
		var b body
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatalf("decoding /health/ready: %v", err)
		}
		return resp.StatusCode, b
	}

	code, b := get()
	if code != http.StatusServiceUnavailable || b.Ready || len(b.Problems) != 1 {
		t.Fatalf("certificate missing: got %d %+v, want 503 with one problem", code, b)
	}
	if p := b.Problems[0]; p.What != "certificate" || p.Host != "b.example.test" || p.Detail != "no certificate yet; last error: acme: connection refused" {
		t.Errorf("certificate missing: got problem %+v", p)
	}

	setStatus(1, certs.Status{Host: "b.example.test", Issuer: "Pebble", NotAfter: time.Now().Add(90 * 24 * time.Hour)})
	code, b = get()
	if code != http.StatusOK || !b.Ready || len(b.Problems) != 0 {
		t.Fatalf("certificate arrived: got %d %+v, want 200 ready", code, b)
	}

	setStatus(0, certs.Status{Host: "a.example.test", NotAfter: time.Now().Add(3*24*time.Hour + time.Hour)})
	code, b = get()
	if code != http.StatusServiceUnavailable || len(b.Problems) != 1 || b.Problems[0].Host != "a.example.test" {
		t.Fatalf("certificate expiring: got %d %+v, want 503 naming a.example.test", code, b)
	}
}

func TestReadyNil(t *testing.T) {
	rec := httptest.NewRecorder()
	NewHandler(HandlerOptions{}).ServeHTTP(rec, httptest.NewRequest("GET", "/health/ready", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "{\n  \"ready\": true\n}\n" {
		t.Errorf("no Ready func: got %d %q, want 200 {\"ready\": true}", rec.Code, rec.Body.String())
	}
}

func TestLive(t *testing.T) {
	srv := httptest.NewServer(NewHandler(HandlerOptions{
		Ready: func() []Problem { return []Problem{{What: "mapping", Detail: "not loaded"}} },
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		method   string
		wantCode int
		wantBody string
	}{
		{"GET", 200, "ok\n"},
		{"HEAD", 200, ""},
		{"POST", 405, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+"/health/live", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s /health/live: %v", tt.method, err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
			t.Errorf("%s /health/live (not ready): got %d %q, want %d %q", tt.method, resp.StatusCode, body, tt.wantCode, tt.wantBody)
		}
	}
}

func TestCertProblemsLocalCertificates(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	st := []certs.Status{
		{Host: "a.localhost", Local: true, NotAfter: now.Add(6 * 24 * time.Hour)},
		{Host: "b.localhost", Local: true, NotAfter: now.Add(12 * time.Hour)},
		{Host: "c.example.com", NotAfter: now.Add(6 * 24 * time.Hour)},
	}
	got := CertProblems(st, now, DefaultMinValidity)
	if len(got) != 2 || got[0].Host != "b.localhost" || got[1].Host != "c.example.com" {
		t.Errorf("got %+v, want problems for b.localhost (local, under a day) and c.example.com (ACME, under 7 days)", got)
	}
}

// TestCertProblemsOwnSchedule: a certificate whose lifetime is known is
// judged by it (a problem with less than a tenth of it left), not by the
// fixed minimum validity: a 6-day certificate with 2 days left is fine.
func TestCertProblemsOwnSchedule(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	st := []certs.Status{
		{Host: "short-ok.example.test", NotBefore: now.Add(-4 * day), NotAfter: now.Add(2 * day)},
		{Host: "short-late.example.test", NotBefore: now.Add(-6*day + 10*time.Hour), NotAfter: now.Add(10 * time.Hour),
			LastError: "acme: unauthorized", NextAttempt: now.Add(time.Minute)},
		{Host: "long-late.example.test", NotBefore: now.Add(-82 * day), NotAfter: now.Add(8 * day)},
		{Host: "long-ok.example.test", NotBefore: now.Add(-80 * day), NotAfter: now.Add(10 * day)},
	}
	want := []Problem{
		{What: "certificate", Host: "short-late.example.test", Detail: "certificate expires in 10 hours (2026-03-10T22:00:00Z); last error: acme: unauthorized; next attempt 2026-03-10T12:01:00Z"},
		{What: "certificate", Host: "long-late.example.test", Detail: "certificate expires in 8 days (2026-03-18T12:00:00Z)"},
	}
	if got := CertProblems(st, now, DefaultMinValidity); !reflect.DeepEqual(got, want) {
		t.Errorf("got problems\n%v\nwant\n%v", got, want)
	}
}

// TestCertReadiness: one failing name is a warning (ready) unless strict;
// every name failing is not ready either way.
func TestCertReadiness(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	good := certs.Status{Host: "good.example.test", NotAfter: now.Add(60 * 24 * time.Hour)}
	bad := certs.Status{Host: "bad.example.test", LastError: "acme: unauthorized"}
	tests := []struct {
		name      string
		st        []certs.Status
		strict    bool
		wantReady bool
		wantN     int
	}{
		{name: "one of two failing", st: []certs.Status{good, bad}, wantReady: true, wantN: 1},
		{name: "one of two failing, strict", st: []certs.Status{good, bad}, strict: true, wantReady: false, wantN: 1},
		{name: "all failing", st: []certs.Status{bad}, wantReady: false, wantN: 1},
		{name: "none failing", st: []certs.Status{good}, strict: true, wantReady: true, wantN: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := CertReadiness(tt.st, now, DefaultMinValidity, tt.strict)
			rec := httptest.NewRecorder()
			NewHandler(HandlerOptions{Ready: func() []Problem { return p }}).ServeHTTP(rec, httptest.NewRequest("GET", "/health/ready", nil))
			var b readyBody
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
				t.Fatal(err)
			}
			wantCode := http.StatusOK
			if !tt.wantReady {
				wantCode = http.StatusServiceUnavailable
			}
			if rec.Code != wantCode || b.Ready != tt.wantReady || len(b.Problems) != tt.wantN {
				t.Errorf("got %d %s, want %d ready=%v with %d problems", rec.Code, rec.Body, wantCode, tt.wantReady, tt.wantN)
			}
			for _, pr := range b.Problems {
				if pr.Host != "bad.example.test" || pr.Warning != tt.wantReady {
					t.Errorf("problem %+v, want bad.example.test with warning %v", pr, tt.wantReady)
				}
			}
		})
	}
}
