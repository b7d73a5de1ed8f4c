package config

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "m.yml", Line: 7, Key: "tcp[0].protocol", Value: "postgress", Msg: `unknown protocol "postgress" (known: postgres)`},
			`m.yml:7: tcp[0].protocol: unknown protocol "postgress" (known: postgres)`},
		{Error{File: "m.yml", Line: 3, Key: "a.example.com", Value: "x:0", Msg: "port out of range"},
			`m.yml:3: a.example.com: port out of range: "x:0"`},
		{Error{File: "m.yml", Line: 2, Msg: "invalid YAML: oops"}, "m.yml:2: invalid YAML: oops"},
		{Error{File: "m.yml", Msg: "no hosts"}, "m.yml: no hosts"},
		{Error{Line: 4, Key: "k", Msg: "bad"}, "line 4: k: bad"},
		{Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestErrorUnwrap(t *testing.T) {
	e := &Error{File: "m.yml", Msg: "reading mapping", Err: fs.ErrNotExist}
	if !errors.Is(e, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false, want true", e)
	}
}

func TestErrorList(t *testing.T) {
	var l errorList
	if err := l.err(); err != nil {
		t.Fatalf("empty list: got %v, want nil", err)
	}
	l.file = "m.yml"
	l.add(5, "", "", "five")
	if err := l.err(); err != l.errs[0] {
		t.Fatalf("one error: got %T %v, want the *Error itself", err, err)
	}
	l.add(2, "", "", "two")
	l.add(5, "", "", "five again")
	l.add(0, "", "", "file")
	err := l.err()
	want := "m.yml: file\nm.yml:2: two\nm.yml:5: five\nm.yml:5: five again"
	if err.Error() != want {
		t.Errorf("got\n%s\nwant\n%s", err, want)
	}
	var first *Error
	if !errors.As(err, &first) || first.Msg != "file" {
		t.Errorf("errors.As found %v, want the line 0 error first", first)
	}
	if n := strings.Count(err.Error(), "\n"); n != 3 {
		t.Errorf("got %d lines, want 4", n+1)
	}
}
