package mysql

import (
	"io"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestMySQLIntegrationSessionEnds ends sessions with a real MariaDB: the
// client quits (COM_QUIT, on which the server closes, often before the
// client's own close arrives), the server kills the connection (KILL).
// The session-end line and the route's Ends say who ended it, and the
// byte counts are exactly what the client sent and received after login.
func TestMySQLIntegrationSessionEnds(t *testing.T) {
	m := startMariaDBBackend(t, testenv.MariaDBOptions{})
	tests := []struct {
		name string
		end  func(t *testing.T, c *rawClient, id string)
		want dbproxy.End
	}{
		{"client quits", func(t *testing.T, c *rawClient, _ string) {
			c.seq = 0
			c.write([]byte{comQuit})
		}, dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed}},
		{"KILL", func(t *testing.T, _ *rawClient, id string) {
			m.Exec(t, "KILL "+id)
		}, dbproxy.End{By: dbproxy.ByBackend, Reason: dbproxy.ReasonClosed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := dbtest.NewCA(t)
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "db.test", Backend: m.Addr}}})
			c := dialRawClient(t, p.Addr)
			c.startTLS(ca, "db.test", "db.test")
			if pkt := c.login("nat", "natpw", "app"); pkt[0] != headerOK {
				t.Fatalf("login: %x", pkt)
			}
			cc := &dbtest.CountingConn{Conn: c.conn}
			c.conn = cc // the proxy counts from the end of the login
			id := c.query("SELECT CONNECTION_ID()")
			tt.end(t, c, id)
			cc.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, cc)
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
			if st := p.Srv.Stats().Routes[0]; st.Ends[tt.want] != 1 {
				t.Errorf("route Ends %v", st.Ends)
			}
		})
	}
}
