package logging

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestOncePer(maxKeys int) (*OncePer, *testClock) {
	c := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := NewOncePer(time.Minute, maxKeys)
	o.now = c.now
	return o, c
}

func TestOncePerKeyPerInterval(t *testing.T) {
	o, clock := newTestOncePer(10)
	allow := func(key string, want bool) {
		t.Helper()
		if ok, _ := o.Allow(key); ok != want {
			t.Errorf("Allow(%q) at %s = %v, want %v", key, clock.now().Format("15:04:05"), ok, want)
		}
	}
	allow("a.example", true)
	allow("a.example", false)
	allow("b.example", true)
	clock.add(59 * time.Second)
	allow("a.example", false)
	clock.add(time.Second)
	allow("a.example", true) // a minute after it was logged
	allow("b.example", true)
	allow("a.example", false)
	allow("", true) // no server name is a key too
}

// TestOncePerFlood sends a flood of different keys: no more than maxKeys
// are logged per interval, memory stays at maxKeys, and the next logged
// line reports how many went unlogged.
func TestOncePerFlood(t *testing.T) {
	o, clock := newTestOncePer(100)
	logged := 0
	for i := range 100_000 {
		if ok, _ := o.Allow(fmt.Sprintf("%d.random.example", i)); ok {
			logged++
		}
	}
	if logged != 100 || o.Len() != 100 {
		t.Fatalf("a flood of 100000 names: %d logged, %d remembered; want 100 and 100", logged, o.Len())
	}
	if ok, _ := o.Allow("late.example"); ok {
		t.Error("a new name at the cap was allowed")
	}
	clock.add(time.Minute)
	ok, unlogged := o.Allow("next.example")
	if !ok || unlogged != 100_000-100+1 {
		t.Errorf("after the interval: Allow = %v, %d unlogged; want true, %d", ok, unlogged, 100_000-100+1)
	}
	if ok, unlogged := o.Allow("other.example"); !ok || unlogged != 0 {
		t.Errorf("then: Allow = %v, %d unlogged; want true, 0", ok, unlogged)
	}
	if o.Len() != 2 {
		t.Errorf("remembered %d names after the old ones expired, want 2", o.Len())
	}
}

func TestOncePerConcurrent(t *testing.T) {
	o := NewOncePer(time.Minute, 1000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for i := range 500 {
				if ok, _ := o.Allow(fmt.Sprint(i % 100)); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Errorf("8 goroutines, 100 keys: %d allowed, want 100", allowed)
	}
}
