package ftp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzCommandLine: the client's command lines, read and parsed, never
// yield a command with a line break or NUL to relay.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{"USER anonymous\r\n", "AUTH TLS\r\nPBSZ 0\r\n", "RETR a\rDELE b\r\n", "P@SW\n", strings.Repeat("A", maxLine+5)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newReader(bytes.NewReader(in))
		for {
			line, err := readLine(r)
			if err != nil {
				return
			}
			if len(line) > maxLine {
				t.Fatalf("line of %d bytes", len(line))
			}
			c, err := parseCommand(line)
			if err != nil {
				continue
			}
			if s := c.String(); strings.ContainsAny(s, "\r\n\x00") {
				t.Fatalf("command %q relays a control character", s)
			}
		}
	})
}

// errPassedLong is FuzzReply's complaint.
var errPassedLong = errors.New("a line beyond maxLine")

// FuzzReply: backend replies are read with bounded lines, and a reply's
// code is its first line's.
func FuzzReply(f *testing.F) {
	for _, s := range []string{"220 ready\r\n", "211-Features:\r\n EPSV\r\n211 End\r\n", "229 Entering Extended Passive Mode (|||30000|)\r\n", "999 x\r\n", "220-x\r\n220-y\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newReader(bytes.NewReader(in))
		for {
			rep, err := readReply(r, func(line string) error {
				if len(line) > maxLine {
					return errPassedLong
				}
				return nil
			}, true)
			if err != nil {
				if errors.Is(err, errPassedLong) {
					t.Fatal("a line beyond maxLine was passed on")
				}
				return
			}
			if rep.code < 100 || rep.code > 599 || len(rep.lines) == 0 {
				t.Fatalf("reply %+v", rep)
			}
		}
	})
}

// FuzzPassiveReply: the 227 and 229 parsers take any backend text without
// panicking and return only usable ports, and what leproxy writes parses
// back.
func FuzzPassiveReply(f *testing.F) {
	for _, s := range []string{"Entering Passive Mode (127,0,0,1,117,48).", "Entering Extended Passive Mode (|||30000|)", "(1,2,3,4,5", "(|||99999|)", "=1,2,3,4,5,6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		if ap, err := parse227(text); err == nil {
			if ap.Port() == 0 || !ap.Addr().Is4() {
				t.Fatalf("parse227(%q) = %v", text, ap)
			}
			back, err := parse227(strings.TrimPrefix(format227(ap.Addr(), int(ap.Port())), "227 "))
			if err != nil || back != ap {
				t.Fatalf("format227(%v) parses as %v, %v", ap, back, err)
			}
		}
		if port, err := parse229(text); err == nil {
			if port < 1 || port > 65535 {
				t.Fatalf("parse229(%q) = %d", text, port)
			}
			back, err := parse229(strings.TrimPrefix(format229(port), "229 "))
			if err != nil || back != port {
				t.Fatalf("format229(%d) parses as %d, %v", port, back, err)
			}
		}
	})
}
