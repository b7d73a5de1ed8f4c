package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/leproxy/leproxy/internal/testenv"
)

// wsEcho is a websocket backend that echoes every message.
func wsEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// waitLog waits until the daemon's log holds n lines containing s.
func waitLog(t *testing.T, d *daemon, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(d.log.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d lines with %q after 20s, want %d:\n%s", strings.Count(d.log.String(), s), s, n, d.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadUnderLoad changes the mapping and sends SIGHUP ten times, once
// with a broken mapping, while HTTPS requests flow, a websocket and a
// PostgreSQL session stay open: nothing fails, each new route is live after
// its reload, and the broken one changes nothing.
func TestReloadUnderLoad(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	dir := t.TempDir()
	mapFile := filepath.Join(dir, "mapping.yml")
	addr := addrFor(t)
	pgAddr := addrFor(t)
	steady := backend(t, "steady")
	ws := wsEcho(t)
	extra := backend(t, "extra")

	mapping := func(i int, broken bool) string {
		var b strings.Builder
		fmt.Fprintf(&b, "steady.localhost: %s\nws.localhost: %s\n", steady, ws)
		for j := 1; j <= i; j++ {
			fmt.Fprintf(&b, "new%d.localhost: %s\n", j, extra)
		}
		if broken {
			b.WriteString("broken-host-without-dot: 127.0.0.1:1\n")
		}
		fmt.Fprintf(&b, "tcp:\n  - listen: %q\n    protocol: postgres\n    default: db.localhost\n    routes:\n      db.localhost: %s\n", pgAddr, pg.Addr)
		return b.String()
	}
	if err := os.WriteFile(mapFile, []byte(mapping(0, false)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local")
	root := localRootFromLog(t, d.log.String())
	c := clientFor(addr, loadPool(t, root))

	// Open a websocket and a PostgreSQL session that must outlive reloads.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wsConn, _, err := websocket.Dial(ctx, "wss://ws.localhost/", &websocket.DialOptions{HTTPClient: c})
	if err != nil {
		t.Fatalf("websocket through leproxy: %v", err)
	}
	defer wsConn.CloseNow()
	_, pgPort, _ := net.SplitHostPort(pgAddr)
	pgCfg, err := pgx.ParseConfig(fmt.Sprintf("host=db.localhost port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s", pgPort, pg.User, root))
	if err != nil {
		t.Fatal(err)
	}
	pgCfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	pgConn, err := pgx.ConnectConfig(ctx, pgCfg)
	if err != nil {
		t.Fatalf("postgres through leproxy: %v", err)
	}
	defer pgConn.Close(ctx)

	// Keep requests flowing for the whole test.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := c.Get("https://steady.localhost/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}

	for i := 1; i <= 10; i++ {
		broken := i == 5
		if err := os.WriteFile(mapFile, []byte(mapping(i, broken)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if broken {
			waitLog(t, d, "reload failed", 1)
			// The broken mapping's good new host must not be live: it is
			// not even on the certificate allow-list.
			if resp, err := c.Get(fmt.Sprintf("https://new%d.localhost/", i)); err == nil {
				resp.Body.Close()
				t.Errorf("reload %d (broken): new%d.localhost got %d, want a refused handshake: old mapping kept", i, i, resp.StatusCode)
			}
			continue
		}
		ok := i
		if i > 5 {
			ok = i - 1
		}
		waitLog(t, d, "mapping reloaded", ok)
		if resp, body := get(t, c, fmt.Sprintf("https://new%d.localhost/", i)); resp.StatusCode != 200 || !strings.HasPrefix(body, "extra") {
			t.Errorf("reload %d: new%d.localhost got %d %q, want 200 from the new backend", i, i, resp.StatusCode, body)
		}
		// The long-lived sessions still work after each reload.
		msg := fmt.Sprintf("ping %d", i)
		if err := wsConn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("reload %d: websocket write: %v", i, err)
		}
		if _, b, err := wsConn.Read(ctx); err != nil || string(b) != msg {
			t.Fatalf("reload %d: websocket read: %q, %v", i, b, err)
		}
		var n int
		if err := pgConn.QueryRow(ctx, "select $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("reload %d: postgres session: %d, %v", i, n, err)
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	if sent.Load() < 20 {
		t.Errorf("only %d requests sent: the load did not overlap the reloads", sent.Load())
	}
}

// TestReloadTCPListeners adds and removes a tcp listener: the new one
// serves after the reload, the removed one stops accepting.
func TestReloadTCPListeners(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	mapFile := filepath.Join(t.TempDir(), "mapping.yml")
	addr := addrFor(t)
	pgA, pgB := addrFor(t), addrFor(t)
	listener := func(listen string) string {
		return fmt.Sprintf("  - listen: %q\n    protocol: postgres\n    default: db.localhost\n    routes:\n      db.localhost: %s\n", listen, pg.Addr)
	}
	write := func(s string) {
		if err := os.WriteFile(mapFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.localhost: 127.0.0.1:9\ntcp:\n" + listener(pgA))
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local", "-watch")
	root := localRootFromLog(t, d.log.String())

	query := func(listen string) error {
		_, port, _ := net.SplitHostPort(listen)
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=db.localhost port=%s user=%s dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=5", port, pg.User, root))
		if err != nil {
			return err
		}
		cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	}
	if err := query(pgA); err != nil {
		t.Fatalf("first listener: %v", err)
	}
	// -watch: rewriting the file is enough.
	write("a.localhost: 127.0.0.1:9\ntcp:\n" + listener(pgB))
	waitLog(t, d, "mapping reloaded", 1)
	if err := query(pgB); err != nil {
		t.Errorf("added listener: %v", err)
	}
	waitLog(t, d, "tcp listener removed", 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", pgA, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("removed listener %s still accepts", pgA)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
