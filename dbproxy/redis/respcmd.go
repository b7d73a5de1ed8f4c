package redis

import "bytes"

// RESP command scanning: the client side of a Redis session, observed but
// never modified. Commands are RESP arrays of bulk strings or inline
// command lines; the scanner reports each complete command with its first
// two arguments (command and subcommand, cut to respCmdWord bytes), so
// that the reply stream can tell which reply answers CLUSTER SLOTS, and so
// that a refused client can be answered once per command. It holds no
// argument in memory: a 512 MB SET streams through it.

const (
	// respCmdWord bounds the bytes of the command and subcommand names
	// kept; longer ones match no command leproxy looks for.
	respCmdWord = 16
	// maxRESPNumberLine bounds a "*<n>\r\n" or "$<n>\r\n" line.
	maxRESPNumberLine = 32
	// maxRESPInline bounds an inline command line, as Redis's own
	// PROTO_INLINE_MAX_SIZE does.
	maxRESPInline = 64 << 10
	// maxRESPArgs and maxRESPBulk bound a command's argument count and an
	// argument's length, as Redis does (1024*1024 arguments, 512 MB).
	maxRESPArgs = 1 << 20
	maxRESPBulk = 512 << 20
)

const (
	cmdStart     = iota // before a command's first byte
	cmdInline           // in an inline command line
	cmdCount            // in "*<n>\r\n"
	cmdArgHeader        // in "$<len>\r\n"
	cmdArg              // in an argument's bytes and their CRLF
)

// respCommands scans a client's command stream. The zero value is not
// usable; set onCommand.
type respCommands struct {
	// onCommand is called for each complete command with its command and
	// subcommand words (lower case, nil when absent). The slices are
	// valid only during the call.
	onCommand func(name, sub []byte)
	// lost is set when the stream is not RESP that Redis would accept;
	// the scanner then reports nothing more.
	lost bool

	st       int
	line     []byte // number line, or the inline line's first bytes
	lineLen  int    // inline: bytes of the line so far
	argsLeft int    // arguments still to come
	argIdx   int    // index of the current argument
	argLen   int    // current argument's length
	argLeft  int    // bytes of the current argument, CRLF included, still to come
	words    [2][]byte
	lower    [2][respCmdWord + 1]byte // report's lower-cased words
}

func newRESPCommands(onCommand func(name, sub []byte)) *respCommands {
	c := &respCommands{onCommand: onCommand, line: make([]byte, 0, maxRESPNumberLine)}
	for i := range c.words {
		c.words[i] = make([]byte, 0, respCmdWord)
	}
	return c
}

// feed scans the next bytes of the stream.
func (c *respCommands) feed(in []byte) {
	for len(in) > 0 && !c.lost {
		switch c.st {
		case cmdStart:
			c.words[0], c.words[1] = c.words[0][:0], c.words[1][:0]
			c.line = c.line[:0]
			if in[0] == '*' {
				c.st = cmdCount
				in = in[1:]
			} else {
				c.st, c.lineLen = cmdInline, 0
			}
		case cmdInline:
			i := bytes.IndexByte(in, '\n')
			chunk := in
			if i >= 0 {
				chunk = in[:i]
			}
			if room := 2*respCmdWord + 8 - len(c.line); room > 0 {
				c.line = append(c.line, chunk[:min(room, len(chunk))]...)
			}
			c.lineLen += len(chunk)
			if c.lineLen > maxRESPInline {
				c.lost = true
				return
			}
			if i < 0 {
				return
			}
			in = in[i+1:]
			c.st = cmdStart
			c.inlineDone()
		case cmdCount, cmdArgHeader:
			line, rest, ok := c.numberLine(in)
			in = rest
			if !ok {
				continue
			}
			if c.st == cmdCount {
				n, ok := parseRESPInt(line)
				if !ok || n > maxRESPArgs {
					c.lost = true
					return
				}
				if n <= 0 {
					// Redis ignores an empty multibulk: no reply.
					c.st = cmdStart
					continue
				}
				c.argsLeft, c.argIdx, c.st = int(n), 0, cmdArgHeader
				continue
			}
			if len(line) == 0 || line[0] != '$' {
				c.lost = true
				return
			}
			n, ok := parseRESPInt(line[1:])
			if !ok || n < 0 || n > maxRESPBulk {
				c.lost = true
				return
			}
			c.argLen, c.argLeft, c.st = int(n), int(n)+2, cmdArg
		case cmdArg:
			k := min(len(in), c.argLeft)
			if c.argIdx < 2 {
				// Keep the argument's first bytes: its position is
				// argLen+2-argLeft.
				pos := c.argLen + 2 - c.argLeft
				w := &c.words[c.argIdx]
				if end := min(c.argLen, respCmdWord+1); pos < end {
					*w = append(*w, in[:min(k, end-pos)]...)
				}
			}
			in = in[k:]
			c.argLeft -= k
			if c.argLeft > 0 {
				continue
			}
			c.argIdx++
			c.argsLeft--
			c.st = cmdArgHeader
			if c.argsLeft == 0 {
				c.st = cmdStart
				var sub []byte
				if c.argIdx > 1 {
					sub = c.words[1]
				}
				c.report(c.words[0], sub)
			}
		}
	}
}

// numberLine collects a CRLF-terminated line of at most maxRESPNumberLine
// bytes into c.line; ok says the line is complete, and then line is its
// content without CRLF. An overlong line loses the stream.
func (c *respCommands) numberLine(in []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(in, '\n')
	chunk := in
	if i >= 0 {
		chunk = in[:i+1]
	}
	if len(c.line)+len(chunk) > maxRESPNumberLine {
		c.lost = true
		return nil, nil, false
	}
	c.line = append(c.line, chunk...)
	if i < 0 {
		return nil, nil, false
	}
	line = trimCRLF(c.line)
	c.line = c.line[:0]
	return line, in[i+1:], true
}

// inlineDone reports a complete inline command; an empty line is no
// command (Redis ignores it).
func (c *respCommands) inlineDone() {
	f := bytes.Fields(c.line)
	if len(f) == 0 {
		return
	}
	var sub []byte
	if len(f) > 1 {
		sub = f[1]
	}
	c.report(f[0], sub)
}

// report calls onCommand with the words cut and lower-cased; a word longer
// than respCmdWord is reported as its first respCmdWord+1 bytes, which no
// command name matches.
func (c *respCommands) report(name, sub []byte) {
	n := lowerASCII(c.lower[0][:0], name)
	var s []byte
	if sub != nil {
		s = lowerASCII(c.lower[1][:0], sub)
	}
	c.onCommand(n, s)
}

func lowerASCII(dst, b []byte) []byte {
	for _, ch := range b[:min(len(b), cap(dst))] {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		dst = append(dst, ch)
	}
	return dst
}
