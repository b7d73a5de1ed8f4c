package testenv

// FerretDB for MongoDB integration tests: a real MongoDB wire protocol
// server (OP_MSG, legacy OP_QUERY hello, SCRAM, cursors) embedded in the
// test binary, on SQLite in a temporary directory. No mongod package
// exists for Debian bookworm, and FerretDB needs no binary, so these tests
// never skip.

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// FerretDBOptions configure StartFerretDB. The zero value is a plaintext
// server.
type FerretDBOptions struct {
	// CertPEM and KeyPEM, when both set, make FerretDB listen with TLS
	// from the first byte (mongod's requireTLS) with this certificate
	// chain and private key, and not in plaintext.
	CertPEM, KeyPEM []byte
}

// FerretDB is a running embedded FerretDB.
type FerretDB struct {
	// Addr is the server's address, 127.0.0.1:port.
	Addr string
	// URI is a mongodb:// URI for it, with tls=true when it has TLS.
	URI string
}

// StartFerretDB starts FerretDB on a free 127.0.0.1 port with its data in
// a temporary directory and stops it when the test ends. Its log lines at
// Error level go to the test log.
func StartFerretDB(t testing.TB, opts FerretDBOptions) *FerretDB {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	lw := &testLogWriter{t: t}
	cfg := &ferretdb.Config{
		Logger:    slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelError})),
		Handler:   "sqlite",
		SQLiteURL: "file:" + data + "/",
	}
	if len(opts.CertPEM) > 0 && len(opts.KeyPEM) > 0 {
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(certFile, opts.CertPEM, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.WriteFile(keyFile, opts.KeyPEM, 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		cfg.Listener = ferretdb.ListenerConfig{TLS: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile}
	} else {
		cfg.Listener = ferretdb.ListenerConfig{TCP: "127.0.0.1:0"}
	}
	f, err := ferretdb.New(cfg)
	if err != nil {
		t.Fatalf("testenv: starting FerretDB: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		lw.stop()
	})
	// MongoDBURI waits for Run to have opened the listener.
	uri := f.MongoDBURI()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("testenv: FerretDB URI %q: %v", uri, err)
	}
	return &FerretDB{Addr: u.Host, URI: uri}
}

// testLogWriter writes lines to a test's log until stopped: a test must
// not log after it ends.
type testLogWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}
