package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/artyom/autoflags"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestMain lets tests run the real main in a child process, to check exit
// statuses and signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("LEPROXY_TEST_MAIN") == "1" {
		os.Args = append([]string{"leproxy"}, strings.Split(os.Getenv("LEPROXY_TEST_ARGS"), "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a leproxy run() in a goroutine of the test.
type daemon struct {
	cancel context.CancelFunc
	done   chan error
	log    *syncBuffer
}

// startDaemon runs leproxy with args and waits until addr accepts
// connections. It stops the daemon at cleanup.
func startDaemon(t *testing.T, addr string, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1), log: new(syncBuffer)}
	ready := make(chan struct{})
	env := runEnv{stdout: io.Discard, stderr: d.log, ready: func() { close(ready) }}
	go func() { d.done <- env.run(ctx, args) }()
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("leproxy run: %v", err)
		}
		if t.Failed() {
			t.Logf("leproxy log:\n%s", d.log)
		}
	})
	// Wait for run to say it serves, not for the port: the port accepts
	// before the start-up lines are logged.
	select {
	case <-ready:
		return d
	case err := <-d.done:
		d.done <- err
		t.Fatalf("leproxy exited before serving on %s: %v\nlog:\n%s", addr, err, d.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("leproxy not serving on %s after 30s\nlog:\n%s", addr, d.log)
	}
	return nil
}

// stop cancels the run and returns its result; safe to call twice.
func (d *daemon) stop() error {
	d.cancel()
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(30 * time.Second):
		return errors.New("run did not return 30s after cancel")
	}
}

// clientFor returns an HTTP client that dials addr for every host name and
// trusts roots.
func clientFor(addr string, roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
		},
	}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func loadPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool, err := loadCertPool(file)
	if err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	return pool
}

// backend is a plain HTTP backend that names itself in its replies.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		fmt.Fprintf(w, "%s host=%s xff=%s proto=%s", name, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func addrFor(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

func TestLocalCAServesLocalhostNames(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "cache") // leproxy creates it
	dir := t.TempDir()
	addr := addrFor(t)
	mapping := writeFile(t, dir, "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", cache, "-addr", addr, "-http", "", "-acme", "https://127.0.0.1:1/unused")

	root := localRootFromLog(t, d.log.String())
	resp, body := get(t, clientFor(addr, loadPool(t, root)), "https://app.localhost/x")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "app host=app.localhost") {
		t.Fatalf("got %d %q, want 200 from the app backend", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("got %s, want HTTP/2 to clients", resp.Proto)
	}
	st, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %v, want 0700", st.Mode().Perm())
	}
}

// localRootFromLog returns the local CA root path leproxy logged at start.
func localRootFromLog(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "local CA root") {
			continue
		}
		if _, after, ok := strings.Cut(line, "path="); ok {
			return strings.Trim(strings.Fields(after)[0], `"`)
		}
	}
	t.Fatalf("no local CA root path in the log:\n%s", log)
	return ""
}

func TestDemoModeServesSiteAndBackend(t *testing.T) {
	cache := t.TempDir()
	addr := addrFor(t)
	d := startDaemon(t, addr, "-cache", cache, "-addr", addr, "-http", "")
	c := clientFor(addr, loadPool(t, localRootFromLog(t, d.log.String())))

	resp, body := get(t, c, "https://www.localhost/")
	if resp.StatusCode != 200 || !strings.Contains(body, "leproxy is running") {
		t.Fatalf("www.localhost: got %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", "https://app.localhost/hello", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "GET /hello") {
		t.Fatalf("app.localhost: got %d %q", resp.StatusCode, b)
	}
	if strings.Contains(string(b), "6.6.6.6") {
		t.Errorf("demo backend saw the client's spoofed X-Forwarded-For")
	}
}

func TestPebbleTLSALPN01(t *testing.T) {
	addr := addrFor(t)
	_, port, _ := net.SplitHostPort(addr)
	tlsPort := atoi(t, port)
	p := testenv.StartPebble(t, testenv.FreePort(t), tlsPort)
	cache := t.TempDir()
	dir := t.TempDir()
	mapping := writeFile(t, dir, "mapping.yml", "a.test: "+backend(t, "a")+"\n")
	args := []string{"-map", mapping, "-cache", cache, "-addr", addr, "-http", "", "-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile}

	d := startDaemon(t, addr, args...)
	c := clientFor(addr, p.IssuerRoots(t))
	resp, body := get(t, c, "https://a.test/")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "a host=a.test") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	orders := p.Orders()
	if orders != 1 {
		t.Errorf("Pebble saw %d orders, want 1", orders)
	}
	// autocert writes the cache (which logs) as it hands the certificate
	// over, so the line may follow the response by a moment.
	waitLog(t, d, "certificate obtained", 1)

	// A name that is not mapped never starts an order.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "evil.test", RootCAs: p.IssuerRoots(t)})
	if err == nil {
		conn.Close()
		t.Errorf("handshake for an unmapped name succeeded")
	}
	if got := p.Orders(); got != orders {
		t.Errorf("unmapped SNI: Pebble orders went from %d to %d", orders, got)
	}

	// A second run on the same cache serves the cached certificate.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, addr, args...)
	c = clientFor(addr, p.IssuerRoots(t))
	if resp, body := get(t, c, "https://a.test/"); resp.StatusCode != 200 {
		t.Fatalf("second run: got %d %q", resp.StatusCode, body)
	}
	if got := p.Orders(); got != orders {
		t.Errorf("second run on the same cache: Pebble orders went from %d to %d", orders, got)
	}
}

func TestPebbleHTTP01(t *testing.T) {
	httpAddr := addrFor(t)
	_, port, _ := net.SplitHostPort(httpAddr)
	// Pebble's tls-alpn-01 port has no listener, so only http-01 can pass.
	p := testenv.StartPebble(t, atoi(t, port), testenv.FreePort(t))
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "b.test: "+backend(t, "b")+"\n")
	startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", httpAddr,
		"-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile)

	resp, body := get(t, clientFor(addr, p.IssuerRoots(t)), "https://b.test/")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "b host=b.test") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	// The plain HTTP listener redirects mapped hosts and refuses others.
	plain := clientFor(httpAddr, nil)
	resp, _ = get(t, plain, "http://b.test/p?q=1")
	if want := "https://b.test:" + portOf(mustAddr(t, addr)) + "/p?q=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("redirect: got %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if resp, _ = get(t, plain, "http://other.test/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unmapped host on http: got %d, want 404", resp.StatusCode)
	}
}

func mustAddr(t *testing.T, s string) net.Addr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	addr := addrFor(t)
	cache := t.TempDir()
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "slow.localhost: "+backend(t, "slow")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", cache, "-addr", addr, "-http", "", "-acme", "local")
	c := clientFor(addr, loadPool(t, localRootFromLog(t, d.log.String())))
	get(t, c, "https://slow.localhost/") // warm up: certificate issued

	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://slow.localhost/?sleep=700ms")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	time.Sleep(200 * time.Millisecond) // let the request reach the backend
	if err := d.stop(); err != nil {
		t.Fatalf("run after cancel: %v, want nil", err)
	}
	r := <-res
	if r.err != nil || r.status != 200 || !strings.HasPrefix(r.body, "slow") {
		t.Fatalf("in-flight request: got %d %q %v, want 200 from the backend", r.status, r.body, r.err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("still accepting on %s after stop", addr)
	}
}

func TestStartupErrors(t *testing.T) {
	good := writeFile(t, t.TempDir(), "mapping.yml", "a.localhost: 127.0.0.1:9\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notDir := writeFile(t, t.TempDir(), "file", "x")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"address in use", []string{"-map", good, "-addr", busy.Addr().String(), "-http", ""}, "-addr"},
		{"missing mapping", []string{"-map", "/nonexistent/mapping.yml"}, "/nonexistent/mapping.yml"},
		{"cache not writable", []string{"-map", good, "-cache", filepath.Join(notDir, "cache"), "-addr", "127.0.0.1:0", "-http", ""}, "cache"},
		{"bad acme", []string{"-map", good, "-acme", "letsencrpyt", "-addr", "127.0.0.1:0", "-http", ""}, "letsencrpyt"},
		{"bad issuer list", []string{"-map", good, "-acme", "letsencrypt,local", "-addr", "127.0.0.1:0", "-http", ""}, "local cannot be combined"},
		{"eab for no issuer", []string{"-map", good, "-acme", "letsencrypt", "-acme-eab", "zerossl=/nonexistent", "-addr", "127.0.0.1:0", "-http", ""}, "-acme-eab"},
		{"unreadable eab file", []string{"-map", good, "-acme", "zerossl", "-acme-eab", "zerossl=/nonexistent/eab", "-addr", "127.0.0.1:0", "-http", ""}, "/nonexistent/eab"},
		{"bad log format", []string{"-map", good, "-log-format", "xml"}, "-log-format"},
		{"bad acme-ca", []string{"-map", good, "-acme-ca", good, "-addr", "127.0.0.1:0", "-http", ""}, "-acme-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !contains(args, "-cache") {
				args = append(args, "-cache", t.TempDir())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := runIO(ctx, args, io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("run succeeded, want an error mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yml", "a.example.com: 127.0.0.1:8080\n")
	bad := writeFile(t, dir, "bad.yml", "a.example.com: 127.0.0.1:8080\nnodot: 127.0.0.1:8081\n")
	var out bytes.Buffer
	if err := runIO(context.Background(), []string{"-check", "-map", good}, &out, io.Discard); err != nil {
		t.Fatalf("-check on a good mapping: %v", err)
	}
	if !strings.Contains(out.String(), "a.example.com") || !strings.Contains(out.String(), "OK") {
		t.Errorf("-check summary %q lacks the host or OK", out.String())
	}
	err := runIO(context.Background(), []string{"-check", "-map", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "bad.yml:2") {
		t.Errorf("-check on a bad mapping: got %v, want an error at bad.yml:2", err)
	}
}

// TestMainProcess runs the real main: exit 1 with one line on a fatal
// start-up error, exit 0 on SIGTERM.
func TestMainProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	start := func(args ...string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "LEPROXY_TEST_MAIN=1", "LEPROXY_TEST_ARGS="+strings.Join(args, "\n"))
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}

	cmd, stderr := start("-map", "/nonexistent/mapping.yml", "-cache", t.TempDir())
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("missing mapping: got %v, want exit status 1", err)
	}
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "leproxy: ") {
		t.Errorf("missing mapping: stderr %q, want one line starting with leproxy:", stderr.String())
	}

	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.localhost: 127.0.0.1:9\n")
	cmd, stderr = start("-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("child not listening: %s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit status 0\nstderr:\n%s", err, stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out bytes.Buffer
	if err := runIO(context.Background(), []string{"-version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "leproxy ") {
		t.Errorf("-version: got %q, %v", out.String(), err)
	}
	var help bytes.Buffer
	err := runIO(context.Background(), []string{"-h"}, io.Discard, &help)
	if err == nil {
		t.Errorf("-h: run returned nil, want flag.ErrHelp")
	}
	for _, f := range []string{"-map", "-cache", "-addr", "-http", "-email", "-acme", "-acme-ca", "-eab-kid", "-eab-hmac", "-acme-eab", "-acme-profile", "-hsts", "-rto", "-wto", "-idle", "-log-format", "-log-level", "-check", "-version", "-max-header-bytes", "-max-headers", "-max-uri", "-keep-underscore-headers"} {
		if !strings.Contains(help.String(), "  "+f+" ") && !strings.Contains(help.String(), "  "+f+"\n") {
			t.Errorf("-h does not document %s", f)
		}
	}
	a := defaultArgs()
	fs := flag.NewFlagSet("leproxy", flag.ContinueOnError)
	autoflags.DefineFlagSet(fs, &a)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help.String(), "  -"+f.Name+" ") && !strings.Contains(help.String(), "  -"+f.Name+"\n") {
			t.Errorf("-h does not document -%s", f.Name)
		}
	})
}

// TestSmugglingRefused checks run.go's wiring of the HTTPS listener: a
// request with both Content-Length and Transfer-Encoding gets 400 and its
// connection closed, and the request hidden in its body reaches no one,
// while an ordinary HTTP/1.1 keep-alive connection stays open.
func TestSmugglingRefused(t *testing.T) {
	var hits atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+ln.Addr().String()+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	roots := loadPool(t, localRootFromLog(t, d.log.String()))
	dial := func() (*tls.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "app.localhost", RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	const get = "GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n"
	c, br := dial()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+get)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("CL+TE: got %d, close %v; want 400 and close", resp.StatusCode, resp.Close)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after the 400: read %q, %v; want EOF", rest, err)
	}
	c, br = dial()
	for i := 0; i < 2; i++ {
		io.WriteString(c, get)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Errorf("keep-alive request %d: got %d, close %v", i, resp.StatusCode, resp.Close)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("backend hit %d times, want 2 (the keep-alive requests only)", n)
	}
}

// TestSessionTicketsFlag checks -tls-session-tickets: sessions resume with
// it and not without.
func TestSessionTicketsFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		addr := addrFor(t)
		mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
		args := []string{"-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", ""}
		if on {
			args = append(args, "-tls-session-tickets")
		}
		d := startDaemon(t, addr, args...)
		cfg := &tls.Config{ServerName: "app.localhost", RootCAs: loadPool(t, localRootFromLog(t, d.log.String())),
			MaxVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		var resumed bool
		for range 2 {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			resumed = c.ConnectionState().DidResume
			c.Close()
		}
		if resumed != on {
			t.Errorf("-tls-session-tickets=%v: second handshake resumed %v", on, resumed)
		}
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
	}
}
