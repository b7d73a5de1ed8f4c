package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/leproxy/leproxy/internal/clientlimit"
)

// TestBlocksAPI: a block shows on GET /blocks and a DELETE lifts it, for
// an IPv4 client and for an address inside a blocked IPv6 /64; metrics
// count the block.
func TestBlocksAPI(t *testing.T) {
	m := NewMetrics()
	blocks := clientlimit.NewBlocklist(clientlimit.BlocklistOptions{OnBlock: m.ClientBlocked})
	clients := clientlimit.New(clientlimit.Policy{}, clientlimit.Options{Blocks: blocks})
	g := clients.Guard(clientlimit.GuardConfig{Listener: ":5432", Block: clientlimit.BlockPolicy{After: 1, For: time.Hour}})
	g.Failed(netip.MustParseAddr("192.0.2.1"), clientlimit.FailTLS)
	g.Failed(netip.MustParseAddr("2001:db8::1"), clientlimit.FailProtocol)
	srv := httptest.NewServer(NewHandler(HandlerOptions{Metrics: m, Blocks: blocks}))
	defer srv.Close()

	list := func() []clientlimit.Block {
		t.Helper()
		resp, err := http.Get(srv.URL + "/blocks")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Blocks []clientlimit.Block }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return body.Blocks
	}
	del := func(client string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/blocks?client="+client, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	got := list()
	if len(got) != 2 || got[0].Client != "192.0.2.1" && got[1].Client != "192.0.2.1" {
		t.Fatalf("GET /blocks = %+v", got)
	}
	if code := del("192.0.2.1"); code != http.StatusNoContent {
		t.Errorf("DELETE 192.0.2.1: %d, want 204", code)
	}
	if code := del("192.0.2.1"); code != http.StatusNotFound {
		t.Errorf("DELETE again: %d, want 404", code)
	}
	if code := del("2001:db8::99"); code != http.StatusNoContent {
		t.Errorf("DELETE an address in the blocked /64: %d, want 204", code)
	}
	if code := del("nonsense"); code != http.StatusBadRequest {
		t.Errorf("DELETE nonsense: %d, want 400", code)
	}
	if got := list(); len(got) != 0 {
		t.Errorf("after the lifts: %+v", got)
	}
	if _, err := g.Admit(netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("lifted client still refused: %v", err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`leproxy_client_blocks_total{reason="tls"} 1`, `leproxy_client_blocks_total{reason="protocol"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
