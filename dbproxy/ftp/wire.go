package ftp

// The FTP control connection's wire: command lines from clients, replies
// from backends (RFC 959 §4.2), and the passive-mode replies 227 (RFC 959)
// and 229 (RFC 2428).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// maxLine bounds a command or reply line, its line ending excluded:
// vsftpd's own limit on a command line (VSFTP_MAX_COMMAND_LINE).
const maxLine = 4096

// maxReplyLines bounds the lines of one multi-line reply; a STAT of a
// large directory is the longest a server sends.
const maxReplyLines = 100000

// errLineTooLong is a line beyond maxLine.
var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLine)

// newReader is the buffered reader of a control connection: its buffer
// holds a whole line.
func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, maxLine+2) }

// readLine reads one line ending in LF (CRLF on the wire, RFC 959; a bare
// LF is taken too), at most maxLine bytes, and returns it without its line
// ending. A line with a CR or NUL elsewhere is returned as read; callers
// refuse it.
func readLine(r *bufio.Reader) (string, error) {
	b, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", errLineTooLong
	case errors.Is(err, io.EOF) && len(b) > 0:
		return "", io.ErrUnexpectedEOF
	case err != nil:
		return "", err
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	if len(b) > maxLine {
		return "", errLineTooLong
	}
	return string(b), nil
}

// A command is one client command line: its verb, upper case, and its
// argument.
type command struct {
	verb string
	arg  string
}

// String is the command as sent to a backend, without its line ending.
func (c command) String() string {
	if c.arg == "" {
		return c.verb
	}
	return c.verb + " " + c.arg
}

// parseCommand parses a command line: a verb of 3 or 4 letters (RFC 959
// §5.3.1), then optionally a space and an argument of printable
// characters. Anything else is an error: it is never sent to a backend,
// so that a CR, LF or NUL cannot smuggle a second command through.
func parseCommand(line string) (command, error) {
	verb, arg, _ := strings.Cut(line, " ")
	if len(verb) < 3 || len(verb) > 4 {
		return command{}, errors.New("syntax error in command")
	}
	for i := range len(verb) {
		if c := verb[i] | 0x20; c < 'a' || c > 'z' {
			return command{}, errors.New("syntax error in command")
		}
	}
	for i := range len(arg) {
		if c := arg[i]; c < 0x20 || c == 0x7f {
			return command{}, errors.New("control character in argument")
		}
	}
	return command{verb: strings.ToUpper(verb), arg: arg}, nil
}

// replyCode returns the code of a reply line and whether the line ends the
// reply: "ddd text" or "ddd" ends it, "ddd-text" begins a multi-line one.
func replyCode(line string) (code int, last bool, err error) {
	if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
		return 0, false, fmt.Errorf("malformed reply %q", clip(line))
	}
	for i := range 3 {
		if line[i] < '0' || line[i] > '9' {
			return 0, false, fmt.Errorf("malformed reply %q", clip(line))
		}
	}
	if line[0] < '1' || line[0] > '5' {
		return 0, false, fmt.Errorf("reply code out of range in %q", clip(line))
	}
	code, _ = strconv.Atoi(line[:3])
	return code, len(line) == 3 || line[3] == ' ', nil
}

// A reply is a backend's reply: its code and its lines, line endings
// excluded.
type reply struct {
	code  int
	lines []string
}

// text is the final line's text, after the code.
func (r reply) text() string {
	l := r.lines[len(r.lines)-1]
	if len(l) > 4 {
		return l[4:]
	}
	return ""
}

// readReply reads one reply. Each line goes to each (when not nil) as it
// is read, so a long reply passes through without being held; collect
// keeps the lines in the reply returned, at most maxCollect of them.
func readReply(r *bufio.Reader, each func(line string) error, collect bool) (reply, error) {
	const maxCollect = 64
	line, err := readLine(r)
	if err != nil {
		return reply{}, err
	}
	code, last, err := replyCode(line)
	if err != nil {
		return reply{}, err
	}
	rep := reply{code: code}
	for n := 1; ; n++ {
		if each != nil {
			if err := each(line); err != nil {
				return reply{}, err
			}
		}
		if collect && len(rep.lines) < maxCollect {
			rep.lines = append(rep.lines, line)
		}
		if last {
			break
		}
		if n >= maxReplyLines {
			return reply{}, fmt.Errorf("reply %d longer than %d lines", code, maxReplyLines)
		}
		if line, err = readLine(r); err != nil {
			return reply{}, err
		}
		// A multi-line reply ends at a line that starts with its code and
		// a space; lines between may hold anything.
		last = len(line) >= 4 && line[:3] == strconv.Itoa(code) && line[3] == ' ' || line == strconv.Itoa(code)
	}
	if !collect {
		rep.lines = []string{line}
	}
	return rep, nil
}

// parse227 returns the port of a 227 reply's text, "Entering Passive Mode
// (h1,h2,h3,h4,p1,p2)"; the address is returned too, but leproxy ignores
// it and uses the backend's own. As RFC 1123 §4.1.2.6 advises, it takes
// the first run of six comma-separated numbers, parentheses or not.
func parse227(text string) (netip.AddrPort, error) {
	for i := 0; i < len(text); i++ {
		if text[i] < '0' || text[i] > '9' {
			continue
		}
		j := i
		for j < len(text) && (text[j] >= '0' && text[j] <= '9' || text[j] == ',') {
			j++
		}
		fields := strings.Split(text[i:j], ",")
		if len(fields) >= 6 {
			var b [6]byte
			ok := true
			for k, f := range fields[:6] {
				n, err := strconv.Atoi(f)
				if err != nil || n < 0 || n > 255 || len(f) > 3 {
					ok = false
					break
				}
				b[k] = byte(n)
			}
			if ok {
				port := uint16(b[4])<<8 | uint16(b[5])
				if port == 0 {
					return netip.AddrPort{}, errors.New("227 reply with port 0")
				}
				return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), port), nil
			}
		}
		i = j
	}
	return netip.AddrPort{}, fmt.Errorf("no address in 227 reply %q", clip(text))
}

// parse229 returns the port of a 229 reply's text, "Entering Extended
// Passive Mode (|||port|)", where | may be any printable character other
// than a digit (RFC 2428 §3), the same four times.
func parse229(text string) (int, error) {
	open := strings.IndexByte(text, '(')
	end := strings.LastIndexByte(text, ')')
	if open < 0 || end < open {
		return 0, fmt.Errorf("no (|||port|) in 229 reply %q", clip(text))
	}
	s := text[open+1 : end]
	if len(s) < 5 {
		return 0, fmt.Errorf("malformed 229 reply %q", clip(text))
	}
	d := s[0]
	if d < 33 || d > 126 || d >= '0' && d <= '9' || s[1] != d || s[2] != d || s[len(s)-1] != d {
		return 0, fmt.Errorf("malformed 229 reply %q", clip(text))
	}
	digits := s[3 : len(s)-1]
	port, err := strconv.Atoi(digits)
	if err != nil || len(digits) > 5 || port < 1 || port > 65535 || digits[0] == '+' || digits[0] == '-' {
		return 0, fmt.Errorf("bad port in 229 reply %q", clip(text))
	}
	return port, nil
}

// format227 is leproxy's 227 reply for the IPv4 address ip and port.
func format227(ip netip.Addr, port int) string {
	a := ip.As4()
	return fmt.Sprintf("227 Entering Passive Mode (%d,%d,%d,%d,%d,%d).", a[0], a[1], a[2], a[3], port>>8, port&0xff)
}

// format229 is leproxy's 229 reply for port.
func format229(port int) string {
	return fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", port)
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
