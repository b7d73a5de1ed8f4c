package redis

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// Tests of the RESP reply rewriter (respreply.go) with the cluster
// rewrites of cluster.go.

func TestRedisClusterCommand(t *testing.T) {
	tests := []struct {
		name, sub  string
		wantKind   clusterReply
		wantBreaks bool
	}{
		{"cluster", "slots", clusterSlots, false},
		{"cluster", "shards", clusterShards, false},
		{"cluster", "nodes", clusterNodes, false},
		{"cluster", "replicas", clusterReplicas, false},
		{"cluster", "slaves", clusterReplicas, false},
		{"cluster", "info", clusterNone, false},
		{"get", "slots", clusterNone, false},
		{"subscribe", "ch", clusterNone, true},
		{"ssubscribe", "ch", clusterNone, true},
		{"monitor", "", clusterNone, true},
		{"client", "reply", clusterNone, true},
		{"client", "setname", clusterNone, false},
	}
	for _, tt := range tests {
		kind, breaks := clusterCommand([]byte(tt.name), []byte(tt.sub))
		if kind != tt.wantKind || breaks != tt.wantBreaks {
			t.Errorf("%s %s: got %d, %t, want %d, %t", tt.name, tt.sub, kind, breaks, tt.wantKind, tt.wantBreaks)
		}
	}
}

// testRewrite is a rewriter that knows two nodes: 10.0.0.1:7001 served as
// n1.test and 10.0.0.2:7002 as n2.test, on listener port 6380; the
// session's backend is 10.0.0.1.
func testRewrite() *rewrite {
	return &rewrite{
		nodes:       map[string]string{"10.0.0.1:7001": "n1.test", "10.0.0.2:7002": "n2.test"},
		port:        "6380",
		backendHost: "10.0.0.1",
	}
}

// runReplies pairs commands with replies as a session does and returns
// the rewritten reply stream, fed in pieces of size step.
func runReplies(commands, replies string, step int) string {
	w := testRewrite()
	pair := new(respPairing)
	cmds := newRESPCommands(func(name, sub []byte) { pair.command(clusterCommand(name, sub)) })
	cmds.feed([]byte(commands))
	r := &respReplies{pair: pair, errorLine: w.errorLine, cluster: w.cluster}
	var out []byte
	feedInSteps([]byte(replies), step, func(b []byte) {
		r.feed(b)
		out = append(out, r.out...)
		r.out = r.out[:0]
	})
	r.flush()
	return string(append(out, r.out...))
}

func TestRedisRESPRepliesRewrite(t *testing.T) {
	slotsRESP2 := "*2\r\n" +
		"*3\r\n:0\r\n:8191\r\n*4\r\n$8\r\n10.0.0.1\r\n:7001\r\n$2\r\nid\r\n*2\r\n$8\r\nhostname\r\n$2\r\nh1\r\n" +
		"*3\r\n:8192\r\n:16383\r\n*3\r\n$8\r\n10.0.0.2\r\n:7002\r\n$3\r\nid2\r\n"
	slotsRewritten := "*2\r\n" +
		"*3\r\n:0\r\n:8191\r\n*4\r\n$7\r\nn1.test\r\n:6380\r\n$2\r\nid\r\n*2\r\n$8\r\nhostname\r\n$7\r\nn1.test\r\n" +
		"*3\r\n:8192\r\n:16383\r\n*3\r\n$7\r\nn2.test\r\n:6380\r\n$3\r\nid2\r\n"
	shardsRESP3 := "*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n" +
		"%5\r\n$2\r\nid\r\n$1\r\nx\r\n$4\r\nport\r\n:7002\r\n$2\r\nip\r\n$8\r\n10.0.0.2\r\n$8\r\nendpoint\r\n$8\r\n10.0.0.2\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
	shardsRewritten := "*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n" +
		"%5\r\n$2\r\nid\r\n$1\r\nx\r\n$4\r\nport\r\n:6380\r\n$2\r\nip\r\n$8\r\n10.0.0.2\r\n$8\r\nendpoint\r\n$7\r\nn2.test\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
	nodesText := "abc 10.0.0.1:7001@17001,h1 myself,master - 0 0 1 connected 0-8191\n" +
		"def 10.0.0.2:7002@17002 master - 0 0 2 connected 8192-16383\n" +
		"ghi 10.0.0.9:7009@17009 master - 0 0 3 connected\n"
	nodesRewritten := "abc n1.test:6380@17001,n1.test myself,master - 0 0 1 connected 0-8191\n" +
		"def n2.test:6380@17002 master - 0 0 2 connected 8192-16383\n" +
		"ghi 10.0.0.9:7009@17009 master - 0 0 3 connected\n"
	bulk := func(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }
	verbatim := func(s string) string { return fmt.Sprintf("=%d\r\ntxt:%s\r\n", len(s)+4, s) }

	tests := []struct {
		name, commands, replies, want string
	}{{
		name:     "MOVED",
		commands: respCommand("GET", "k"),
		replies:  "-MOVED 3999 10.0.0.2:7002\r\n",
		want:     "-MOVED 3999 n2.test:6380\r\n",
	}, {
		name:     "ASK",
		commands: respCommand("GET", "k"),
		replies:  "-ASK 12 10.0.0.1:7001\r\n",
		want:     "-ASK 12 n1.test:6380\r\n",
	}, {
		name:     "MOVED with an empty host means the session's backend host",
		commands: respCommand("GET", "k"),
		replies:  "-MOVED 3999 :7001\r\n",
		want:     "-MOVED 3999 n1.test:6380\r\n",
	}, {
		name:     "MOVED to a node with no route",
		commands: respCommand("GET", "k"),
		replies:  "-MOVED 3999 10.0.0.9:7009\r\n",
		want:     "-ERR leproxy has no route to cluster node 10.0.0.9:7009 (MOVED 3999)\r\n",
	}, {
		name:     "MOVED inside an EXEC array",
		commands: respCommand("EXEC"),
		replies:  "*2\r\n+OK\r\n-MOVED 1 10.0.0.2:7002\r\n",
		want:     "*2\r\n+OK\r\n-MOVED 1 n2.test:6380\r\n",
	}, {
		name:     "other errors untouched",
		commands: respCommand("GET", "k"),
		replies:  "-ERR MOVED 3999 10.0.0.2:7002\r\n-MOVEDX 1 10.0.0.2:7002\r\n-MOVED x 10.0.0.2:7002\r\n",
		want:     "-ERR MOVED 3999 10.0.0.2:7002\r\n-MOVEDX 1 10.0.0.2:7002\r\n-MOVED x 10.0.0.2:7002\r\n",
	}, {
		name:     "a bulk string looking like MOVED is data",
		commands: respCommand("GET", "k"),
		replies:  bulk("-MOVED 3999 10.0.0.2:7002"),
		want:     bulk("-MOVED 3999 10.0.0.2:7002"),
	}, {
		name:     "CLUSTER SLOTS",
		commands: respCommand("CLUSTER", "SLOTS"),
		replies:  slotsRESP2,
		want:     slotsRewritten,
	}, {
		name:     "CLUSTER SLOTS after other replies",
		commands: respCommand("GET", "a") + respCommand("HGETALL", "h") + respCommand("cluster", "slots") + respCommand("GET", "b"),
		replies:  bulk("x") + "%1\r\n+f\r\n:1\r\n" + slotsRESP2 + "$-1\r\n",
		want:     bulk("x") + "%1\r\n+f\r\n:1\r\n" + slotsRewritten + "$-1\r\n",
	}, {
		name:     "push messages are not replies",
		commands: respCommand("GET", "a") + respCommand("CLUSTER", "SLOTS"),
		replies:  ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n" + bulk("x") + ">2\r\n+x\r\n+y\r\n" + slotsRESP2,
		want:     ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n" + bulk("x") + ">2\r\n+x\r\n+y\r\n" + slotsRewritten,
	}, {
		name:     "attribute before a reply",
		commands: respCommand("GET", "a") + respCommand("CLUSTER", "SLOTS"),
		replies:  "|1\r\n+key\r\n+val\r\n" + bulk("x") + slotsRESP2,
		want:     "|1\r\n+key\r\n+val\r\n" + bulk("x") + slotsRewritten,
	}, {
		name:     "same shape answering another command is data",
		commands: respCommand("LRANGE", "l", "0", "-1"),
		replies:  slotsRESP2,
		want:     slotsRESP2,
	}, {
		name:     "no pairing after SUBSCRIBE",
		commands: respCommand("SUBSCRIBE", "c") + respCommand("CLUSTER", "SLOTS"),
		replies:  "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n" + slotsRESP2,
		want:     "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n" + slotsRESP2,
	}, {
		name:     "CLUSTER SLOTS error reply",
		commands: respCommand("CLUSTER", "SLOTS"),
		replies:  "-ERR This instance has cluster support disabled\r\n",
		want:     "-ERR This instance has cluster support disabled\r\n",
	}, {
		name:     "CLUSTER SHARDS RESP3",
		commands: respCommand("CLUSTER", "SHARDS"),
		replies:  shardsRESP3,
		want:     shardsRewritten,
	}, {
		name:     "CLUSTER NODES",
		commands: respCommand("CLUSTER", "NODES"),
		replies:  bulk(nodesText),
		want:     bulk(nodesRewritten),
	}, {
		name:     "CLUSTER NODES verbatim",
		commands: respCommand("CLUSTER", "NODES"),
		replies:  verbatim(nodesText),
		want:     verbatim(nodesRewritten),
	}, {
		name:     "CLUSTER REPLICAS",
		commands: respCommand("CLUSTER", "REPLICAS", "abc"),
		replies:  "*1\r\n" + bulk(strings.TrimSuffix(strings.Split(nodesText, "\n")[1], "\n")),
		want:     "*1\r\n" + bulk(strings.Split(nodesRewritten, "\n")[1]),
	}, {
		name:     "unknown type byte passes the rest through",
		commands: respCommand("GET", "a") + respCommand("GET", "b"),
		replies:  "?what\r\n-MOVED 1 10.0.0.2:7002\r\n",
		want:     "?what\r\n-MOVED 1 10.0.0.2:7002\r\n",
	}, {
		name:     "truncated reply is passed on",
		commands: respCommand("CLUSTER", "SLOTS"),
		replies:  slotsRESP2[:40],
		want:     slotsRESP2[:40],
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 2, 5, 13} {
				if got := runReplies(tt.commands, tt.replies, step); got != tt.want {
					t.Errorf("in steps of %d:\ngot  %q\nwant %q", step, got, tt.want)
				}
			}
		})
	}
}

func TestRedisRESPRepliesCaptureLimit(t *testing.T) {
	// A CLUSTER reply too large to hold passes through unchanged.
	var b strings.Builder
	n := maxRESPCapture/40 + 1
	fmt.Fprintf(&b, "*%d\r\n", n)
	for i := range n {
		fmt.Fprintf(&b, "*3\r\n:%d\r\n:%d\r\n*2\r\n$8\r\n10.0.0.1\r\n:7001\r\n", i, i)
	}
	in := b.String()
	if len(in) <= maxRESPCapture {
		t.Fatalf("test reply of %d bytes is not over the limit", len(in))
	}
	if got := runReplies(respCommand("CLUSTER", "SLOTS"), in, 4096); got != in {
		t.Errorf("a reply over the capture limit was changed")
	}
}

// FuzzRedisRESPReplies checks that the reply rewriter never panics, that its
// output does not depend on how the input is split, that it is the input
// itself when there is nothing to rewrite, and that it differs from the
// input only where a rewrite applies.
func FuzzRedisRESPReplies(f *testing.F) {
	f.Add([]byte(respCommand("CLUSTER", "SLOTS")), []byte("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$8\r\n10.0.0.1\r\n:7001\r\n"), uint8(3))
	f.Add([]byte(respCommand("GET", "k")), []byte("-MOVED 1 10.0.0.2:7002\r\n$3\r\nabc\r\n"), uint8(1))
	f.Add([]byte(respCommand("CLUSTER", "NODES")), []byte("$20\r\nx 10.0.0.1:7001@1 m\n\r\n"), uint8(7))
	f.Add([]byte("PING\r\n"), []byte("|1\r\n+a\r\n+b\r\n>1\r\n+p\r\n%1\r\n+k\r\n~1\r\n_\r\n"), uint8(2))
	f.Fuzz(func(t *testing.T, commands, replies []byte, step uint8) {
		whole := runReplies(string(commands), string(replies), 0)
		if split := runReplies(string(commands), string(replies), int(step)+1); split != whole {
			t.Fatalf("output depends on the split: whole %q, in steps of %d %q", whole, int(step)+1, split)
		}
		// Without rewrite functions the stream is untouched.
		r := &respReplies{}
		var out []byte
		feedInSteps(replies, int(step)+1, func(b []byte) {
			r.feed(b)
			out = append(out, r.out...)
			r.out = r.out[:0]
		})
		r.flush()
		out = append(out, r.out...)
		if !bytes.Equal(out, replies) {
			t.Fatalf("pass-through changed the stream: got %q, want %q", out, replies)
		}
		// A rewrite only ever names the routes' hosts and port.
		if whole != string(replies) && !strings.Contains(whole, "n1.test") && !strings.Contains(whole, "n2.test") &&
			!strings.Contains(whole, "no route to cluster node") {
			t.Fatalf("output changed without a rewrite: got %q from %q", whole, replies)
		}
	})
}

// BenchmarkRedisRESPReplies measures the reply rewriter on a stream of typical
// small replies, the redis protocol's cost per byte over a plain pipe.
func BenchmarkRedisRESPReplies(b *testing.B) {
	var stream []byte
	for i := range 1000 {
		stream = fmt.Appendf(stream, "+OK\r\n$10\r\nvalue%05d\r\n:%d\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n", i, i)
	}
	w := testRewrite()
	r := &respReplies{pair: new(respPairing), errorLine: w.errorLine, cluster: w.cluster}
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		r.feed(stream)
		r.out = r.out[:0]
	}
}
