package mysql

import (
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestMySQLIntegrationBlockAfterFailedLogins: with "block: {after: 3,
// auth: true}", three wrong passwords (MariaDB's own ERR 1045) block the
// client: its next login, right password or not, is refused by leproxy
// with ERR 1040 in place of the greeting; a database the user may not
// use (1044, "Access denied … to database") is not a failed login;
// lifting the block lets it in.
func TestMySQLIntegrationBlockAfterFailedLogins(t *testing.T) {
	m := startMariaDBBackend(t, testenv.MariaDBOptions{})
	blocks := clientlimit.NewBlocklist(clientlimit.BlocklistOptions{})
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Blocks: blocks})
	guard := clients.Guard(clientlimit.GuardConfig{Listener: "mysql", Block: clientlimit.BlockPolicy{After: 3, Window: time.Minute, Auth: true}})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{
		Routes:         []dbproxy.Route{{Host: "db.test", Backend: m.Addr}},
		GetCertificate: certSourceWithIP(t, ca, "db.test"),
		Guard:          clientlimit.NetGuard{Guard: guard},
	})
	tc := ca.ClientConfig("db.test", "db.test")
	login := func(password, db string) error {
		return pingErr(openDB(t, p.Addr, tc, "nat", password, func(c *gomysql.Config) { c.DBName = db }))
	}
	for range 4 {
		if me := serverError(t, login("natpw", "nosuchdb")); me.Number != 1044 {
			t.Fatalf("unknown database: got %d %q, want 1044", me.Number, me.Message)
		}
	}
	for i := range 3 {
		if me := serverError(t, login("wrong", "app")); me.Number != 1045 {
			t.Fatalf("wrong password %d: got %d %q, want the backend's 1045", i+1, me.Number, me.Message)
		}
	}
	if me := serverError(t, login("natpw", "app")); me.Number != erConCount {
		t.Fatalf("right password while blocked: got %d %q, want 1040", me.Number, me.Message)
	}
	list := blocks.List()
	if len(list) != 1 || list[0].Reason != clientlimit.FailAuth {
		t.Fatalf("blocks = %+v, want one for auth", list)
	}
	key, _ := clientlimit.ParseKey(list[0].Client, 0)
	blocks.Lift(key)
	if err := login("natpw", "app"); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
}
