package dbproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// errIdle ends a session in which no byte moved either way for the idle
// timeout.
var errIdle = errors.New("idle timeout")

const (
	// maxIdleTick bounds the interval at which copiers report progress.
	maxIdleTick = time.Minute
	// halfClosedIdle is the idle timeout of a session that one side has
	// half-closed: a database peer that closed has nothing more to say, and
	// the other side's silence must not hold the session for the whole
	// IdleTimeout.
	halfClosedIdle = 30 * time.Second
)

// pumpLimits are the pump's idle timeouts; 0 means none.
type pumpLimits struct {
	idle       time.Duration // no byte either way
	halfClosed time.Duration // no byte since one direction ended
}

// tick is the interval at which copiers report progress: a quarter of the
// shortest timeout, at most maxIdleTick; 0 when there is no timeout.
func (l pumpLimits) tick() time.Duration {
	t := maxIdleTick
	for _, d := range []time.Duration{l.idle, l.halfClosed} {
		if d > 0 {
			t = min(t, d/4)
		}
	}
	if l.idle <= 0 && l.halfClosed <= 0 {
		return 0
	}
	return max(t, time.Millisecond)
}

// pump copies bytes between c, the client side, and b, the backend side,
// until both directions have ended, and returns the bytes copied each way
// and the first error. A direction that reaches EOF half-closes its
// destination and the other direction carries on, for as long as bytes
// keep moving (lim.halfClosed). An error in either direction, or no byte
// moving either way for lim.idle, calls abort, which must close the
// connections under c and b so that everything stops. in and out, when not
// nil, are added to as bytes move. last, when not nil, is the activity
// clock to keep (UnixNano of the last byte), shared with the caller.
//
// Each direction is a copier goroutine running plain io.Copy on the
// connections as given, so when both are *net.TCPConn the kernel splices
// them and no byte enters user space. io.Copy then reports progress only
// when it returns, so progress is sampled with read deadlines instead of a
// counting wrapper (which would hide ReadFrom and WriteTo and with them
// splice): each copier gives its source a read deadline one tick ahead
// (a quarter of the shortest timeout, at most maxIdleTick), adds what
// io.Copy moved when it returns, records the time when anything moved,
// and goes round again. A read timeout leaves TCP and TLS connections
// usable, and Go's splice loop hands every drained byte to the destination
// before it returns, so nothing is lost between rounds. The calling
// goroutine is the watchdog: at each tick it aborts the session if nothing
// moved for the timeout in force, which also frees a copier stuck writing
// to a peer that stopped reading. (A write in progress is not sampled, so
// a peer that reads less than one 32 KiB buffer or one splice chunk per
// timeout counts as stalled.)
func pump(c, b net.Conn, lim pumpLimits, in, out *atomic.Uint64, last *atomic.Int64, abort func()) (nIn, nOut int64, end End, err error) {
	if last == nil {
		last = new(atomic.Int64)
	}
	last.Store(time.Now().UnixNano())
	// Backend connections from Session.Dial are wrapped; copy on what is
	// underneath, so that two TCP connections still splice.
	c, b = unwrapConn(c), unwrapConn(b)
	tick := lim.tick()
	up := &copier{dst: b, src: c, srcSide: ByClient, dstSide: ByBackend, tick: tick, last: last, counter: in, done: make(chan struct{})}
	down := &copier{dst: c, src: b, srcSide: ByBackend, dstSide: ByClient, tick: tick, last: last, counter: out, done: make(chan struct{})}
	up.other, down.other = down, up

	var (
		mu       sync.Mutex
		first    error
		decided  bool
		backstop *time.Timer
	)
	// finish records how a direction ended: the first to end says how the
	// session did; the first error is the session's error.
	finish := func(cp *copier, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if decided {
			// A side that reset its connection can read as closed: its
			// socket reports ECONNRESET once, and when the other
			// direction's write to it takes the error, the read here sees
			// EOF. A reset that follows a close of the same side says
			// how that side really went.
			if end.Reason == ReasonClosed && errors.Is(err, syscall.ECONNRESET) && cp.deadSide(err) == end.By {
				end.Reason = ReasonReset
			}
			return
		}
		decided = true
		switch {
		case err == nil:
			end = End{cp.srcSide, ReasonClosed}
		case errors.Is(err, errIdle):
			end = End{ByLeproxy, ReasonIdle}
		default:
			// A side went away. Whatever its peer still sends to the
			// other side is delivered (bounded by errorDrain), so that the
			// last bytes, such as a backend's final error message, and the
			// counts are what the kernel had; the direction towards the
			// dead side stops at once.
			dead := cp.deadSide(err)
			end = End{dead, ReasonReset}
			if dead == cp.srcSide {
				cp.other.interrupt()
			}
			backstop = time.AfterFunc(errorDrain, abort)
		}
	}
	go up.run(finish)
	go down.run(finish)

	var ticks <-chan time.Time
	if tick > 0 {
		t := time.NewTicker(tick)
		defer t.Stop()
		ticks = t.C
	}
	limit := lim.idle
	halfClosed := func() {
		if lim.halfClosed > 0 && (limit <= 0 || lim.halfClosed < limit) {
			limit = lim.halfClosed
		}
	}
	upDone, downDone := up.done, down.done
	for upDone != nil || downDone != nil {
		select {
		case <-upDone:
			upDone = nil
			halfClosed()
		case <-downDone:
			downDone = nil
			halfClosed()
		case <-ticks:
			if limit > 0 && time.Since(time.Unix(0, last.Load())) >= limit {
				finish(up, errIdle)
				abort()
			}
		}
	}
	mu.Lock()
	if backstop != nil {
		backstop.Stop()
	}
	mu.Unlock()
	if first != nil {
		abort()
	}
	return up.n, down.n, end, first
}

// errorDrain bounds how long the direction away from a side that went
// away may go on delivering what that side sent before it went.
const errorDrain = time.Second

// copier copies one direction of a session: what src sends goes to dst.
// It is a named type so that goroutine dumps show (*copier).run.
type copier struct {
	dst, src net.Conn
	srcSide  string // ByClient or ByBackend
	dstSide  string
	other    *copier        // the opposite direction
	tick     time.Duration  // read deadline interval; 0 for none
	last     *atomic.Int64  // UnixNano of the last byte moved, shared by both directions
	counter  *atomic.Uint64 // nil or a live byte counter
	done     chan struct{}  // closed when run returns
	n        int64          // bytes copied; read after done

	mu      sync.Mutex // orders interrupt against the next round's deadline
	stopped bool
}

// interrupt stops the copier at its next read, without losing what it
// has read: it is no error.
func (cp *copier) interrupt() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.stopped = true
	cp.src.SetReadDeadline(time.Now())
}

// deadSide says which side of the copier went away when it failed with
// err: the one whose socket answers EOF or an error to a peek, or, when
// that does not tell, the destination for a failed write and the source
// otherwise.
func (cp *copier) deadSide(err error) string {
	srcGone, ok1 := peerGone(cp.src)
	dstGone, ok2 := peerGone(cp.dst)
	if ok1 && ok2 && srcGone != dstGone {
		if srcGone {
			return cp.srcSide
		}
		return cp.dstSide
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "write" {
		return cp.dstSide
	}
	return cp.srcSide
}

// run copies until src reaches EOF, then half-closes dst, or until it is
// interrupted; it reports how it ended to finish: nil for EOF, an error
// for a failure, the half-close's included. An interrupted copier reports
// nothing.
func (cp *copier) run(finish func(*copier, error)) {
	defer close(cp.done)
	copyRound := func() (int64, error) { return io.Copy(cp.dst, cp.src) }
	if !spliceable(cp.dst, cp.src) {
		// io.Copy would allocate a buffer in every round (in the
		// connections' generic ReadFrom or WriteTo); use one from the pool
		// for the whole session instead.
		bp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bp)
		dst, src := struct{ io.Writer }{cp.dst}, struct{ io.Reader }{cp.src}
		copyRound = func() (int64, error) { return io.CopyBuffer(dst, src, *bp) }
	}
	fail := func(err error) { finish(cp, err) }
	for {
		cp.mu.Lock()
		if cp.stopped {
			cp.mu.Unlock()
			return
		}
		if cp.tick > 0 {
			if err := cp.src.SetReadDeadline(time.Now().Add(cp.tick)); err != nil {
				cp.mu.Unlock()
				fail(err)
				return
			}
		}
		cp.mu.Unlock()
		n, err := copyRound()
		if n > 0 {
			cp.n += n
			if cp.counter != nil {
				cp.counter.Add(uint64(n))
			}
			cp.last.Store(time.Now().UnixNano())
		}
		cp.mu.Lock()
		stopped := cp.stopped
		cp.mu.Unlock()
		switch {
		case stopped && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)):
			return
		case err == nil:
			// ENOTCONN: the peer has closed its whole connection already;
			// there is nothing left to half-close, and nothing went wrong.
			// The source's EOF is recorded before the half-close passes it
			// on, which lets the other side answer with its own close.
			fail(nil)
			if err := CloseWrite(cp.dst); err != nil && !errors.Is(err, syscall.ENOTCONN) {
				fail(err)
			}
			return
		case cp.tick > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			// A sampling round ended; go on.
		default:
			fail(err)
			return
		}
	}
}

// copyBuffers holds the copy buffers of directions that cannot splice.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// unwrapConn returns the connection under a backend connection from
// Session.Dial, c itself otherwise.
func unwrapConn(c net.Conn) net.Conn {
	if tc, ok := c.(*trackedConn); ok {
		return tc.Conn
	}
	return c
}

// spliceable reports whether io.Copy(dst, src) can use splice(2): both
// ends plain TCP.
func spliceable(dst, src net.Conn) bool {
	_, d := dst.(*net.TCPConn)
	_, s := src.(*net.TCPConn)
	return d && s
}

// CloseWrite half-closes c: a TLS close_notify and then a TCP FIN, so the
// peer reads EOF while it can still send. A connection that cannot
// half-close is left open (nil error); the session's end closes it.
// Protocols that wrap a session's connections call it from their
// wrappers' CloseWrite, so the pump's half-close reaches the wire.
func CloseWrite(c io.Writer) error {
	switch c := c.(type) {
	case *tls.Conn:
		if err := c.CloseWrite(); err != nil {
			return err
		}
		return CloseWrite(c.NetConn())
	case interface{ CloseWrite() error }:
		return c.CloseWrite()
	}
	return nil
}
