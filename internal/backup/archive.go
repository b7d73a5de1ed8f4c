package backup

import (
	"archive/tar"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// reservedPrefix starts the names that leproxy gives its own temporary
// files and directories at the top of the cache directory (write checks,
// restore staging). They are never archived.
const reservedPrefix = ".leproxy-"

// archiveDir returns the tar stream of every directory and regular file
// under dir, with paths relative to dir and permission bits kept.
func archiveDir(dir string) ([]byte, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("backup: cache directory: %w", err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("backup: cache directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("backup: cache directory %s is not a directory", dir)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking (a temporary file)
			}
			return fmt.Errorf("backup: reading %s: %w", p, err)
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("backup: %s: %w", p, err)
		}
		name := filepath.ToSlash(rel)
		if !strings.Contains(name, "/") && strings.HasPrefix(name, reservedPrefix) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("backup: reading %s: %w", p, err)
			}
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir,
				Name:     name + "/",
				Mode:     int64(info.Mode().Perm()),
			})
		case d.Type().IsRegular():
			return addFile(tw, &buf, p, name)
		default:
			return fmt.Errorf("%w: %s is a %s; only regular files and directories are backed up, move it out of the cache directory",
				ErrUnsupportedFile, p, fileKind(d.Type()))
		}
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: writing archive: %w", err)
	}
	if buf.Len() > MaxSize {
		return nil, fmt.Errorf("%w: cache directory %s", ErrTooLarge, dir)
	}
	return buf.Bytes(), nil
}

// addFile appends the regular file p to tw as name, refusing to let the
// archive in buf grow beyond MaxSize.
func addFile(tw *tar.Writer, buf *bytes.Buffer, p, name string) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed while walking (a temporary file)
	}
	if err != nil {
		return fmt.Errorf("backup: reading %s: %w", p, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backup: reading %s: %w", p, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is a %s", ErrUnsupportedFile, p, fileKind(info.Mode().Type()))
	}
	if int64(buf.Len())+info.Size() > MaxSize {
		return fmt.Errorf("%w: cache directory reached it at %s", ErrTooLarge, p)
	}
	err = tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(info.Mode().Perm()),
		Size:     info.Size(),
	})
	if err != nil {
		return fmt.Errorf("backup: archiving %s: %w", p, err)
	}
	// The file was opened before its size was taken; if it changes size
	// now, CopyN or the tar writer reports it.
	if _, err := io.CopyN(tw, f, info.Size()); err != nil {
		return fmt.Errorf("backup: archiving %s: %w", p, err)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return "special file"
	}
}

// entry is one checked archive entry.
type entry struct {
	name string // cleaned, slash-separated, relative
	dir  bool
	mode fs.FileMode
}

// checkArchive parses the whole tar stream and refuses anything that is
// not a regular file or directory with a clean relative path, duplicates,
// a file used as a directory, and malformed streams. It returns the
// entries in order.
func checkArchive(data []byte) ([]entry, error) {
	if len(data) > MaxSize {
		return nil, ErrTooLarge
	}
	var entries []entry
	kinds := make(map[string]bool)    // entry name → is a directory
	implicit := make(map[string]bool) // every parent directory of an entry
	var total int64                   // bytes of content
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		e, err := checkEntry(h)
		if err != nil {
			return nil, err
		}
		if _, dup := kinds[e.name]; dup {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrInvalidArchive, e.name)
		}
		if !e.dir && implicit[e.name] {
			return nil, fmt.Errorf("%w: file %q is also a directory", ErrInvalidArchive, e.name)
		}
		// A parent already seen was checked with its own parents then.
		for p := path.Dir(e.name); p != "." && !implicit[p]; p = path.Dir(p) {
			if isDir, ok := kinds[p]; ok && !isDir {
				return nil, fmt.Errorf("%w: entry %q is inside file %q", ErrInvalidArchive, e.name, p)
			}
			implicit[p] = true
		}
		// Read the content so that a short stream is an error here and
		// not halfway through extraction.
		if total += h.Size; total > MaxSize {
			return nil, fmt.Errorf("%w: entries add up to more", ErrTooLarge)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, fmt.Errorf("%w: entry %q: %w", ErrInvalidArchive, e.name, err)
		}
		kinds[e.name] = e.dir
		entries = append(entries, e)
	}
	return entries, nil
}

// checkEntry checks one tar header.
func checkEntry(h *tar.Header) (entry, error) {
	name := h.Name
	var e entry
	switch h.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		e.dir = true
		name = strings.TrimSuffix(name, "/")
	case tar.TypeSymlink, tar.TypeLink:
		return e, fmt.Errorf("%w: entry %q is a link", ErrInvalidArchive, h.Name)
	default:
		return e, fmt.Errorf("%w: entry %q has type %q; only regular files and directories are restored", ErrInvalidArchive, h.Name, h.Typeflag)
	}
	switch {
	case name == "" || name == "." || strings.ContainsRune(name, 0):
		return e, fmt.Errorf("%w: entry %q has an invalid name", ErrInvalidArchive, h.Name)
	case path.IsAbs(name) || !filepath.IsLocal(filepath.FromSlash(name)) || path.Clean(name) != name:
		return e, fmt.Errorf("%w: entry %q is not a clean path inside the cache directory", ErrInvalidArchive, h.Name)
	case !strings.Contains(name, "/") && strings.HasPrefix(name, reservedPrefix):
		return e, fmt.Errorf("%w: entry %q uses a name reserved for leproxy's temporary files", ErrInvalidArchive, h.Name)
	case h.Size < 0 || (e.dir && h.Size != 0):
		return e, fmt.Errorf("%w: entry %q has an invalid size %d", ErrInvalidArchive, h.Name, h.Size)
	case isSparse(h):
		return e, fmt.Errorf("%w: entry %q is a sparse file", ErrInvalidArchive, h.Name)
	case h.Size > MaxSize:
		return e, fmt.Errorf("%w: entry %q has size %d", ErrTooLarge, h.Name, h.Size)
	case h.Mode&^0o7777 != 0:
		return e, fmt.Errorf("%w: entry %q has an invalid mode %#o", ErrInvalidArchive, h.Name, h.Mode)
	}
	e.name = name
	e.mode = fs.FileMode(h.Mode).Perm()
	if e.dir {
		e.mode |= 0o700 // leproxy must be able to use its own directories
	}
	return e, nil
}

// isSparse reports whether h is a PAX sparse file, whose Size is its
// logical size, holes included: reading it could produce far more bytes
// than the archive holds.
func isSparse(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// extract writes the entries of the checked tar stream data under dir,
// which exists and is empty. Files are created with their mode, owned by
// owner when it is not nil, and synced; so is every directory.
func extract(data []byte, entries []entry, dir string, owner *fileOwner) error {
	tr := tar.NewReader(bytes.NewReader(data))
	dirs := map[string]fs.FileMode{".": 0o700}
	mkdir := func(name string) error {
		for p := name; p != "."; p = path.Dir(p) {
			if _, ok := dirs[p]; ok {
				break
			}
			dirs[p] = 0o700
		}
		return os.MkdirAll(filepath.Join(dir, filepath.FromSlash(name)), 0o700)
	}
	for _, e := range entries {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("backup: extracting: %w", err) // checked before: cannot happen
		}
		if e.dir {
			if err := mkdir(e.name); err != nil {
				return fmt.Errorf("backup: extracting %s: %w", e.name, err)
			}
			dirs[e.name] = e.mode
			continue
		}
		if err := mkdir(path.Dir(e.name)); err != nil {
			return fmt.Errorf("backup: extracting %s: %w", e.name, err)
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(e.name)), tr, h.Size, e.mode, owner); err != nil {
			return fmt.Errorf("backup: extracting %s: %w", e.name, err)
		}
	}
	// Deepest first, so that a parent is synced after its children exist.
	names := make([]string, 0, len(dirs))
	for name := range dirs {
		names = append(names, name)
	}
	sortDeepestFirst(names)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.Chmod(p, dirs[name]); err != nil {
			return fmt.Errorf("backup: extracting %s: %w", name, err)
		}
		if err := owner.chown(p); err != nil {
			return fmt.Errorf("backup: extracting %s: %w", name, err)
		}
		if err := syncDir(p); err != nil {
			return fmt.Errorf("backup: extracting %s: %w", name, err)
		}
	}
	return nil
}

// writeFile creates the new file p with size bytes from r and mode, and
// syncs it.
func writeFile(p string, r io.Reader, size int64, mode fs.FileMode, owner *fileOwner) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, r, size)
	if err == nil {
		err = f.Chmod(mode) // OpenFile's mode is subject to the umask
	}
	if err == nil {
		err = owner.fchown(f)
	}
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sortDeepestFirst sorts slash-separated names so that every name comes
// before its parent directories.
func sortDeepestFirst(names []string) {
	depth := func(s string) int {
		if s == "." {
			return -1
		}
		return strings.Count(s, "/")
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(depth(b), depth(a)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}

// syncFile is fsync(2); fuzz tests turn it off, as it costs milliseconds.
var syncFile = (*os.File).Sync

// syncDir fsyncs the directory p, making its entries durable.
func syncDir(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	err = syncFile(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
