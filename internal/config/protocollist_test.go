package config

import (
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

// TestUnknownProtocolError checks the error for a protocol this binary
// does not have: it points at the protocol line (not the listener's
// first), and its list is exactly what the protocol packages registered,
// names and aliases, written out as text rather than a Go slice.
func TestUnknownProtocolError(t *testing.T) {
	const mapping = "tcp:\n  - listen: \":5432\"\n    default: db.example.com\n    protocol: postgress\n    routes: {db.example.com: 127.0.0.1:5432}\n"
	_, err := Parse("m.yml", []byte(mapping))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse: got %v, want an *Error", err)
	}
	if e.Line != 4 || e.Key != "tcp[0].protocol" || e.Value != "postgress" {
		t.Errorf("got line %d key %q value %q, want line 4 (protocol:) key tcp[0].protocol value postgress", e.Line, e.Key, e.Value)
	}
	if strings.ContainsAny(e.Msg, "[]") {
		t.Errorf("message %q holds a Go slice", e.Msg)
	}
	m := regexp.MustCompile(`^unknown protocol "postgress" \(known: (.*)\)$`).FindStringSubmatch(e.Msg)
	if m == nil {
		t.Fatalf("message %q, want unknown protocol \"postgress\" (known: …)", e.Msg)
	}
	var names []string
	aliases := make(map[string]string)
	entry := regexp.MustCompile(`([a-z0-9]+)(?: \(([a-z0-9, ]+)\))?(?:, |$)`)
	for _, em := range entry.FindAllStringSubmatch(m[1], -1) {
		names = append(names, em[1])
		if em[2] != "" {
			for a := range strings.SplitSeq(em[2], ", ") {
				aliases[a] = em[1]
			}
		}
	}
	if want := dbproxy.Protocols(); !slices.Equal(names, want) {
		t.Errorf("listed protocols %q, want the registered %q", names, want)
	}
	if want := dbproxy.Aliases(); !maps.Equal(aliases, want) {
		t.Errorf("listed aliases %v, want the registered %v", aliases, want)
	}
}

func TestListenerProtocolLine(t *testing.T) {
	cfg, err := Parse("m.yml", []byte("tcp:\n  - listen: \":5432\"\n\n    protocol: postgres\n    routes: {db.example.com: 127.0.0.1:5432}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.TCP[0]; l.Line != 2 || l.ProtocolLine != 4 {
		t.Errorf("listener line %d, protocol line %d; want 2 and 4", l.Line, l.ProtocolLine)
	}
}
