package certs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotFound is returned by Storage.Get for a key that holds nothing;
// errors.Is(ErrNotFound, fs.ErrNotExist) holds, so a Storage may return any
// error wrapping fs.ErrNotExist instead.
var ErrNotFound = fmt.Errorf("certs: not in storage: %w", fs.ErrNotExist)

// Storage is where the Manager keeps everything that must survive a
// restart: certificates, the ACME account key, and (later) the local CA. A
// key is a slash-separated path; the names and values are autocert's
// (see autocert.DirCache): "<host>" and "<host>+rsa" hold a PEM private key
// followed by the certificate chain, leaf first; "acme_account+key" holds
// the account's PEM private key.
//
// The contract, which every implementation must keep:
//   - Methods are safe for concurrent use and honour ctx: they return
//     ctx.Err() (or an error wrapping it) once ctx is done.
//   - Get returns an error wrapping fs.ErrNotExist (ErrNotFound) for a key
//     that holds nothing, and the exact bytes last Put otherwise.
//   - Put replaces the value atomically: a reader sees the old value or the
//     new one, never a mix, and after Put returns nil the value is durable.
//   - Delete of a key that holds nothing is not an error.
//   - List returns, sorted, every key that starts with prefix.
//   - Lock blocks until the caller holds the lock named key, or ctx is
//     done; it is exclusive among every user of the same storage (every
//     process, for a shared one). Unlock releases it. Locks are advisory:
//     they do not stop Get or Put. A lock's key is a name of its own; it
//     need not hold a value.
type Storage interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, data []byte) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]string, error)
	Lock(ctx context.Context, key string) error
	Unlock(ctx context.Context, key string) error
}

// lockFilePrefix starts the name of the lock files of DirStorage; the
// backup leaves out names that start with ".leproxy-".
const lockFilePrefix = ".leproxy-lock-"

// lockPollInterval is how often DirStorage.Lock retries a lock file held by
// another process.
const lockPollInterval = 50 * time.Millisecond

// DirStorage is the Storage of one directory, in autocert.DirCache's layout:
// the value of key is the file of that name (mode 0600) under the
// directory, so a cache written by autocert, or by an earlier leproxy, is
// read as it is. Lock takes an flock(2) on a lock file named
// .leproxy-lock-<key> in the directory, so two processes sharing the
// directory exclude each other too.
type DirStorage struct {
	dir string

	mu    sync.Mutex
	locks map[string]*dirLock
}

// dirLock is one held lock of a DirStorage: taken by one goroutine of the
// process (sem) and, through f, by the process.
type dirLock struct {
	sem chan struct{} // capacity 1: full while held in the process
	f   *os.File      // the flocked file while held
}

var _ Storage = (*DirStorage)(nil)

// NewDirStorage returns the storage of dir; the directory is created on
// the first Put.
func NewDirStorage(dir string) *DirStorage {
	return &DirStorage{dir: dir, locks: make(map[string]*dirLock)}
}

// path returns the file of key, or an error for a key that cannot name one.
func (s *DirStorage) path(key string) (string, error) {
	clean := path.Clean("/" + key)
	if key == "" || clean == "/" || strings.ContainsRune(key, 0) || strings.HasPrefix(path.Base(clean), ".") {
		return "", fmt.Errorf("certs: invalid storage key %q", key)
	}
	return filepath.Join(s.dir, filepath.FromSlash(clean)), nil
}

// Get implements Storage.
func (s *DirStorage) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p) // #nosec G304 -- p is a cleaned key under the cache directory
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("certs: reading %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: reading %s from storage: %w", key, err)
	}
	return data, nil
}

// Put implements Storage: it writes a temporary file next to the key's,
// syncs it and renames it over.
func (s *DirStorage) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("certs: writing %s to storage: %w", key, err)
	}
	if err := writeFileAtomic(p, data, 0o600); err != nil {
		return fmt.Errorf("certs: writing %s to storage: %w", key, err)
	}
	return nil
}

// Delete implements Storage.
func (s *DirStorage) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs: deleting %s from storage: %w", key, err)
	}
	return nil
}

// List implements Storage. Names starting with a dot (temporary and lock
// files) are not keys.
func (s *DirStorage) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == s.dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == s.dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		if key := filepath.ToSlash(rel); strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("certs: listing storage %s: %w", s.dir, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// lockOf returns the in-process lock of key.
func (s *DirStorage) lockOf(key string) *dirLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[key]
	if l == nil {
		l = &dirLock{sem: make(chan struct{}, 1)}
		s.locks[key] = l
	}
	return l
}

// lockPath returns the lock file of key: slashes become underscores, so
// every lock file is at the top of the directory.
func (s *DirStorage) lockPath(key string) (string, error) {
	if key == "" || strings.ContainsRune(key, 0) {
		return "", fmt.Errorf("certs: invalid lock key %q", key)
	}
	return filepath.Join(s.dir, lockFilePrefix+strings.ReplaceAll(key, "/", "_")), nil
}

// Lock implements Storage.
func (s *DirStorage) Lock(ctx context.Context, key string) error {
	p, err := s.lockPath(key)
	if err != nil {
		return err
	}
	l := s.lockOf(key)
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("certs: locking %s: %w", key, ctx.Err())
	}
	f, err := flockFile(ctx, s.dir, p)
	if err != nil {
		<-l.sem
		return fmt.Errorf("certs: locking %s: %w", key, err)
	}
	l.f = f
	return nil
}

// flockFile opens (creating it) the lock file p and takes an exclusive
// flock on it, polling while another process holds it.
func flockFile(ctx context.Context, dir, p string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600) // #nosec G304 -- p is a lock file name under the cache directory
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(lockPollInterval)
	defer t.Stop()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) // #nosec G115 -- a file descriptor fits an int
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, err
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		}
	}
}

// Unlock implements Storage. Unlocking a lock that is not held is an
// error.
func (s *DirStorage) Unlock(_ context.Context, key string) error {
	l := s.lockOf(key)
	if l.f == nil || len(l.sem) == 0 {
		return fmt.Errorf("certs: unlocking %s: not locked", key)
	}
	f := l.f
	l.f = nil
	err := f.Close() // releases the flock
	<-l.sem
	if err != nil {
		return fmt.Errorf("certs: unlocking %s: %w", key, err)
	}
	return nil
}
