package postgres

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/pgtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// BenchmarkPostgresHandshake measures a whole session set-up and teardown
// against a fake backend: SSLRequest, a full TLS handshake (no
// resumption), StartupMessage, BackendKeyData, ReadyForQuery, Terminate;
// and, for scale, the same session straight to the backend in plaintext.
func BenchmarkPostgresHandshake(b *testing.B) {
	ca := dbtest.NewCA(b)
	fb := pgtest.StartBackend(b, &pgtest.Backend{Name: "a", PID: 1, Key: []byte{1, 2, 3, 4}})
	p := startProxy(b, ca, dbproxy.Config{Routes: []dbproxy.Route{fb.Route("a.test")}})
	startup := pgtest.StartupBytes(3, 0, "user", "u")
	session := func(b *testing.B, conn net.Conn) {
		dbtest.MustWrite(b, conn, startup)
		fe := pgproto3.NewFrontend(conn, conn)
		if res := pgtest.ReadStartup(b, fe); res.Err != nil || res.ReadErr != nil {
			b.Fatalf("startup: %+v", res)
		}
		fe.Send(&pgproto3.Terminate{})
		fe.Flush()
		io.Copy(io.Discard, conn)
		conn.Close()
	}
	b.Run("direct-plaintext", func(b *testing.B) {
		for b.Loop() {
			conn, err := net.Dial("tcp", fb.Addr)
			if err != nil {
				b.Fatal(err)
			}
			session(b, conn)
			<-fb.Startups
		}
	})
	b.Run("proxy-tls", func(b *testing.B) {
		cfg := &tls.Config{ServerName: "a.test", RootCAs: ca.Pool, ClientSessionCache: nil, SessionTicketsDisabled: true}
		for b.Loop() {
			conn, err := net.Dial("tcp", p.Addr)
			if err != nil {
				b.Fatal(err)
			}
			dbtest.MustWrite(b, conn, pgtest.RequestBytes(sslRequestCode))
			if pgtest.ReadByte(b, conn) != 'S' {
				b.Fatal("SSLRequest refused")
			}
			tc := tls.Client(conn, cfg)
			if err := tc.Handshake(); err != nil {
				b.Fatal(err)
			}
			session(b, tc)
			<-fb.Startups
		}
	})
}

// BenchmarkPostgresIntegrationSelect runs "select 1" on one connection to
// a real PostgreSQL, directly and through the proxy with verify-full TLS.
func BenchmarkPostgresIntegrationSelect(b *testing.B) {
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{})
	ca := dbtest.NewCA(b)
	p := startProxy(b, ca, dbproxy.Config{Routes: []dbproxy.Route{serverRoute("db.test", pg)}})
	ctx := context.Background()
	direct, err := pgx.Connect(ctx, pg.ConnString())
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close(ctx)
	proxied, err := connectThrough(ctx, b, p, "db.test", "")
	if err != nil {
		b.Fatal(err)
	}
	defer proxied.Close(ctx)
	for name, conn := range map[string]*pgx.Conn{"direct": direct, "proxy": proxied} {
		b.Run(name, func(b *testing.B) {
			var one int
			for b.Loop() {
				if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
