// Package etcdstore is leproxy's fleet storage: a certs.Storage on an etcd
// cluster, so that several leproxy nodes share one certificate per name,
// one ACME account and one mapping.
//
// Layout under the prefix of the store URL (etcd://h1:2379,h2:2379/prefix):
//
//	<prefix>/cache/<key>        the disk cache's keys and values (autocert's
//	                            names: <host>, <host>+rsa, acme_account+key,
//	                            local-ca/…), private keys sealed when a key is set
//	<prefix>/challenge/<key>    challenge answers of orders in flight, each
//	                            on a lease (<host>+token, <token>+http-01)
//	<prefix>/locks/<name>/<id>  concurrency.Mutex keys, on the node's session
//	<prefix>/nodes/<lease>      the node holding that session (its name)
//	<prefix>/config/mapping     the mapping (YAML), if kept in etcd
//
// The disk cache is a mirror: every write goes to both, values read or
// watched from etcd are written through to it, and a read that etcd cannot
// answer (down, or without quorum after a serializable read fails too) is
// answered from it, so a node starts and serves what it holds with etcd
// down. Every etcd call is bounded by Options.CallTimeout.
//
// Locks are concurrency.Mutex keys on one session (lease) per Store with a
// TTL: a node that dies frees its locks within the TTL. A Put made under a
// lock (certs.ContextWithLock) is fenced: it is a transaction that writes
// only if the lock's key still has the revision it was created with, so a
// node that lost its lock (its session expired) cannot overwrite the work
// of the next holder.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults of Options.
const (
	DefaultSessionTTL  = 10 * time.Second
	DefaultCallTimeout = time.Second
	defaultPrefix      = "/leproxy/"
)

// Key spaces under the prefix.
const (
	cacheSpace     = "cache/"
	challengeSpace = "challenge/"
	lockSpace      = "locks/"
	nodeSpace      = "nodes/"
	mappingKey     = "config/mapping"
)

// ErrLockLost is returned by a fenced Put whose lock is no longer held.
var ErrLockLost = errors.New("etcdstore: lock lost (session expired); write refused")

// ErrUnavailable wraps the errors of calls etcd did not answer in time.
var ErrUnavailable = errors.New("etcdstore: etcd unavailable")

// Options configures a Store.
type Options struct {
	// Endpoints are the etcd members' client addresses (host:port).
	Endpoints []string
	// Prefix is the root of every key (default /leproxy/); one prefix per
	// fleet.
	Prefix string
	// TLS, if set, is used to connect to etcd (client certificate, CA).
	TLS *tls.Config
	// Username and Password authenticate to etcd, if set. The etcd
	// client authenticates when it connects, so with them Open fails
	// while etcd is unreachable; a TLS client certificate (etcd maps its
	// common name to a user) has no such limit.
	Username, Password string
	// Mirror is the disk cache (a certs.DirStorage); nil for none.
	Mirror certs.Storage
	// Key, if set (32 bytes), seals the values holding a private key
	// with XChaCha20-Poly1305 (see seal.go).
	Key []byte
	// Node names this node in lock listings (default: the host name).
	Node string
	// SessionTTL is the lease of the node's locks (default 10 s): a dead
	// node's locks are free after it. Rounded up to whole seconds.
	SessionTTL time.Duration
	// CallTimeout bounds each etcd call (default 1 s).
	CallTimeout time.Duration
	// Logger receives warnings (mirror writes that failed, unusable
	// values); nil discards them.
	Logger *slog.Logger
}

// Store is a certs.Storage on etcd; see the package documentation. Its
// methods are safe for concurrent use. Close releases its locks and
// session.
type Store struct {
	client  *clientv3.Client
	prefix  string
	mirror  certs.Storage
	sealer  *sealer
	node    string
	ttl     int
	timeout time.Duration
	log     *slog.Logger

	ctx    context.Context // ends with Close: the session's keep-alive
	cancel context.CancelFunc

	sessMu   sync.Mutex // guards sess
	sess     *concurrency.Session
	lockMu   sync.Mutex // guards locks
	locks    map[string]*heldLock
	lastOK   atomic.Int64 // unix nanoseconds of the last answer from etcd
	lastDown atomic.Int64 // unix nanoseconds of the last call etcd did not answer in time
	lastErr  atomic.Pointer[string]
}

// heldLock is a lock of the Store: taken by one goroutine of the process
// (sem), then in etcd (mu, nil until then).
type heldLock struct {
	sem chan struct{}
	mu  *concurrency.Mutex
}

var (
	_ certs.Storage          = (*Store)(nil)
	_ certs.ChallengeStorage = (*Store)(nil)
	_ certs.Watcher          = (*Store)(nil)
)

// ParseURL parses a store URL, etcd://host1:2379,host2:2379/prefix, into
// its endpoints and key prefix (always ending in "/"; /leproxy/ when the
// URL has no path).
func ParseURL(s string) (endpoints []string, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		return nil, "", fmt.Errorf("store URL %q: want etcd://host:port[,host:port...]/prefix", s)
	}
	hosts, path, _ := strings.Cut(rest, "/")
	for _, h := range strings.Split(hosts, ",") {
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" {
			return nil, "", fmt.Errorf("store URL %q: endpoint %q is not host:port", s, h)
		}
		endpoints = append(endpoints, h)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, "", fmt.Errorf("store URL %q: no query or fragment allowed", s)
	}
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	path = strings.Trim(path, "/")
	if path == "" {
		return endpoints, defaultPrefix, nil
	}
	return endpoints, "/" + path + "/", nil
}

// Open returns the Store of opts. Without a user name it does not wait for
// etcd: a Store opened while etcd is down answers from its mirror until
// etcd is back.
func Open(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcdstore: no endpoints")
	}
	s := &Store{
		prefix:  opts.Prefix,
		mirror:  opts.Mirror,
		node:    opts.Node,
		timeout: opts.CallTimeout,
		log:     opts.Logger,
		locks:   make(map[string]*heldLock),
	}
	if s.prefix == "" {
		s.prefix = defaultPrefix
	}
	if !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	if s.node == "" {
		s.node, _ = os.Hostname()
	}
	if s.timeout <= 0 {
		s.timeout = DefaultCallTimeout
	}
	ttl := opts.SessionTTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	s.ttl = int((ttl + time.Second - 1) / time.Second)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Key != nil {
		sl, err := newSealer(opts.Key)
		if err != nil {
			return nil, err
		}
		s.sealer = sl
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		TLS:                  opts.TLS,
		Username:             opts.Username,
		Password:             opts.Password,
		DialTimeout:          s.timeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: s.timeout,
		AutoSyncInterval:     0, // the endpoints given are the ones to use
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: a fleet
		// must notice etcd is back within seconds.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: s.timeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connecting to %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	s.client = c
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close releases the Store's locks (its session) and closes the client.
func (s *Store) Close() error {
	s.sessMu.Lock()
	sess := s.sess
	s.sess = nil
	s.sessMu.Unlock()
	if sess != nil {
		// Revoke the lease, so every lock of this node is free now; not
		// sess.Close, which waits up to a minute for an unreachable etcd.
		sess.Orphan()
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		s.client.Revoke(ctx, sess.Lease())
		cancel()
	}
	s.cancel()
	return s.client.Close()
}

// call returns a context for one etcd call: ctx bounded by CallTimeout.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// observe records the outcome of an etcd call for Status and wraps err.
func (s *Store) observe(ctx context.Context, op string, err error) error {
	if err == nil {
		s.lastOK.Store(time.Now().UnixNano())
		return nil
	}
	msg := op + ": " + err.Error()
	s.lastErr.Store(&msg)
	if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout)) {
		s.lastDown.Store(time.Now().UnixNano())
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("etcdstore: %s: %w", op, err)
}

// Get implements certs.Storage: a linearizable read, then a serializable
// one (a member without quorum still answers it), then the mirror.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	full := s.prefix + cacheSpace + key
	cctx, cancel := s.call(ctx)
	resp, err := s.client.Get(cctx, full)
	cancel()
	if err != nil && ctx.Err() == nil {
		// A member without quorum answers this at once; a down one
		// does not answer at all, so keep it short.
		cctx, cancel := context.WithTimeout(ctx, s.timeout/4)
		resp, err = s.client.Get(cctx, full, clientv3.WithSerializable())
		cancel()
	}
	if err = s.observe(ctx, "reading "+key, err); err != nil {
		if s.mirror != nil && ctx.Err() == nil {
			if data, merr := s.mirror.Get(ctx, key); merr == nil {
				return data, nil
			}
		}
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: reading %s: %w", key, certs.ErrNotFound)
	}
	data, err := s.sealer.open(key, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	s.toMirror(ctx, key, data)
	return data, nil
}

// toMirror writes a value read from etcd to the mirror if it differs.
func (s *Store) toMirror(ctx context.Context, key string, data []byte) {
	if s.mirror == nil {
		return
	}
	if old, err := s.mirror.Get(ctx, key); err == nil && string(old) == string(data) {
		return
	}
	if err := s.mirror.Put(context.WithoutCancel(ctx), key, data); err != nil {
		s.log.Warn("disk mirror not updated", "key", key, "error", err)
	}
}

// Put implements certs.Storage. Under a lock this Store holds
// (certs.ContextWithLock), the write is fenced: ErrLockLost if the lock
// is no longer held. The mirror is written too; if etcd fails the mirror
// still gets the value and the error is returned.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	val, err := s.sealer.seal(key, data)
	if err != nil {
		return err
	}
	full := s.prefix + cacheSpace + key
	var fence *concurrency.Mutex
	if name, ok := certs.LockFromContext(ctx); ok {
		s.lockMu.Lock()
		if l := s.locks[name]; l != nil {
			fence = l.mu
		}
		s.lockMu.Unlock()
	}
	cctx, cancel := s.call(ctx)
	if fence != nil {
		var resp *clientv3.TxnResponse
		resp, err = s.client.Txn(cctx).If(fence.IsOwner()).Then(clientv3.OpPut(full, string(val))).Commit()
		if err == nil && !resp.Succeeded {
			cancel()
			s.observe(ctx, "writing "+key, nil)
			return fmt.Errorf("writing %s: %w", key, ErrLockLost)
		}
	} else {
		_, err = s.client.Put(cctx, full, string(val))
	}
	cancel()
	err = s.observe(ctx, "writing "+key, err)
	if s.mirror != nil {
		if merr := s.mirror.Put(context.WithoutCancel(ctx), key, data); merr != nil {
			s.log.Warn("disk mirror not updated", "key", key, "error", merr)
		}
	}
	return err
}

// Delete implements certs.Storage, in etcd and the mirror.
func (s *Store) Delete(ctx context.Context, key string) error {
	cctx, cancel := s.call(ctx)
	_, err := s.client.Delete(cctx, s.prefix+cacheSpace+key)
	cancel()
	if s.mirror != nil {
		if merr := s.mirror.Delete(context.WithoutCancel(ctx), key); merr != nil {
			s.log.Warn("disk mirror not updated", "key", key, "error", merr)
		}
	}
	return s.observe(ctx, "deleting "+key, err)
}

// List implements certs.Storage; with etcd unavailable, the mirror's keys.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	base := s.prefix + cacheSpace
	cctx, cancel := s.call(ctx)
	resp, err := s.client.Get(cctx, base+prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err = s.observe(ctx, "listing "+prefix, err); err != nil {
		if s.mirror != nil && ctx.Err() == nil {
			if keys, merr := s.mirror.List(ctx, prefix); merr == nil {
				return keys, nil
			}
		}
		return nil, err
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), base))
	}
	slices.Sort(keys)
	return keys, nil
}

// session returns the Store's session, creating it (a lease granted
// within CallTimeout, then kept alive until Close) when there is none or
// it has expired.
func (s *Store) session(ctx context.Context) (*concurrency.Session, error) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess != nil {
		select {
		case <-s.sess.Done():
			s.sess = nil
		default:
			return s.sess, nil
		}
	}
	if s.ctx.Err() != nil {
		return nil, errors.New("etcdstore: closed")
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	lease, err := s.client.Grant(cctx, int64(s.ttl))
	if err = s.observe(ctx, "creating session", err); err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(s.client, concurrency.WithLease(lease.ID), concurrency.WithContext(s.ctx))
	if err != nil {
		return nil, s.observe(ctx, "creating session", err)
	}
	// Who holds the session, for lock listings.
	_, err = s.client.Put(cctx, fmt.Sprintf("%s%s%x", s.prefix, nodeSpace, int64(lease.ID)), s.node, clientv3.WithLease(lease.ID))
	if err = s.observe(ctx, "registering node", err); err != nil {
		sess.Close()
		return nil, err
	}
	s.sess = sess
	return sess, nil
}

// lockOf returns the in-process lock of name.
func (s *Store) lockOf(name string) *heldLock {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	l := s.locks[name]
	if l == nil {
		l = &heldLock{sem: make(chan struct{}, 1)}
		s.locks[name] = l
	}
	return l
}

// Lock implements certs.Storage: one goroutine of the process, then the
// etcd mutex <prefix>locks/<name> on the Store's session. It fails within
// CallTimeout when etcd cannot grant a session, and when the session
// expires while it waits.
func (s *Store) Lock(ctx context.Context, name string) error {
	l := s.lockOf(name)
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("etcdstore: locking %s: %w", name, ctx.Err())
	}
	// A call that just timed out (the handshake's read of the
	// certificate, typically) with no answer since is the answer: fail at
	// once rather than wait for another timeout.
	if down := s.lastDown.Load(); down > s.lastOK.Load() && time.Since(time.Unix(0, down)) < s.timeout/4 {
		<-l.sem
		return fmt.Errorf("%w: locking %s: etcd did not answer the last call", ErrUnavailable, name)
	}
	sess, err := s.session(ctx)
	if err != nil {
		<-l.sem
		return fmt.Errorf("locking %s: %w", name, err)
	}
	// A session may outlive etcd's reachability for up to its TTL: check
	// etcd answers before waiting on the mutex.
	mu := concurrency.NewMutex(sess, s.prefix+lockSpace+name)
	cctx, cancel := s.call(ctx)
	_, err = s.client.Get(cctx, s.prefix+lockSpace+name, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err = s.observe(ctx, "locking "+name, err); err != nil {
		<-l.sem
		return err
	}
	lctx, lcancel := context.WithCancel(ctx)
	expired := make(chan struct{})
	go func() { // ends with lctx
		select {
		case <-sess.Done(): // the lease expired (etcd unreachable for the TTL): give up
			close(expired)
			lcancel()
		case <-lctx.Done():
		}
	}()
	err = mu.Lock(lctx)
	lcancel()
	if err != nil {
		<-l.sem
		if ctx.Err() == nil && isClosed(expired) {
			return fmt.Errorf("%w: locking %s: session expired", ErrUnavailable, name)
		}
		return s.observe(ctx, "locking "+name, err)
	}
	s.observe(ctx, "locking "+name, nil)
	s.lockMu.Lock()
	l.mu = mu
	s.lockMu.Unlock()
	return nil
}

// Unlock implements certs.Storage. If etcd does not answer, the lock is
// freed when the session's lease expires.
func (s *Store) Unlock(ctx context.Context, name string) error {
	s.lockMu.Lock()
	l := s.locks[name]
	var mu *concurrency.Mutex
	if l != nil {
		mu, l.mu = l.mu, nil
	}
	s.lockMu.Unlock()
	if l == nil || mu == nil {
		return fmt.Errorf("etcdstore: unlocking %s: not locked", name)
	}
	cctx, cancel := s.call(context.WithoutCancel(ctx))
	err := mu.Unlock(cctx)
	cancel()
	<-l.sem
	return s.observe(ctx, "unlocking "+name, err)
}

// PutChallenge implements certs.ChallengeStorage: the value on a lease of
// ttl, so an answer never outlives its order by much.
func (s *Store) PutChallenge(ctx context.Context, key string, data []byte, ttl time.Duration) error {
	val, err := s.sealer.seal(key, data)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	lease, err := s.client.Grant(cctx, int64((ttl+time.Second-1)/time.Second))
	if err = s.observe(ctx, "publishing challenge "+key, err); err != nil {
		return err
	}
	_, err = s.client.Put(cctx, s.prefix+challengeSpace+key, string(val), clientv3.WithLease(lease.ID))
	return s.observe(ctx, "publishing challenge "+key, err)
}

// GetChallenge implements certs.ChallengeStorage, with a linearizable
// read: the answer was published before the CA was told to validate.
func (s *Store) GetChallenge(ctx context.Context, key string) ([]byte, error) {
	cctx, cancel := s.call(ctx)
	resp, err := s.client.Get(cctx, s.prefix+challengeSpace+key)
	cancel()
	if err = s.observe(ctx, "reading challenge "+key, err); err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: challenge %s: %w", key, fs.ErrNotExist)
	}
	return s.sealer.open(key, resp.Kvs[0].Value)
}

// DeleteChallenge implements certs.ChallengeStorage; the value's lease
// is revoked with it.
func (s *Store) DeleteChallenge(ctx context.Context, key string) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	resp, err := s.client.Delete(cctx, s.prefix+challengeSpace+key, clientv3.WithPrevKV())
	if err == nil {
		for _, kv := range resp.PrevKvs {
			if kv.Lease != 0 {
				s.client.Revoke(cctx, clientv3.LeaseID(kv.Lease))
			}
		}
	}
	return s.observe(ctx, "withdrawing challenge "+key, err)
}

// Watch implements certs.Watcher for the cache keys: it writes every
// changed value through to the mirror and calls changed with its key.
func (s *Store) Watch(ctx context.Context, changed func(key string)) {
	base := s.prefix + cacheSpace
	s.watch(ctx, base, true, 0, func(kv *mvccpb.KeyValue, deleted bool) {
		key := strings.TrimPrefix(string(kv.Key), base)
		if s.mirror != nil {
			if deleted {
				s.mirror.Delete(ctx, key)
			} else if data, err := s.sealer.open(key, kv.Value); err == nil {
				s.toMirror(ctx, key, data)
			} else {
				s.log.Warn("stored value not usable", "key", key, "error", err)
			}
		}
		changed(key)
	})
}

// watchRetry is the pause before a watch is opened again after etcd
// refused or ended it (a retry, not a wait for an event).
const watchRetry = 500 * time.Millisecond

// watch follows the keys under key (all of them with prefix set) until
// ctx ends: it lists them (calling fn for each), then watches from the
// listing's revision (or, if from is not 0, watches from revision from+1
// without listing). When etcd has compacted that revision away it lists
// and watches again, so no change is missed, only reported twice.
func (s *Store) watch(ctx context.Context, key string, prefix bool, from int64, fn func(kv *mvccpb.KeyValue, deleted bool)) {
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	rev := from // 0: list first
	for ctx.Err() == nil {
		if rev == 0 {
			cctx, cancel := s.call(ctx)
			resp, err := s.client.Get(cctx, key, opts...)
			cancel()
			if s.observe(ctx, "listing "+key, err) != nil {
				sleep(ctx, watchRetry)
				continue
			}
			for _, kv := range resp.Kvs {
				fn(kv, false)
			}
			rev = resp.Header.Revision
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.client.Watch(wctx, key, append(slices.Clone(opts), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())...)
		for resp := range wch {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				s.log.Warn("store watch compacted; listing again", "key", key, "revision", rev, "compact_revision", resp.CompactRevision)
				rev = 0
				break
			}
			if err := resp.Err(); err != nil {
				s.observe(ctx, "watching "+key, err)
				break
			}
			s.observe(ctx, "watching "+key, nil)
			for _, ev := range resp.Events {
				fn(ev.Kv, ev.Type == clientv3.EventTypeDelete)
				rev = ev.Kv.ModRevision
			}
			if resp.IsProgressNotify() && resp.Header.Revision > rev {
				rev = resp.Header.Revision
			}
		}
		cancel()
		if ctx.Err() == nil && rev != 0 {
			sleep(ctx, watchRetry)
		}
	}
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
