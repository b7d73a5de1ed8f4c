package redis

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Tests of the RESP command scanner (respcmd.go).

// scanCommands feeds in to a command scanner in pieces of size step (all
// at once for 0) and returns the commands it reported, as "name sub".
func scanCommands(in []byte, step int) (cmds []string, lost bool) {
	c := newRESPCommands(func(name, sub []byte) {
		s := string(name)
		if sub != nil {
			s += " " + string(sub)
		}
		cmds = append(cmds, s)
	})
	feedInSteps(in, step, c.feed)
	return cmds, c.lost
}

func feedInSteps(in []byte, step int, feed func([]byte)) {
	if step <= 0 {
		step = len(in) + 1
	}
	for len(in) > 0 {
		k := min(step, len(in))
		feed(in[:k])
		in = in[k:]
	}
}

func respCommand(args ...string) string {
	s := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		s += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	return s
}

func TestRedisRESPCommands(t *testing.T) {
	big := strings.Repeat("v", 100000)
	tests := []struct {
		name     string
		in       string
		want     []string
		wantLost bool
	}{
		{"one command", respCommand("PING"), []string{"ping"}, false},
		{"subcommand", respCommand("CLUSTER", "SLOTS"), []string{"cluster slots"}, false},
		{"pipelined", respCommand("SET", "k", big) + respCommand("GET", "k") + respCommand("cluster", "Shards"),
			[]string{"set k", "get k", "cluster shards"}, false},
		{"auth arguments are not kept", respCommand("AUTH", "alice", "s3cret"), []string{"auth alice"}, false},
		{"binary argument with CRLF inside", respCommand("SET", "a\r\n*1\r\n", "x"), []string{"set a\r\n*1\r\n"}, false},
		{"long command name is cut", respCommand(strings.Repeat("x", 40)), []string{strings.Repeat("x", respCmdWord+1)}, false},
		{"inline", "PING\r\nCLUSTER   NODES\r\n", []string{"ping", "cluster nodes"}, false},
		{"inline with LF only", "cluster slots\n", []string{"cluster slots"}, false},
		{"empty inline line is no command", "\r\n\n" + respCommand("PING"), []string{"ping"}, false},
		{"empty multibulk is no command", "*0\r\n*-1\r\n" + respCommand("PING"), []string{"ping"}, false},
		{"argument not a bulk string", "*1\r\n+PING\r\n", nil, true},
		{"bad count", "*x\r\n", nil, true},
		{"overlong count line", "*" + strings.Repeat("1", 40) + "\r\n", nil, true},
		{"negative bulk length", "*1\r\n$-1\r\n", nil, true},
		{"bulk too long", fmt.Sprintf("*1\r\n$%d\r\n", maxRESPBulk+1), nil, true},
		{"overlong inline line", strings.Repeat("x", maxRESPInline+1), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 3, 7} {
				got, lost := scanCommands([]byte(tt.in), step)
				if !slices.Equal(got, tt.want) || lost != tt.wantLost {
					t.Errorf("in steps of %d: got %q lost=%t, want %q lost=%t", step, got, lost, tt.want, tt.wantLost)
				}
			}
		})
	}
}

// FuzzRedisRESPCommands checks that the command scanner never panics and that
// what it reports does not depend on how the input is split.
func FuzzRedisRESPCommands(f *testing.F) {
	f.Add([]byte(respCommand("CLUSTER", "SLOTS")+"PING\r\n"), uint8(1))
	f.Add([]byte("*2\r\n$3\r\nget\r\n$1\r\nk\r\n*0\r\n\r\n"), uint8(3))
	f.Add([]byte("*1\r\n$-1\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		whole, lostWhole := scanCommands(in, 0)
		split, lostSplit := scanCommands(in, int(step)+1)
		if !slices.Equal(whole, split) || lostWhole != lostSplit {
			t.Fatalf("got %q lost=%t whole, %q lost=%t in steps of %d", whole, lostWhole, split, lostSplit, int(step)+1)
		}
		for _, c := range whole {
			name, sub, _ := strings.Cut(c, " ")
			if len(name) > respCmdWord+1 || len(sub) > respCmdWord+1 {
				t.Fatalf("reported word longer than the limit: %q", c)
			}
		}
	})
}

// BenchmarkRedisRESPCommands measures the command scanner on pipelined GETs.
func BenchmarkRedisRESPCommands(b *testing.B) {
	var stream []byte
	for i := range 1000 {
		stream = append(stream, respCommand("GET", fmt.Sprintf("key:%d", i))...)
	}
	c := newRESPCommands(func(name, sub []byte) {})
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		c.feed(stream)
	}
}
