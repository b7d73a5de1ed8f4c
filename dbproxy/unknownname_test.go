package dbproxy_test

import (
	"io"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/logging"
)

// TestUnknownServerNameLogged checks that sessions refused for a server
// name no route has are logged at Info once per name (within the
// interval, here a minute), their session-end lines at Debug, and that a
// Server shares the rationing it is given.
func TestUnknownServerNameLogged(t *testing.T) {
	shared := logging.NewOncePer(time.Minute, 100)
	p, _, _ := twoEchoes(t, func(c *dbproxy.Config) { c.UnknownNames = shared })
	for _, sni := range []string{"c.test", "c.test", "d.test", "c.test"} {
		bad := p.DialTLS(t, sni, "a.test")
		io.Copy(io.Discard, bad)
	}
	dbtest.WaitFor(t, "four session ends", func() bool { return len(p.SessionEnds(t)) == 4 })
	for _, rec := range p.SessionEnds(t) {
		if rec["level"] != "DEBUG" {
			t.Errorf("session end of an unknown name at %v, want DEBUG: %v", rec["level"], rec)
		}
	}
	recs := p.Logs.Records(t, "unknown server name refused")
	var names []any
	for _, rec := range recs {
		names = append(names, rec["sni"])
		if rec["level"] != "INFO" || rec["protocol"] != "tls" || rec["client"] == nil || rec["listen"] == nil {
			t.Errorf("unknown name line %v, want INFO with protocol, listen and client", rec)
		}
	}
	if len(names) != 2 || names[0] != "c.test" || names[1] != "d.test" {
		t.Errorf("unknown server names logged: %v, want [c.test d.test]", names)
	}
	if ok, _ := shared.Allow("c.test"); ok {
		t.Error("the shared OncePer does not hold c.test")
	}

	// A routed session still ends at Info.
	good := p.DialTLS(t, "b.test", "b.test")
	good.Close()
	dbtest.WaitFor(t, "five session ends", func() bool { return len(p.SessionEnds(t)) == 5 })
	if rec := p.SessionEnds(t)[4]; rec["level"] != "INFO" || rec["sni"] != "b.test" {
		t.Errorf("routed session end: %v, want INFO for b.test", rec)
	}
}
