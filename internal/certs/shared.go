package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"strings"
	"time"
)

// A Storage shared by several leproxy processes (a fleet, see
// internal/etcdstore) may implement the optional interfaces below; the
// Manager uses them when they are there, and a DirStorage implements none,
// so a single node behaves as before.

// ChallengeStorage is a Storage that also keeps the answers to the
// challenges of orders in flight, each for a bounded time (a lease), so
// that the process the CA's validation reaches answers for an order
// another process placed. The Manager publishes an answer, and waits for
// the write to be acknowledged, before it tells the CA to validate.
// Keys are autocert's: "<host>+token" holds the tls-alpn-01 certificate
// (PEM key and certificate), "<token>+http-01" the http-01 key
// authorization. Get returns an error wrapping fs.ErrNotExist for a key
// that holds nothing.
type ChallengeStorage interface {
	PutChallenge(ctx context.Context, key string, data []byte, ttl time.Duration) error
	GetChallenge(ctx context.Context, key string) ([]byte, error)
	DeleteChallenge(ctx context.Context, key string) error
}

// Watcher is a Storage that tells of changes made by any of its users:
// Watch calls changed with the key of every value Put or Deleted (by this
// process or another), until ctx ends, and again for every key after it
// may have missed some (a compacted history). The Manager then re-reads
// the certificate of that key, so a renewal by one process reaches the
// memory of all. changed must not block for long.
type Watcher interface {
	Watch(ctx context.Context, changed func(key string))
}

// lockCtxKey carries the name of the Storage lock held around a write.
type lockCtxKey struct{}

// ContextWithLock returns ctx marked as running under the Storage lock
// name; the Manager marks its writes under a lock so that a shared Storage
// can fence them (write only while the lock is still held).
func ContextWithLock(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, lockCtxKey{}, name)
}

// LockFromContext returns the lock name set by ContextWithLock.
func LockFromContext(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(lockCtxKey{}).(string)
	return name, ok
}

// challengeTTL is how long a published challenge answer lives in a
// ChallengeStorage: longer than any order (orderTimeout).
const challengeTTL = 10 * time.Minute

// challengeLookupTimeout bounds a lookup of a challenge answer in a
// ChallengeStorage during the CA's validation.
const challengeLookupTimeout = 2 * time.Second

// certTokenKey and httpTokenKey name the answers of the challenge types
// in a ChallengeStorage (autocert's names).
func certTokenKey(host string) string  { return host + "+token" }
func httpTokenKey(token string) string { return token + "+http-01" }

// shared returns the Storage as a ChallengeStorage; nil if it is not one.
func (m *Manager) shared() ChallengeStorage {
	cs, _ := m.storage.(ChallengeStorage)
	return cs
}

// publishChallenge writes an answer to the ChallengeStorage, if any, and
// returns the function that withdraws it.
func (m *Manager) publishChallenge(ctx context.Context, key string, data []byte) (func(), error) {
	cs := m.shared()
	if cs == nil {
		return func() {}, nil
	}
	if err := cs.PutChallenge(ctx, key, data, challengeTTL); err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storageTimeout)
		defer cancel()
		cs.DeleteChallenge(ctx, key)
	}, nil
}

// sharedChallengeCert looks the tls-alpn-01 answer for host up in the
// ChallengeStorage.
func (m *Manager) sharedChallengeCert(ctx context.Context, host string) (*tls.Certificate, error) {
	cs := m.shared()
	if cs == nil {
		return nil, fs.ErrNotExist
	}
	ctx, cancel := context.WithTimeout(ctx, challengeLookupTimeout)
	defer cancel()
	data, err := cs.GetChallenge(ctx, certTokenKey(host))
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// sharedHTTPResponse looks the http-01 answer for token up in the
// ChallengeStorage.
func (m *Manager) sharedHTTPResponse(ctx context.Context, token string) (string, bool) {
	cs := m.shared()
	if cs == nil || !validToken(token) {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, challengeLookupTimeout)
	defer cancel()
	data, err := cs.GetChallenge(ctx, httpTokenKey(token))
	if err != nil {
		return "", false
	}
	return string(data), true
}

// validToken reports whether token can be an ACME challenge token
// (base64url, RFC 8555 §8.1: at least 128 bits): only such tokens are
// looked up in the shared store, whatever a client asks for.
func validToken(token string) bool {
	if len(token) < 22 || len(token) > 256 {
		return false
	}
	for _, c := range token {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// watchStorage follows the changes of a Watcher Storage until Close.
func (m *Manager) watchStorage(w Watcher) {
	w.Watch(m.ctx, m.storageChanged)
}

// storageChanged re-reads the certificate stored under key, if the
// Manager serves it, and adopts it when it is valid and not the one in
// memory: another process renewed it, or restored a backup.
func (m *Manager) storageChanged(key string) {
	if ck, ok := strings.CutSuffix(key, stateSuffix); ok {
		m.scheduleChanged(ck)
		return
	}
	host, rsa, ok := certCacheKey(key)
	if !ok {
		return
	}
	k := certKey{host: host, rsa: rsa}
	m.mu.Lock()
	e := m.entries[k]
	busy := e == nil || e.flight != nil
	m.mu.Unlock()
	if busy {
		return // not served here, or this process is ordering it
	}
	ctx, cancel := context.WithTimeout(m.ctx, storageTimeout)
	defer cancel()
	c, err := m.readStored(ctx, k)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && m.ctx.Err() == nil {
			m.log.Warn("changed certificate not usable", "host", host, "key", k.keyType(), "error", err)
		}
		return
	}
	m.mu.Lock()
	// Only forward: a stale write (a peer that lost its lock, an old
	// backup) never replaces a certificate that lasts longer.
	if m.entries[k] != e || e.flight != nil || (e.cert != nil && !c.Leaf.NotAfter.After(e.cert.Leaf.NotAfter)) {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	is := m.storedIssuer(ctx, k, c.Leaf) // from the schedule stored next to it
	m.mu.Lock()
	if m.entries[k] != e || e.flight != nil || (e.cert != nil && !c.Leaf.NotAfter.After(e.cert.Leaf.NotAfter)) {
		m.mu.Unlock()
		return
	}
	e.cert, e.obtainedAt, e.ari, e.loaded = c, time.Time{}, nil, true
	e.issuedBy, e.issuerGone = is, false
	e.failures, e.lastErr, e.retryAt = 0, "", time.Time{}
	m.mu.Unlock()
	m.log.Info("certificate loaded", "host", host, "key", k.keyType(), "issuer", issuerLabelOf(is), "cert_issuer", issuerName(c.Leaf), "not_after", c.Leaf.NotAfter, "source", "storage watch")
	m.poke()
}

// scheduleChanged applies the schedule another process stored for the
// certificate key ck (its ARI window, its backoff), if it is about the
// certificate served here, so the fleet follows one schedule.
func (m *Manager) scheduleChanged(ck string) {
	host, rsa, ok := certCacheKey(ck)
	if !ok {
		return
	}
	k := certKey{host: host, rsa: rsa}
	m.mu.Lock()
	e := m.entries[k]
	busy := e == nil || e.flight != nil || !e.loaded
	m.mu.Unlock()
	if busy {
		return // not served here, ordering it, or load reads it anyway
	}
	ctx, cancel := context.WithTimeout(m.ctx, storageTimeout)
	st, err := m.readState(ctx, k)
	cancel()
	if err != nil || st == nil {
		return
	}
	m.mu.Lock()
	if m.entries[k] == e && e.flight == nil {
		m.applyStateLocked(e, st) // only if it is about e's certificate
	}
	m.mu.Unlock()
	m.poke()
}
