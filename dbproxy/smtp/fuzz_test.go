package smtp

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzReadLine feeds command lines to the reader of client commands: it
// never returns more than maxLineLen bytes or a line with a terminator,
// and parseCommand takes any line.
func FuzzReadLine(f *testing.F) {
	for _, s := range []string{"EHLO a.test\r\n", "STARTTLS\r\nRSET\r\n", "\n", "x", strings.Repeat("A", 2000) + "\n", "MAIL FROM:<a@b> SIZE=1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 16)
		for range 10 {
			line, err := readLine(br)
			if err != nil {
				return
			}
			if len(line) > maxLineLen || strings.Contains(line, "\n") {
				t.Fatalf("line %q", line)
			}
			verb, _ := parseCommand(line)
			if verb != strings.ToUpper(verb) {
				t.Fatalf("verb %q not upper case", verb)
			}
		}
	})
}

// FuzzReadReply feeds server replies to the reply reader: a reply it
// accepts has a code from 200 to 599 and at most maxReplyLines lines, and
// reads back the same from its own bytes; STARTTLS can always be struck.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"220 mail.test ESMTP\r\n", "250-a\r\n250-STARTTLS\r\n250 SIZE 10\r\n", "250-a\r\n251 b\r\n", "554\r\n", "250-" + strings.Repeat("x", 1100) + "\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rp, err := readReply(bufio.NewReaderSize(bytes.NewReader(b), 16))
		if err != nil {
			return
		}
		if rp.code < 200 || rp.code > 599 || len(rp.lines) == 0 || len(rp.lines) > maxReplyLines {
			t.Fatalf("reply %d with %d lines", rp.code, len(rp.lines))
		}
		again, err := readReply(bufio.NewReader(bytes.NewReader(rp.bytes())))
		if err != nil {
			// A line text may hold a CR the terminator strips; nothing
			// else may fail.
			if !strings.Contains(strings.Join(rp.lines, ""), "\r") {
				t.Fatalf("re-reading %q: %v", rp.bytes(), err)
			}
			return
		}
		if again.code != rp.code || len(again.lines) != len(rp.lines) {
			t.Fatalf("re-read %v as %v", rp, again)
		}
		rp.without("STARTTLS").keywords()
	})
}
