package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestPostgresIntegrationSessionEnds ends sessions with a real PostgreSQL
// in each way an operator meets: the client quits, the backend is
// terminated (pg_terminate_backend), the backend process is killed. The
// session-end line and the route's Ends say who ended it and how, and its
// byte counts are exactly what the client sent and received after the
// startup.
func TestPostgresIntegrationSessionEnds(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	admin, err := pgx.Connect(testCtx(t), fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	tests := []struct {
		name string
		end  func(t *testing.T, fe *pgproto3.Frontend, pid int)
		want dbproxy.End
	}{
		{"client quits", func(t *testing.T, fe *pgproto3.Frontend, _ int) {
			fe.Send(&pgproto3.Terminate{})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
		}, dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed}},
		{"pg_terminate_backend", func(t *testing.T, fe *pgproto3.Frontend, pid int) {
			if _, err := admin.Exec(testCtx(t), "select pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			// The backend's last words reach the client.
			msg, err := fe.Receive()
			if e, ok := msg.(*pgproto3.ErrorResponse); err != nil || !ok || e.Code != "57P01" {
				t.Fatalf("got %#v, %v; want the FATAL 57P01 of a terminated backend", msg, err)
			}
		}, dbproxy.End{By: dbproxy.ByBackend, Reason: dbproxy.ReasonClosed}},
		{"backend killed", func(t *testing.T, _ *pgproto3.Frontend, pid int) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}, dbproxy.End{By: dbproxy.ByBackend, Reason: dbproxy.ReasonClosed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
			cc := &dbtest.CountingConn{Conn: pgtest.SSLRequest(t, p.Dial(t), ca, "db.test", "db.test")}
			dbtest.MustWrite(t, cc, pgtest.StartupBytes(3, 0, "user", "postgres", "database", "postgres"))
			fe := pgproto3.NewFrontend(cc, cc)
			if res := pgtest.ReadStartup(t, fe); res.Err != nil || res.ReadErr != nil {
				t.Fatalf("startup: %+v", res)
			}
			cc.Reset() // the proxy counts from the end of the startup
			pid := backendPID(t, fe)
			tt.end(t, fe, pid)
			rest, err := io.ReadAll(cc) // to the end the backend or proxy gives
			if err != nil && !errors.Is(err, io.EOF) {
				t.Logf("reading to the end: %v (%d bytes)", err, len(rest))
			}
			cc.Close()
			dbtest.WaitFor(t, "the session end", func() bool { return len(p.SessionEnds(t)) == 1 })
			rec := p.SessionEnds(t)[0]
			read, written := cc.Counts()
			if rec["closed_by"] != tt.want.By || rec["reason"] != tt.want.Reason {
				t.Errorf("closed_by=%v reason=%v, want %s %s (error %v)", rec["closed_by"], rec["reason"], tt.want.By, tt.want.Reason, rec["error"])
			}
			if rec["bytes_in"] != float64(written) || rec["bytes_out"] != float64(read) {
				t.Errorf("logged %v bytes in and %v out; the client sent %d and received %d", rec["bytes_in"], rec["bytes_out"], written, read)
			}
			st := p.Srv.Stats().Routes[0]
			if st.Ends[tt.want] != 1 || st.BytesIn != uint64(written) || st.BytesOut != uint64(read) {
				t.Errorf("route stats %+v", st)
			}
		})
	}
}

// backendPID asks the session's backend for its process ID.
func backendPID(t *testing.T, fe *pgproto3.Frontend) int {
	t.Helper()
	fe.Send(&pgproto3.Query{String: "select pg_backend_pid()"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			n, err := strconv.Atoi(string(m.Values[0]))
			if err != nil {
				t.Fatal(err)
			}
			pid = n
		case *pgproto3.ErrorResponse:
			t.Fatalf("query: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			if pid == 0 {
				t.Fatal("no pid")
			}
			return pid
		}
	}
}
