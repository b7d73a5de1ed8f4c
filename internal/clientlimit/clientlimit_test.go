package clientlimit

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestKeyOf(t *testing.T) {
	for _, tc := range []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.7", 0, "192.0.2.7"},
		{"::ffff:192.0.2.7", 0, "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"fe80::1%eth0", 0, "fe80::/64"},
	} {
		got := String(KeyOf(netip.MustParseAddr(tc.addr), tc.bits))
		if got != tc.want {
			t.Errorf("KeyOf(%s, %d) = %s, want %s", tc.addr, tc.bits, got, tc.want)
		}
		if k, ok := ParseKey(got, tc.bits); !ok || String(k) != got {
			t.Errorf("ParseKey(%s) = %s, %v", got, String(k), ok)
		}
	}
}

func TestLimiterRate(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limits{Rate: 10, Burst: 20}, LimiterOptions{Clock: clk.Now})
	k := KeyOf(netip.MustParseAddr("192.0.2.1"), 0)
	other := KeyOf(netip.MustParseAddr("192.0.2.2"), 0)
	ok, refused := 0, 0
	var retry time.Duration
	for range 30 {
		release, d, err := l.Acquire(k)
		switch {
		case err == nil:
			ok++
			release()
		case errors.Is(err, ErrRate):
			refused++
			retry = d
		default:
			t.Fatalf("Acquire: %v", err)
		}
	}
	if ok != 20 || refused != 10 {
		t.Errorf("burst of 30 at rate 10/s burst 20: %d taken, %d refused, want 20 and 10", ok, refused)
	}
	if retry != 100*time.Millisecond {
		t.Errorf("retry = %v, want 100ms", retry)
	}
	if _, _, err := l.Acquire(other); err != nil {
		t.Errorf("another client: %v", err)
	}
	clk.Add(time.Second) // 10 tokens back
	ok = 0
	for range 15 {
		if release, _, err := l.Acquire(k); err == nil {
			ok++
			release()
		}
	}
	if ok != 10 {
		t.Errorf("a second later: %d taken, want 10", ok)
	}
}

func TestLimiterConcurrency(t *testing.T) {
	l := NewLimiter(Limits{Concurrent: 2}, LimiterOptions{})
	k := KeyOf(netip.MustParseAddr("2001:db8::1"), 0)
	same := KeyOf(netip.MustParseAddr("2001:db8::2"), 0) // same /64
	r1, _, err1 := l.Acquire(k)
	_, _, err2 := l.Acquire(same)
	_, _, err3 := l.Acquire(k)
	if err1 != nil || err2 != nil || !errors.Is(err3, ErrConcurrency) {
		t.Fatalf("three in flight with cap 2: %v, %v, %v", err1, err2, err3)
	}
	r1()
	if _, _, err := l.Acquire(k); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

func TestTableBound(t *testing.T) {
	clk := newFakeClock()
	const bound = 1000
	l := NewLimiter(Limits{Rate: 1, Burst: 1}, LimiterOptions{MaxClients: bound, Clock: clk.Now, Idle: time.Minute})
	busy := KeyOf(netip.MustParseAddr("10.0.0.1"), 0)
	if _, _, err := l.Acquire(busy); err != nil { // held, never released
		t.Fatal(err)
	}
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)})
		release, _, err := l.Acquire(KeyOf(a, 0))
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		release()
		if n := l.Len(); n > bound {
			t.Fatalf("after %d clients the table holds %d, bound %d", i+1, n, bound)
		}
	}
	clk.Add(2 * time.Minute)
	l.Acquire(KeyOf(netip.MustParseAddr("10.0.0.2"), 0))
	l.Acquire(KeyOf(netip.MustParseAddr("10.0.0.3"), 0))
	if n := l.Len(); n >= bound {
		t.Errorf("idle entries not expired: %d held", n)
	}
}

func TestIdleExpiryKeepsBusy(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiter(Limits{Concurrent: 1}, LimiterOptions{Clock: clk.Now, Idle: time.Minute})
	k := KeyOf(netip.MustParseAddr("192.0.2.1"), 0)
	release, _, err := l.Acquire(k)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	l.Acquire(KeyOf(netip.MustParseAddr("192.0.2.9"), 0)) // runs expiry
	if _, _, err := l.Acquire(k); !errors.Is(err, ErrConcurrency) {
		t.Errorf("a client with a connection open for an hour was forgotten: %v", err)
	}
	release()
}

func TestGuardBlocks(t *testing.T) {
	clk := newFakeClock()
	var blocked []string
	bl := NewBlocklist(BlocklistOptions{Clock: clk.Now, OnBlock: func(r string) { blocked = append(blocked, r) }})
	var limited []string
	c := New(Policy{Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
		Options{Blocks: bl, Clock: clk.Now, OnLimited: func(k string) { limited = append(limited, k) }})
	g := c.Guard(GuardConfig{Listener: ":5432", Block: BlockPolicy{After: 3, Window: time.Minute, For: 10 * time.Minute, Auth: true}})
	bad := netip.MustParseAddr("192.0.2.1")
	exempt := netip.MustParseAddr("198.51.100.5")

	g.Failed(bad, FailTLS)
	g.Failed(bad, FailAuth)
	if _, err := g.Admit(bad); err != nil {
		t.Fatalf("after 2 of 3 failures: %v", err)
	}
	g.Failed(bad, FailProtocol)
	if _, err := g.Admit(bad); !errors.Is(err, ErrBlocked) {
		t.Fatalf("after 3 failures: %v, want ErrBlocked", err)
	}
	list := bl.List()
	if len(list) != 1 || list[0].Client != "192.0.2.1" || list[0].Until.Sub(list[0].Since) != 10*time.Minute || list[0].Reason != FailProtocol {
		t.Fatalf("List = %+v", list)
	}
	for range 10 {
		g.Failed(exempt, FailTLS)
	}
	if _, err := g.Admit(exempt); err != nil {
		t.Errorf("allow-listed client: %v", err)
	}

	// The block ends; a repeat offence doubles it.
	clk.Add(10*time.Minute + time.Second)
	if _, err := g.Admit(bad); err != nil {
		t.Fatalf("after the block: %v", err)
	}
	for range 3 {
		g.Failed(bad, FailTLS)
	}
	list = bl.List()
	if len(list) != 1 || list[0].Until.Sub(list[0].Since) != 20*time.Minute || list[0].Offences != 2 {
		t.Fatalf("second block: %+v, want 20m, offence 2", list)
	}
	if !bl.Lift(KeyOf(bad, 0)) {
		t.Error("Lift: not blocked")
	}
	if _, err := g.Admit(bad); err != nil {
		t.Errorf("after Lift: %v", err)
	}
	if len(blocked) != 2 || len(limited) != 1 || limited[0] != "blocked" {
		t.Errorf("OnBlock calls %v, OnLimited calls %v", blocked, limited)
	}
}

func TestGuardWindow(t *testing.T) {
	clk := newFakeClock()
	c := New(Policy{}, Options{Clock: clk.Now})
	g := c.Guard(GuardConfig{Block: BlockPolicy{After: 2, Window: time.Minute}})
	a := netip.MustParseAddr("192.0.2.1")
	g.Failed(a, FailTLS)
	clk.Add(61 * time.Second)
	g.Failed(a, FailTLS) // the first is out of the window
	if _, err := g.Admit(a); err != nil {
		t.Fatalf("failures a window apart blocked: %v", err)
	}
	g.Failed(a, FailAuth) // auth does not count without Auth
	if _, err := g.Admit(a); err != nil {
		t.Fatalf("an auth failure counted without Auth: %v", err)
	}
	g.Failed(a, FailTLS)
	if _, err := g.Admit(a); !errors.Is(err, ErrBlocked) {
		t.Fatalf("two failures in a window: %v", err)
	}
}

func TestForwardedFor(t *testing.T) {
	trusted := func(a netip.Addr) bool {
		return netip.MustParsePrefix("10.0.0.0/8").Contains(a)
	}
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1", []string{"203.0.113.9"}, "192.0.2.1"}, // untrusted peer: its header is ignored
		{"10.0.0.1", nil, "10.0.0.1"},
		{"10.0.0.1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"10.0.0.1", []string{"1.1.1.1, 203.0.113.9, 10.0.0.2"}, "203.0.113.9"}, // spoofed leftmost ignored
		{"10.0.0.1", []string{"1.1.1.1", "203.0.113.9"}, "203.0.113.9"},
		{"10.0.0.1", []string{"garbage, 10.0.0.3"}, "10.0.0.3"},
		{"10.0.0.1", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"10.0.0.1", []string{"10.0.0.2,10.0.0.3"}, "10.0.0.2"},
	} {
		got := ForwardedFor(netip.MustParseAddr(tc.peer), tc.xff, trusted)
		if got.String() != tc.want {
			t.Errorf("ForwardedFor(%s, %q) = %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

func FuzzForwardedFor(f *testing.F) {
	f.Add("10.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.2")
	f.Add("10.0.0.1", "[::1]:80,,garbage")
	f.Fuzz(func(t *testing.T, peer, xff string) {
		p, err := netip.ParseAddr(peer)
		if err != nil {
			return
		}
		trusted := func(a netip.Addr) bool { return a.IsPrivate() || a.IsLoopback() }
		got := ForwardedFor(p, []string{xff}, trusted)
		if !got.IsValid() {
			t.Fatalf("ForwardedFor(%s, %q) returned no address", peer, xff)
		}
		if !trusted(p.Unmap()) && got != p.Unmap() {
			t.Fatalf("untrusted peer %s replaced by %s", peer, got)
		}
	})
}
