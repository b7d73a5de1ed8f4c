package main

import (
	"strings"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/internal/config"
)

// TestUnregisteredProtocolError checks newTCPServer's error for a listener
// whose protocol this binary lacks (config.Load refuses one first, so only
// a Config built another way reaches it): it points at the protocol line
// and lists the registered protocols as text.
func TestUnregisteredProtocolError(t *testing.T) {
	l := config.Listener{Listen: ":5432", Protocol: "nosuch", Line: 7, ProtocolLine: 9,
		Routes: []config.Route{{Host: "db.example.com", Backend: "127.0.0.1:5432"}}}
	_, err := newTCPServer("m.yml", l, tcpDeps{})
	if err == nil {
		t.Fatal("newTCPServer: no error for an unregistered protocol")
	}
	want := `m.yml:9: tcp listener :5432: protocol "nosuch" is not one of this leproxy's (` + strings.Join(dbproxy.Protocols(), ", ") + ")"
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
}
