//go:build unix

package main

import (
	"os"
	"path"
	"syscall"
)

// giveLocalCAToCacheOwner makes local-ca/ and its files belong to the
// owner of cacheDir when root created them there: `sudo leproxy trust` on
// the cache of a service user (systemd's DynamicUser) must not leave it a
// CA key it cannot read. The paths are resolved inside cacheDir (os.Root)
// and links are not followed, since the service user could change them.
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
	root, err := os.OpenRoot(cacheDir)
	if err != nil {
		return err
	}
	defer root.Close()
	dir, err := root.Open("local-ca")
	if err != nil {
		return err
	}
	entries, err := dir.ReadDir(-1)
	dir.Close()
	if err != nil {
		return err
	}
	uid, gid := int(st.Uid), int(st.Gid)
	if err := root.Lchown("local-ca", uid, gid); err != nil {
		return err
	}
	for _, e := range entries {
		if err := root.Lchown(path.Join("local-ca", e.Name()), uid, gid); err != nil {
			return err
		}
	}
	return nil
}
