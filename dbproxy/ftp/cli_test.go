package ftp_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/testenv"
)

// run runs a CLI client with a deadline and returns its output; it fails
// the test when the client fails and wantOK is set.
func run(t *testing.T, wantOK bool, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*deadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput() // #nosec G204 -- the test's own client and arguments
	if err != nil && wantOK {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), err
}

// TestLftp drives lftp through leproxy, verifying leproxy's certificate
// (ssl:verify-certificate yes, the route's name), to a plaintext vsftpd:
// explicit and implicit TLS, EPSV and PASV, a listing, a 20 MB upload and
// download intact.
func TestLftp(t *testing.T) {
	lftp := testenv.LookBinary(t, "lftp", "lftp")
	for _, tc := range []struct {
		name, proto, url string
		epsv             bool
	}{
		{"explicit/EPSV", "ftp", "ftp://localhost:%s", true},
		{"explicit/PASV", "ftp", "ftp://localhost:%s", false},
		{"implicit/EPSV", "ftps", "ftps://localhost:%s", true},
		{"implicit/PASV", "ftps", "ftps://localhost:%s", false},
		{"explicit/EPSV/TLS12", "ftp", "ftp://localhost:%s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			priority := "NORMAL"
			if strings.HasSuffix(tc.name, "TLS12") {
				// GnuTLS resumes TLS 1.2 by session ticket.
				priority = "NORMAL:-VERS-TLS1.3"
			}
			// lftp resolves the name itself: localhost is the one name
			// that resolves here without /etc/hosts entries.
			f := start(t, fixtureOptions{proto: tc.proto, mod: func(c *dbproxy.Config) {
				c.Routes[0].Host, c.Default = "localhost", "localhost"
			}})
			dir := t.TempDir()
			up, down := randomData(bigSize, 6), randomData(bigSize, 7)
			upFile := filepath.Join(dir, "up.bin")
			if err := os.WriteFile(upFile, up, 0o600); err != nil {
				t.Fatal(err)
			}
			f.putFile(t, "down.bin", down)
			got := filepath.Join(dir, "got.bin")
			script := strings.Join([]string{
				"set cmd:fail-exit yes",
				"set net:max-retries 1", "set net:timeout 10", "set dns:order inet",
				"set ssl:verify-certificate yes", "set ssl:ca-file " + f.writeCA(t), "set ssl:priority " + priority,
				"set ftp:ssl-force yes", "set ftp:ssl-protect-data yes", "set ftp:ssl-protect-list yes",
				"set ftp:passive-mode yes", "set ftp:prefer-epsv " + map[bool]string{true: "yes", false: "no"}[tc.epsv],
				"open -u anonymous,x " + strings.Replace(tc.url, "%s", f.port(), 1),
				"cd pub",
				"put " + upFile + " -o up.bin",
				"get down.bin -o " + got,
				"cls -l",
			}, "; ")
			out, _ := run(t, true, lftp, "-c", script)
			wantFile(t, filepath.Join(f.v.Pub, "up.bin"), up)
			wantFile(t, got, down)
			if !strings.Contains(out, "down.bin") || !strings.Contains(out, "up.bin") {
				t.Errorf("listing: got %q, want down.bin and up.bin", out)
			}
		})
	}
}

// TestCurl drives curl --ssl-reqd (TLS 1.3, which resumes) through leproxy:
// explicit and implicit TLS, EPSV and PASV, a 20 MB upload and download
// intact and a listing.
func TestCurl(t *testing.T) {
	curl := testenv.LookBinary(t, "curl", "curl")
	for _, tc := range []struct {
		name, proto, scheme string
		extra               []string
	}{
		{"explicit/EPSV", "ftp", "ftp", nil},
		{"explicit/PASV", "ftp", "ftp", []string{"--disable-epsv"}},
		{"implicit/EPSV", "ftps", "ftps", nil},
		{"implicit/PASV", "ftps", "ftps", []string{"--disable-epsv"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, fixtureOptions{proto: tc.proto})
			dir := t.TempDir()
			up, down := randomData(bigSize, 8), randomData(bigSize, 9)
			upFile := filepath.Join(dir, "up.bin")
			if err := os.WriteFile(upFile, up, 0o600); err != nil {
				t.Fatal(err)
			}
			f.putFile(t, "down.bin", down)
			base := tc.scheme + "://" + host + ":" + f.port() + "/pub/"
			common := append([]string{"-sS", "--ssl-reqd", "--cacert", f.writeCA(t),
				"--resolve", host + ":" + f.port() + ":127.0.0.1", "--max-time", "40"}, tc.extra...)
			run(t, true, curl, append(common, "-T", upFile, base+"up.bin")...)
			wantFile(t, filepath.Join(f.v.Pub, "up.bin"), up)
			got := filepath.Join(dir, "got.bin")
			run(t, true, curl, append(common, "-o", got, base+"down.bin")...)
			wantFile(t, got, down)
			out, _ := run(t, true, curl, append(common, "-l", base)...)
			if !strings.Contains(out, "down.bin") || !strings.Contains(out, "up.bin") {
				t.Errorf("listing: got %q, want down.bin and up.bin", out)
			}
		})
	}
}

// TestCurlTLS12 shows the README's caveat: curl with OpenSSL turns session
// tickets off, so in TLS 1.2 its data connections cannot resume; leproxy
// refuses them (522; curl fails) by default and lets them through with
// passive_resumption: prefer.
func TestCurlTLS12(t *testing.T) {
	curl := testenv.LookBinary(t, "curl", "curl")
	for _, prefer := range []bool{false, true} {
		name := map[bool]string{false: "require", true: "prefer"}[prefer]
		t.Run(name, func(t *testing.T) {
			f := start(t, fixtureOptions{mod: func(c *dbproxy.Config) { c.Options["passive_resumption"] = name }})
			f.putFile(t, "down.bin", []byte("hello\n"))
			out, err := run(t, prefer, curl, "-sS", "--ssl-reqd", "--tls-max", "1.2", "--cacert", f.writeCA(t),
				"--resolve", host+":"+f.port()+":127.0.0.1", "--max-time", "40",
				"ftp://"+host+":"+f.port()+"/pub/down.bin")
			switch {
			case prefer && out != "hello\n":
				t.Errorf("with prefer: got %q, want the file", out)
			case !prefer && (err == nil || strings.Contains(out, "hello")):
				// curl reports "(18) transfer closed": leproxy closed the
				// data connection and answered 522.
				t.Errorf("with require: curl got %q, %v; want the data connection refused", out, err)
			}
		})
	}
}
