package httpproxy

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/config"
)

// startUnixBackend serves h on a unix socket listening at addr (a path, or
// "@name" for the abstract namespace).
func startUnixBackend(t *testing.T, addr string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
}

func TestSocketBackends(t *testing.T) {
	var suffix [8]byte
	rand.Read(suffix[:])
	abstract := "@leproxy-test-" + hex.EncodeToString(suffix[:])
	path := filepath.Join(t.TempDir(), "backend.sock")

	for _, tc := range []struct {
		name   string
		kind   config.BackendKind
		addr   string
		listen string // where the backend listens, when not at addr
	}{
		{"unix", config.BackendUnix, path, ""},
		{"abstract", config.BackendAbstract, abstract, ""},
		// uwsgi binds "@name" with the trailing NUL counted in the address
		// length, as the original leproxy dialled it.
		{"abstract-nul", config.BackendAbstract, abstract + "-uwsgi", abstract + "-uwsgi\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kind == config.BackendAbstract && runtime.GOOS != "linux" {
				t.Skip("abstract unix sockets are Linux only")
			}
			listen := tc.addr
			if tc.listen != "" {
				listen = tc.listen
			}
			startUnixBackend(t, listen, echoHandler(tc.name))
			for _, rewrite := range []bool{false, true} {
				host := config.Host{
					Name:        "sock.example.test",
					Backend:     config.Backend{Kind: tc.kind, Raw: tc.addr, Addr: tc.addr},
					RewriteHost: rewrite,
				}
				_, c := serve(t, mustNew(t, []config.Host{host}, Options{}), false, true)
				resp, body := do(t, c, "https://sock.example.test:8443/p?q=1", nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("rewrite %v: got status %d, want 200 (body %q)", rewrite, resp.StatusCode, body)
				}
				e := decodeEcho(t, body)
				if e.Backend != tc.name || e.Path != "/p" || e.RawQuery != "q=1" {
					t.Errorf("rewrite %v: got backend %q path %q query %q, want %q %q %q", rewrite, e.Backend, e.Path, e.RawQuery, tc.name, "/p", "q=1")
				}
				wantHost := "sock.example.test:8443"
				if rewrite {
					wantHost = "sock.example.test"
				}
				if e.Host != wantHost {
					t.Errorf("rewrite %v: got backend Host %q, want %q", rewrite, e.Host, wantHost)
				}
				if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
					t.Errorf("rewrite %v: got X-Forwarded-For %q, want %q", rewrite, got, "127.0.0.1")
				}
			}
		})
	}
}

func TestSocketBackendDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.sock")
	logger, logs := newTestLogger()
	host := config.Host{Name: "sock.example.test", Backend: config.Backend{Kind: config.BackendUnix, Raw: path, Addr: path}}
	_, c := serve(t, mustNew(t, []config.Host{host}, Options{Logger: logger}), false, false)
	resp, body := do(t, c, "https://sock.example.test/", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("got status %d, want 502 (body %q)", resp.StatusCode, body)
	}
	recs := logs.records(t)
	if len(recs) != 1 || recs[0]["msg"] != "backend error" || recs[0]["backend"] != path {
		t.Errorf("got log records %v, want one backend error for %s", recs, path)
	}
}

// TestBackendConnReuse checks that the connections of a burst of
// concurrent requests (an HTTP/2 load's streams) stay in the idle pool for
// the next burst rather than being closed and dialled again.
func TestBackendConnReuse(t *testing.T) {
	const n = 200 // above net/http's and the old limit of 64
	var mu sync.Mutex
	dials := 0
	arrived := make(chan struct{}, n)
	release := make(chan struct{})
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dials++
			mu.Unlock()
		}
	}
	backend.Start()
	t.Cleanup(backend.Close)
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	t.Cleanup(h.Close)

	burst := func() {
		t.Helper()
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://a.example.test/", nil))
				codes[i] = rec.Code
			}()
		}
		for range n { // every request holds its own backend connection
			select {
			case <-arrived:
			case <-time.After(testTimeout):
				t.Fatal("backend requests did not all arrive")
			}
		}
		close(release)
		wg.Wait()
		release = make(chan struct{})
		for i, c := range codes {
			if c != http.StatusOK {
				t.Fatalf("request %d: status %d", i, c)
			}
		}
	}
	burst()
	burst()
	mu.Lock()
	defer mu.Unlock()
	if dials != n {
		t.Errorf("two bursts of %d requests dialled %d backend connections, want %d", n, dials, n)
	}
}
