package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// Integration tests: a real PostgreSQL started by the test, real clients
// (pgx, psql) with sslmode=verify-full against a test CA.

// pgRoute routes host to a real server.
func serverRoute(host string, pg *testenv.Postgres) dbproxy.Route {
	return dbproxy.Route{Host: host, Backend: pg.Addr}
}

// connectThrough connects pgx to the proxy as a client that believes
// host resolves to it: the TLS server name and the certificate check are
// host's. extra is appended to the connection string.
func connectThrough(ctx context.Context, t testing.TB, p *testProxy, host, extra string) (*pgx.Conn, error) {
	t.Helper()
	cfg := pgxConfig(t, p, host, extra)
	return pgx.ConnectConfig(ctx, cfg)
}

func pgxConfig(t testing.TB, p *testProxy, host, extra string) *pgx.ConnConfig {
	t.Helper()
	_, port, _ := net.SplitHostPort(p.Addr)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10 %s",
		host, port, caFile(t, p.CA), extra))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	return cfg
}

// caFile writes the CA certificate for clients that read it from a file.
func caFile(t testing.TB, ca *dbtest.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPostgresIntegrationVerifyFull(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
	tests := []struct{ name, extra string }{
		{"SSLRequest", ""},
		{"direct TLS", "sslnegotiation=direct"},
		{"protocol 3.2 negotiated down", "max_protocol_version=3.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn, err := connectThrough(ctx, t, p, "db.test", tt.extra)
			if err != nil {
				t.Fatalf("connecting through the proxy: %v", err)
			}
			defer conn.Close(ctx)
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Errorf("client connection is %T, want TLS", conn.PgConn().Conn())
			}
			var port, sum int
			var backendSSL bool
			err = conn.QueryRow(ctx, "select current_setting('port')::int, 40 + 2, (select ssl from pg_stat_ssl where pid = pg_backend_pid())").Scan(&port, &sum, &backendSSL)
			if err != nil {
				t.Fatal(err)
			}
			if port != pg.Port || sum != 42 || backendSSL {
				t.Errorf("got port %d, sum %d, backend TLS %t; want %d, 42, false", port, sum, backendSSL, pg.Port)
			}
			// A few more round trips, a larger result included.
			var n int64
			if err := conn.QueryRow(ctx, "select sum(length(repeat('x', g))) from generate_series(1, 2000) g").Scan(&n); err != nil || n != 2001000 {
				t.Errorf("got %d, %v; want 2001000", n, err)
			}
			rows, err := conn.Query(ctx, "select repeat('y', 100000) from generate_series(1, 20)")
			if err != nil {
				t.Fatal(err)
			}
			count := 0
			for rows.Next() {
				count++
			}
			if rows.Err() != nil || count != 20 {
				t.Errorf("got %d rows, %v; want 20", count, rows.Err())
			}
		})
	}
	t.Run("wrong name fails verification", func(t *testing.T) {
		_, err := connectThrough(testCtx(t), t, p, "other.test", "")
		if err == nil {
			t.Fatal("connected although the certificate is for db.test")
		}
	})
}

func TestPostgresIntegrationSCRAM(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Password: "s3cret pass"})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
	t.Run("right password", func(t *testing.T) {
		ctx := testCtx(t)
		conn, err := connectThrough(ctx, t, p, "db.test", "password='s3cret pass'")
		if err != nil {
			t.Fatalf("connecting: %v", err)
		}
		defer conn.Close(ctx)
		var method string
		if err := conn.QueryRow(ctx, "select auth_method from pg_hba_file_rules where type = 'host' limit 1").Scan(&method); err != nil {
			t.Fatal(err)
		}
		if method != "scram-sha-256" {
			t.Errorf("host auth method %q, want scram-sha-256", method)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err := connectThrough(testCtx(t), t, p, "db.test", "password=nope")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("got %v, want SQLSTATE 28P01", err)
		}
	})
}

func TestPostgresIntegrationCancel(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
	ctx := testCtx(t)
	cfg := pgxConfig(t, p, "db.test", "")
	// Cancel on context cancellation through a CancelRequest, and fall
	// back to cutting the connection only long after the bound checked.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 20 * time.Second}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	direct, err := pgx.Connect(ctx, pg.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)

	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(qctx, "select pg_sleep(30)")
		done <- err
	}()
	dbtest.WaitFor(t, "pg_sleep to run", func() bool {
		var n int
		direct.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'").Scan(&n)
		return n == 1
	})
	start := time.Now()
	cancel()
	err = <-done
	elapsed := time.Since(start)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("got %v, want SQLSTATE 57014 (query_canceled)", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("cancel took %v, want under 2s", elapsed)
	}
	// The session survives its cancelled query.
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("after cancel: got %d, %v", one, err)
	}
	// The cancel line is logged once the server has closed the cancel
	// connection, which may be after the client has its error.
	var got []map[string]any
	dbtest.WaitFor(t, "the cancel log line", func() bool {
		got = p.Logs.Records(t, "cancel request")
		return len(got) > 0
	})
	if len(got) != 1 || got[0]["error"] != nil {
		t.Errorf("cancel log lines: %v, want one without error", got)
	}
}

func TestPostgresIntegrationTwoHosts(t *testing.T) {
	one := testenv.StartPostgres(t, testenv.PostgresOptions{})
	two := testenv.StartPostgres(t, testenv.PostgresOptions{})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("one.test", one), serverRoute("two.test", two)}})
	for host, pg := range map[string]*testenv.Postgres{"one.test": one, "two.test": two} {
		ctx := testCtx(t)
		conn, err := connectThrough(ctx, t, p, host, "")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		var port int
		if err := conn.QueryRow(ctx, "select current_setting('port')::int").Scan(&port); err != nil {
			t.Fatal(err)
		}
		if port != pg.Port {
			t.Errorf("%s reached the server on port %d, want %d", host, port, pg.Port)
		}
		conn.Close(ctx)
	}
}

func TestPostgresIntegrationBackendTLS(t *testing.T) {
	ca := dbtest.NewCA(t)
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	tests := []struct {
		name     string
		route    dbproxy.Route
		wantCode string
	}{
		{"verify", dbproxy.Route{TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, ""},
		{"insecure", dbproxy.Route{TLS: dbproxy.TLSInsecure}, ""},
		{"verify against another CA", dbproxy.Route{TLS: dbproxy.TLSVerify, RootCAs: dbtest.NewCA(t).Pool}, "08001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.route.Host, tt.route.Backend = "db.test", pg.Addr
			p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{tt.route}})
			ctx := testCtx(t)
			conn, err := connectThrough(ctx, t, p, "db.test", "")
			if tt.wantCode != "" {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != tt.wantCode {
					t.Fatalf("got %v, want SQLSTATE %s", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var backendSSL bool
			if err := conn.QueryRow(ctx, "select ssl from pg_stat_ssl where pid = pg_backend_pid()").Scan(&backendSSL); err != nil {
				t.Fatal(err)
			}
			if !backendSSL {
				t.Error("the backend sees a plaintext connection")
			}
		})
	}
}

func TestPostgresIntegrationBackendDown(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
	pg.Stop()
	_, err := connectThrough(testCtx(t), t, p, "db.test", "")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08001" || !strings.Contains(pgErr.Message, "db.test") {
		t.Fatalf("got %v, want SQLSTATE 08001 naming db.test", err)
	}
	dbtest.WaitFor(t, "the failed session to be counted", func() bool { return p.Srv.Stats().Routes[0].Errors == 1 })
}

// psql is the system's psql, or the test is skipped (failed with
// LEPROXY_INTEGRATION=require).
func psql(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("psql")
	if err != nil {
		if os.Getenv("LEPROXY_INTEGRATION") == "require" {
			t.Fatal("psql not on PATH (LEPROXY_INTEGRATION=require)")
		}
		t.Skip("psql not on PATH; install the Debian package postgresql-client")
	}
	return path
}

func TestPostgresIntegrationPsql(t *testing.T) {
	bin := psql(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	ca := dbtest.NewCA(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}, Default: "db.test"})
	_, port, _ := net.SplitHostPort(p.Addr)
	conninfo := func(extra string) string {
		return fmt.Sprintf("host=db.test hostaddr=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10 %s",
			port, caFile(t, ca), extra)
	}
	tests := []struct{ name, extra string }{
		{"with SNI", ""},
		{"without SNI gets the default", "sslsni=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(bin, "-X", "-At", "-d", conninfo(tt.extra), "-c", "select 'through ' || current_setting('port')").CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("through %d", pg.Port); got != want {
				t.Errorf("psql printed %q, want %q", got, want)
			}
		})
	}

	t.Run("Ctrl-C cancels the query", func(t *testing.T) {
		// psql's cancel on SIGINT: libpq before 17 sends it in plaintext.
		ctx := testCtx(t)
		direct, err := pgx.Connect(ctx, pg.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer direct.Close(ctx)
		cmd := exec.Command(bin, "-X", "-At", "-d", conninfo(""), "-c", "select pg_sleep(30)")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		dbtest.WaitFor(t, "pg_sleep to run", func() bool {
			var n int
			direct.QueryRow(ctx, "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'").Scan(&n)
			return n == 1
		})
		cmd.Process.Signal(syscall.SIGINT)
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-waited
			t.Fatal("psql still running 15s after Ctrl-C")
		}
		if !strings.Contains(out.String(), "canceling statement due to user request") {
			t.Errorf("psql said %q, want the query cancelled", out.String())
		}
	})
}
