package ftp

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  error
	}{
		{"USER a\r\nPASS b\r\n", []string{"USER a", "PASS b"}, io.EOF},
		{"NOOP\n", []string{"NOOP"}, io.EOF},
		{"NOOP", nil, io.ErrUnexpectedEOF},
		{strings.Repeat("A", maxLine) + "\r\n", []string{strings.Repeat("A", maxLine)}, io.EOF},
		{strings.Repeat("A", maxLine+1) + "\r\n", nil, errLineTooLong},
		{strings.Repeat("A", 3*maxLine), nil, errLineTooLong},
	} {
		r := bufio.NewReader(strings.NewReader(tc.in))
		r = newReader(r)
		var got []string
		var err error
		for {
			var l string
			if l, err = readLine(r); err != nil {
				break
			}
			got = append(got, l)
		}
		if !errors.Is(err, tc.err) || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("readLine(%.20q…): got %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string // "" for an error
	}{
		{"user anonymous", "USER anonymous"},
		{"PASV", "PASV"},
		{"STOR a b.txt", "STOR a b.txt"},
		{"P@SW", ""},
		{"AB", ""},
		{"ABCDE x", ""},
		{"RETR a\rDELE b", ""},
		{"RETR a\x00", ""},
		{"", ""},
	} {
		c, err := parseCommand(tc.line)
		got := c.String()
		if err != nil {
			got = ""
		}
		if got != tc.want {
			t.Errorf("parseCommand(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in    string
		code  int
		lines int
		bad   bool
	}{
		{"220 ready\r\n", 220, 1, false},
		{"211-Features:\r\n EPSV\r\n211x not the end\r\n211 End\r\n", 211, 4, false},
		{"230\r\n", 230, 1, false},
		{"2x0 ready\r\n", 0, 0, true},
		{"620 ready\r\n", 0, 0, true},
		{"220-start\r\n", 0, 0, true},
		{"22\r\n", 0, 0, true},
	} {
		var seen int
		rep, err := readReply(newReader(strings.NewReader(tc.in)), func(string) error { seen++; return nil }, true)
		if (err != nil) != tc.bad || !tc.bad && (rep.code != tc.code || seen != tc.lines || len(rep.lines) != tc.lines) {
			t.Errorf("readReply(%q) = %d, %d lines (%d seen), %v; want %d, %d lines, error %t", tc.in, rep.code, len(rep.lines), seen, err, tc.code, tc.lines, tc.bad)
		}
	}
}

func TestPassiveReplies(t *testing.T) {
	for _, tc := range []struct {
		text string
		want string // "" for an error
	}{
		{"Entering Passive Mode (127,0,0,1,117,48).", "127.0.0.1:30000"},
		{"Entering Passive Mode 10,1,2,3,4,1", "10.1.2.3:1025"},
		{"=10,1,2,3,4,1 and more", "10.1.2.3:1025"},
		{"Entering Passive Mode (256,0,0,1,1,1)", ""},
		{"Entering Passive Mode (1,2,3,4,0,0)", ""},
		{"Entering Passive Mode (1,2,3)", ""},
	} {
		ap, err := parse227(tc.text)
		got := ap.String()
		if err != nil {
			got = ""
		}
		if got != tc.want {
			t.Errorf("parse227(%q) = %q, %v; want %q", tc.text, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		text string
		want int
	}{
		{"Entering Extended Passive Mode (|||30000|)", 30000},
		{"Entering Extended Passive Mode (!!!1!)", 1},
		{"(|||65536|)", 0},
		{"(|||0|)", 0},
		{"(|||+1|)", 0},
		{"(||1|2|)", 0},
		{"(111222)", 0},
		{"no parens", 0},
	} {
		got, err := parse229(tc.text)
		if err != nil {
			got = 0
		}
		if got != tc.want {
			t.Errorf("parse229(%q) = %d, %v; want %d", tc.text, got, err, tc.want)
		}
	}
	if got, want := format227(netip.MustParseAddr("203.0.113.7"), 30001), "227 Entering Passive Mode (203,0,113,7,117,49)."; got != want {
		t.Errorf("format227 = %q, want %q", got, want)
	}
	if got, want := format229(30001), "229 Entering Extended Passive Mode (|||30001|)"; got != want {
		t.Errorf("format229 = %q, want %q", got, want)
	}
}

func TestOptions(t *testing.T) {
	p := newProtocol("ftp", false)
	if o := p.opts.Load(); o.minPort != 30000 || o.maxPort != 30099 || o.public.IsValid() || o.preferResume {
		t.Errorf("defaults: %+v", o)
	}
	for _, tc := range []struct {
		key, value string
		ok         bool
	}{
		{optPorts, "40000-40009", true},
		{optPorts, "40000", true},
		{optPorts, "40009-40000", false},
		{optPorts, "0-10", false},
		{optPorts, "1-65536", false},
		{optPorts, "x", false},
		{optAddress, "203.0.113.7", true},
		{optAddress, "2001:db8::1", false},
		{optAddress, "0.0.0.0", false},
		{optAddress, "ftp.example.com", false},
		{optResumption, "prefer", true},
		{optResumption, "require", true},
		{optResumption, "off", false},
	} {
		if err := p.CheckOption(tc.key, tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckOption(%s, %q) = %v, want ok %t", tc.key, tc.value, err, tc.ok)
		}
	}
	if err := p.SetOptions(map[string]string{optPorts: "40000-40001", optAddress: "203.0.113.7", optResumption: "prefer"}); err != nil {
		t.Fatal(err)
	}
	if o := p.opts.Load(); o.minPort != 40000 || o.maxPort != 40001 || o.public.String() != "203.0.113.7" || !o.preferResume {
		t.Errorf("after SetOptions: %+v", o)
	}
}
