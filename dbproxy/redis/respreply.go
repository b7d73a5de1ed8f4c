package redis

import (
	"bytes"
	"sync"
	"sync/atomic"
)

// RESP reply scanning: the backend side of a Redis session, passed through
// a streaming rewriter. It follows the structure of RESP2 and RESP3
// replies (simple strings, errors, integers, bulk strings, arrays, and
// RESP3's nulls, doubles, booleans, big numbers, blob errors, verbatim
// strings, maps, sets, pushes and attributes) without holding bulk data in
// memory, so that it can
//
//   - hand every error line, at any depth, to a rewrite function (MOVED
//     and ASK redirections), and
//   - hold one whole top-level reply that answers a CLUSTER SLOTS, SHARDS,
//     NODES or REPLICAS command, up to maxRESPCapture bytes, and hand it
//     to a rewrite function.
//
// Anything it does not rewrite passes through byte for byte. Input it
// cannot follow (a streamed RESP3 string, an unknown type byte, an
// overlong length line) makes it give up: what it holds is passed on and
// the rest of the session is passed through untouched.

const (
	// maxRESPErrorLine bounds an error line held for rewriting; a longer
	// one is passed through as it is (no redirection is that long).
	maxRESPErrorLine = 4 << 10
	// maxRESPCapture bounds a CLUSTER reply held for rewriting; a larger
	// one is passed through as it is.
	maxRESPCapture = 4 << 20
	// maxRESPPending bounds the CLUSTER commands awaiting their replies;
	// beyond it the session stops rewriting CLUSTER replies.
	maxRESPPending = 64
)

// clusterReply says which CLUSTER command a reply answers.
type clusterReply uint8

const (
	clusterNone     clusterReply = iota
	clusterSlots                 // CLUSTER SLOTS
	clusterShards                // CLUSTER SHARDS
	clusterNodes                 // CLUSTER NODES
	clusterReplicas              // CLUSTER REPLICAS, CLUSTER SLAVES
)

// clusterCommand classifies a command for pairing: the CLUSTER reply kind
// it awaits, and whether it breaks the one-reply-per-command rule (pub/sub,
// MONITOR, replication, CLIENT REPLY), after which replies cannot be
// paired with commands any more.
func clusterCommand(name, sub []byte) (kind clusterReply, breaks bool) {
	switch string(name) {
	case "cluster":
		switch string(sub) {
		case "slots":
			return clusterSlots, false
		case "shards":
			return clusterShards, false
		case "nodes":
			return clusterNodes, false
		case "replicas", "slaves":
			return clusterReplicas, false
		}
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
		"monitor", "sync", "psync":
		return clusterNone, true
	case "client":
		return clusterNone, string(sub) == "reply"
	}
	return clusterNone, false
}

// respPairing pairs a session's replies with its commands: the command
// side counts commands and notes which are CLUSTER commands whose replies
// name nodes; the reply side asks, as each top-level reply starts, whether
// it answers one. A command is counted before its bytes are forwarded, so
// before its reply can arrive. Safe for concurrent use.
type respPairing struct {
	mu      sync.Mutex
	lost    bool
	next    uint64 // commands counted
	pending []pendingCluster
	// npending is len(pending), read without the lock so that replies
	// pay nothing while no CLUSTER command awaits its reply. A command is
	// counted before its bytes reach the backend, so before the backend
	// can answer it.
	npending atomic.Int32
}

type pendingCluster struct {
	seq  uint64
	kind clusterReply
}

// command counts one command.
func (p *respPairing) command(kind clusterReply, breaks bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lost {
		return
	}
	if breaks || (kind != clusterNone && len(p.pending) == maxRESPPending) {
		p.lost, p.pending = true, nil
		p.npending.Store(0)
		return
	}
	if kind != clusterNone {
		p.pending = append(p.pending, pendingCluster{seq: p.next, kind: kind})
		p.npending.Store(int32(len(p.pending)))
	}
	p.next++
}

// lose stops pairing for the rest of the session.
func (p *respPairing) lose() {
	p.mu.Lock()
	p.lost, p.pending = true, nil
	p.npending.Store(0)
	p.mu.Unlock()
}

// reply returns the CLUSTER command that reply number seq (from 0)
// answers, or clusterNone.
func (p *respPairing) reply(seq uint64) clusterReply {
	if p.npending.Load() == 0 {
		return clusterNone
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() { p.npending.Store(int32(len(p.pending))) }()
	if p.lost {
		return clusterNone
	}
	for len(p.pending) > 0 && p.pending[0].seq < seq {
		p.pending = p.pending[1:]
	}
	if len(p.pending) > 0 && p.pending[0].seq == seq {
		k := p.pending[0].kind
		p.pending = p.pending[1:]
		return k
	}
	return clusterNone
}

const (
	repStart  = iota // before a value's type byte
	repSimple        // in a line passed through as it comes
	repHeld          // in a line held until complete
	repBulk          // in a blob's bytes and their CRLF
)

// respAgg is an open aggregate: the elements still to come, and whether
// it is an attribute (which precedes the value it annotates and is not
// itself an element of its parent).
type respAgg struct {
	left int64
	attr bool
}

// respReplies is the reply stream rewriter. Bytes go in with feed and
// come out of out.
type respReplies struct {
	// pair tells which replies answer CLUSTER commands; nil for none.
	pair *respPairing
	// errorLine returns the replacement, CRLF included, for an error
	// line whose content (after '-', without CRLF) is line, or nil to keep
	// it.
	errorLine func(line []byte) []byte
	// cluster returns the replacement of a whole reply to a CLUSTER
	// command of kind, or nil to keep it.
	cluster func(kind clusterReply, reply []byte) []byte

	out  []byte // produced, not yet read
	lost bool   // passing everything through

	st       int
	typ      byte
	line     []byte // held line, type byte included
	bulkLeft int64
	stack    []respAgg
	replies  uint64 // top-level replies completed, pushes not counted
	push     bool   // the current top-level value is a push
	capKind  clusterReply
	capture  []byte // the held top-level reply, when capKind is set
}

// feed rewrites the next bytes of the stream into r.out.
func (r *respReplies) feed(in []byte) {
	for len(in) > 0 {
		if r.lost {
			r.emit(in)
			return
		}
		switch r.st {
		case repStart:
			t := in[0]
			if len(r.stack) == 0 {
				r.topStart(t)
			}
			r.typ = t
			switch t {
			case '+', ':', ',', '(', '#', '_':
				r.emit(in[:1])
				r.st = repSimple
			case '-', '$', '!', '=', '*', '~', '>', '%', '|':
				r.line = append(r.line[:0], t)
				r.st = repHeld
			default:
				r.giveUp()
				continue
			}
			in = in[1:]
		case repSimple:
			i := bytes.IndexByte(in, '\n')
			if i < 0 {
				r.emit(in)
				return
			}
			r.emit(in[:i+1])
			in = in[i+1:]
			r.st = repStart
			r.valueDone()
		case repHeld:
			limit := maxRESPNumberLine
			if r.typ == '-' {
				limit = maxRESPErrorLine
			}
			i := bytes.IndexByte(in, '\n')
			chunk := in
			if i >= 0 {
				chunk = in[:i+1]
			}
			if len(r.line)+len(chunk) > limit {
				if r.typ != '-' {
					r.giveUp()
					continue
				}
				// Too long to be a redirection: pass it on.
				r.emit(r.line)
				r.line = r.line[:0]
				r.st = repSimple
				continue
			}
			r.line = append(r.line, chunk...)
			in = in[len(chunk):]
			if i >= 0 {
				r.headerDone()
			}
		case repBulk:
			k := min(int64(len(in)), r.bulkLeft)
			r.emit(in[:k])
			in = in[k:]
			r.bulkLeft -= k
			if r.bulkLeft == 0 {
				r.st = repStart
				r.valueDone()
			}
		}
	}
}

// headerDone handles a complete held line.
func (r *respReplies) headerDone() {
	line := r.line
	r.st = repStart
	if r.typ == '-' {
		if r.errorLine != nil {
			if repl := r.errorLine(trimCRLF(line[1:])); repl != nil {
				line = repl
			}
		}
		r.emit(line)
		r.valueDone()
		return
	}
	n, ok := parseRESPInt(trimCRLF(line[1:]))
	if !ok || n < -1 || n > maxRESPBulk {
		r.emit(line)
		r.giveUp()
		return
	}
	r.emit(line)
	switch r.typ {
	case '$', '!', '=':
		if n < 0 {
			r.valueDone()
			return
		}
		r.bulkLeft, r.st = n+2, repBulk
	case '|':
		if n > 0 {
			r.stack = append(r.stack, respAgg{left: 2 * n, attr: true})
		}
	default: // '*', '~', '>', '%'
		if r.typ == '%' {
			n *= 2
		}
		if n <= 0 {
			r.valueDone()
			return
		}
		r.stack = append(r.stack, respAgg{left: n})
	}
}

// topStart is called at the first byte of a top-level value.
func (r *respReplies) topStart(t byte) {
	switch t {
	case '|':
		// An attribute before the reply: the reply starts after it.
	case '>':
		r.push = true
	default:
		r.push = false
		if r.pair != nil && r.cluster != nil {
			if k := r.pair.reply(r.replies); k != clusterNone {
				r.capKind, r.capture = k, r.capture[:0]
			}
		}
	}
}

// valueDone is called when a value is complete: it counts it in the open
// aggregate, closing those it completes, and ends the top-level reply.
func (r *respReplies) valueDone() {
	for len(r.stack) > 0 {
		top := &r.stack[len(r.stack)-1]
		top.left--
		if top.left > 0 {
			return
		}
		attr := top.attr
		r.stack = r.stack[:len(r.stack)-1]
		if attr {
			return
		}
	}
	if r.push {
		r.push = false
		return
	}
	r.replies++
	if r.capKind != clusterNone {
		k, reply := r.capKind, r.capture
		r.capKind = clusterNone
		if repl := r.cluster(k, reply); repl != nil {
			reply = repl
		}
		r.out = append(r.out, reply...)
		if cap(r.capture) > 64<<10 {
			r.capture = nil
		}
	}
}

// emit passes b on: into the held reply when one is held, else out.
func (r *respReplies) emit(b []byte) {
	if r.capKind == clusterNone {
		r.out = append(r.out, b...)
		return
	}
	if len(r.capture)+len(b) > maxRESPCapture {
		// Too large to rewrite: let it through as it is.
		r.out = append(r.out, r.capture...)
		r.out = append(r.out, b...)
		r.capKind, r.capture = clusterNone, nil
		return
	}
	r.capture = append(r.capture, b...)
}

// giveUp passes on what is held and everything after it unchanged.
func (r *respReplies) giveUp() {
	r.flush()
	r.lost = true
	if r.pair != nil {
		r.pair.lose()
	}
}

// flush passes on what is held, at the end of the stream or on giving up.
func (r *respReplies) flush() {
	if r.capKind != clusterNone {
		r.out = append(r.out, r.capture...)
		r.capKind, r.capture = clusterNone, nil
	}
	if r.st == repHeld {
		r.out = append(r.out, r.line...)
		r.line = r.line[:0]
		r.st = repStart
	}
}

// trimCRLF drops a line's terminating LF and a CR before it.
func trimCRLF(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// parseRESPInt parses a RESP length or count: an optional minus sign and
// at most 18 decimal digits.
func parseRESPInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}
