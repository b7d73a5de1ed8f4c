package postgres

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

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

// BenchmarkPump measures bulk throughput one way: straight over loopback
// TCP, through a proxy session with TCP on both sides (splice), and
// through one with TLS on the client side. The session is set up before
// the clock starts; what is measured is the core's pump, as PostgreSQL
// sessions use it.
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
		dbproxy.CloseWrite(client)
		if n := <-done; n != int64(b.N)*chunk {
			b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
		}
	}
	b.Run("direct", func(b *testing.B) {
		addr, sessions := startSink(b)
		client, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close()
		startSession(b, client)
		sink := <-sessions
		if sink == nil {
			b.Fatal("the sink backend failed")
		}
		defer sink.Close()
		run(b, client, sink)
	})
	for _, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "pump-tcp", true: "pump-tls"}[withTLS]
		b.Run(name, func(b *testing.B) {
			addr, sessions := startSink(b)
			ca := dbtest.NewCA(b)
			p := startProxy(b, ca, dbproxy.Config{
				Routes:      []dbproxy.Route{{Host: "a.test", Backend: addr, AllowPlaintext: !withTLS}},
				Default:     "a.test",
				IdleTimeout: dbproxy.DefaultIdleTimeout,
			})
			client := p.Dial(b)
			client.SetDeadline(time.Time{})
			if withTLS {
				client = pgtest.SSLRequest(b, client, ca, "a.test", "a.test")
			}
			startSession(b, client)
			sink := <-sessions
			if sink == nil {
				b.Fatal("the sink backend failed")
			}
			run(b, client, sink)
			sink.Close()
			dbtest.WaitFor(b, "the session to end", func() bool { return len(p.SessionEnds(b)) == 1 })
		})
	}
}

// startSession sends a StartupMessage on conn and reads until
// ReadyForQuery.
func startSession(b *testing.B, conn net.Conn) {
	b.Helper()
	dbtest.MustWrite(b, conn, pgtest.StartupBytes(3, 0, "user", "u"))
	if res := pgtest.ReadStartup(b, pgproto3.NewFrontend(conn, conn)); res.Err != nil || res.ReadErr != nil {
		b.Fatalf("startup: %+v", res)
	}
}

// startSink starts a backend for one session: it reads the
// StartupMessage, trusts the client (AuthenticationOk, ReadyForQuery)
// and hands the connection over to be read to its end; nil when the
// startup failed.
func startSink(b *testing.B) (addr string, session <-chan net.Conn) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		var hdr [4]byte
		if _, err = io.ReadFull(c, hdr[:]); err == nil {
			_, err = io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:]))-4)
		}
		if err == nil {
			var ready []byte
			ready, _ = (&pgproto3.AuthenticationOk{}).Encode(ready)
			ready, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(ready)
			_, err = c.Write(ready)
		}
		if err != nil {
			c.Close()
			c = nil
		}
		ch <- c
	}()
	return l.Addr().String(), ch
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
