package testenv

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartMariaDB(t *testing.T) {
	m := StartMariaDB(t, MariaDBOptions{})
	if got := m.Exec(t, "SELECT 1 + 1"); got != "2" {
		t.Errorf("SELECT 1 + 1 = %q, want 2", got)
	}
	if got := m.Exec(t, "SELECT @@port"); got != strings.TrimPrefix(m.Addr, "127.0.0.1:") {
		t.Errorf("@@port = %q, want the port of %s", got, m.Addr)
	}
	m.Stop()
	if c, err := net.DialTimeout("tcp", m.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", m.Addr)
	}
}
