package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestLineEnds(t *testing.T) {
	tests := []struct {
		in   string
		want []int
	}{
		{"", []int{0}},
		{"a", []int{1}},
		{"a\n", []int{2}},
		{"a\nb", []int{2, 3}},
		{"a\r\nb\r\n", []int{3, 6}},
		{"a\rb\r", []int{2, 4}},
		{"a\u0085b", []int{3, 4}},
		{"a\u2028b\u2029c", []int{4, 8, 9}},
		{"\n\n", []int{1, 2}},
	}
	for _, tt := range tests {
		if got := lineEnds([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("lineEnds(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := lineAt([]byte("a\nb\r\nc"), 5); got != 3 {
		t.Errorf("lineAt: got %d, want 3", got)
	}
}

func TestCheckText(t *testing.T) {
	tests := []struct {
		in   string
		line int
		msg  string
	}{
		{"a: b\nc: d\té\n", 0, ""},
		{"a: b\n\u00a0\U0001F600\n", 0, ""},
		{"a: b\nc: \x00\n", 2, "control character U+0000 is not allowed"},
		{"a: \x7f\n", 1, "control character U+007F"},
		{"\n\na: \u0080\n", 3, "control character U+0080"},
		{"a\u2028b: \x1b\n", 2, "control character U+001B"},
		{"a: \xc3\n", 1, "invalid UTF-8 (byte 0xc3)"},
		{"a: b\r\n\xed\xa0\x80\n", 2, "invalid UTF-8"},
		{"a: \ufeff\n", 1, "control character U+FEFF"},
		{"a: \uffff\n", 1, "control character U+FFFF"},
	}
	for _, tt := range tests {
		line, msg := checkText([]byte(tt.in))
		if line != tt.line || !strings.Contains(msg, tt.msg) || (tt.msg == "") != (msg == "") {
			t.Errorf("checkText(%q) = %d, %q; want %d, %q", tt.in, line, msg, tt.line, tt.msg)
		}
	}
}

func TestYAMLMessage(t *testing.T) {
	tests := map[string]string{
		"yaml: line 3: mapping values are not allowed in this context": "mapping values are not allowed in this context",
		"yaml: found character that cannot start any token":            "found character that cannot start any token",
		"yaml: unknown anchor 'x' referenced":                          "unknown anchor 'x' referenced",
		"yaml: line x: odd":                                            "line x: odd",
	}
	for in, want := range tests {
		if got := yamlMessage(errors.New(in)); got != want {
			t.Errorf("yamlMessage(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSyntaxErrorLine covers yaml.v3's line quirks: errors on line 1
// (which it reports without a line), parser errors (off by one) and errors
// inside a block (which it reports at the block's start).
func TestSyntaxErrorLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
	}{
		{"line 1 scanner", "@x: y\n", 1},
		{"line 1 parser", "a: [\n", 1},
		{"scanner later", "a: b\nc: d\n  e: f\n", 3},
		{"parser in block", "a:\n  b: c\n  d: e\n f: g\n", 4},
		{"deep dedent", "a:\n  b:\n    c: d\n   e: f\n", 4},
		{"quote opened", "a: b\nc: 'd\ne: f\n", 2},
		{"flow opened", "a: b\nc: {d: e\nf: g\n", 2},
		{"last line", "a: b\nc: d\ne: f: g", 3},
		{"anchor", "a: b\n\n\nc: *d\n", 4},
		{"CRLF", "a: b\r\nc: d\r\n  e: f\r\n", 3},
		{"CR", "a: b\rc: d\r  e: f\r", 3},
		{"after multi-line quote", "a: \"b\n  c\"\nd: e\n  f: g\n", 4},
		{"second document", "a: b\n---\nc: d\n  e: f\n", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseYAML([]byte(tt.in))
			if err == nil {
				t.Fatalf("parseYAML(%q): no error", tt.in)
			}
			if got := syntaxErrorLine([]byte(tt.in), yamlMessage(err)); got != tt.line {
				t.Errorf("got line %d, want %d (yaml.v3 said %q)", got, tt.line, err)
			}
		})
	}
}

func TestParseYAMLDocuments(t *testing.T) {
	doc, extra, err := parseYAML([]byte("# only a comment\n"))
	if doc != nil || extra != 0 || err != nil {
		t.Errorf("comment only: got %v, %d, %v; want nil, 0, nil", doc, extra, err)
	}
	doc, extra, err = parseYAML([]byte("a: b\n---\n---\n\nc: d\n"))
	if doc == nil || extra != 5 || err != nil {
		t.Errorf("three documents: got %v, %d, %v; want a document, 5, nil", doc, extra, err)
	}
	doc, extra, err = parseYAML([]byte("a: b\n...\n"))
	if doc == nil || extra != 0 || err != nil {
		t.Errorf("document end marker: got %v, %d, %v; want a document, 0, nil", doc, extra, err)
	}
}
