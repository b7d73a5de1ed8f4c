//go:build unix

package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// giveLocalCAToCacheOwner makes the files under cacheDir/local-ca belong
// to the owner of cacheDir when root created them there: `sudo leproxy
// trust` on the cache of a service user (systemd's DynamicUser) must not
// leave it a CA key it cannot read.
func giveLocalCAToCacheOwner(cacheDir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(cacheDir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(filepath.Join(cacheDir, "local-ca"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(st.Uid), int(st.Gid))
	})
}
