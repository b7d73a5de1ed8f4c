package dbproxy_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// recordingObserver keeps every start and end it is told of.
type recordingObserver struct {
	mu     sync.Mutex
	starts []dbproxy.SessionStart
	ends   []dbproxy.SessionSummary
}

func (o *recordingObserver) SessionStarted(st dbproxy.SessionStart) func(dbproxy.SessionSummary) {
	o.mu.Lock()
	o.starts = append(o.starts, st)
	o.mu.Unlock()
	return func(sum dbproxy.SessionSummary) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.ends = append(o.ends, sum)
	}
}

func (o *recordingObserver) seen() ([]dbproxy.SessionStart, []dbproxy.SessionSummary) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]dbproxy.SessionStart(nil), o.starts...), append([]dbproxy.SessionSummary(nil), o.ends...)
}

// TestSessionObserver checks that the observer is told of each session
// once at its start and once at its end, with what the session-end log
// line says, and not of a connection refused over MaxConns.
func TestSessionObserver(t *testing.T) {
	obs := &recordingObserver{}
	p, a, _ := twoEchoes(t, func(c *dbproxy.Config) {
		c.Observer = obs
		c.MaxConns = 1
	})
	before := time.Now()
	conn := p.DialTLS(t, "a.test", "a.test")
	if got := dbtest.EchoLine(t, conn, "hello"); got != "a:hello" {
		t.Fatalf("got %q", got)
	}
	starts, ends := obs.seen()
	if len(starts) != 1 || len(ends) != 0 {
		t.Fatalf("during the session: %d starts, %d ends; want 1 and 0", len(starts), len(ends))
	}
	st := starts[0]
	if st.Protocol != "tls" || st.Client.String() != conn.LocalAddr().String() || st.Listener.String() != p.Addr ||
		st.Time.Before(before.Add(-time.Second)) || st.Time.After(time.Now()) {
		t.Errorf("start %+v: want protocol tls, client %s, listener %s, time now", st, conn.LocalAddr(), p.Addr)
	}

	// Over MaxConns: refused, not a session.
	over, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	over.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, over) // closed by the proxy
	over.Close()
	dbtest.WaitFor(t, "the refusal", func() bool { return p.Srv.Stats().Refused == 1 })

	conn.Close()
	dbtest.WaitFor(t, "the session's end", func() bool { _, e := obs.seen(); return len(e) == 1 })
	starts, ends = obs.seen()
	if len(starts) != 1 {
		t.Errorf("%d starts, want 1: the refused connection is no session", len(starts))
	}
	end := ends[0]
	want := dbproxy.SessionSummary{
		ServerName: "a.test", Route: "a.test", Backend: a.Addr,
		BytesIn: int64(len("hello\n")), BytesOut: int64(len("a:hello\n")),
		End: dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed},
	}
	end.Time = time.Time{}
	if end != want {
		t.Errorf("end %+v, want %+v", end, want)
	}
	if ends[0].Time.Before(st.Time) {
		t.Errorf("ended at %v, before its start %v", ends[0].Time, st.Time)
	}

	// A session that fails before routing ends with its error.
	bad := p.DialTLS(t, "c.test", "a.test")
	io.Copy(io.Discard, bad)
	dbtest.WaitFor(t, "the second end", func() bool { _, e := obs.seen(); return len(e) == 2 })
	_, ends = obs.seen()
	if e := ends[1]; e.Route != "" || e.ServerName != "c.test" || e.Err == nil || !errors.Is(e.Err, dbproxy.ErrNoRoute) ||
		e.End != (dbproxy.End{By: dbproxy.ByLeproxy, Reason: dbproxy.ReasonRefused}) {
		t.Errorf("unrouted end %+v, want server name c.test, no route, ErrNoRoute, refused by leproxy", e)
	}
}
