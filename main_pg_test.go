package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leproxy/leproxy/internal/testenv"
)

// TestPostgresWithPebbleCertificate runs leproxy's real run() with a
// PostgreSQL listener: pgx with sslmode=verify-full gets a certificate that
// the shared manager obtained from Pebble (tls-alpn-01 answered on -addr)
// and queries a PostgreSQL that has no TLS.
func TestPostgresWithPebbleCertificate(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	addr := addrFor(t)
	_, port, _ := net.SplitHostPort(addr)
	p := testenv.StartPebble(t, testenv.FreePort(t), atoi(t, port))
	pgAddr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", fmt.Sprintf(`www.test: 127.0.0.1:9
tcp:
  - listen: %q
    protocol: postgres
    default: db.test
    routes:
      db.test: %s
`, pgAddr, pg.Addr))
	startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "",
		"-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile)

	_, pgPort, _ := net.SplitHostPort(pgAddr)
	connString := fmt.Sprintf("host=db.test port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=20",
		pgPort, pg.User, p.IssuerRootFile(t))
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting through leproxy with verify-full: %v", err)
	}
	defer conn.Close(ctx)
	var got int
	if err := conn.QueryRow(ctx, "select 40 + 2").Scan(&got); err != nil || got != 42 {
		t.Fatalf("select 40 + 2: got %d, %v", got, err)
	}
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("pgx connection is %T, want *tls.Conn", conn.PgConn().Conn())
	}
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].VerifyHostname("db.test") != nil {
		t.Errorf("leproxy's certificate does not name db.test")
	}
	// One order per mapped name: db.test, and www.test from the prefetch.
	if n := p.Orders(); n != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (db.test, www.test)", n)
	}
}
