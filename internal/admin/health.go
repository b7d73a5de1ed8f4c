package admin

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
)

// DefaultMinValidity is how long a certificate must still be valid for its
// host to count as ready: a certificate within 7 days of expiry means
// renewal has been failing for weeks.
const DefaultMinValidity = 7 * 24 * time.Hour

// A Problem is one reason leproxy is not ready, as /health/ready lists it.
type Problem struct {
	// What names the kind of thing: "certificate", "listener",
	// "mapping"...
	What string `json:"what"`
	// Host is the host name concerned, if any.
	Host string `json:"host,omitempty"`
	// Detail says what is wrong, for a human.
	Detail string `json:"detail"`
	// Warning marks a problem that is listed but does not make leproxy
	// not ready (see CertReadiness).
	Warning bool `json:"warning,omitempty"`
}

// CertReadiness returns CertProblems(st, now, minValid) as readiness sees
// them: with strict, or when every host has a problem, each one makes
// leproxy not ready; otherwise they are warnings, so one failing name does
// not take every other out of service.
func CertReadiness(st []certs.Status, now time.Time, minValid time.Duration, strict bool) []Problem {
	p := CertProblems(st, now, minValid)
	if !strict && len(p) < len(st) {
		for i := range p {
			p[i].Warning = true
		}
	}
	return p
}

// CertProblems returns a Problem for every host in st that has no
// certificate, or one that is past its own emergency line: less than a
// tenth of its lifetime (NotAfter-NotBefore) left, by when renewal should
// long have happened (expired included). A status without NotBefore is
// judged by minValid instead. A last error, if any, is added to the
// detail, and the next attempt.
func CertProblems(st []certs.Status, now time.Time, minValid time.Duration) []Problem {
	var out []Problem
	for _, s := range st {
		var detail string
		switch left := s.NotAfter.Sub(now); {
		case s.NotAfter.IsZero():
			detail = "no certificate yet"
		case left <= 0:
			detail = "certificate expired " + s.NotAfter.UTC().Format(time.RFC3339)
		case left < minValidFor(s, minValid):
			detail = fmt.Sprintf("certificate expires in %s (%s)", humanDuration(left), s.NotAfter.UTC().Format(time.RFC3339))
		default:
			continue
		}
		if s.LastError != "" {
			detail += "; last error: " + s.LastError
		}
		if !s.NextAttempt.IsZero() {
			detail += "; next attempt " + s.NextAttempt.UTC().Format(time.RFC3339)
		}
		out = append(out, Problem{What: "certificate", Host: s.Host, Detail: detail})
	}
	return out
}

// humanDuration rounds d down to whole days, or hours under two days, or
// minutes under two hours.
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(math.Floor(d.Hours()/24)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	default:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
}

// readyBody is the JSON of /health/ready.
type readyBody struct {
	Ready    bool      `json:"ready"`
	Problems []Problem `json:"problems,omitempty"`
}

// liveHandler answers 200 "ok" as long as the process serves.
func liveHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// readyHandler answers 200 {"ready":true} when ready reports no problem
// but warnings, else 503; the problems, warnings included, are listed. A
// nil ready is always ready.
func readyHandler(ready func() []Problem, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := readyBody{Ready: true}
		if ready != nil {
			body.Problems = ready()
			body.Ready = !slices.ContainsFunc(body.Problems, func(p Problem) bool { return !p.Warning })
		}
		code := http.StatusOK
		if !body.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, r, code, body, logger)
	}
}

// writeJSON sends v as indented JSON with status code.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any, logger *slog.Logger) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		logger.Error("encoding admin response", "path", r.URL.Path, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// LocalMinValidity replaces the minimum validity for certificates of the
// local CA whose lifetime is not known: they live a week and are renewed
// with a third of it left, so the seven days asked of ACME certificates
// would never hold.
const LocalMinValidity = 24 * time.Hour

func minValidFor(s certs.Status, minValid time.Duration) time.Duration {
	if !s.NotBefore.IsZero() && s.NotBefore.Before(s.NotAfter) {
		return s.NotAfter.Sub(s.NotBefore) / 10
	}
	if s.Local && minValid > LocalMinValidity {
		return LocalMinValidity
	}
	return minValid
}
