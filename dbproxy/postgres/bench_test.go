package dbproxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/leproxy/leproxy/internal/testenv"
)

// BenchmarkPostgresHandshake measures a whole session set-up and teardown
// against a fake backend: SSLRequest, a full TLS handshake (no
// resumption), StartupMessage, BackendKeyData, ReadyForQuery, Terminate;
// and, for scale, the same session straight to the backend in plaintext.
func BenchmarkPostgresHandshake(b *testing.B) {
	ca := newTestCA(b)
	fb := startFakeBackend(b, &fakeBackend{name: "a", pid: 1, key: []byte{1, 2, 3, 4}})
	p := startProxy(b, ca, Config{Routes: []Route{fb.route("a.test")}})
	startup := startupBytes(3, 0, "user", "u")
	session := func(b *testing.B, conn net.Conn) {
		mustWrite(b, conn, startup)
		fe := pgproto3.NewFrontend(conn, conn)
		if res := readStartup(b, fe); res.err != nil || res.readErr != nil {
			b.Fatalf("startup: %+v", res)
		}
		fe.Send(&pgproto3.Terminate{})
		fe.Flush()
		io.Copy(io.Discard, conn)
		conn.Close()
	}
	b.Run("direct-plaintext", func(b *testing.B) {
		for b.Loop() {
			conn, err := net.Dial("tcp", fb.addr)
			if err != nil {
				b.Fatal(err)
			}
			session(b, conn)
			<-fb.startups
		}
	})
	b.Run("proxy-tls", func(b *testing.B) {
		cfg := &tls.Config{ServerName: "a.test", RootCAs: ca.pool, ClientSessionCache: nil, SessionTicketsDisabled: true}
		for b.Loop() {
			conn, err := net.Dial("tcp", p.addr)
			if err != nil {
				b.Fatal(err)
			}
			mustWrite(b, conn, requestBytes(sslRequestCode))
			if readByte(b, conn) != 'S' {
				b.Fatal("SSLRequest refused")
			}
			tc := tls.Client(conn, cfg)
			if err := tc.Handshake(); err != nil {
				b.Fatal(err)
			}
			session(b, tc)
			<-fb.startups
		}
	})
}

// BenchmarkPump measures bulk throughput one way: straight over loopback
// TCP, through the pump with TCP on both sides (splice), and through the
// pump with TLS on the client side.
func BenchmarkPump(b *testing.B) {
	const chunk = 256 << 10
	buf := make([]byte, chunk)
	run := func(b *testing.B, client net.Conn, sink net.Conn) {
		done := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(io.Discard, sink)
			done <- n
		}()
		b.SetBytes(chunk)
		for b.Loop() {
			if _, err := client.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		closeWrite(client)
		if n := <-done; n != int64(b.N)*chunk {
			b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
		}
	}
	b.Run("direct", func(b *testing.B) {
		client, sink := tcpPair(b)
		run(b, client, sink)
	})
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "pump-tcp", true: "pump-tls"}[withTLS]
		b.Run(name, func(b *testing.B) {
			ps := newPumpSetup(b, withTLS)
			res := ps.run(pumpLimits{idle: DefaultIdleTimeout, halfClosed: halfClosedIdle})
			run(b, ps.client, ps.backend)
			ps.backend.Close()
			waitResult(b, res)
		})
	}
}

// BenchmarkPostgresIntegrationSelect runs "select 1" on one connection to
// a real PostgreSQL, directly and through the proxy with verify-full TLS.
func BenchmarkPostgresIntegrationSelect(b *testing.B) {
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{})
	ca := newTestCA(b)
	p := startProxy(b, ca, Config{Routes: []Route{pgRoute("db.test", pg)}})
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
