// Command mysqlbench runs a query workload against a MySQL or MariaDB
// server with go-sql-driver/mysql and prints the rate it achieved; with
// -ca it connects over TLS and verifies the server's certificate for
// -server-name (sent as SNI), dialling -addr whatever that name resolves
// to. bench/mysql.sh runs it directly and through leproxy.
//
//	mysqlbench -addr 127.0.0.1:3306 -user bench -password bench -db bench
//	mysqlbench -addr 127.0.0.1:13306 -ca root.pem -server-name db.localhost …
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mysqlbench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr       = flag.String("addr", "127.0.0.1:3306", "server `host:port` to dial")
		user       = flag.String("user", "bench", "user name")
		password   = flag.String("password", "bench", "password")
		db         = flag.String("db", "bench", "database")
		ca         = flag.String("ca", "", "PEM `file` of the CA to verify the server with; empty connects without TLS")
		serverName = flag.String("server-name", "", "TLS server name to send and verify")
		query      = flag.String("query", "SELECT v FROM kv WHERE k = ?", "query, given one argument: a key from 1 to -keys")
		keys       = flag.Int("keys", 1000, "keys the query picks from")
		clients    = flag.Int("clients", 4, "concurrent clients")
		duration   = flag.Duration("duration", 10*time.Second, "how long to run")
		connect    = flag.Bool("connect", false, "open a new connection for every query (measures the handshake)")
		prepare    = flag.Bool("prepare", false, "run each query as a prepared statement (prepare, execute, close: two round trips) instead of one COM_QUERY with the key in its text")
	)
	flag.Parse()

	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName = "tcp", *addr, *user, *password, *db
	cfg.Timeout = 10 * time.Second
	// One COM_QUERY per query, the shape of pgbench -S (one simple Query
	// per transaction), unless -prepare.
	cfg.InterpolateParams = !*prepare
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", *ca)
		}
		cfg.TLS = &tls.Config{RootCAs: roots, ServerName: *serverName, MinVersion: tls.VersionTLS12}
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	pool := sql.OpenDB(connector)
	defer pool.Close()
	pool.SetMaxOpenConns(*clients)
	pool.SetMaxIdleConns(*clients)
	if *connect {
		pool.SetMaxIdleConns(-1) // every query dials
	}
	ping, cancelPing := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelPing()
	if err := pool.PingContext(ping); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	deadline := time.Now().Add(*duration)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	var (
		done     atomic.Int64
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	start := time.Now()
	for i := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := i
			for ctx.Err() == nil {
				key = key%*keys + 1
				var v string
				err := pool.QueryRowContext(ctx, *query, key).Scan(&v)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					// A dial or read cut by the deadline may fail before
					// ctx says it is done.
					if ctx.Err() == nil && time.Until(deadline) > 100*time.Millisecond {
						errOnce.Do(func() { firstErr = err; cancel() })
					}
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	elapsed := time.Since(start)
	fmt.Printf("%.1f %d\n", float64(done.Load())/elapsed.Seconds(), done.Load())
	return nil
}
