package clientlimit

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"time"
)

const (
	// maxBlocks bounds the block list, history included: beyond it the
	// record closest to being forgotten goes first.
	maxBlocks = 65536
	// DefaultBlockFor is the first block's length when a policy gives none.
	DefaultBlockFor = 10 * time.Minute
	// maxBlockFor caps a block's doubling.
	maxBlockFor = 7 * 24 * time.Hour
	// remember is how long a block is remembered after it ends, so that
	// the next one is twice as long.
	remember = 24 * time.Hour
)

// A Block is one client's block as the admin API shows it.
type Block struct {
	Client   string    `json:"client"`   // String of its Key
	Listener string    `json:"listener"` // where the offence was
	Reason   string    `json:"reason"`   // what it failed at: tls, protocol, auth
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Offences int       `json:"offences"` // blocks so far, this one included
}

// BlocklistOptions configures NewBlocklist. The zero value is usable.
type BlocklistOptions struct {
	// Clock is the time source; nil means time.Now.
	Clock Clock
	// Logger receives one line per block and per lift; nil discards.
	Logger *slog.Logger
	// OnBlock, if set, is called once per block with its reason, for
	// metrics.
	OnBlock func(reason string)
}

// A Blocklist holds the blocked clients of every listener: a client
// blocked on one is refused on all. A block lasts its policy's For, twice
// that on the next offence within a day of the last block's end, and so
// on, up to a week.
type Blocklist struct {
	opts   BlocklistOptions
	logger *slog.Logger
	mu     sync.Mutex
	m      map[Key]*Block // active blocks and remembered ones
}

// NewBlocklist returns an empty Blocklist.
func NewBlocklist(opts BlocklistOptions) *Blocklist {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Blocklist{opts: opts, logger: logger, m: make(map[Key]*Block)}
}

// Blocked reports whether k is blocked now, and until when.
func (b *Blocklist) Blocked(k Key) (until time.Time, blocked bool) {
	now := b.opts.Clock.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.m[k]; ok && now.Before(e.Until) {
		return e.Until, true
	}
	return time.Time{}, false
}

// Add blocks k for period, doubled for each block it had within a day
// before this one, and returns the block.
func (b *Blocklist) Add(k Key, listener, reason string, period time.Duration) Block {
	if period <= 0 {
		period = DefaultBlockFor
	}
	now := b.opts.Clock.now()
	b.mu.Lock()
	e, ok := b.m[k]
	switch {
	case ok && now.Before(e.Until):
		// Already blocked: nothing new (the listener saw the failure of a
		// connection it took before the block).
		blk := *e
		b.mu.Unlock()
		return blk
	case ok && now.Sub(e.Until) < remember:
		e.Offences++
	default:
		if len(b.m) >= maxBlocks {
			b.evict(now)
		}
		e = &Block{Offences: 1}
		b.m[k] = e
	}
	d := period
	for i := 1; i < e.Offences && d < maxBlockFor; i++ {
		d *= 2
	}
	e.Client, e.Listener, e.Reason = String(k), listener, reason
	e.Since, e.Until = now, now.Add(min(d, maxBlockFor))
	blk := *e
	b.mu.Unlock()
	b.logger.Warn("client blocked", "client", blk.Client, "listener", listener, "reason", reason,
		"until", blk.Until, "offences", blk.Offences)
	if b.opts.OnBlock != nil {
		b.opts.OnBlock(reason)
	}
	return blk
}

// evict drops forgotten records, or the one that ends first when none
// is. b.mu must be held.
func (b *Blocklist) evict(now time.Time) {
	var first Key
	var firstUntil time.Time
	for k, e := range b.m {
		if now.Sub(e.Until) >= remember {
			delete(b.m, k)
			continue
		}
		if firstUntil.IsZero() || e.Until.Before(firstUntil) {
			first, firstUntil = k, e.Until
		}
	}
	if len(b.m) >= maxBlocks {
		delete(b.m, first)
	}
}

// Lift ends k's block now and forgets its offences; it reports whether
// k was blocked.
func (b *Blocklist) Lift(k Key) bool {
	now := b.opts.Clock.now()
	b.mu.Lock()
	e, ok := b.m[k]
	active := ok && now.Before(e.Until)
	delete(b.m, k)
	b.mu.Unlock()
	if active {
		b.logger.Info("client block lifted", "client", String(k))
	}
	return active
}

// List returns the blocks in force, the one ending first first.
func (b *Blocklist) List() []Block {
	now := b.opts.Clock.now()
	b.mu.Lock()
	var out []Block
	for _, e := range b.m {
		if now.Before(e.Until) {
			out = append(out, *e)
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y Block) int {
		return cmp.Or(x.Until.Compare(y.Until), cmp.Compare(x.Client, y.Client))
	})
	return out
}
