package postgres

import (
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

func TestCancelTable(t *testing.T) {
	var tbl cancelTable
	ra, rb := &dbproxy.Route{Host: "a.test"}, &dbproxy.Route{Host: "b.test"}
	k := cancelKey{pid: 1, key: "\x01\x02\x03\x04"}
	removeA := tbl.add(k, ra)
	if r, ok := tbl.lookup(1, []byte{1, 2, 3, 4}); !ok || r != ra {
		t.Fatalf("lookup: got %v %t, want a.test", r, ok)
	}
	for _, miss := range []struct {
		pid uint32
		key []byte
	}{{2, []byte{1, 2, 3, 4}}, {1, []byte{1, 2, 3, 5}}, {1, []byte{1, 2, 3}}} {
		if _, ok := tbl.lookup(miss.pid, miss.key); ok {
			t.Errorf("lookup(%d, %x) found a route", miss.pid, miss.key)
		}
	}
	// A later session with the same key takes it over; the earlier one's
	// end does not remove it.
	removeB := tbl.add(k, rb)
	removeA()
	if r, ok := tbl.lookup(1, []byte{1, 2, 3, 4}); !ok || r != rb {
		t.Fatalf("after the first session ended: got %v %t, want b.test", r, ok)
	}
	removeB()
	if tbl.len() != 0 {
		t.Errorf("%d keys left, want 0", tbl.len())
	}
}
