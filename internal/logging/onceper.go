package logging

import (
	"container/list"
	"sync"
	"time"
)

// OncePer decides which of a repeated event to log: each key (a server
// name, a client) once per interval, and at most maxKeys different keys
// per interval, so that a flood of made-up keys neither floods the log nor
// grows memory. Safe for concurrent use.
type OncePer struct {
	interval time.Duration
	maxKeys  int
	now      func() time.Time // a test seam

	mu       sync.Mutex
	byKey    map[string]*list.Element
	order    list.List // of *onceEntry, oldest first
	unlogged int       // events of new keys dropped at the cap since the last Allow
}

type onceEntry struct {
	key string
	at  time.Time
}

// NewOncePer returns an OncePer that allows each key once per interval,
// for at most maxKeys keys at a time.
func NewOncePer(interval time.Duration, maxKeys int) *OncePer {
	return &OncePer{interval: interval, maxKeys: max(maxKeys, 1), now: time.Now, byKey: make(map[string]*list.Element)}
}

// Allow reports whether an event for key should be logged: key was not
// logged in the last interval, and fewer than maxKeys keys were. When it
// returns true, unlogged is the number of events for other keys it
// refused at the cap since the last true (not counting repeats of logged
// keys), for the line to say how many went unlogged.
func (o *OncePer) Allow(key string) (ok bool, unlogged int) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	for e := o.order.Front(); e != nil; e = o.order.Front() {
		oe := e.Value.(*onceEntry)
		if now.Sub(oe.at) < o.interval {
			break
		}
		o.order.Remove(e)
		delete(o.byKey, oe.key)
	}
	if _, seen := o.byKey[key]; seen {
		return false, 0
	}
	if len(o.byKey) >= o.maxKeys {
		o.unlogged++
		return false, 0
	}
	o.byKey[key] = o.order.PushBack(&onceEntry{key: key, at: now})
	unlogged, o.unlogged = o.unlogged, 0
	return true, unlogged
}

// Len returns the number of keys remembered.
func (o *OncePer) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.byKey)
}
