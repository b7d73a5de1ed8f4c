package httpproxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"sync"
)

// Request smuggling lives in the parts of an HTTP/1.1 request head that
// net/http normalises before a Handler sees it: it drops Content-Length
// when Transfer-Encoding is chunked, merges equal duplicate Content-Length
// fields, joins obs-fold continuation lines, and ignores Transfer-Encoding
// on HTTP/1.0. A front proxy that frames such a request the other way can
// hide a second request in the body. So the HTTP/1.x connections of the
// HTTPS listener read through a framingScanner, which follows the
// connection's requests on the wire (heads, Content-Length and chunked
// bodies) and leaves one verdict per head for ServeHTTP: refuse it with 400
// and close, or serve it.
//
// The scanner keeps in step with net/http by framing exactly as it does.
// Where it cannot follow (a head or chunk line too long, a framing
// net/http will refuse anyway, an upgraded connection, a request whose
// method and target do not match the head it scanned), it stops, and every
// later request on the connection is served with "Connection: close": a
// connection the scanner does not vouch for is not reused.

// Limits of the scanner. Past them net/http refuses the request too (431,
// or a body error), so stopping loses nothing.
const (
	// maxChunkLine is net/http's longest chunk-size line.
	maxChunkLine = 4096
	// maxVerdicts bounds the verdicts waiting for ServeHTTP. net/http
	// reads at most a few KiB ahead of the request it serves.
	maxVerdicts = 1024
)

// Verdict problems: why a request head is refused.
const (
	problemObsFold     = "obs-fold line folding in a header"
	problemDuplicateCL = "duplicate Content-Length"
	problemCLAndTE     = "both Content-Length and Transfer-Encoding"
	problemTEInHTTP10  = "Transfer-Encoding in an HTTP/1.0 request"
)

// framingVerdict is the scanner's word on one request head.
type framingVerdict struct {
	method, target string
	problem        string // empty: the head is fine
}

// Scanner states.
const (
	stateHead      = iota // reading a request head, line by line
	stateBody             // skipping remain bytes, then next
	stateChunkLine        // reading a chunk-size line
	stateChunkCR          // expecting the CR after chunk data
	stateChunkLF          // expecting the LF after chunk data
	stateTrailer          // reading trailer lines up to the empty one
	stateStopped          // no longer following the connection
)

// framingScanner follows the HTTP/1.x requests read from one connection.
// Feed is called by the connection's reader (one goroutine at a time);
// next by the handler serving a request, in another goroutine.
type framingScanner struct {
	maxHead int // longest head followed, in bytes

	// Reader side; only feed touches these.
	state     int
	next      int    // state after stateBody
	remain    uint64 // bytes left in a body or chunk
	line      []byte // the partial line carried across reads
	headBytes int
	head      headInfo

	mu       sync.Mutex
	verdicts []framingVerdict
	desync   bool // a verdict did not match its request
}

// headInfo is what a head says about its framing.
type headInfo struct {
	started        bool // the request line was read
	method, target string
	proto          string
	obsFold        bool
	contentLengths []string
	transferEnc    []string
	upgrade        bool
}

func newFramingScanner(maxHeaderBytes int) *framingScanner {
	// net/http reads a head of up to MaxHeaderBytes plus 4 KiB of slack
	// before it answers 431.
	return &framingScanner{maxHead: maxHeaderBytes + 4096}
}

// feed follows p, the next bytes read from the connection.
func (s *framingScanner) feed(p []byte) {
	for len(p) > 0 {
		switch s.state {
		case stateStopped:
			return
		case stateBody:
			n := uint64(len(p))
			if n > s.remain {
				n = s.remain
			}
			s.remain -= n
			p = p[n:]
			if s.remain == 0 {
				s.state = s.next
			}
		case stateChunkCR, stateChunkLF:
			want := byte('\r')
			if s.state == stateChunkLF {
				want = '\n'
			}
			if p[0] != want {
				s.stop() // net/http: "malformed chunked encoding"
				return
			}
			p = p[1:]
			if s.state == stateChunkCR {
				s.state = stateChunkLF
			} else {
				s.state = stateChunkLine
			}
		default: // a line-oriented state
			i := bytes.IndexByte(p, '\n')
			chunk := p
			if i >= 0 {
				chunk = p[:i+1]
			}
			if !s.account(len(chunk)) {
				s.stop()
				return
			}
			p = p[len(chunk):]
			if i < 0 {
				s.line = append(s.line, chunk...)
				return
			}
			line := chunk
			if len(s.line) > 0 {
				line = append(s.line, chunk...)
			}
			s.endLine(line[:len(line)-1]) // without the LF
			s.line = s.line[:0]
		}
	}
}

// account counts n more bytes of the line-oriented part it is in and
// reports whether it is still within the limits net/http has.
func (s *framingScanner) account(n int) bool {
	switch s.state {
	case stateChunkLine:
		return len(s.line)+n <= maxChunkLine
	default: // a head, or trailers (net/http gives them a head's budget)
		s.headBytes += n
		return s.headBytes <= s.maxHead
	}
}

// endLine handles one complete line, LF stripped.
func (s *framingScanner) endLine(line []byte) {
	switch s.state {
	case stateHead:
		s.headLine(line)
	case stateChunkLine:
		s.chunkLine(line)
	case stateTrailer:
		if len(bytes.TrimSuffix(line, []byte("\r"))) == 0 {
			s.startHead()
		}
	}
}

func (s *framingScanner) startHead() {
	s.state = stateHead
	s.headBytes = 0
	s.head = headInfo{}
}

// headLine handles one line of a request head.
func (s *framingScanner) headLine(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	h := &s.head
	if !h.started {
		// net/http takes the request line as it comes: an empty one (or
		// anything it cannot parse) is a 400 and the end of the
		// connection.
		method, rest, ok1 := strings.Cut(string(line), " ")
		target, proto, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || method == "" {
			s.stop()
			return
		}
		h.started, h.method, h.target, h.proto = true, method, target, proto
		return
	}
	if len(line) == 0 {
		s.endHead()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		h.obsFold = true
		return
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		s.stop() // net/http: malformed MIME header line
		return
	}
	value = bytes.Trim(value, " \t")
	switch {
	case asciiEqualFold(name, "Content-Length"):
		h.contentLengths = append(h.contentLengths, string(value))
	case asciiEqualFold(name, "Transfer-Encoding"):
		h.transferEnc = append(h.transferEnc, string(value))
	case asciiEqualFold(name, "Upgrade"):
		h.upgrade = true
	}
}

// endHead gives the verdict on the head just read and moves on to its
// body.
func (s *framingScanner) endHead() {
	h := &s.head
	if h.proto != "HTTP/1.1" && h.proto != "HTTP/1.0" {
		s.stop() // leave versions net/http may frame otherwise to it
		return
	}
	v := framingVerdict{method: h.method, target: h.target}
	switch {
	case h.obsFold:
		v.problem = problemObsFold
	case len(h.contentLengths) > 0 && len(h.transferEnc) > 0:
		v.problem = problemCLAndTE
	case len(h.contentLengths) > 1:
		v.problem = problemDuplicateCL
	case len(h.transferEnc) > 0 && h.proto == "HTTP/1.0":
		v.problem = problemTEInHTTP10
	}
	if !s.push(v) || v.problem != "" {
		// A refused request ends its connection: nothing after it is
		// read as a request.
		s.stop()
		return
	}
	if h.upgrade || h.method == "CONNECT" {
		// What follows may not be HTTP at all.
		s.stop()
		return
	}
	switch {
	case len(h.transferEnc) > 0:
		// net/http serves only a single "chunked", and answers 501 and
		// closes otherwise.
		if len(h.transferEnc) != 1 || !asciiEqualFold([]byte(h.transferEnc[0]), "chunked") {
			s.stop()
			return
		}
		s.state = stateChunkLine
	case len(h.contentLengths) == 1:
		n, ok := parseContentLength(h.contentLengths[0])
		if !ok {
			s.stop() // net/http answers 400 and closes
			return
		}
		s.startHead()
		if n > 0 {
			s.state, s.remain, s.next = stateBody, n, stateHead
		}
	default:
		s.startHead()
	}
}

// chunkLine handles a chunk-size line as net/http's chunked reader does:
// CRLF only, extensions ignored, at most 16 hex digits.
func (s *framingScanner) chunkLine(line []byte) {
	if i := bytes.IndexByte(line, '\r'); i != len(line)-1 {
		s.stop() // bare LF, or a CR inside the line
		return
	}
	line = bytes.TrimRight(line, " \t\r\n")
	line, _, _ = bytes.Cut(line, []byte(";"))
	n, ok := parseHex(line)
	if !ok {
		s.stop()
		return
	}
	if n == 0 {
		s.state = stateTrailer
		s.headBytes = 0
		return
	}
	s.state, s.remain, s.next = stateBody, n, stateChunkCR
}

// push queues v for the handler, reporting false when the queue is full.
func (s *framingScanner) push(v framingVerdict) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desync || len(s.verdicts) >= maxVerdicts {
		return false
	}
	s.verdicts = append(s.verdicts, v)
	return true
}

// stop gives up following the connection: no verdicts come after those
// queued.
func (s *framingScanner) stop() {
	s.state = stateStopped
	s.line = nil
}

// verdict takes the verdict on the request the connection serves now,
// with its method and request target. ok is false when the scanner has
// none that matches: the request is not vouched for, and the connection
// must not be reused after it. A mismatch means the scanner is out of
// step with net/http, and no later request on the connection is vouched
// for either.
func (s *framingScanner) verdict(method, target string) (problem string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desync || len(s.verdicts) == 0 {
		return "", false
	}
	v := s.verdicts[0]
	s.verdicts = s.verdicts[1:]
	if v.method != method || v.target != target {
		s.desync = true
		s.verdicts = nil
		return "", false
	}
	return v.problem, true
}

// parseContentLength parses a Content-Length value as net/http does:
// decimal digits only, within int64.
func parseContentLength(v string) (uint64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// parseHex parses a chunk size as net/http does: 1 to 16 hex digits.
func parseHex(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(c)
	}
	return n, true
}

// asciiEqualFold reports whether b equals s, ASCII case folded.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// h1Conn is an HTTP/1.x connection of the HTTPS listener: a TLS
// connection whose reads pass through a framingScanner. net/http takes it
// for a plain net.Conn and gets its TLS state from ConnectionState.
type h1Conn struct {
	*tls.Conn
	scan *framingScanner
	hold writeHold // see coalescingWriter
}

var _ net.Conn = (*h1Conn)(nil)

func (c *h1Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.scan.feed(p[:n])
	}
	return n, err
}
