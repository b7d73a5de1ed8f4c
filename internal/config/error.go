package config

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem found in a mapping file. Load and Parse return
// either a single *Error or, when they find several problems, an
// errors.Join of *Error values in line order; errors.As finds the first.
type Error struct {
	File  string // mapping file name, as given to Load or Parse
	Line  int    // 1-based line; 0 when the problem concerns the whole file
	Key   string // path of the offending key, e.g. "tcp[0].protocol"; "" at the top level
	Value string // the offending value as written, when there is one
	Msg   string // what is wrong; it normally quotes Value itself
	// Err is the underlying error, if any (a file system error, say),
	// for errors.Is and errors.As.
	Err error
}

// Error formats the problem as "file:line: key: msg". File, line and key
// are left out when unknown or empty. When Msg does not itself quote
// Value, the quoted value follows it.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Value != "" {
		if q := strconv.Quote(e.Value); !strings.Contains(e.Msg, q) {
			b.WriteString(": ")
			b.WriteString(q)
		}
	}
	return b.String()
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// errorList collects the problems of one mapping file.
type errorList struct {
	file string
	errs []*Error
}

// add records a problem at line; key, value and msg are as in Error.
func (l *errorList) add(line int, key, value, msg string) *Error {
	e := &Error{File: l.file, Line: line, Key: key, Value: value, Msg: msg}
	l.errs = append(l.errs, e)
	return e
}

// err returns nil, the only *Error, or an errors.Join of all of them
// sorted by line (stable, so problems on one line keep the order in which
// they were found).
func (l *errorList) err() error {
	switch len(l.errs) {
	case 0:
		return nil
	case 1:
		return l.errs[0]
	}
	slices.SortStableFunc(l.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
