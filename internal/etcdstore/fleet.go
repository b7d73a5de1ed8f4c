package etcdstore

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is the fleet state a node shows on /certificates and in metrics.
type Status struct {
	// Node is this node's name; Prefix the fleet's key prefix.
	Node, Prefix string
	// Connected reports that etcd answered the status query.
	Connected bool
	// LastSync is when etcd last answered (a call or a watch event);
	// zero if never.
	LastSync time.Time
	// LastError is the last etcd error, if any.
	LastError string
	// Locks are the locks held in the fleet, by name; empty if etcd did
	// not answer.
	Locks []Lock
}

// Lock is one lock held in the fleet.
type Lock struct {
	// Name is the lock's name ("issue/example.com").
	Name string
	// Node is the name of the node holding it ("" if unknown: a node
	// whose registration expired).
	Node string
}

// Status returns the fleet state, asking etcd for the locks (bounded by
// CallTimeout).
func (s *Store) Status(ctx context.Context) Status {
	st := Status{Node: s.node, Prefix: s.prefix}
	var err error
	st.Locks, err = s.locksHeld(ctx)
	st.Connected = err == nil
	if ns := s.lastOK.Load(); ns != 0 {
		st.LastSync = time.Unix(0, ns)
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// locksHeld lists the holders of every lock: for each name, the key with
// the lowest creation revision (concurrency.Mutex's rule), its lease
// mapped to the node registered on it.
func (s *Store) locksHeld(ctx context.Context) ([]Lock, error) {
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.client.Txn(cctx).Then(
		clientv3.OpGet(s.prefix+lockSpace, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.prefix+nodeSpace, clientv3.WithPrefix()),
	).Commit()
	if err = s.observe(ctx, "listing locks", err); err != nil {
		return nil, err
	}
	nodes := make(map[string]string)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		nodes[strings.TrimPrefix(string(kv.Key), s.prefix+nodeSpace)] = string(kv.Value)
	}
	holders := make(map[string]*mvccpb.KeyValue)
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		rel := strings.TrimPrefix(string(kv.Key), s.prefix+lockSpace)
		i := strings.LastIndexByte(rel, '/')
		if i < 0 {
			continue
		}
		name := rel[:i]
		if h := holders[name]; h == nil || kv.CreateRevision < h.CreateRevision {
			holders[name] = kv
		}
	}
	var out []Lock
	for name, kv := range holders {
		out = append(out, Lock{Name: name, Node: nodes[strconv.FormatInt(kv.Lease, 16)]})
	}
	slices.SortFunc(out, func(a, b Lock) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ErrNoMapping is returned by Mapping when the fleet keeps no mapping.
var ErrNoMapping = fmt.Errorf("etcdstore: no mapping in the store: %w", fs.ErrNotExist)

// MappingKey is the etcd key of the fleet's mapping.
func (s *Store) MappingKey() string { return s.prefix + mappingKey }

// Mapping returns the fleet's mapping (YAML) and its revision.
func (s *Store) Mapping(ctx context.Context) ([]byte, int64, error) {
	cctx, cancel := s.call(ctx)
	resp, err := s.client.Get(cctx, s.prefix+mappingKey)
	cancel()
	if err = s.observe(ctx, "reading the mapping", err); err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, ErrNoMapping
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// PutMapping writes the fleet's mapping; the caller has validated it.
func (s *Store) PutMapping(ctx context.Context, data []byte) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	_, err := s.client.Put(cctx, s.prefix+mappingKey, string(data))
	return s.observe(ctx, "writing the mapping", err)
}

// WatchMapping calls changed with the mapping and its revision each time
// it is written after revision from, until ctx ends (a deleted mapping is
// not reported: nodes keep theirs).
func (s *Store) WatchMapping(ctx context.Context, from int64, changed func(data []byte, rev int64)) {
	s.watch(ctx, s.prefix+mappingKey, false, from, func(kv *mvccpb.KeyValue, deleted bool) {
		if !deleted && kv.ModRevision > from {
			changed(kv.Value, kv.ModRevision)
		}
	})
}

// Export writes every cache key of the store (values opened) as a file of
// that name under dir, mode 0600: the layout of a cache directory, which
// internal/backup archives.
func (s *Store) Export(ctx context.Context, dir string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*s.timeout)
	defer cancel()
	base := s.prefix + cacheSpace
	resp, err := s.client.Get(cctx, base, clientv3.WithPrefix())
	if err = s.observe(ctx, "exporting", err); err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		key := strings.TrimPrefix(string(kv.Key), base)
		data, err := s.sealer.open(key, kv.Value)
		if err != nil {
			return err
		}
		if err := certs.NewDirStorage(dir).Put(ctx, key, data); err != nil {
			return fmt.Errorf("etcdstore: exporting %s: %w", key, err)
		}
	}
	return nil
}

// Import replaces the store's cache keys with the files under dir (a
// restored cache directory): every file is written (sealed when a key is
// set), then every key that is not in dir is deleted, in one transaction
// for up to 128 changes (etcd's default limit; more go in several). Lock files and
// temporary files (names starting with a dot) are not keys.
func (s *Store) Import(ctx context.Context, dir string) error {
	keys, err := certs.NewDirStorage(dir).List(ctx, "")
	if err != nil {
		return err
	}
	base := s.prefix + cacheSpace
	cctx, cancel := context.WithTimeout(ctx, 10*s.timeout)
	defer cancel()
	old, err := s.client.Get(cctx, base, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err = s.observe(ctx, "importing", err); err != nil {
		return err
	}
	var ops []clientv3.Op
	keep := make(map[string]bool)
	for _, key := range keys {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key))) // #nosec G304 -- a key listed under the restored directory
		if err != nil {
			return fmt.Errorf("etcdstore: importing %s: %w", key, err)
		}
		val, err := s.sealer.seal(key, data)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(base+key, string(val)))
		keep[base+key] = true
	}
	for _, kv := range old.Kvs {
		if !keep[string(kv.Key)] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	// etcd's default --max-txn-ops is 128: a larger cache goes in several
	// transactions, the writes before the deletions.
	for chunk := range slices.Chunk(ops, maxTxnOps) {
		if _, err := s.client.Txn(cctx).Then(chunk...).Commit(); err != nil {
			return s.observe(ctx, "importing", err)
		}
	}
	return nil
}

// maxTxnOps is etcd's default limit of operations in one transaction.
const maxTxnOps = 128
