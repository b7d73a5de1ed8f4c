package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestTerminateWatch(t *testing.T) {
	msg := func(m pgproto3.FrontendMessage) []byte {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	query := msg(&pgproto3.Query{String: "select 'X'"})
	terminate := msg(&pgproto3.Terminate{})
	xInBody := msg(&pgproto3.Query{String: "X\x00\x00\x00\x04"})
	tests := []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"queries only", append(append([]byte{}, query...), xInBody...), false},
		{"terminate after a query", append(append([]byte{}, query...), terminate...), true},
		{"terminate alone", terminate, true},
		{"X inside a body", xInBody, false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 2, 3, 7, len(tt.stream)} {
			w := &terminateWatch{}
			for b := tt.stream; len(b) > 0; {
				k := min(chunk, len(b))
				w.scan(b[:k])
				b = b[k:]
			}
			if _, got := w.SessionEnd(); got != tt.want {
				t.Errorf("%s in chunks of %d: terminate seen %v, want %v", tt.name, chunk, got, tt.want)
			}
		}
	}
}

func FuzzTerminateWatch(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x09abcd\x00X\x00\x00\x00\x04"), 3)
	f.Add([]byte("X\x00\x00\x00\x00"), 1)
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		chunk = max(1, chunk%64+1)
		whole, split := &terminateWatch{}, &terminateWatch{}
		whole.scan(stream)
		for b := stream; len(b) > 0; {
			k := min(chunk, len(b))
			split.scan(b[:k])
			b = b[k:]
		}
		if whole.quit.Load() != split.quit.Load() || whole.left != split.left || whole.nhdr != split.nhdr {
			t.Errorf("chunking changed the result: %+v vs %+v", whole, split)
		}
	})
}
