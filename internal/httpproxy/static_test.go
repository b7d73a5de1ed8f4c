package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/leproxy/leproxy/internal/config"
)

// writeFile writes content to dir/name, creating directories, and returns
// the file's path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStatic(t *testing.T) {
	outside := t.TempDir()
	secret := writeFile(t, outside, "secret.txt", "secret")
	dir := t.TempDir()
	writeFile(t, dir, "index.html", "<p>root</p>")
	writeFile(t, dir, "style.css", "body{}")
	writeFile(t, dir, "nolist/file.txt", "in nolist")
	writeFile(t, dir, "nolist/deeper/other.txt", "deeper")
	writeFile(t, dir, "site/index.html", "<p>site</p>")
	writeFile(t, dir, ".env", "PASSWORD=x")
	writeFile(t, dir, ".git/config", "[core]")
	writeFile(t, dir, "sub/.htpasswd", "user:hash")
	writeFile(t, dir, ".well-known/security.txt", "Contact: x")
	if err := os.Symlink(secret, filepath.Join(dir, "escape.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escapedir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("style.css", filepath.Join(dir, "alias.css")); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"env.txt":         ".env",                     // link to a dot-file
		"gitconf":         ".git",                     // linked dot-directory
		"wk":              ".well-known",              // linked .well-known: allowed
		"linkeddir":       "nolist",                   // linked directory inside
		"up":              "..",                       // linked directory escaping
		"leak/index.html": "../.env",                  // index.html that is a dot-file
		"sub/deep.env":    "../sub/../.git/config",    // relative link into .git
		"abs.txt":         filepath.Join(dir, ".env"), // absolute link to a dot-file
	} {
		p := filepath.Join(dir, filepath.FromSlash(link))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "noindex"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dirindex"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dirindex", "index.html"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	host := config.Host{Name: "static.example.test", Backend: config.Backend{Kind: config.BackendStatic, Raw: dir + "/", Dir: dir + "/"}}
	h := mustNew(t, []config.Host{host}, Options{})

	for _, tc := range []struct {
		method       string
		target       string
		wantStatus   int
		wantBody     string // prefix; checked for 200 only
		wantLocation string
	}{
		{"GET", "/", 200, "<p>root</p>", ""},
		{"HEAD", "/", 200, "", ""},
		{"GET", "/style.css", 200, "body{}", ""},
		{"GET", "/alias.css", 200, "body{}", ""},
		{"GET", "/index.html", http.StatusMovedPermanently, "", "./"},
		{"GET", "/site/", 200, "<p>site</p>", ""},
		{"GET", "/site", http.StatusMovedPermanently, "", "site/"},
		{"GET", "/nolist/file.txt", 200, "in nolist", ""},
		{"GET", "/nolist/", 404, "", ""},
		{"GET", "/nolist", 404, "", ""},
		{"GET", "/nolist/deeper/", 404, "", ""},
		{"GET", "/noindex/", 404, "", ""},
		{"GET", "/dirindex/", 404, "", ""},
		{"GET", "/missing.txt", 404, "", ""},
		{"GET", "/.env", 404, "", ""},
		{"GET", "/.git/config", 404, "", ""},
		{"GET", "/.git/", 404, "", ""},
		{"GET", "/sub/.htpasswd", 404, "", ""},
		{"GET", "/.well-known/security.txt", 200, "Contact: x", ""},
		{"GET", "/escape.txt", 404, "", ""},
		{"GET", "/escapedir/secret.txt", 404, "", ""},
		{"GET", "/../" + filepath.Base(outside) + "/secret.txt", 404, "", ""},
		{"GET", "/fifo", 404, "", ""},
		{"GET", "/env.txt", 404, "", ""},
		{"GET", "/abs.txt", 404, "", ""},
		{"GET", "/gitconf/config", 404, "", ""},
		{"GET", "/sub/deep.env", 404, "", ""},
		{"GET", "/leak/", 404, "", ""},
		{"GET", "/up/" + filepath.Base(outside) + "/secret.txt", 404, "", ""},
		{"GET", "/up/" + filepath.Base(dir) + "/style.css", 404, "", ""},
		{"GET", "/wk/security.txt", 200, "Contact: x", ""},
		{"GET", "/linkeddir/file.txt", 200, "in nolist", ""},
		{"POST", "/style.css", http.StatusMethodNotAllowed, "", ""},
		{"DELETE", "/", http.StatusMethodNotAllowed, "", ""},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "https://static.example.test"+tc.target, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("got status %d, want %d (body %q)", rec.Code, tc.wantStatus, rec.Body.String())
			}
			body := rec.Body.String()
			switch {
			case tc.wantStatus == 200 && !strings.HasPrefix(body, tc.wantBody):
				t.Errorf("got body %q, want it to start with %q", body, tc.wantBody)
			case tc.wantStatus != 200 && (strings.Contains(body, "<a href") || strings.Contains(body, "file.txt")):
				t.Errorf("got body %q, want no directory listing", body)
			}
			if got := rec.Header().Get("Location"); got != tc.wantLocation {
				t.Errorf("got Location %q, want %q", got, tc.wantLocation)
			}
			if tc.wantStatus == http.StatusMethodNotAllowed {
				if got := rec.Header().Get("Allow"); got != "GET, HEAD" {
					t.Errorf("got Allow %q, want %q", got, "GET, HEAD")
				}
			}
		})
	}
}

func TestStaticFSNoListing(t *testing.T) {
	// Even if an index.html disappears between Open's check and
	// FileServer's use of the directory, the directory cannot be listed.
	dir := t.TempDir()
	writeFile(t, dir, "index.html", "x")
	f, err := staticFS{dir: dir}.Open("/")
	if err != nil {
		t.Fatalf("Open(/): %v", err)
	}
	defer f.Close()
	if list, err := f.Readdir(-1); err == nil {
		t.Errorf("Readdir: got %d entries, want an error", len(list))
	}
	if rd, ok := f.(interface {
		ReadDir(int) ([]os.DirEntry, error)
	}); ok {
		if list, err := rd.ReadDir(-1); err == nil {
			t.Errorf("ReadDir: got %d entries, want an error", len(list))
		}
	}
}

func TestStaticSymlinkedRoot(t *testing.T) {
	// The root itself may be a symbolic link (a release directory swapped
	// by a "current" link): targets are compared with the resolved root.
	real := t.TempDir()
	writeFile(t, real, "index.html", "<p>root</p>")
	writeFile(t, real, ".env", "PASSWORD=x")
	if err := os.Symlink(".env", filepath.Join(real, "env.txt")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	host := config.Host{Name: "static.example.test", Backend: config.Backend{Kind: config.BackendStatic, Raw: link, Dir: link}}
	h := mustNew(t, []config.Host{host}, Options{})
	for target, want := range map[string]int{"/": 200, "/env.txt": 404, "/.env": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "https://static.example.test"+target, nil))
		if rec.Code != want {
			t.Errorf("GET %s: got status %d, want %d (body %q)", target, rec.Code, want, rec.Body.String())
		}
	}
}
