//go:build unix

package backup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ownerFor returns the owner of fi for restored files when running as
// root, and nil otherwise (files are then the current user's).
func ownerFor(fi fs.FileInfo) *fileOwner {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	return &fileOwner{uid: int(st.Uid), gid: int(st.Gid)}
}

// mountPoint reports whether dir is on another device than its parent.
// Bind mounts on the same device are not seen here; renaming them fails
// with EXDEV or EBUSY, which isCrossDevice recognises.
func mountPoint(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(filepath.Dir(dir))
	if err != nil {
		return false, err
	}
	a, ok1 := fi.Sys().(*syscall.Stat_t)
	b, ok2 := pi.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && a.Dev != b.Dev, nil
}

// isCrossDevice reports whether a rename failed because its paths are on
// different mounts or the source is a mount point.
func isCrossDevice(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EBUSY)
}

// isReadOnly reports whether err is EROFS.
func isReadOnly(err error) bool {
	return errors.Is(err, syscall.EROFS)
}
