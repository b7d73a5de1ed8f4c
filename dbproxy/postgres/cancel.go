package postgres

import (
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
)

// cancelKey identifies a PostgreSQL backend session for cancellation: the
// process ID and secret key of its BackendKeyData.
type cancelKey struct {
	pid uint32
	key string
}

// cancelTable maps the cancel keys of a Server's live PostgreSQL sessions
// to the route whose backend issued them, so that a CancelRequest reaches
// that backend and no other. Safe for concurrent use.
type cancelTable struct {
	mu sync.Mutex
	m  map[cancelKey]*cancelEntry
}

type cancelEntry struct {
	route *dbproxy.Route
}

// add records that r's backend owns k and returns the function that
// forgets it at the session's end. Should two sessions ever share a key,
// the later one wins and the earlier one's removal leaves it alone.
func (t *cancelTable) add(k cancelKey, r *dbproxy.Route) (remove func()) {
	e := &cancelEntry{route: r}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[cancelKey]*cancelEntry)
	}
	t.m[k] = e
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		if t.m[k] == e {
			delete(t.m, k)
		}
		t.mu.Unlock()
	}
}

// lookup returns the route whose backend owns (pid, key).
func (t *cancelTable) lookup(pid uint32, key []byte) (*dbproxy.Route, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[cancelKey{pid: pid, key: string(key)}]
	if !ok {
		return nil, false
	}
	return e.route, true
}

// len is the number of live keys.
func (t *cancelTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
