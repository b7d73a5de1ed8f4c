package admin

import (
	"bytes"
	_ "embed"
	"html/template"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
)

// Certificate states, in certificateRow.State.
const (
	stateOK       = "ok"       // valid for more than the minimum validity
	stateExpiring = "expiring" // valid, but for less than the minimum validity
	stateExpired  = "expired"
	stateMissing  = "missing" // no certificate yet
)

// certificateRow is one certificate as /certificates shows it; its JSON is
// the documented format.
type certificateRow struct {
	Host        string     `json:"host"`
	State       string     `json:"state"`
	Issuer      string     `json:"issuer,omitempty"`
	CA          string     `json:"ca,omitempty"` // the ACME issuer's name, or "local"
	Local       bool       `json:"local"`
	NotAfter    *time.Time `json:"not_after,omitempty"`
	DaysLeft    *int       `json:"days_left,omitempty"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// ErrorSummary is LastError in one sentence for a person.
	ErrorSummary string     `json:"error_summary,omitempty"`
	Failures     int        `json:"failures,omitempty"`
	NextAttempt  *time.Time `json:"next_attempt,omitempty"`
	// ExpiringFrom is when the certificate turns "expiring": its own
	// emergency line, a tenth of its lifetime before NotAfter (see
	// CertProblems).
	ExpiringFrom *time.Time `json:"expiring_from,omitempty"`

	expiringBelow time.Duration // NotAfter - ExpiringFrom, for the page
}

// certificatesBody is the JSON of /certificates.
type certificatesBody struct {
	Now          time.Time        `json:"now"`
	Certificates []certificateRow `json:"certificates"`
	// Fleet is the fleet state in fleet mode (-store); absent otherwise.
	Fleet *FleetStatus `json:"fleet,omitempty"`
}

// certificateRows turns st into rows as of now.
func certificateRows(st []certs.Status, now time.Time, minValid time.Duration) []certificateRow {
	rows := make([]certificateRow, 0, len(st))
	for _, s := range st {
		row := certificateRow{
			Host:         s.Host,
			State:        stateMissing,
			Issuer:       s.Issuer,
			CA:           s.CA,
			Local:        s.Local,
			LastError:    s.LastError,
			ErrorSummary: errorSummary(s.LastError),
			Failures:     s.Failures,
		}
		if !s.NotAfter.IsZero() {
			na := s.NotAfter.UTC()
			days := int(math.Floor(s.NotAfter.Sub(now).Hours() / 24))
			row.NotAfter, row.DaysLeft = &na, &days
			row.expiringBelow = minValidFor(s, minValid)
			from := na.Add(-row.expiringBelow)
			row.ExpiringFrom = &from
			switch left := s.NotAfter.Sub(now); {
			case left <= 0:
				row.State = stateExpired
			case left < row.expiringBelow:
				row.State = stateExpiring
			default:
				row.State = stateOK
			}
		}
		if !s.LastAttempt.IsZero() {
			la := s.LastAttempt.UTC()
			row.LastAttempt = &la
		}
		if !s.NextAttempt.IsZero() {
			na := s.NextAttempt.UTC()
			row.NextAttempt = &na
		}
		rows = append(rows, row)
	}
	return rows
}

//go:embed certificates.html
var certificatesHTML string

var certificatesTemplate = template.Must(template.New("certificates").Funcs(template.FuncMap{
	"when": func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 MST")
	},
	"in": func(t *time.Time, now time.Time) string {
		if t == nil {
			return ""
		}
		if d := t.Sub(now); d > 0 {
			return "in " + humanDuration(d)
		}
		return "due now"
	},
	"human": humanDuration,
	"days": func(d *int) string {
		if d == nil {
			return "—"
		}
		return strconv.Itoa(*d)
	},
}).Parse(certificatesHTML))

// certificatesPage is the data of certificates.html.
type certificatesPage struct {
	Now      time.Time
	Rows     []pageRow
	Problems int
	Fleet    *FleetStatus // fleet mode only
}

// pageRow is a certificateRow with what only the page shows.
type pageRow struct {
	certificateRow
	ExpiringBelow time.Duration // 0 without a certificate
}

// certificatesHandler serves st() as JSON or HTML; see wantsHTML.
func certificatesHandler(st func() []certs.Status, fleet func() *FleetStatus, minValid time.Duration, now func() time.Time, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		asHTML, ok := wantsHTML(r)
		if !ok {
			http.Error(w, `format must be "json" or "html"`, http.StatusBadRequest)
			return
		}
		w.Header().Add("Vary", "Accept")
		t := now()
		rows := certificateRows(st(), t, minValid)
		if !asHTML {
			body := certificatesBody{Now: t.UTC(), Certificates: rows}
			if fleet != nil {
				body.Fleet = fleet()
			}
			writeJSON(w, r, http.StatusOK, body, logger)
			return
		}
		page := certificatesPage{Now: t.UTC()}
		if fleet != nil {
			page.Fleet = fleet()
		}
		for _, row := range rows {
			page.Rows = append(page.Rows, pageRow{certificateRow: row, ExpiringBelow: row.expiringBelow})
			if row.State != stateOK || row.LastError != "" {
				page.Problems++
			}
		}
		var buf bytes.Buffer
		if err := certificatesTemplate.Execute(&buf, page); err != nil {
			logger.Error("rendering certificates page", "error", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(buf.Bytes())
	}
}

// wantsHTML decides the format of /certificates: ?format=json or
// ?format=html when given (ok is false for any other value), else HTML
// when the Accept header lists text/html (a browser), else JSON (curl,
// scripts).
func wantsHTML(r *http.Request) (html, ok bool) {
	switch r.URL.Query().Get("format") {
	case "json":
		return false, true
	case "html":
		return true, true
	case "":
	default:
		return false, false
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/html" {
			return true, true
		}
	}
	return false, true
}
