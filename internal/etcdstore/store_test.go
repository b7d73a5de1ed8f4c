package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/etcdstore"
	"github.com/leproxy/leproxy/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// testTTL is the session TTL of test stores: a dead node's locks free in 2 s.
const testTTL = 2 * time.Second

// openStore opens a Store on the cluster with prefix and a mirror in a new
// directory, closing it at the end of the test.
func openStore(t *testing.T, e *testenv.Etcd, prefix, node string, key []byte) (*etcdstore.Store, *certs.DirStorage) {
	t.Helper()
	mirror := certs.NewDirStorage(t.TempDir())
	endpoints, pfx, err := etcdstore.ParseURL(e.StoreURL(prefix))
	if err != nil {
		t.Fatal(err)
	}
	s, err := etcdstore.Open(etcdstore.Options{Endpoints: endpoints, Prefix: pfx, Mirror: mirror, Key: key, Node: node, SessionTTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, mirror
}

// rawGet reads a key of the cluster as it is stored.
func rawGet(t *testing.T, s *etcdstore.Store, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.Client().Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0].Value
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in        string
		endpoints []string
		prefix    string
		err       bool
	}{
		{in: "etcd://a:2379,b:2379/fleet1", endpoints: []string{"a:2379", "b:2379"}, prefix: "/fleet1/"},
		{in: "etcd://127.0.0.1:2379", endpoints: []string{"127.0.0.1:2379"}, prefix: "/leproxy/"},
		{in: "etcd://h:1/a/b/", endpoints: []string{"h:1"}, prefix: "/a/b/"},
		{in: "http://a:2379/x", err: true},
		{in: "etcd://a/x", err: true},
		{in: "etcd://a:1,/x", err: true},
		{in: "etcd://a:1/x?y", err: true},
	} {
		endpoints, prefix, err := etcdstore.ParseURL(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseURL(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && (!slices.Equal(endpoints, tc.endpoints) || prefix != tc.prefix) {
			t.Errorf("ParseURL(%q) = %q, %q; want %q, %q", tc.in, endpoints, prefix, tc.endpoints, tc.prefix)
		}
	}
}

// TestStorageContract: the certs.Storage contract on etcd, in the disk
// cache's key names under the prefix, with every write mirrored.
func TestStorageContract(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	s, mirror := openStore(t, e, "c1", "n1", nil)
	ctx := context.Background()
	if _, err := s.Get(ctx, "a.example.com"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get of a missing key: %v, want fs.ErrNotExist", err)
	}
	for _, k := range []string{"b.example.com", "a.example.com", "a.example.com+rsa", "local-ca/root.pem"} {
		if err := s.Put(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, "a.example.com")
	if err != nil || string(got) != "v:a.example.com" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if raw := rawGet(t, s, "/c1/cache/a.example.com"); string(raw) != "v:a.example.com" {
		t.Errorf("etcd /c1/cache/a.example.com = %q, want the value (disk cache key names)", raw)
	}
	if m, err := mirror.Get(ctx, "local-ca/root.pem"); err != nil || string(m) != "v:local-ca/root.pem" {
		t.Errorf("mirror = %q, %v; want the value written through", m, err)
	}
	keys, err := s.List(ctx, "a.")
	if err != nil || !slices.Equal(keys, []string{"a.example.com", "a.example.com+rsa"}) {
		t.Errorf("List(a.) = %q, %v", keys, err)
	}
	if err := s.Delete(ctx, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "never.example.com"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if _, err := s.Get(ctx, "a.example.com"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get after Delete: %v", err)
	}
	if _, err := mirror.Get(ctx, "a.example.com"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("mirror Get after Delete: %v", err)
	}
}

// TestMirrorWhenEtcdDown: a store opened with every member down answers
// from its mirror, in bounded time, and a key missing from the mirror is
// an error that does not claim the key is absent.
func TestMirrorWhenEtcdDown(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	s, _ := openStore(t, e, "m", "n1", nil)
	if err := s.Put(context.Background(), "held.example.com", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	s2, mirror2 := openStore(t, e, "m", "n2", nil)
	if _, err := s2.Get(context.Background(), "held.example.com"); err != nil { // read through to n2's mirror
		t.Fatal(err)
	}
	if m, err := mirror2.Get(context.Background(), "held.example.com"); err != nil || string(m) != "cert" {
		t.Fatalf("n2's mirror after a read: %q, %v", m, err)
	}
	e.StopAll()
	start := time.Now()
	got, err := s2.Get(context.Background(), "held.example.com")
	if err != nil || string(got) != "cert" {
		t.Fatalf("Get with etcd down = %q, %v; want the mirror's value", got, err)
	}
	_, err = s2.Get(context.Background(), "new.example.com")
	if err == nil || errors.Is(err, fs.ErrNotExist) || !errors.Is(err, etcdstore.ErrUnavailable) {
		t.Errorf("Get of a key the mirror lacks with etcd down: %v, want ErrUnavailable (not a miss)", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("two reads with etcd down took %v, want each bounded by the call timeout", d)
	}
	start = time.Now()
	if err := s2.Lock(context.Background(), "issue/new.example.com"); !errors.Is(err, etcdstore.ErrUnavailable) {
		t.Errorf("Lock with etcd down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Lock with etcd down took %v, want it to fail fast", d)
	}
}

// TestLockExcludesAcrossNodes: a lock held by one store blocks another
// until it is released, and is handed over then.
func TestLockExcludesAcrossNodes(t *testing.T) {
	e := testenv.StartEtcd(t, 3)
	a, _ := openStore(t, e, "l", "node-a", nil)
	b, _ := openStore(t, e, "l", "node-b", nil)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue/x.example.com"); err != nil {
		t.Fatal(err)
	}
	st := b.Status(ctx)
	if len(st.Locks) != 1 || st.Locks[0] != (etcdstore.Lock{Name: "issue/x.example.com", Node: "node-a"}) {
		t.Errorf("Status().Locks = %+v, want issue/x.example.com held by node-a", st.Locks)
	}
	if !st.Connected || st.LastSync.IsZero() {
		t.Errorf("Status = %+v, want connected with a last sync", st)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := b.Lock(short, "issue/x.example.com")
	cancel()
	if err == nil {
		t.Fatal("b locked a lock a holds")
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue/x.example.com") }()
	select {
	case err := <-got:
		t.Fatalf("b got the lock while a holds it (%v)", err)
	case <-time.After(200 * time.Millisecond): // a negative check: b must still be waiting
	}
	if err := a.Unlock(ctx, "issue/x.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("b's Lock after a's Unlock: %v", err)
	}
	// In-process exclusion too: a second goroutine of b waits.
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "issue/x.example.com"); err == nil {
		t.Fatal("a second goroutine of the holder's process got the lock")
	}
	if err := b.Unlock(ctx, "issue/x.example.com"); err != nil {
		t.Fatal(err)
	}
}

// TestDeadNodeFreesLock: the lock of a node that died (no unlock, no
// revoke) is free within the session TTL.
func TestDeadNodeFreesLock(t *testing.T) {
	e := testenv.StartEtcd(t, 3)
	a, _ := openStore(t, e, "d", "node-a", nil)
	b, _ := openStore(t, e, "d", "node-b", nil)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue/y.example.com"); err != nil {
		t.Fatal(err)
	}
	a.Crash()
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, testTTL+3*time.Second)
	defer cancel()
	if err := b.Lock(lctx, "issue/y.example.com"); err != nil {
		t.Fatalf("lock of a dead node not freed within the TTL (%v) + 3 s: %v", testTTL, err)
	}
	t.Logf("lock handed over %v after the holder died (TTL %v)", time.Since(start), testTTL)
}

// TestFencedPut: a Put under a lock the store lost (its session expired)
// is refused and writes nothing; under a held lock it writes.
func TestFencedPut(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	a, _ := openStore(t, e, "f", "node-a", nil)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue/z.example.com"); err != nil {
		t.Fatal(err)
	}
	lctx := certs.ContextWithLock(ctx, "issue/z.example.com")
	if err := a.Put(lctx, "z.example.com", []byte("first")); err != nil {
		t.Fatalf("fenced Put under a held lock: %v", err)
	}
	// The lease ends behind the store's back, as when etcd expired it.
	if _, err := a.Client().Revoke(ctx, a.SessionLease()); err != nil {
		t.Fatal(err)
	}
	err := a.Put(lctx, "z.example.com", []byte("stale"))
	if !errors.Is(err, etcdstore.ErrLockLost) {
		t.Fatalf("fenced Put after the lock was lost: %v, want ErrLockLost", err)
	}
	if raw := rawGet(t, a, "/f/cache/z.example.com"); string(raw) != "first" {
		t.Errorf("value after a refused fenced Put = %q, want %q", raw, "first")
	}
}

const pemKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

// TestSealedAtRest: with a key, values holding a private key are stored
// sealed (not readable in etcd), open for the store, do not open without
// the key nor under another name; other values stay plain.
func TestSealedAtRest(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	key, err := etcdstore.ParseKey("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
	if err != nil {
		t.Fatal(err)
	}
	s, mirror := openStore(t, e, "s", "n", key)
	ctx := context.Background()
	if err := s.Put(ctx, "a.example.com", []byte(pemKey)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a.example.com+ari", []byte(`{"plain":true}`)); err != nil {
		t.Fatal(err)
	}
	raw := rawGet(t, s, "/s/cache/a.example.com")
	if !bytes.HasPrefix(raw, []byte("lpx1")) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatalf("stored value %q, want it sealed", raw)
	}
	if raw := rawGet(t, s, "/s/cache/a.example.com+ari"); string(raw) != `{"plain":true}` {
		t.Errorf("a value without a private key stored as %q, want plain", raw)
	}
	if got, err := s.Get(ctx, "a.example.com"); err != nil || string(got) != pemKey {
		t.Errorf("Get = %q, %v; want the plaintext", got, err)
	}
	if m, _ := mirror.Get(ctx, "a.example.com"); string(m) != pemKey {
		t.Errorf("mirror holds %q, want the plaintext (a 0600 file, as without a store)", m)
	}
	// Moved to another name: does not open.
	if _, err := s.Client().Put(ctx, "/s/cache/b.example.com", string(raw)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "b.example.com"); !errors.Is(err, etcdstore.ErrSealed) {
		t.Errorf("Get of a sealed value moved to another name: %v, want ErrSealed", err)
	}
	nokey, _ := openStore(t, e, "s", "n2", nil)
	if _, err := nokey.Get(ctx, "a.example.com"); !errors.Is(err, etcdstore.ErrSealed) || !strings.Contains(err.Error(), etcdstore.KeyEnv) {
		t.Errorf("Get without the key: %v, want ErrSealed naming %s", err, etcdstore.KeyEnv)
	}
	other, _ := etcdstore.ParseKey("qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo=")
	wrong, _ := openStore(t, e, "s", "n3", other)
	if _, err := wrong.Get(ctx, "a.example.com"); !errors.Is(err, etcdstore.ErrSealed) || !strings.Contains(err.Error(), "another key") {
		t.Errorf("Get with another key: %v, want ErrSealed naming another key", err)
	}
	if _, err := etcdstore.ParseKey("c2hvcnQ="); err == nil {
		t.Error("ParseKey accepted a 5-byte key")
	}
}

// TestChallengeLease: a challenge answer is readable by every node and
// goes away with its lease.
func TestChallengeLease(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	a, _ := openStore(t, e, "ch", "a", nil)
	b, _ := openStore(t, e, "ch", "b", nil)
	ctx := context.Background()
	if err := a.PutChallenge(ctx, "tok+http-01", []byte("keyauth"), time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := b.GetChallenge(ctx, "tok+http-01"); err != nil || string(got) != "keyauth" {
		t.Fatalf("b reads %q, %v", got, err)
	}
	if keys, _ := b.List(ctx, ""); len(keys) != 0 {
		t.Errorf("challenge answers listed with the cache keys: %q", keys)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := b.GetChallenge(ctx, "tok+http-01")
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("challenge answer still there 5 s after its 1 s lease: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := a.PutChallenge(ctx, "h+token", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteChallenge(ctx, "h+token"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetChallenge(ctx, "h+token"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetChallenge after DeleteChallenge: %v", err)
	}
}

// keyRecorder collects the keys a watch reports.
type keyRecorder struct {
	mu   sync.Mutex
	keys []string
}

func (r *keyRecorder) add(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, k)
}

func (r *keyRecorder) has(k string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.keys, k)
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestWatch: a value written by one node is reported to another's watch
// within a second and written to its mirror.
func TestWatch(t *testing.T) {
	e := testenv.StartEtcd(t, 3)
	a, _ := openStore(t, e, "w", "a", nil)
	b, mirrorB := openStore(t, e, "w", "b", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rec keyRecorder
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { b.Watch(ctx, rec.add) })
	// Wait until the watch runs: a key written now is reported.
	if err := a.Put(ctx, "probe", []byte("p")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the watch started", func() bool { return rec.has("probe") })
	if err := a.Put(ctx, "w.example.com", []byte("new")); err != nil {
		t.Fatal(err)
	}
	d := waitUntil(t, time.Second, "b told of a's write", func() bool { return rec.has("w.example.com") })
	t.Logf("watch latency %v", d)
	if m, err := mirrorB.Get(ctx, "w.example.com"); err != nil || string(m) != "new" {
		t.Errorf("b's mirror after the watch: %q, %v", m, err)
	}
}

// TestWatchResumesAfterCompaction: a watch from a revision etcd has
// compacted lists every key again and goes on watching.
func TestWatchResumesAfterCompaction(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	a, _ := openStore(t, e, "wc", "a", nil)
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Put(ctx, "before.example.com", []byte("1")); err != nil {
		t.Fatal(err)
	}
	resp, err := a.Client().Put(ctx, "/wc/other", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	var rec keyRecorder
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { a.WatchCacheFrom(ctx, 1, rec.add) })
	waitUntil(t, 10*time.Second, "the key written before the compaction, listed again", func() bool { return rec.has("before.example.com") })
	if err := a.Put(ctx, "after.example.com", []byte("2")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "a key written after the re-listing", func() bool { return rec.has("after.example.com") })
}

// TestUserPassword: with etcd authentication on, a store with the user's
// password reads and writes under its prefix; a wrong password is refused.
func TestUserPassword(t *testing.T) {
	e := testenv.StartEtcd(t, 1)
	admin, _ := openStore(t, e, "auth", "admin", nil)
	c := admin.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.RoleAdd(ctx, "leproxy"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "leproxy", "/auth/", clientv3.GetPrefixRangeEnd("/auth/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserAdd(ctx, "leproxy", "s3cret"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "leproxy", "leproxy"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth set-up step %d: %v", i, err)
		}
	}
	endpoints, prefix, _ := etcdstore.ParseURL(e.StoreURL("auth"))
	open := func(password string) (*etcdstore.Store, error) {
		s, err := etcdstore.Open(etcdstore.Options{Endpoints: endpoints, Prefix: prefix, Username: "leproxy", Password: password, SessionTTL: testTTL})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	s, err := open("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a.example.com", []byte("v")); err != nil {
		t.Fatalf("Put with the user's password: %v", err)
	}
	if err := s.Lock(ctx, "issue/a.example.com"); err != nil {
		t.Fatalf("Lock with the user's password: %v", err)
	}
	if err := s.Unlock(ctx, "issue/a.example.com"); err != nil {
		t.Fatal(err)
	}
	// The etcd client authenticates when it connects: a wrong password
	// fails Open.
	if _, err := open("wrong"); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("Open with a wrong password: %v, want an authentication error", err)
	}
	// Outside its prefix the user may do nothing.
	if _, err := s.Client().Put(ctx, "/other/x", "y"); err == nil {
		t.Error("the user wrote outside its prefix")
	}
}
