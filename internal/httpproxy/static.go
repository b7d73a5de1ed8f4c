package httpproxy

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// staticRoute serves a host's files from a directory with http.FileServer,
// through staticFS. Only GET and HEAD are served; other methods get 405.
type staticRoute struct {
	files http.Handler
	hsts  bool
}

// newStaticRoute returns the route serving dir, which must be a directory.
func newStaticRoute(dir string, hsts bool) (*staticRoute, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("opening static directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("opening static directory: %s is not a directory", dir)
	}
	return &staticRoute{files: http.FileServer(staticFS{dir: dir}), hsts: hsts}, nil
}

func (s *staticRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.hsts && r.TLS != nil {
		w.Header().Set("Strict-Transport-Security", hstsValue)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.files.ServeHTTP(w, r)
}

// staticFS is the http.FileSystem of a static host's directory. It
//   - never leaves the directory: names are opened through os.Root, so
//     neither ".." nor a symbolic link pointing outside reaches a file,
//     even if a link is swapped while the request runs;
//   - hides every name with a path element starting with a dot (.git,
//     .env, .htpasswd) except .well-known, both in the requested name and
//     in the target its symbolic links resolve to (env.txt → .env, or a
//     linked directory conf → .git, is hidden too);
//   - serves a directory only if it holds a regular index.html, so
//     http.FileServer serves that file and never lists a directory;
//   - serves nothing but regular files and directories (no FIFOs, devices
//     or sockets).
//
// The directory is opened anew on every Open, so a Handler holds no file
// descriptor of it and the directory may be replaced while leproxy runs.
// Names it refuses look like missing files: 404.
type staticFS struct{ dir string }

var _ http.FileSystem = staticFS{}

// errNoListing is returned by a directory's Readdir; FileServer only asks
// for it if a directory's index.html vanished after Open checked it.
var errNoListing = errors.New("directory listing disabled")

func (s staticFS) Open(name string) (http.File, error) {
	rel := strings.TrimPrefix(path.Clean("/"+name), "/")
	if rel == "" {
		rel = "."
	}
	if hiddenPath(rel) {
		return nil, fs.ErrNotExist
	}
	if !s.resolvedVisible(rel) {
		return nil, fs.ErrNotExist
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, notExist(err)
	}
	defer root.Close()
	// O_NONBLOCK keeps a FIFO from blocking the open; the type is checked
	// on the open descriptor, so a swap after a Stat cannot slip through.
	f, err := root.OpenFile(filepath.FromSlash(rel), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, notExist(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, notExist(err)
	}
	switch {
	case fi.Mode().IsRegular():
		return f, nil
	case fi.IsDir():
		idxRel := path.Join(rel, "index.html")
		idx, err := root.Stat(filepath.FromSlash(idxRel))
		if err != nil || !idx.Mode().IsRegular() || !s.resolvedVisible(idxRel) {
			f.Close()
			return nil, fs.ErrNotExist
		}
		return dirFile{f}, nil
	}
	f.Close()
	return nil, fs.ErrNotExist
}

// resolvedVisible reports whether the slash-separated relative name rel,
// with every symbolic link on its way resolved, names something inside
// the (equally resolved) directory whose path below it has no hidden
// element. A name that does not resolve is not visible.
//
// os.Root alone would keep links from leaving the directory, but follows
// a link to a dot-file inside it; this check covers that, and os.Root
// still guards the open itself against a link swapped after the check.
func (s staticFS) resolvedVisible(rel string) bool {
	root, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return false
	}
	target, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return false
	}
	inside, err := filepath.Rel(root, target)
	if err != nil || !filepath.IsLocal(inside) {
		return false
	}
	return !hiddenPath(filepath.ToSlash(inside))
}

// notExist maps every open failure except a permission error to
// fs.ErrNotExist, so that http.FileServer answers 404 (or 403) and never
// shows the underlying error.
func notExist(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fs.ErrPermission
	}
	return fs.ErrNotExist
}

// hiddenPath reports whether a slash-separated relative path has an element
// starting with a dot, other than ".well-known" and the root ".".
func hiddenPath(rel string) bool {
	if rel == "." {
		return false
	}
	for elem := range strings.SplitSeq(rel, "/") {
		if strings.HasPrefix(elem, ".") && elem != ".well-known" {
			return true
		}
	}
	return false
}

// dirFile is an open directory that refuses to list its entries.
type dirFile struct{ *os.File }

func (dirFile) Readdir(int) ([]fs.FileInfo, error) { return nil, errNoListing }

func (dirFile) ReadDir(int) ([]fs.DirEntry, error) { return nil, errNoListing }
