package config

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBackend(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	tests := []struct {
		raw  string
		kind BackendKind
		addr string // Addr, Dir or URL as a string
	}{
		{"127.0.0.1:8080", BackendTCP, "127.0.0.1:8080"},
		{":8080", BackendTCP, ":8080"},
		{"localhost:1", BackendTCP, "localhost:1"},
		{"[::1]:65535", BackendTCP, "[::1]:65535"},
		{"http://10.0.0.2:3000/v1", BackendURL, "http://10.0.0.2:3000/v1"},
		{"https://backend.example.com", BackendURL, "https://backend.example.com"},
		{"HTTPS://[::1]:8443/a/b/", BackendURL, "https://[::1]:8443/a/b/"},
		{dir + "/", BackendStatic, dir + "/"},
		{dir + "//", BackendStatic, dir + "/"},
		{"/", BackendStatic, "/"},
		{dir + "/app.sock", BackendUnix, dir + "/app.sock"},
		{sock, BackendUnix, sock},
		{"@uwsgi", BackendAbstract, "@uwsgi"},
	}
	for _, tt := range tests {
		b, err := parseBackend(tt.raw)
		if err != nil {
			t.Errorf("parseBackend(%q): %v", tt.raw, err)
			continue
		}
		var got string
		switch b.Kind {
		case BackendURL:
			got = b.URL.String()
		case BackendStatic:
			got = b.Dir
		default:
			got = b.Addr
		}
		if b.Kind != tt.kind || got != tt.addr || b.Raw != tt.raw {
			t.Errorf("parseBackend(%q): got %v %q raw %q, want %v %q", tt.raw, b.Kind, got, b.Raw, tt.kind, tt.addr)
		}
	}

	bad := []struct{ raw, err string }{
		{"", "empty backend"},
		{"127.0.0.1", "missing port"},
		{"127.0.0.1:", "empty port"},
		{"127.0.0.1:x", `port "x" is not a number`},
		{"127.0.0.1:+80", `port "+80" is not a number`},
		{"127.0.0.1:65536", "out of range"},
		{"::1:80", "too many colons"},
		{"a b:80", "invalid host"},
		{"host:80/path", "is not a number"},
		{"unix:///run/x.sock", `unsupported scheme "unix"`},
		{"http://x/?q", "query"},
		{"http://x/?", "query"},
		{"http://x/#", "fragment"},
		{"http://u@x/", "user info"},
		{"http://", "no host"},
		{"http://x:0/", "out of range"},
		{"http://x:/", "empty port"},
		{"http://a b/", "invalid URL"},
		{"www/", "relative path"},
		{"../app.sock", "relative path"},
		{"@", "name is empty"},
		{"@" + strings.Repeat("x", maxSocketPath), "longer than"},
		{dir + "/missing/", "static directory " + dir + "/missing/ does not exist"},
		{file + "/", "is not a directory"},
		{dir + "/missing/app.sock", "directory " + dir + "/missing of the unix socket does not exist"},
		{file + "/app.sock", "is not a directory"},
		{dir, "is a directory; end it with a slash"},
		{file, "exists and is not a unix socket"},
		{"/" + strings.Repeat("s", maxSocketPath), "longer than"},
	}
	for _, tt := range bad {
		_, err := parseBackend(tt.raw)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("parseBackend(%q): got %v, want an error containing %q", tt.raw, err, tt.err)
		}
	}

	_, err = parseBackend(dir + "/missing/")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing static dir: got %v, want errors.Is fs.ErrNotExist", err)
	}
}

func TestBackendKindString(t *testing.T) {
	want := map[BackendKind]string{
		BackendTCP: "tcp", BackendURL: "url", BackendUnix: "unix",
		BackendAbstract: "abstract", BackendStatic: "static", 0: "BackendKind(0)",
	}
	for k, w := range want {
		if got := k.String(); got != w {
			t.Errorf("BackendKind(%d).String() = %q, want %q", int(k), got, w)
		}
	}
}

func TestCheckRouteBackend(t *testing.T) {
	for _, ok := range []string{"10.0.0.5:5432", "db.internal:5432", "[fd00::1]:5432", ":5432"} {
		if err := checkRouteBackend(ok); err != nil {
			t.Errorf("checkRouteBackend(%q): got %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "http://x:1", "/run/pg.sock", "@pg", "10.0.0.5", "10.0.0.5:0"} {
		if err := checkRouteBackend(bad); err == nil {
			t.Errorf("checkRouteBackend(%q): got nil, want an error", bad)
		}
	}
}
