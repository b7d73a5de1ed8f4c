package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestScannerTracks checks which requests the scanner keeps for their
// responses: only those whose responses carry broker addresses at their
// version, and no Produce with acks=0, which gets no response.
func TestScannerTracks(t *testing.T) {
	txn := "tx-1"
	req := func(r kmsg.Request, v int16, mod func()) kmsg.Request {
		r.SetVersion(v)
		if mod != nil {
			mod()
		}
		return r
	}
	p9 := kmsg.NewPtrProduceRequest()
	p11 := kmsg.NewPtrProduceRequest()
	p11acks0 := kmsg.NewPtrProduceRequest()
	for _, tc := range []struct {
		name  string
		req   kmsg.Request
		track bool
	}{
		{"Metadata v0", req(kmsg.NewPtrMetadataRequest(), 0, nil), true},
		{"Metadata v13", req(kmsg.NewPtrMetadataRequest(), 13, nil), true},
		{"FindCoordinator v6", req(kmsg.NewPtrFindCoordinatorRequest(), 6, nil), true},
		{"DescribeCluster v1", req(kmsg.NewPtrDescribeClusterRequest(), 1, nil), true},
		{"ApiVersions v3", req(kmsg.NewPtrApiVersionsRequest(), 3, nil), true},
		{"Fetch v15 (no NodeEndpoints)", req(kmsg.NewPtrFetchRequest(), 15, nil), false},
		{"Fetch v16", req(kmsg.NewPtrFetchRequest(), 16, nil), true},
		{"Produce v9 (no NodeEndpoints)", req(p9, 9, nil), false},
		{"Produce v11 acks=-1 transactional", req(p11, 11, func() { p11.Acks, p11.TransactionID = -1, &txn }), true},
		{"Produce v11 acks=0", req(p11acks0, 11, func() { p11acks0.Acks = 0 }), false},
		{"JoinGroup", req(kmsg.NewPtrJoinGroupRequest(), 9, nil), false},
		{"SaslHandshake v1", req(kmsg.NewPtrSASLHandshakeRequest(), 1, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []request
			s := reqScanner{max: DefaultMaxRequest, track: func(r request) error { got = append(got, r); return nil }}
			if err := s.feed(appendRequest(nil, 42, tc.req)); err != nil {
				t.Fatal(err)
			}
			if tracked := len(got) == 1; tracked != tc.track {
				t.Fatalf("tracked %v, want %v", got, tc.track)
			}
			if tc.track && (got[0].corr != 42 || got[0].key != tc.req.Key() || got[0].version != tc.req.GetVersion()) {
				t.Errorf("tracked %+v", got[0])
			}
		})
	}
}

// TestPendingDropsUnanswered: a response answers the request with its
// correlation id; requests before it, which got no response, are dropped.
func TestPendingDropsUnanswered(t *testing.T) {
	p := new(pending)
	for _, corr := range []int32{1, 2, 3} {
		if err := p.push(request{corr: corr, key: keyProduce, version: 11}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := p.take(9); ok || len(p.q) != 3 {
		t.Fatalf("an untracked response took a request: %v", p.q)
	}
	if r, ok := p.take(2); !ok || r.corr != 2 || len(p.q) != 1 || p.q[0].corr != 3 {
		t.Fatalf("take(2) = %v, %v; left %v", r, ok, p.q)
	}
	for range maxPending - 1 {
		p.push(request{corr: 5})
	}
	if err := p.push(request{corr: 6}); err == nil {
		t.Error("pending grew past maxPending")
	}
}
