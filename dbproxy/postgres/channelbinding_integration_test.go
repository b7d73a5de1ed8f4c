package postgres

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// What libpq 15 and pgx v5 say when they require channel binding and are
// not offered it.
const (
	libpqRequiresBinding = "channel binding is required, but server did not offer an authentication method that supports channel binding"
	pgxRequiresBinding   = "channel binding required but server does not support SCRAM-SHA-256-PLUS"
)

// TestPostgresIntegrationChannelBinding logs in with SCRAM through routes
// to a PostgreSQL with TLS (which offers SCRAM-SHA-256-PLUS) and to one
// without, with psql and pgx and each channel_binding setting.
//
// Over TLS to the backend, a client that supports channel binding cannot
// log in: it would bind to leproxy's certificate ("SCRAM channel binding
// check failed" before leproxy dropped SCRAM-SHA-256-PLUS), and offered
// SCRAM-SHA-256 alone it sends the gs2 flag "y", which PostgreSQL refuses
// on a connection where it supports binding. leproxy says so itself.
func TestPostgresIntegrationChannelBinding(t *testing.T) {
	bin := psql(t)
	ca := dbtest.NewCA(t)
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	const password = "s3cret pass"
	tlsPG := testenv.StartPostgres(t, testenv.PostgresOptions{Password: password, CertPEM: certPEM, KeyPEM: keyPEM})
	plainPG := testenv.StartPostgres(t, testenv.PostgresOptions{Password: password})
	// Both clients read PGCHANNELBINDING; the tests mean the default.
	t.Setenv("PGCHANNELBINDING", "")

	const (
		login   = "login"   // login and a query work
		refused = "leproxy" // leproxy's refusal of a client that supports binding
		client  = "client"  // the client's own refusal: it requires binding
	)
	routes := []struct {
		name  string
		route dbproxy.Route
		pg    *testenv.Postgres
		want  map[string]string // channel_binding setting → outcome
	}{
		{"tls verify", dbproxy.Route{TLS: dbproxy.TLSVerify, RootCAs: ca.Pool}, tlsPG,
			map[string]string{"": refused, "prefer": refused, "require": client, "disable": login}},
		{"tls insecure", dbproxy.Route{TLS: dbproxy.TLSInsecure}, tlsPG,
			map[string]string{"": refused, "prefer": refused, "require": client, "disable": login}},
		{"plaintext backend", dbproxy.Route{}, plainPG,
			map[string]string{"": login, "prefer": login, "require": client, "disable": login}},
	}
	for _, rt := range routes {
		for _, cb := range []string{"", "prefer", "require", "disable"} {
			setting := ""
			if cb != "" {
				setting = "channel_binding=" + cb
			}
			want := rt.want[cb]
			for _, cl := range []string{"psql", "pgx"} {
				name := fmt.Sprintf("%s/%s/channel_binding=%s", rt.name, cl, cb)
				if cb == "" {
					name = fmt.Sprintf("%s/%s/default", rt.name, cl)
				}
				t.Run(name, func(t *testing.T) {
					r := rt.route
					r.Host, r.Backend = "db.test", rt.pg.Addr
					p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{r}})
					var port int
					var backendTLS bool
					var err error
					if cl == "psql" {
						port, backendTLS, err = psqlLogin(t, bin, p, password, setting)
					} else {
						port, backendTLS, err = pgxLogin(t, p, password, setting)
					}
					// The session's end: who ended it, and how.
					end := func(want dbproxy.End) {
						t.Helper()
						rec := p.SessionEnds(t)[0]
						if rec["closed_by"] != want.By || rec["reason"] != want.Reason {
							t.Errorf("closed_by=%v reason=%v, want %s %s", rec["closed_by"], rec["reason"], want.By, want.Reason)
						}
					}
					switch want {
					case login:
						if err != nil {
							t.Fatalf("got %v, want a session", err)
						}
						if port != rt.pg.Port || backendTLS != r.TLS.Enabled() {
							t.Errorf("reached port %d, backend TLS %t; want %d, %t", port, backendTLS, rt.pg.Port, r.TLS.Enabled())
						}
						if e := p.SessionError(t); e != "" {
							t.Errorf("session end error %q, want none", e)
						}
						end(dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed})
					case refused:
						msg := channelBindingRefusal("db.test")
						var pgErr *pgconn.PgError
						if cl == "psql" && (err == nil || !strings.Contains(err.Error(), "FATAL:  "+msg)) ||
							cl == "pgx" && (!errors.As(err, &pgErr) || pgErr.Code != "28000" || pgErr.Message != msg) {
							t.Fatalf("got %v, want leproxy's refusal %q", err, msg)
						}
						// The log has the backend's reason too.
						if e := p.SessionError(t); !strings.Contains(e, msg) || !strings.Contains(e, "SCRAM channel binding negotiation error") {
							t.Errorf("session end error %q, want leproxy's refusal and the backend's", e)
						}
						end(dbproxy.End{By: dbproxy.ByBackend, Reason: dbproxy.ReasonRefused})
					case client:
						msg := libpqRequiresBinding
						if cl == "pgx" {
							msg = pgxRequiresBinding
						}
						if err == nil || !strings.Contains(err.Error(), msg) {
							t.Fatalf("got %v, want the client's %q", err, msg)
						}
						if e := p.SessionError(t); !strings.Contains(e, "client ended the startup") {
							t.Errorf("session end error %q, want the client's end", e)
						}
						end(dbproxy.End{By: dbproxy.ByClient, Reason: dbproxy.ReasonClosed})
					}
				})
			}
		}
	}
}

// psqlLogin runs psql through p to db.test with verify-full, the password
// in PGPASSWORD and extra in the connection string, and returns the port
// and backend TLS the query saw, or psql's output as the error.
func psqlLogin(t *testing.T, bin string, p *testProxy, password, extra string) (port int, backendTLS bool, err error) {
	t.Helper()
	_, proxyPort, _ := net.SplitHostPort(p.Addr)
	conninfo := fmt.Sprintf("host=db.test hostaddr=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10 %s",
		proxyPort, caFile(t, p.CA), extra)
	cmd := exec.Command(bin, "-X", "-At", "-F", " ", "-d", conninfo, "-c",
		"select current_setting('port'), (select ssl from pg_stat_ssl where pid = pg_backend_pid())")
	// No PG* settings but the password from the environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, false, fmt.Errorf("psql: %v: %s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 {
		return 0, false, fmt.Errorf("psql printed %q", out)
	}
	port, err = strconv.Atoi(fields[0])
	return port, fields[1] == "t", err
}

// pgxLogin is psqlLogin with pgx.
func pgxLogin(t *testing.T, p *testProxy, password, extra string) (port int, backendTLS bool, err error) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := connectThrough(ctx, t, p, "db.test", fmt.Sprintf("password='%s' %s", password, extra))
	if err != nil {
		return 0, false, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, "select current_setting('port')::int, (select ssl from pg_stat_ssl where pid = pg_backend_pid())").Scan(&port, &backendTLS)
	return port, backendTLS, err
}
