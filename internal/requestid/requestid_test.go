package requestid

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := New()
		if len(id) != 16 || strings.Trim(id, "0123456789abcdefghijklmnopqrstuv") != "" {
			t.Fatalf("New() = %q, want 16 lower-case base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestAssign(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		name     string
		incoming []string
		keep     bool
		wantKept bool
	}{
		{"none, untrusted", nil, false, false},
		{"none, trusted", nil, true, false},
		{"untrusted peer", []string{"abc-123"}, false, false},
		{"trusted peer", []string{"abc-123"}, true, true},
		{"trusted peer, uuid", []string{"6f1c0b9e-6a7d-4c1e-9a53-6c8d1f0e2b3a"}, true, true},
		{"trusted peer, two values", []string{"a", "b"}, true, false},
		{"trusted peer, space", []string{"a b"}, true, false},
		{"trusted peer, control", []string{"a\x7fb"}, true, false},
		{"trusted peer, non-ASCII", []string{"é"}, true, false},
		{"trusted peer, too long", []string{long}, true, false},
		{"trusted peer, 128", []string{long[:128]}, true, true},
	}
	for _, tt := range tests {
		h := http.Header{}
		for _, v := range tt.incoming {
			h.Add(Header, v)
		}
		id := Assign(h, tt.keep)
		if got := h.Values(Header); len(got) != 1 || got[0] != id {
			t.Errorf("%s: header %q after Assign returned %q, want exactly the id", tt.name, got, id)
		}
		if kept := len(tt.incoming) > 0 && id == tt.incoming[0]; kept != tt.wantKept {
			t.Errorf("%s: Assign = %q; kept the incoming id: %v, want %v", tt.name, id, kept, tt.wantKept)
		}
		if !tt.wantKept && len(id) != 16 {
			t.Errorf("%s: Assign = %q, want a new 16-character id", tt.name, id)
		}
	}
}

func TestContext(t *testing.T) {
	if id := FromContext(context.Background()); id != "" {
		t.Errorf("FromContext(empty) = %q", id)
	}
	if id := FromContext(NewContext(context.Background(), "x1")); id != "x1" {
		t.Errorf("FromContext = %q, want x1", id)
	}
}
