package backup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Restore reads an archive from r and replaces the cache directory
// cacheDir with its contents.
//
// Everything is checked before anything is written: the age header and
// its MAC, every payload chunk up to the final one (or, for a version 1
// archive, its header, length and tag), and every tar entry. The contents are
// then extracted into a new directory next to cacheDir (so on the same
// file system), synced to disk, and swapped with cacheDir in one
// rename(2) where the kernel supports RENAME_EXCHANGE, or else by renaming
// the old directory aside and the new one into place (moving the old one
// back if the second rename fails). The old cache is removed only after
// the new one is in place. A missing cacheDir is created. A symbolic link
// at cacheDir is followed and kept. The cache directory gets mode 0700;
// files and subdirectories keep their archived modes.
//
// When cacheDir is a mount point (a container volume) it cannot be
// renamed: Restore then extracts into a directory inside it, moves the old
// entries into another one and the new entries into place, and moves
// everything back on an error. Only a crash during those renames can
// leave a mixed cache; both halves are then in the .leproxy-* directories.
//
// When run as root over an existing cache directory, the restored files
// and directories take its owner and group, so that the service user keeps
// access. A running leproxy keeps serving the certificates it has loaded:
// stop it before restoring and start it afterwards.
//
// On any error before the swap, cacheDir is unchanged.
func Restore(r io.Reader, cacheDir string, key *Key) error {
	plaintext, err := open(r, key)
	if err != nil {
		return err
	}
	entries, err := checkArchive(plaintext)
	if err != nil {
		return err
	}
	return install(plaintext, entries, cacheDir)
}

// RestoreFile is Restore reading the archive from the file at path.
func RestoreFile(path, cacheDir string, key *Key) error {
	if key.empty() {
		return ErrNoPassphrase
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("backup: opening archive: %w", err)
	}
	defer f.Close()
	return Restore(f, cacheDir, key)
}

// Test seams.
var (
	rename       = os.Rename
	exchange     = exchangeDirs
	isMountPoint = mountPoint
)

// errCannotSwap means the cache directory cannot be replaced by renaming:
// it is a mount point, or its parent is not writable.
var errCannotSwap = errors.New("cache directory cannot be renamed")

// errExchangeUnsupported means the system cannot exchange two paths
// atomically.
var errExchangeUnsupported = errors.New("exchanging directories is not supported")

// install writes the checked archive into cacheDir.
func install(data []byte, entries []entry, cacheDir string) error {
	target, err := filepath.Abs(cacheDir)
	if err != nil {
		return fmt.Errorf("backup: cache directory: %w", err)
	}
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return installNew(data, entries, target)
	}
	if err != nil {
		return fmt.Errorf("backup: cache directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if target, err = filepath.EvalSymlinks(target); err != nil {
			return fmt.Errorf("backup: cache directory: %w", err)
		}
		if fi, err = os.Stat(target); err != nil {
			return fmt.Errorf("backup: cache directory: %w", err)
		}
	}
	if !fi.IsDir() {
		return fmt.Errorf("backup: cache directory %s is not a directory", cacheDir)
	}
	if filepath.Dir(target) == target {
		return fmt.Errorf("backup: cannot restore into the root directory")
	}
	owner := ownerFor(fi)
	mount, err := isMountPoint(target)
	if err != nil {
		return fmt.Errorf("backup: cache directory: %w", err)
	}
	if !mount {
		err := installSwap(data, entries, target, owner)
		if !errors.Is(err, errCannotSwap) {
			return err
		}
	}
	return installInPlace(data, entries, target, owner)
}

// installNew creates the missing directory target from the archive.
func installNew(data []byte, entries []entry, target string) error {
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("backup: creating cache directory: %w", err)
	}
	staging, err := os.MkdirTemp(parent, "."+filepath.Base(target)+".restore-*")
	if err != nil {
		return fmt.Errorf("backup: creating cache directory: %w", err)
	}
	if err := extract(data, entries, staging, nil); err != nil {
		os.RemoveAll(staging)
		return err
	}
	if err := rename(staging, target); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("backup: creating cache directory: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("backup: restored, but syncing %s: %w", parent, err)
	}
	return nil
}

// installSwap extracts next to target and swaps the result in. It returns
// an error wrapping errCannotSwap, with target unchanged, when renaming
// is not possible there.
func installSwap(data []byte, entries []entry, target string, owner *fileOwner) error {
	parent, base := filepath.Dir(target), filepath.Base(target)
	staging, err := os.MkdirTemp(parent, "."+base+".restore-*")
	if errors.Is(err, fs.ErrPermission) || isReadOnly(err) {
		return fmt.Errorf("%w: %w", errCannotSwap, err)
	}
	if err != nil {
		return fmt.Errorf("backup: creating restore directory: %w", err)
	}
	removeStaging := true
	defer func() {
		if removeStaging {
			os.RemoveAll(staging)
		}
	}()
	if err := extract(data, entries, staging, owner); err != nil {
		return err
	}

	old := staging // where the old cache ends up
	err = exchange(staging, target)
	switch {
	case err == nil:
	case isCrossDevice(err):
		return fmt.Errorf("%w: %w", errCannotSwap, err)
	case errors.Is(err, errExchangeUnsupported):
		if old, err = swapByRenames(staging, target); err != nil {
			return err
		}
	default:
		return fmt.Errorf("backup: replacing cache directory: %w", err)
	}
	removeStaging = false
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("backup: restored, but syncing %s: %w", parent, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("backup: restored, but removing the previous cache in %s: %w", old, err)
	}
	return nil
}

// swapByRenames renames target aside and staging to target, and returns
// where the old target went. On an error target is as before.
func swapByRenames(staging, target string) (string, error) {
	aside, err := os.MkdirTemp(filepath.Dir(target), "."+filepath.Base(target)+".old-*")
	if err != nil {
		return "", fmt.Errorf("backup: replacing cache directory: %w", err)
	}
	if err := os.Remove(aside); err != nil { // reserved the name; rename needs it free
		return "", fmt.Errorf("backup: replacing cache directory: %w", err)
	}
	if err := rename(target, aside); err != nil {
		if isCrossDevice(err) {
			return "", fmt.Errorf("%w: %w", errCannotSwap, err)
		}
		return "", fmt.Errorf("backup: moving the old cache aside: %w", err)
	}
	if err := rename(staging, target); err != nil {
		if rerr := rename(aside, target); rerr != nil {
			return "", fmt.Errorf("backup: moving the restored cache into place: %w; the old cache could not be moved back (%v) and is in %s", err, rerr, aside)
		}
		return "", fmt.Errorf("backup: moving the restored cache into place: %w", err)
	}
	return aside, nil
}

// installInPlace replaces the entries of target, a directory that cannot
// be renamed, with the archive's.
func installInPlace(data []byte, entries []entry, target string, owner *fileOwner) error {
	staging, err := os.MkdirTemp(target, reservedPrefix+"restore-*")
	if err != nil {
		return fmt.Errorf("backup: creating restore directory: %w", err)
	}
	keepStaging := false
	defer func() {
		if !keepStaging {
			os.RemoveAll(staging)
		}
	}()
	if err := extract(data, entries, staging, owner); err != nil {
		return err
	}
	old, err := os.MkdirTemp(target, reservedPrefix+"old-*")
	if err != nil {
		return fmt.Errorf("backup: creating restore directory: %w", err)
	}
	oldNames, err := listEntries(target)
	if err != nil {
		os.Remove(old)
		return err
	}
	newNames, err := listEntries(staging)
	if err != nil {
		os.Remove(old)
		return err
	}
	// moves records every rename done, to be undone in reverse on error.
	type move struct{ from, to string }
	var moves []move
	undo := func(cause error) error {
		var failed []string
		for i := len(moves) - 1; i >= 0; i-- {
			if err := rename(moves[i].to, moves[i].from); err != nil {
				failed = append(failed, moves[i].to)
			}
		}
		if len(failed) > 0 {
			keepStaging = true
			return fmt.Errorf("%w; undoing it failed, the old cache is in %s and the restored one in %s", cause, old, staging)
		}
		os.Remove(old) // empty again
		return cause
	}
	for _, n := range oldNames {
		m := move{filepath.Join(target, n), filepath.Join(old, n)}
		if err := rename(m.from, m.to); err != nil {
			return undo(fmt.Errorf("backup: moving the old cache aside: %w", err))
		}
		moves = append(moves, m)
	}
	for _, n := range newNames {
		m := move{filepath.Join(staging, n), filepath.Join(target, n)}
		if err := rename(m.from, m.to); err != nil {
			return undo(fmt.Errorf("backup: moving the restored cache into place: %w", err))
		}
		moves = append(moves, m)
	}
	if err := os.Chmod(target, 0o700); err != nil {
		return fmt.Errorf("backup: restored, but setting the mode of %s: %w", target, err)
	}
	if err := syncDir(target); err != nil {
		return fmt.Errorf("backup: restored, but syncing %s: %w", target, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("backup: restored, but removing the previous cache in %s: %w", old, err)
	}
	return nil
}

// listEntries returns the names in dir, leaving out leproxy's temporary
// ones.
func listEntries(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("backup: reading %s: %w", dir, err)
	}
	var names []string
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), reservedPrefix) {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

// fileOwner is the owner and group given to restored files; a nil
// *fileOwner leaves them to the current user.
type fileOwner struct {
	uid, gid int
}

func (o *fileOwner) chown(p string) error {
	if o == nil {
		return nil
	}
	return os.Lchown(p, o.uid, o.gid)
}

func (o *fileOwner) fchown(f *os.File) error {
	if o == nil {
		return nil
	}
	return f.Chown(o.uid, o.gid)
}
