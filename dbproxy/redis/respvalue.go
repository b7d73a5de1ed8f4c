package redis

import (
	"bytes"
	"errors"
	"strconv"
)

// A respValue is one parsed RESP2/RESP3 value, for rewriting the few
// replies leproxy rewrites whole (CLUSTER SLOTS and friends). Parsing is
// over a complete, bounded reply held in memory; elements are appended as
// they are parsed, so a declared count never allocates ahead of the bytes.
type respValue struct {
	typ   byte
	text  []byte       // simple types: the line; blob types: the payload
	null  bool         // "$-1", "*-1" and the like
	elems []*respValue // aggregates; maps and attributes flattened key, value
	attr  *respValue   // an attribute sent before this value
}

// maxRESPDepth bounds the nesting parseRESP follows.
const maxRESPDepth = 16

var errRESPSyntax = errors.New("malformed RESP")

// parseRESP parses one value from the start of b and returns it and the
// bytes after it.
func parseRESP(b []byte) (*respValue, []byte, error) {
	return parseRESPDepth(b, 0)
}

func parseRESPDepth(b []byte, depth int) (*respValue, []byte, error) {
	if depth > maxRESPDepth {
		return nil, nil, errRESPSyntax
	}
	var attr *respValue
	if len(b) > 0 && b[0] == '|' {
		a, rest, err := parseRESPAggregate(b, depth)
		if err != nil {
			return nil, nil, err
		}
		attr, b = a, rest
	}
	if len(b) == 0 {
		return nil, nil, errRESPSyntax
	}
	var (
		v    *respValue
		rest []byte
		err  error
	)
	switch b[0] {
	case '+', '-', ':', ',', '(', '#', '_':
		line, r, ok := respLine(b[1:])
		if !ok {
			return nil, nil, errRESPSyntax
		}
		v, rest = &respValue{typ: b[0], text: line}, r
	case '$', '!', '=':
		line, r, ok := respLine(b[1:])
		if !ok {
			return nil, nil, errRESPSyntax
		}
		n, err := strconv.Atoi(string(line))
		if err != nil || n < -1 {
			return nil, nil, errRESPSyntax
		}
		if n == -1 {
			v, rest = &respValue{typ: b[0], null: true}, r
			break
		}
		if len(r) < n+2 || r[n] != '\r' || r[n+1] != '\n' {
			return nil, nil, errRESPSyntax
		}
		v, rest = &respValue{typ: b[0], text: r[:n]}, r[n+2:]
	case '*', '~', '>', '%':
		v, rest, err = parseRESPAggregate(b, depth)
		if err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, errRESPSyntax
	}
	v.attr = attr
	return v, rest, nil
}

// parseRESPAggregate parses an array, set, push, map or attribute.
func parseRESPAggregate(b []byte, depth int) (*respValue, []byte, error) {
	line, rest, ok := respLine(b[1:])
	if !ok {
		return nil, nil, errRESPSyntax
	}
	n, err := strconv.Atoi(string(line))
	if err != nil || n < -1 {
		return nil, nil, errRESPSyntax
	}
	v := &respValue{typ: b[0]}
	if n == -1 {
		if b[0] != '*' {
			return nil, nil, errRESPSyntax
		}
		v.null = true
		return v, rest, nil
	}
	if b[0] == '%' || b[0] == '|' {
		n *= 2
	}
	// Each element takes at least 3 bytes ("_\r\n"): refuse counts the
	// input cannot hold before looping.
	if n > len(rest)/3 {
		return nil, nil, errRESPSyntax
	}
	for range n {
		var e *respValue
		e, rest, err = parseRESPDepth(rest, depth+1)
		if err != nil {
			return nil, nil, err
		}
		v.elems = append(v.elems, e)
	}
	return v, rest, nil
}

// respLine splits a CRLF-terminated line off b.
func respLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+2:], true
}

// appendRESP appends v's encoding, the one Redis sends, to dst.
func appendRESP(dst []byte, v *respValue) []byte {
	if v.attr != nil {
		dst = appendRESP(dst, v.attr)
	}
	dst = append(dst, v.typ)
	switch v.typ {
	case '$', '!', '=':
		if v.null {
			return append(dst, "-1\r\n"...)
		}
		dst = strconv.AppendInt(dst, int64(len(v.text)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, v.text...)
	case '*', '~', '>', '%', '|':
		if v.null {
			return append(dst, "-1\r\n"...)
		}
		n := len(v.elems)
		if v.typ == '%' || v.typ == '|' {
			n /= 2
		}
		dst = strconv.AppendInt(dst, int64(n), 10)
		dst = append(dst, '\r', '\n')
		for _, e := range v.elems {
			dst = appendRESP(dst, e)
		}
		return dst
	default:
		dst = append(dst, v.text...)
	}
	return append(dst, '\r', '\n')
}

// str returns v as a string when it is a simple or bulk string.
func (v *respValue) str() (string, bool) {
	if v == nil || v.null || (v.typ != '+' && v.typ != '$') {
		return "", false
	}
	return string(v.text), true
}

// int returns v as an integer.
func (v *respValue) int() (int64, bool) {
	if v == nil || v.typ != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v.text), 10, 64)
	return n, err == nil
}

// fields returns the key, value pairs of a map, or of an array of even
// length as RESP2 sends maps, keyed by string keys.
func (v *respValue) fields() map[string]*respValue {
	if v == nil || v.null || (v.typ != '%' && v.typ != '*') || len(v.elems)%2 != 0 {
		return nil
	}
	m := make(map[string]*respValue, len(v.elems)/2)
	for i := 0; i < len(v.elems); i += 2 {
		if k, ok := v.elems[i].str(); ok {
			m[k] = v.elems[i+1]
		}
	}
	return m
}
