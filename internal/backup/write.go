package backup

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes an age-encrypted archive (sealed with key) of the cache directory cacheDir to w.
// The whole archive is built in memory (at most MaxSize) before the first
// byte is written. A symbolic link or special file in the cache directory
// is an error wrapping ErrUnsupportedFile; a cache larger than MaxSize is
// ErrTooLarge. Deriving the key takes 128 MiB of memory.
func Write(w io.Writer, cacheDir string, key *Key) error {
	archive, err := build(cacheDir, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(archive); err != nil {
		return fmt.Errorf("backup: writing archive: %w", err)
	}
	return nil
}

// WriteFile is Write to the file at path, created with mode 0600. The file
// appears complete or not at all: the archive is written to a temporary
// file in the same directory, synced, and renamed to path, replacing a
// file that is there.
func WriteFile(path, cacheDir string, key *Key) error {
	archive, err := build(cacheDir, key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("backup: creating archive: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(archive)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: writing archive: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("backup: writing archive: %w", err)
	}
	return nil
}

// build returns the complete encrypted archive of cacheDir.
func build(cacheDir string, key *Key) ([]byte, error) {
	if _, err := key.sealers(); err != nil {
		return nil, err
	}
	plaintext, err := archiveDir(cacheDir)
	if err != nil {
		return nil, err
	}
	return seal(plaintext, key)
}
