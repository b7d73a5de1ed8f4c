package postgres

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
	"github.com/leproxy/leproxy/internal/clientlimit"
	"github.com/leproxy/leproxy/internal/testenv"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// probe opens a connection to p and sends an SSLRequest: a connection
// the proxy takes is answered 'S' and returned open; one it refuses gets
// an ErrorResponse, which must be SQLSTATE 53300, and nil is returned.
// (pgx reports an ErrorResponse in answer to its SSLRequest only as "server
// refused TLS connection", so the refusal is read here.)
func probe(t *testing.T, p *testProxy) net.Conn {
	t.Helper()
	c := p.Dial(t)
	dbtest.MustWrite(t, c, pgtest.RequestBytes(sslRequestCode))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		t.Fatalf("reading the answer to SSLRequest: %v", err)
	}
	if first[0] == 'S' {
		return c
	}
	res := pgtest.ReadStartup(t, pgproto3.NewFrontend(io.MultiReader(bytes.NewReader(first[:]), c), c))
	if res.Err == nil || res.Err.Code != sqlstateTooManyConnections {
		t.Fatalf("got %+v, want SQLSTATE 53300", res)
	}
	c.Close()
	return nil
}

// TestPostgresIntegrationBlockAfterFailedLogins: with "block: {after: 3,
// auth: true}", the third wrong password (the backend's own 28P01) blocks
// the client: its next connection, right password or not, is refused with
// 53300 before it reaches PostgreSQL, until the block is lifted.
func TestPostgresIntegrationBlockAfterFailedLogins(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Password: "s3cret"})
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var reasons []string
	var mu sync.Mutex
	blocks := clientlimit.NewBlocklist(clientlimit.BlocklistOptions{Clock: clk.Now, OnBlock: func(r string) {
		mu.Lock()
		reasons = append(reasons, r)
		mu.Unlock()
	}})
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Blocks: blocks, Clock: clk.Now})
	guard := clients.Guard(clientlimit.GuardConfig{Listener: "pg", Block: clientlimit.BlockPolicy{After: 3, Window: time.Minute, For: 10 * time.Minute, Auth: true}})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}, Guard: clientlimit.NetGuard{Guard: guard}})

	for i := range 3 {
		_, err := connectThrough(testCtx(t), t, p, "db.test", "password=wrong")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != sqlstateInvalidPassword {
			t.Fatalf("wrong password %d: got %v, want the backend's 28P01", i+1, err)
		}
	}
	if _, err := connectThrough(testCtx(t), t, p, "db.test", "password=s3cret"); err == nil {
		t.Fatal("right password while blocked: connected")
	}
	if c := probe(t, p); c != nil {
		t.Fatal("a blocked client's connection was taken")
	}
	list := blocks.List()
	if len(list) != 1 || list[0].Client != "127.0.0.1" || list[0].Reason != clientlimit.FailAuth || list[0].Listener != "pg" {
		t.Fatalf("blocks = %+v, want 127.0.0.1 for auth on pg", list)
	}
	mu.Lock()
	if len(reasons) != 1 {
		t.Errorf("OnBlock called %d times, want once", len(reasons))
	}
	mu.Unlock()

	key, _ := clientlimit.ParseKey("127.0.0.1", 0)
	if !blocks.Lift(key) {
		t.Fatal("Lift: 127.0.0.1 was not blocked")
	}
	conn, err := connectThrough(testCtx(t), t, p, "db.test", "password=s3cret")
	if err != nil {
		t.Fatalf("right password after the lift: %v", err)
	}
	conn.Close(testCtx(t))

	// Failures a window apart do not add up; a database that does not
	// exist is the backend's refusal, not an authentication failure.
	for range 5 {
		_, err := connectThrough(testCtx(t), t, p, "db.test", "password=s3cret dbname=nosuchdb")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
			t.Fatalf("unknown database: got %v, want 3D000", err)
		}
	}
	for range 2 {
		connectThrough(testCtx(t), t, p, "db.test", "password=wrong")
		clk.Add(time.Minute + time.Second)
	}
	conn, err = connectThrough(testCtx(t), t, p, "db.test", "password=s3cret")
	if err != nil {
		t.Fatalf("after failures outside the window, and other refusals: %v", err)
	}
	conn.Close(testCtx(t))
}

// TestPostgresIntegrationConnRate: "conn_rate: 2/s, conn_burst: 2,
// conns_per_client: 3" with a fake clock: of five connections at once
// the first two are taken, the others refused with 53300; a second
// later one more is taken; and three open connections refuse a fourth
// whatever the rate.
func TestPostgresIntegrationConnRate(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var limited []string
	var mu sync.Mutex
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Clock: clk.Now, OnLimited: func(k string) {
		mu.Lock()
		limited = append(limited, k)
		mu.Unlock()
	}})
	guard := clients.Guard(clientlimit.GuardConfig{Listener: "pg", Conns: clientlimit.Limits{Rate: 2, Burst: 2, Concurrent: 3}})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}, Guard: clientlimit.NetGuard{Guard: guard}})

	taken, refused := 0, 0
	for range 5 {
		if c := probe(t, p); c != nil {
			taken++
			c.Close()
		} else {
			refused++
		}
	}
	if taken != 2 || refused != 3 {
		t.Fatalf("5 connections at 2/s burst 2: %d taken, %d refused; want 2 and 3", taken, refused)
	}
	clk.Add(500 * time.Millisecond) // one token back
	c := probe(t, p)
	if c == nil {
		t.Fatal("half a second later: refused")
	}
	c.Close()
	if probe(t, p) != nil {
		t.Fatal("a second token within the same half second")
	}
	// The three connections taken have ended (their release comes before
	// the session-end line); the bucket is full again.
	dbtest.WaitFor(t, "three session ends", func() bool { return len(p.SessionEnds(t)) == 3 })
	clk.Add(10 * time.Second)
	var open []*pgx.Conn
	defer func() {
		for _, c := range open {
			c.Close(testCtx(t))
		}
	}()
	for i := range 2 {
		c, err := connectThrough(testCtx(t), t, p, "db.test", "")
		if err != nil {
			t.Fatalf("pgx connection %d: %v", i+1, err)
		}
		open = append(open, c)
	}
	clk.Add(time.Second)
	held := probe(t, p) // the third open connection
	if held == nil {
		t.Fatal("third connection refused")
	}
	defer held.Close()
	if probe(t, p) != nil {
		t.Fatal("a fourth open connection was taken with conns_per_client 3")
	}
	mu.Lock()
	if want := []string{"rate", "rate", "rate", "rate", "concurrency"}; !slices.Equal(limited, want) {
		t.Errorf("OnLimited calls %v, want %v", limited, want)
	}
	mu.Unlock()
}
