package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/admin"
	"github.com/leproxy/leproxy/internal/backup"
	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/etcdstore"
)

// StorePasswordEnv holds the etcd password of -store-user (or use
// -store-password-file): never on the command line, where ps shows it.
const StorePasswordEnv = "LEPROXY_STORE_PASSWORD" // #nosec G101 -- the name of a variable, not a credential

// fleetMappingCopy is the copy of the fleet's mapping in the cache
// directory, from which a node starts while etcd is down. Its name starts
// with ".leproxy-", so backups leave it out.
const fleetMappingCopy = ".leproxy-fleet-mapping.yml"

// fleetCallTimeout bounds the reads of the mapping from etcd.
const fleetCallTimeout = 3 * time.Second

// openFleetStore opens the etcd store of -store, with the cache directory
// as its mirror.
func openFleetStore(a runArgs, logger *slog.Logger) (*etcdstore.Store, error) {
	endpoints, prefix, err := etcdstore.ParseURL(a.Store)
	if err != nil {
		return nil, fmt.Errorf("-store: %w", err)
	}
	var tlsCfg *tls.Config
	if a.StoreCA != "" || a.StoreCert != "" || a.StoreKey != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if a.StoreCA != "" {
			if tlsCfg.RootCAs, err = loadCertPool(a.StoreCA); err != nil {
				return nil, fmt.Errorf("-store-ca: %w", err)
			}
		}
		if (a.StoreCert == "") != (a.StoreKey == "") {
			return nil, errors.New("-store-cert and -store-key go together")
		}
		if a.StoreCert != "" {
			c, err := tls.LoadX509KeyPair(a.StoreCert, a.StoreKey)
			if err != nil {
				return nil, fmt.Errorf("-store-cert/-store-key: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{c}
		}
	}
	password := os.Getenv(StorePasswordEnv)
	if a.StorePasswordFile != "" {
		b, err := os.ReadFile(a.StorePasswordFile)
		if err != nil {
			return nil, fmt.Errorf("-store-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if password != "" && a.StoreUser == "" {
		return nil, errors.New("an etcd password is set but -store-user is not")
	}
	key, err := etcdstore.KeyFromEnv()
	if err != nil {
		return nil, err
	}
	s, err := etcdstore.Open(etcdstore.Options{
		Endpoints: endpoints,
		Prefix:    prefix,
		TLS:       tlsCfg,
		Username:  a.StoreUser,
		Password:  password,
		Mirror:    certs.NewDirStorage(a.Cache),
		Key:       key,
		Node:      a.StoreNode,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("-store: %w", err)
	}
	return s, nil
}

// mapPut is -map-put: validate the file, then write it as the fleet's
// mapping; a mapping with an error is never written.
func mapPut(ctx context.Context, store *etcdstore.Store, file string, stdout io.Writer) error {
	if store == nil {
		return errors.New("-map-put needs -store")
	}
	data, err := os.ReadFile(file) // #nosec G304 -- the operator names the mapping file
	if err != nil {
		return fmt.Errorf("-map-put: %w", err)
	}
	cfg, err := config.Parse(file, data)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	if err := store.PutMapping(ctx, data); err != nil {
		return fmt.Errorf("-map-put: %w", err)
	}
	fmt.Fprintf(stdout, "%s: OK, written to the store (%d hosts, %d tcp listeners)\n", file, len(cfg.Hosts), len(cfg.TCP))
	return nil
}

// fleetMapping reads the fleet's mapping from the store, or from the copy
// in the cache directory when etcd does not answer; it returns the
// revision to watch from (0 if read from the copy).
func fleetMapping(ctx context.Context, store *etcdstore.Store, cacheDir string) (*config.Config, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
	defer cancel()
	data, rev, err := store.Mapping(ctx)
	switch {
	case errors.Is(err, etcdstore.ErrNoMapping):
		return nil, 0, errors.New("no -map and no mapping in the -store: write one with leproxy -store … -map-put mapping.yml")
	case err != nil:
		copyPath := filepath.Join(cacheDir, fleetMappingCopy)
		b, cerr := os.ReadFile(copyPath) // #nosec G304 -- our own file in the cache directory
		if cerr != nil {
			return nil, 0, fmt.Errorf("reading the mapping from the store: %w (and no copy in the cache: %w)", err, cerr)
		}
		cfg, perr := config.Parse(copyPath, b)
		return cfg, 0, perr
	}
	cfg, err := config.Parse(fleetMappingName(store), data)
	if err != nil {
		return nil, 0, err
	}
	saveFleetMapping(cacheDir, data)
	return cfg, rev, nil
}

// fleetMappingName names the fleet's mapping in errors ("etcd:/prefix/config/mapping").
func fleetMappingName(store *etcdstore.Store) string {
	return "etcd:" + store.MappingKey()
}

// saveFleetMapping keeps the copy of the mapping a node starts from when
// etcd is down; best effort.
func saveFleetMapping(cacheDir string, data []byte) {
	p := filepath.Join(cacheDir, fleetMappingCopy)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, data, 0o600) == nil { // #nosec G703 -- a fixed name in the cache directory
		os.Rename(tmp, p)
	}
}

// fleetMappingState is the outcome of the last change of the fleet's
// mapping, for /health/ready.
type fleetMappingState struct {
	err atomic.Pointer[string] // the last change's error; nil after a good one
}

func (s *fleetMappingState) set(err error) {
	if err == nil {
		s.err.Store(nil)
		return
	}
	msg := err.Error()
	s.err.Store(&msg)
}

// problems lists the fleet mapping error, if any, for /health/ready.
func (s *fleetMappingState) problems() []admin.Problem {
	if p := s.err.Load(); p != nil {
		return []admin.Problem{{What: "mapping", Detail: "the store's mapping is invalid; still serving the previous one: " + *p}}
	}
	return nil
}

// fleetLoader returns the live's loader of the fleet's mapping: it reads
// it from the store (bounded), validates it and keeps a copy in the cache.
func fleetLoader(ctx context.Context, store *etcdstore.Store, cacheDir string) func() (*config.Config, error) {
	return func() (*config.Config, error) {
		ctx, cancel := context.WithTimeout(ctx, fleetCallTimeout)
		defer cancel()
		data, _, err := store.Mapping(ctx)
		if err != nil {
			return nil, &storeReadError{err: err}
		}
		cfg, err := config.Parse(fleetMappingName(store), data)
		if err != nil {
			return nil, err
		}
		saveFleetMapping(cacheDir, data)
		return cfg, nil
	}
}

// storeReadError is a failure to read the fleet's mapping from etcd, as
// opposed to a mapping that is invalid.
type storeReadError struct{ err error }

func (e *storeReadError) Error() string {
	return "reading the mapping from the store: " + e.err.Error()
}
func (e *storeReadError) Unwrap() error { return e.err }

// fleetStatus returns the fleet state for /certificates and metrics.
func fleetStatus(store *etcdstore.Store) func() *admin.FleetStatus {
	return func() *admin.FleetStatus {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st := store.Status(ctx)
		out := &admin.FleetStatus{Node: st.Node, Prefix: st.Prefix, Connected: st.Connected, LastError: st.LastError}
		if !st.LastSync.IsZero() {
			t := st.LastSync.UTC()
			out.LastSync = &t
		}
		for _, l := range st.Locks {
			out.Locks = append(out.Locks, admin.FleetLock{Name: l.Name, Node: l.Node})
		}
		return out
	}
}

// fleetBackupOrRestore is -backup or -restore with -store: the archive
// holds the store's cache keys (the same format as a cache directory's).
func fleetBackupOrRestore(ctx context.Context, a runArgs, store *etcdstore.Store, stdout io.Writer, logger *slog.Logger) error {
	if a.Backup != "" && a.Restore != "" {
		return errors.New("-backup and -restore cannot be used together")
	}
	pass, err := backupKey(a)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(a.Cache, ".leproxy-fleet-backup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "cache")
	if a.Backup != "" {
		if err := store.Export(ctx, dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if a.Backup == "-" {
			err = backup.Write(stdout, dir, pass)
		} else {
			err = backup.WriteFile(a.Backup, dir, pass)
		}
		if err != nil {
			return err
		}
		logger.Info("store backed up", "store", a.Store, "file", a.Backup)
		return nil
	}
	if a.Restore == "-" {
		err = backup.Restore(os.Stdin, dir, pass)
	} else {
		err = backup.RestoreFile(a.Restore, dir, pass)
	}
	if err != nil {
		return err
	}
	if err := store.Import(ctx, dir); err != nil {
		return err
	}
	logger.Info("store restored", "store", a.Store, "file", a.Restore)
	return nil
}
