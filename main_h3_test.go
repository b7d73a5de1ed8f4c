package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/leproxy/leproxy/internal/testenv"
)

// h3ClientFor returns quic-go's HTTP/3 client, sending every request to
// addr over QUIC and verifying the certificate against roots for the name
// in the URL.
func h3ClientFor(t *testing.T, addr string, roots *x509.CertPool) *http.Client {
	t.Helper()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, addr, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// quicHandshake dials addr over QUIC with cfg and reports the handshake's
// result.
func quicHandshake(addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, cfg, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	return conn.CloseWithError(0, "")
}

// TestH3LocalCA serves a mapped name over HTTP/3 with its local CA
// certificate, through the same handler chain as TCP (X-Forwarded-*,
// access log, metrics with proto="h3"), announces it with Alt-Svc on TCP,
// and refuses unmapped names and tls-alpn-01 over QUIC at the handshake.
func TestH3LocalCA(t *testing.T) {
	addr := addrFor(t)
	adminAddr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-admin", adminAddr, "-hsts")
	roots := loadPool(t, localRootFromLog(t, d.log.String()))
	waitLog(t, d, fmt.Sprintf("proto=h3 addr=%s", addr), 1)

	c := h3ClientFor(t, addr, roots)
	req, _ := http.NewRequest(http.MethodGet, "https://app.localhost/h3?secret=1", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET over HTTP/3: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 3 {
		t.Fatalf("got %d %s %q, want 200 over HTTP/3", resp.StatusCode, resp.Proto, body)
	}
	if want := "app host=app.localhost xff=127.0.0.1 proto=https"; string(body) != want {
		t.Errorf("backend saw %q, want %q", body, want)
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS over HTTP/3 with -hsts")
	}
	if resp.Header.Get("Alt-Svc") != "" {
		t.Errorf("an HTTP/3 response carries Alt-Svc %q", resp.Header.Get("Alt-Svc"))
	}

	// TCP responses announce HTTP/3 on the same port.
	tcpResp, _ := get(t, clientFor(addr, roots), "https://app.localhost/")
	_, port, _ := net.SplitHostPort(addr)
	if got, want := tcpResp.Header.Get("Alt-Svc"), fmt.Sprintf(`h3=":%s"; ma=86400`, port); got != want {
		t.Errorf("Alt-Svc on TCP: got %q, want %q", got, want)
	}

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"unmapped name", &tls.Config{ServerName: "evil.localhost", RootCAs: roots, NextProtos: []string{"h3"}}},
		{"tls-alpn-01", &tls.Config{ServerName: "app.localhost", InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}}},
	} {
		if err := quicHandshake(addr, tc.cfg); err == nil {
			t.Errorf("%s: QUIC handshake succeeded", tc.name)
		}
	}

	waitLog(t, d, "path=/h3 proto=h3", 1)
	if strings.Contains(d.log.String(), "secret=1") {
		t.Error("the query string reached the log")
	}
	wants := []string{
		`leproxy_http_requests_total{code="200",host="app.localhost",method="GET",proto="h3"} 1`,
		`leproxy_http_requests_total{code="200",host="app.localhost",method="GET",proto="h2"} 1`,
		`leproxy_tls_handshakes_total{listener="h3"} 3`,
		`leproxy_tls_handshake_failures_total{listener="h3"} 2`,
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, metrics := get(t, plain, "http://"+adminAddr+"/metrics")
		var missing []string
		for _, w := range wants {
			if !strings.Contains(metrics, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, metrics)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestH3Off checks that -h3=false serves no QUIC and announces none.
func TestH3Off(t *testing.T) {
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-h3=false")
	roots := loadPool(t, localRootFromLog(t, d.log.String()))
	resp, _ := get(t, clientFor(addr, roots), "https://app.localhost/")
	if v := resp.Header.Values("Alt-Svc"); len(v) != 0 {
		t.Errorf("Alt-Svc %q with -h3=false", v)
	}
	if err := quicHandshake(addr, &tls.Config{ServerName: "app.localhost", RootCAs: roots, NextProtos: []string{"h3"}}); err == nil {
		t.Error("QUIC handshake succeeded with -h3=false")
	}
	if strings.Contains(d.log.String(), "proto=h3") {
		t.Error("an h3 listener was logged with -h3=false")
	}
}

func TestH3Wanted(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true}, // :https
		{[]string{"-addr", "127.0.0.1:8443"}, true},
		{[]string{"-addr", "[::1]:https"}, true},
		{[]string{"-addr", ":0"}, false},
		{[]string{"-addr", "127.0.0.1:0", "-h3"}, true},
		{[]string{"-addr", ":443", "-h3=false"}, false},
	} {
		a, set, err := parseArgs(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := h3Wanted(a, set); got != tc.want {
			t.Errorf("%q: h3 %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestH3Pebble gets a certificate from Pebble (tls-alpn-01 over TCP) and
// serves it over HTTP/3 too.
func TestH3Pebble(t *testing.T) {
	addr := addrFor(t)
	_, port, _ := net.SplitHostPort(addr)
	p := testenv.StartPebble(t, testenv.FreePort(t), atoi(t, port))
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.test: "+backend(t, "a")+"\n")
	startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "",
		"-acme", p.DirectoryURL, "-acme-ca", p.ServerCAFile)

	c := h3ClientFor(t, addr, p.IssuerRoots(t))
	resp, err := c.Get("https://a.test/")
	if err != nil {
		t.Fatalf("GET over HTTP/3 with the Pebble certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 3 || !strings.HasPrefix(string(body), "a host=a.test") {
		t.Fatalf("got %d %s %q, want 200 from the backend over HTTP/3", resp.StatusCode, resp.Proto, body)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
	if err := quicHandshake(addr, &tls.Config{ServerName: "evil.test", RootCAs: p.IssuerRoots(t), NextProtos: []string{"h3"}}); err == nil {
		t.Error("QUIC handshake for an unmapped name succeeded")
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("an unmapped name over QUIC: Pebble orders went to %d", n)
	}
}

// streamBackend answers /stream with "first ", then, once release is
// closed, "last"; every other path with its name.
func streamBackend(t *testing.T, name string, started chan<- struct{}, release <-chan struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, name)
			return
		}
		io.WriteString(w, name+" first ")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
		io.WriteString(w, "last")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestH3ReloadWhileStreaming reloads the mapping while an HTTP/3 response
// streams: it completes from the old backend, and the next request on the
// same connection goes to the new one.
func TestH3ReloadWhileStreaming(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	oldBackend := streamBackend(t, "old", started, release)
	newBackend := backend(t, "new")
	mapFile := filepath.Join(t.TempDir(), "mapping.yml")
	if err := os.WriteFile(mapFile, []byte("app.localhost: "+oldBackend+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := addrFor(t)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	c := h3ClientFor(t, addr, loadPool(t, localRootFromLog(t, d.log.String())))

	resp, err := c.Get("https://app.localhost/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	if err := os.WriteFile(mapFile, []byte("app.localhost: "+newBackend+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "mapping reloaded", 1)

	_, next := getH3(t, c, "https://app.localhost/")
	if !strings.HasPrefix(next, "new host=app.localhost") {
		t.Errorf("request after the reload: got %q, want the new backend", next)
	}
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "old first last" {
		t.Errorf("streaming response across the reload: got %q, %v; want %q", body, err, "old first last")
	}
}

// TestH3ShutdownDrains stops leproxy while an HTTP/3 request is in
// flight: it completes, and run returns nil.
func TestH3ShutdownDrains(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+streamBackend(t, "app", started, release)+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	c := h3ClientFor(t, addr, loadPool(t, localRootFromLog(t, d.log.String())))
	resp, err := c.Get("https://app.localhost/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- d.stop() }()
	waitLog(t, d, "stopping", 1)
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "app first last" {
		t.Errorf("in-flight HTTP/3 response during stop: got %q, %v", body, err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("run after cancel: %v, want nil", err)
	}
}

func getH3(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s over HTTP/3: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.ProtoMajor != 3 {
		t.Fatalf("GET %s: got %s, want HTTP/3", url, resp.Proto)
	}
	return resp, string(b)
}

// TestH3Curl drives curl --http3-only through leproxy where curl was built
// with HTTP/3 (Debian 12's curl 7.88 is not: the test skips there).
func TestH3Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("httpproxy h3: no curl")
	}
	out, err := exec.Command(curl, "--version").Output()
	if err != nil || !strings.Contains(string(out), "HTTP3") {
		t.Skip("curl has no HTTP3 feature (Debian's curl is built without it)")
	}
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "")
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(curl, "-sS", "--http3-only", "--cacert", localRootFromLog(t, d.log.String()),
		"--resolve", "app.localhost:"+port+":127.0.0.1", "-w", " %{http_version}", "https://app.localhost:"+port+"/")
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl --http3-only: %v: %s", err, got)
	}
	if !strings.HasPrefix(string(got), "app host=app.localhost") || !strings.HasSuffix(string(got), " 3") {
		t.Errorf("curl --http3-only: got %q, want the backend over HTTP/3", got)
	}
}

// TestH3Port checks that -h3-port changes the port Alt-Svc announces, not
// the one served, and that a bad one is refused at start.
func TestH3Port(t *testing.T) {
	addr := addrFor(t)
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "app.localhost: "+backend(t, "app")+"\n")
	err := runIO(context.Background(), []string{"-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-h3-port", "70000"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-h3-port") {
		t.Errorf("-h3-port 70000: got %v, want an error naming -h3-port", err)
	}
	d := startDaemon(t, addr, "-map", mapping, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-h3-port", "443")
	roots := loadPool(t, localRootFromLog(t, d.log.String()))
	resp, _ := get(t, clientFor(addr, roots), "https://app.localhost/")
	if got, want := resp.Header.Get("Alt-Svc"), `h3=":443"; ma=86400`; got != want {
		t.Errorf("Alt-Svc with -h3-port 443: got %q, want %q", got, want)
	}
	if _, body := getH3(t, h3ClientFor(t, addr, roots), "https://app.localhost/"); !strings.HasPrefix(body, "app ") {
		t.Errorf("HTTP/3 on the -addr port: got %q", body)
	}
}
