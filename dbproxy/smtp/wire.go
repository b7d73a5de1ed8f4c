package smtp

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits on what leproxy reads before the session is piped. RFC 5321
// §4.5.3.1 allows 512 octets for a command line and for a reply line,
// CRLF included; leproxy takes twice that, for clients and servers that
// stretch it, and no more.
const (
	maxLineLen    = 1024
	maxReplyLines = 100
)

var (
	// errLineTooLong is a line longer than maxLineLen.
	errLineTooLong = errors.New("line too long")
	// errMalformedReply is a reply that is not "NNN text" lines.
	errMalformedReply = errors.New("malformed reply")
)

// readLine reads one line of at most maxLineLen bytes, LF or CRLF
// terminated, and returns it without the terminator.
func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > maxLineLen {
			return "", errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return string(line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return "", err
		}
	}
}

// parseCommand splits a command line into its verb, in upper case, and
// its argument, with the spaces around it trimmed.
func parseCommand(line string) (verb, arg string) {
	verb, arg, _ = strings.Cut(line, " ")
	return strings.ToUpper(verb), strings.TrimSpace(arg)
}

// A reply is a server's reply: a code and the texts of its lines.
type reply struct {
	code  int
	lines []string // text after "NNN-" or "NNN ", one a line; one at least
}

// readReply reads a reply, one line or several ("250-…" up to "250 …"),
// of at most maxReplyLines lines of at most maxLineLen bytes, every line
// with the same code.
func readReply(r *bufio.Reader) (*reply, error) {
	rp := new(reply)
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, fmt.Errorf("reading reply: %w", err)
		}
		code, more, text, err := parseReplyLine(line)
		if err != nil {
			return nil, err
		}
		if len(rp.lines) > 0 && code != rp.code {
			return nil, fmt.Errorf("%w: line with code %d in a reply with code %d", errMalformedReply, code, rp.code)
		}
		rp.code = code
		rp.lines = append(rp.lines, text)
		if !more {
			return rp, nil
		}
		if len(rp.lines) == maxReplyLines {
			return nil, fmt.Errorf("%w: more than %d lines", errMalformedReply, maxReplyLines)
		}
	}
}

// parseReplyLine parses one reply line: a three-digit code from 200 to
// 599, then "-" when more lines follow or " " (or nothing) on the last.
func parseReplyLine(line string) (code int, more bool, text string, err error) {
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
		return 0, false, "", fmt.Errorf("%w: %q", errMalformedReply, printable(line))
	}
	code, err = strconv.Atoi(line[:3])
	if err != nil || code < 200 || code > 599 || line[0] == '+' || line[0] == '-' {
		return 0, false, "", fmt.Errorf("%w: code %q", errMalformedReply, printable(line[:3]))
	}
	if len(line) > 3 {
		more, text = line[3] == '-', line[4:]
	}
	return code, more, text, nil
}

// bytes is the reply on the wire.
func (rp *reply) bytes() []byte {
	var b []byte
	for i, text := range rp.lines {
		sep := byte('-')
		if i == len(rp.lines)-1 {
			sep = ' '
		}
		b = strconv.AppendInt(b, int64(rp.code), 10)
		b = append(b, sep)
		b = append(b, text...)
		b = append(b, '\r', '\n')
	}
	return b
}

// String is the reply's text on one line, for errors and logs.
func (rp *reply) String() string {
	return printable(strconv.Itoa(rp.code) + " " + strings.Join(rp.lines, " / "))
}

// keywords returns the EHLO keywords of an EHLO reply (every line but the
// first, the server's name), in upper case, with their parameters.
func (rp *reply) keywords() map[string]string {
	kw := make(map[string]string)
	for _, l := range rp.lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		kw[strings.ToUpper(k)] = v
	}
	return kw
}

// without returns the reply without the EHLO keyword kw's line (the
// first line, the server's name, always stays).
func (rp *reply) without(kw string) *reply {
	out := &reply{code: rp.code, lines: rp.lines[:1:1]}
	for _, l := range rp.lines[1:] {
		if k, _, _ := strings.Cut(l, " "); !strings.EqualFold(k, kw) {
			out.lines = append(out.lines, l)
		}
	}
	return out
}

// printable returns s, at most 200 bytes, with anything but printable
// ASCII replaced by '?', for errors and logs.
func printable(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			if r == '…' {
				return r
			}
			return '?'
		}
		return r
	}, s)
}
