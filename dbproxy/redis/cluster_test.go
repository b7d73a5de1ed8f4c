package dbproxy

import "testing"

// Tests of the cluster node map (rediscluster.go); its rewrites are
// tested through the reply stream in respreply_test.go.

func TestRedisNodeKey(t *testing.T) {
	tests := []struct{ host, port, want string }{
		{"127.0.0.1", "6379", "127.0.0.1:6379"},
		{"Node.Example.COM.", "06379", "node.example.com:6379"},
		{"::ffff:10.0.0.1", "1", "10.0.0.1:1"},
		{"[::1]", "2", "[::1]:2"},
		{"0:0:0:0:0:0:0:1", "2", "[::1]:2"},
	}
	for _, tt := range tests {
		if got := redisNodeKey(tt.host, tt.port); got != tt.want {
			t.Errorf("redisNodeKey(%q, %q) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
}
