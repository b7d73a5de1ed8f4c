package etcdstore

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Crash stops the Store as a dead process would: its session is no longer
// kept alive and never revoked, its client is closed.
func (s *Store) Crash() {
	s.sessMu.Lock()
	if s.sess != nil {
		s.sess.Orphan()
	}
	s.sessMu.Unlock()
	s.cancel()
	s.client.Close()
}

// Client is the Store's etcd client.
func (s *Store) Client() *clientv3.Client { return s.client }

// SessionLease is the lease of the Store's session (0 if none).
func (s *Store) SessionLease() clientv3.LeaseID {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess == nil {
		return 0
	}
	return s.sess.Lease()
}

// WatchCacheFrom is Watch starting after revision from, without listing.
func (s *Store) WatchCacheFrom(ctx context.Context, from int64, changed func(key string)) {
	base := s.prefix + cacheSpace
	s.watch(ctx, base, true, from, func(kv *mvccpb.KeyValue, _ bool) { changed(string(kv.Key)[len(base):]) })
}
