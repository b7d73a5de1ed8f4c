package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// TestLimitsFromMapping: what the mapping says is enforced by the running
// daemon, and a SIGHUP keeps the state of unchanged limits. A host with
// "rate_limit: {requests: 1/m, burst: 3}" answers 3 of 5 requests and
// 429s the rest with Retry-After; a tcp listener with "conn_rate: 1/m,
// conn_burst: 2" takes two connections and closes the third; a reload
// that changes neither keeps both exhausted, one that changes the host's
// limit gives it a fresh bucket. A tcp listener with "block: {after: 2}"
// blocks a client after two failed TLS handshakes — on every listener —
// and DELETE /blocks on the admin address lifts it.
func TestLimitsFromMapping(t *testing.T) {
	echo := dbtest.StartEcho(t, "echo", nil)
	web := backend(t, "web")
	limited, blocking, adminPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	mapFile := filepath.Join(t.TempDir(), "mapping.yml")
	mapping := func(burst int, extra string) string {
		return fmt.Sprintf(`a.localhost:
  backend: %s
  rate_limit: {requests: 1/m, burst: %d}
%s
tcp:
  - listen: "127.0.0.1:%d"
    protocol: tls
    default: e.localhost
    conn_rate: 1/m
    conn_burst: 2
    routes: {e.localhost: %s}
  - listen: "127.0.0.1:%d"
    protocol: tls
    default: e.localhost
    block: {after: 2, for: 1h}
    routes: {e.localhost: %s}
`, web, burst, extra, limited, echo.Addr, blocking, echo.Addr)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(mapFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(mapping(3, ""))
	addr := addrFor(t)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", adminPort)
	d := startDaemon(t, addr, "-map", mapFile, "-cache", t.TempDir(), "-addr", addr, "-http", "", "-acme", "local", "-admin", adminAddr)
	rootPEM, err := os.ReadFile(localRootFromLog(t, d.log.String()))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	c := clientFor(addr, roots)
	statuses := func(n int) (ok, tooMany int, retryAfter string) {
		t.Helper()
		for range n {
			resp, _ := get(t, c, "https://a.localhost/")
			switch resp.StatusCode {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				tooMany++
				retryAfter = resp.Header.Get("Retry-After")
			default:
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		return ok, tooMany, retryAfter
	}
	session := func(port int) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
			&tls.Config{ServerName: "e.localhost", RootCAs: roots})
		if err != nil {
			return err
		}
		defer conn.Close()
		got, err := dbtest.ExchangeLine(conn, "hi")
		if err == nil && got != "echo:hi" {
			err = fmt.Errorf("got %q", got)
		}
		return err
	}
	reloads := 0
	reload := func(s string) {
		t.Helper()
		write(s)
		reloads++
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitLog(t, d, "mapping reloaded", reloads)
	}

	ok, tooMany, ra := statuses(5)
	if n, _ := strconv.Atoi(ra); ok != 3 || tooMany != 2 || n < 1 || n > 60 {
		t.Fatalf("5 requests at 1/m burst 3: %d ok, %d 429, Retry-After %q; want 3, 2, 1–60 s", ok, tooMany, ra)
	}
	for i := range 2 {
		if err := session(limited); err != nil {
			t.Fatalf("connection %d at conn_burst 2: %v", i+1, err)
		}
	}
	if session(limited) == nil {
		t.Fatal("a third connection was served at conn_rate 1/m, conn_burst 2")
	}

	reload(mapping(3, "b.localhost: "+web+"\n"))
	if ok, _, _ := statuses(1); ok != 0 {
		t.Error("a reload that kept the host's rate_limit refilled its bucket")
	}
	if session(limited) == nil {
		t.Error("a reload that kept the listener's conn_rate refilled its bucket")
	}
	reload(mapping(4, ""))
	if ok, _, _ := statuses(4); ok != 4 {
		t.Errorf("a changed rate_limit kept the old bucket: %d of 4 through", ok)
	}

	// Two handshakes the client aborts (it does not trust the certificate).
	for range 2 {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", blocking), &tls.Config{ServerName: "e.localhost"})
		if err == nil {
			conn.Close()
			t.Fatal("a handshake without the local root succeeded")
		}
	}
	waitLog(t, d, "client blocked", 1)
	if session(blocking) == nil {
		t.Fatal("a blocked client was served")
	}
	// The HTTPS listener refuses it too (a fresh client: no connection
	// to reuse).
	if resp, err := clientFor(addr, roots).Get("https://a.localhost/"); err == nil {
		resp.Body.Close()
		t.Error("a blocked client was served on the HTTPS listener")
	}
	resp, err := http.Get("http://" + adminAddr + "/blocks")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Blocks []struct{ Client, Listener, Reason string }
	}
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if len(body.Blocks) != 1 || body.Blocks[0].Client != "127.0.0.1" || body.Blocks[0].Reason != "tls" ||
		!strings.HasSuffix(body.Blocks[0].Listener, strconv.Itoa(blocking)) {
		t.Fatalf("GET /blocks = %+v", body)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+adminAddr+"/blocks?client=127.0.0.1", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE /blocks: %d", resp.StatusCode)
	}
	if err := session(blocking); err != nil {
		t.Fatalf("after the lift: %v", err)
	}
	resp, err = http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`leproxy_client_blocks_total{reason="tls"} 1`, `leproxy_client_limited_total{kind="rate",what="request"}`,
		`leproxy_client_limited_total{kind="rate",what="connection"}`, `leproxy_client_limited_total{kind="blocked",what="connection"}`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
