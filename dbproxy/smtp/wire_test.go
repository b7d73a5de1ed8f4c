package smtp

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"EHLO a.test\r\n", "EHLO a.test", nil},
		{"EHLO a.test\n", "EHLO a.test", nil},
		{"\r\n", "", nil},
		{"EHLO a.test", "", io.EOF},
		{strings.Repeat("x", maxLineLen-2) + "\r\n", strings.Repeat("x", maxLineLen-2), nil},
		{strings.Repeat("x", maxLineLen) + "\n", "", errLineTooLong},
		{strings.Repeat("x", 10*maxLineLen), "", errLineTooLong},
	}
	for _, tt := range tests {
		// A small buffer makes the reader come back for more.
		got, err := readLine(bufio.NewReaderSize(strings.NewReader(tt.in), 16))
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("readLine(%.40q) = %.40q, %v; want %.40q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseCommand(t *testing.T) {
	for _, tt := range []struct{ in, verb, arg string }{
		{"ehlo  client.test ", "EHLO", "client.test"},
		{"STARTTLS", "STARTTLS", ""},
		{"MAIL FROM:<a@b>", "MAIL", "FROM:<a@b>"},
		{"", "", ""},
	} {
		if v, a := parseCommand(tt.in); v != tt.verb || a != tt.arg {
			t.Errorf("parseCommand(%q) = %q, %q; want %q, %q", tt.in, v, a, tt.verb, tt.arg)
		}
	}
}

func TestReadReply(t *testing.T) {
	rp, err := readReply(bufio.NewReader(strings.NewReader("250-mail.test hi\r\n250-SIZE 100\r\n250-STARTTLS\r\n250 8BITMIME\r\nnext")))
	if err != nil {
		t.Fatal(err)
	}
	if rp.code != 250 || !slices.Equal(rp.lines, []string{"mail.test hi", "SIZE 100", "STARTTLS", "8BITMIME"}) {
		t.Fatalf("got %d %q", rp.code, rp.lines)
	}
	if kw := rp.keywords(); kw["SIZE"] != "100" || len(kw) != 3 {
		t.Errorf("keywords %v", kw)
	}
	if got := string(rp.without("starttls").bytes()); got != "250-mail.test hi\r\n250-SIZE 100\r\n250 8BITMIME\r\n" {
		t.Errorf("without STARTTLS: %q", got)
	}
	if got := string((&reply{code: 250, lines: []string{"h", "STARTTLS"}}).without("STARTTLS").bytes()); got != "250 h\r\n" {
		t.Errorf("without a last STARTTLS: %q", got)
	}
	if rp, err := readReply(bufio.NewReader(strings.NewReader("220\r\n"))); err != nil || rp.code != 220 || rp.lines[0] != "" {
		t.Errorf("bare code: %v, %v", rp, err)
	}
	for _, bad := range []string{
		"25\r\n", "2500 x\r\n", "abc x\r\n", "199 x\r\n", "600 x\r\n", "+25 x\r\n", "-25 x\r\n",
		"250-a\r\n251 b\r\n",
		"250-a\r\n",
		strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n",
		"250 " + strings.Repeat("x", maxLineLen) + "\r\n",
	} {
		if rp, err := readReply(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("readReply(%.40q) = %v, want an error", bad, rp)
		}
	}
}
