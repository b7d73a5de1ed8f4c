package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// decodeYAML parses the one YAML document of data. It returns nil and no
// problem for an empty document. Syntax errors are recorded in el with the
// line they are on.
func decodeYAML(el *errorList, data []byte) *yaml.Node {
	if line, msg := checkText(data); msg != "" {
		el.add(line, "", "", msg)
		return nil
	}
	doc, extra, err := parseYAML(data)
	if err != nil {
		msg := yamlMessage(err)
		line := syntaxErrorLine(data, msg)
		if unquotedWildcard(data, line) {
			msg += `; quote wildcard names ("*.example.com"): YAML reads *name as an alias`
		}
		el.add(line, "", "", "invalid YAML: "+msg)
		return nil
	}
	if extra > 0 {
		el.add(extra, "", "", "a mapping is one YAML document; remove the second one or its \"---\"")
	}
	return doc
}

// parseYAML decodes the first document of data and reports the line of a
// second, non-empty document (0 if there is none). yaml.v3 is not expected
// to panic, but a panic on some input must not take leproxy down with it:
// it becomes an error.
func parseYAML(data []byte) (doc *yaml.Node, extra int, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, extra, err = nil, 0, fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first yaml.Node
	switch err := dec.Decode(&first); {
	case errors.Is(err, io.EOF):
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		switch {
		case errors.Is(err, io.EOF):
			return &first, extra, nil
		case err != nil:
			return nil, 0, err
		}
		if extra == 0 && !emptyDocument(&next) {
			extra = next.Line
			if len(next.Content) > 0 {
				extra = next.Content[0].Line
			}
		}
	}
}

// emptyDocument reports whether doc holds nothing (a lone "---").
func emptyDocument(doc *yaml.Node) bool {
	return len(doc.Content) == 0 || len(doc.Content) == 1 && isNull(doc.Content[0])
}

// yamlMessage strips the "yaml: " and "line N: " prefixes of a yaml.v3
// error.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if _, err := strconv.Atoi(rest[:i]); err == nil {
				msg = rest[i+2:]
			}
		}
	}
	return msg
}

// yamlErrorLine extracts N from a yaml.v3 error "yaml: line N: ...".
func yamlErrorLine(err error) (int, bool) {
	rest, ok := strings.CutPrefix(err.Error(), "yaml: line ")
	if !ok {
		return 0, false
	}
	i := strings.Index(rest, ": ")
	if i <= 0 {
		return 0, false
	}
	n, err2 := strconv.Atoi(rest[:i])
	return n, err2 == nil
}

// parserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner). yaml.v3 reports the 0-based line of a parser error and the
// 1-based line of a scanner error, and no line at all when it is 0.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// syntaxErrorLine finds the line of the YAML syntax error msg in data.
//
// yaml.v3's own line is unreliable: missing on the first line, off by one
// for parser errors, and that of the enclosing block rather than of the
// problem when there is one. So: parse data again behind one blank line,
// which makes yaml.v3 always give a line, and correct it by the kind of
// error; that is the start of the enclosing construct, a lower bound.
// Then find the shortest run of lines from there on that fails with the
// same message: its last line is where the problem is.
func syntaxErrorLine(data []byte, msg string) int {
	ends := lineEnds(data)
	lo := 1
	if _, _, err := parseYAML(append([]byte("\n"), data...)); err != nil && yamlMessage(err) == msg {
		if n, ok := yamlErrorLine(err); ok {
			if !slices.Contains(parserProblems, msg) {
				n-- // scanner errors are 1-based
			}
			lo = max(1, n)
		}
	}
	hi := len(ends)
	if lo >= hi {
		return hi
	}
	fails := func(n int) bool {
		_, _, err := parseYAML(data[:ends[n-1]])
		return err != nil && yamlMessage(err) == msg
	}
	if !fails(hi) {
		return lo
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lineEnds returns, for each line of data as yaml.v3 counts lines (breaks
// are "\r\n", "\r", "\n", U+0085, U+2028 and U+2029), the offset just after
// it.
func lineEnds(data []byte) []int {
	var ends []int
	for i := 0; i < len(data); {
		switch {
		case data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n':
			i += 2
		case data[i] == '\r' || data[i] == '\n':
			i++
		case bytes.HasPrefix(data[i:], []byte("\u0085")):
			i += 2
		case bytes.HasPrefix(data[i:], []byte("\u2028")), bytes.HasPrefix(data[i:], []byte("\u2029")):
			i += 3
		default:
			i++
			continue
		}
		ends = append(ends, i)
	}
	if len(ends) == 0 || ends[len(ends)-1] < len(data) {
		ends = append(ends, len(data))
	}
	return ends
}

// lineAt returns the 1-based line of byte offset off in data.
func lineAt(data []byte, off int) int {
	ends := lineEnds(data)
	for i, end := range ends {
		if off < end {
			return i + 1
		}
	}
	return len(ends)
}

// checkText finds the first byte sequence YAML does not allow: invalid
// UTF-8 or a control character. It returns its line and a message, or ""
// if there is none.
func checkText(data []byte) (line int, msg string) {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return lineAt(data, i), fmt.Sprintf("invalid UTF-8 (byte 0x%02x)", data[i])
		case !yamlPrintable(r):
			return lineAt(data, i), fmt.Sprintf("control character %U is not allowed", r)
		}
		i += size
	}
	return 0, ""
}

// yamlPrintable reports whether YAML allows r in a document.
func yamlPrintable(r rune) bool {
	switch {
	case r == '\t', r == '\n', r == '\r', r == 0x85:
		return true
	case r < 0x20, r == 0x7f:
		return false
	case r >= 0x80 && r < 0xa0:
		return false
	case r >= 0xd800 && r <= 0xdfff, r == 0xfeff, r == 0xfffe, r == 0xffff:
		return false
	}
	return true
}

// isNull reports whether n is a null scalar ("", "~", "null").
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names what n is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "a YAML document"
}

// unquotedWildcard reports whether line (1-based) of data holds an
// unquoted wildcard name, the likely cause of a syntax error there.
func unquotedWildcard(data []byte, line int) bool {
	lines := bytes.Split(data, []byte("\n"))
	if line < 1 || line > len(lines) {
		return false
	}
	l := lines[line-1]
	for i := bytes.Index(l, []byte("*.")); i >= 0; {
		if i == 0 || !bytes.ContainsAny(l[i-1:i], "\"'") {
			return true
		}
		j := bytes.Index(l[i+2:], []byte("*."))
		if j < 0 {
			break
		}
		i += 2 + j
	}
	return false
}
