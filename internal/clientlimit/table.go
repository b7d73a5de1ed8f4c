package clientlimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of a Table's bound and idle expiry.
const (
	DefaultMaxClients = 65536
	DefaultIdle       = 10 * time.Minute
)

// state is what a Table holds for one client. Its fields are guarded by
// the Table's mutex.
type state struct {
	key       Key
	last      time.Time     // last use, for idle expiry
	bucket    *rate.Limiter // nil when there is no rate limit
	active    int           // connections or requests in flight
	fails     int           // failures in the current window
	failStart time.Time     // start of the current failure window
}

// table is a bounded map from Key to state: at most max entries, the least
// recently used evicted first, entries idle for longer than idle (and with
// nothing in flight) expired on the way.
type table struct {
	mu   sync.Mutex
	max  int
	idle time.Duration
	m    map[Key]*list.Element // of *state
	lru  list.List             // front: most recently used
}

func newTable(maxClients int, idle time.Duration) *table {
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	if idle <= 0 {
		idle = DefaultIdle
	}
	return &table{max: maxClients, idle: idle, m: make(map[Key]*list.Element)}
}

// get returns the state of k, created with fresh when it has none, and
// marks it used at now. t.mu must be held.
func (t *table) get(k Key, now time.Time, fresh func() *state) *state {
	t.expire(now)
	if e, ok := t.m[k]; ok {
		s := e.Value.(*state)
		s.last = now
		t.lru.MoveToFront(e)
		return s
	}
	for len(t.m) >= t.max {
		t.remove(t.lru.Back())
	}
	s := fresh()
	s.key, s.last = k, now
	t.m[k] = t.lru.PushFront(s)
	return s
}

// expire drops the idle entries at the back of the list; one with
// something in flight is moved to the front instead. It does a bounded
// amount of work per call. t.mu must be held.
func (t *table) expire(now time.Time) {
	for range 8 {
		e := t.lru.Back()
		if e == nil {
			return
		}
		s := e.Value.(*state)
		if now.Sub(s.last) <= t.idle {
			return
		}
		if s.active > 0 {
			s.last = now
			t.lru.MoveToFront(e)
			continue
		}
		t.remove(e)
	}
}

func (t *table) remove(e *list.Element) {
	delete(t.m, e.Value.(*state).key)
	t.lru.Remove(e)
}

// Len is the number of clients held.
func (t *table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
