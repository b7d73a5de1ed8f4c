package kafka

import (
	"bytes"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// raw is a TLS connection through leproxy to broker i, certificate
// verified for its route host.
func (s *kafkaSetup) raw(t *testing.T, i int) net.Conn {
	t.Helper()
	return s.proxy.DialTLS(t, s.hosts[i], s.hosts[i])
}

// backendPort is broker i's own port, as it advertises it.
func (s *kafkaSetup) backendPort(i int) int32 {
	_, p, _ := net.SplitHostPort(s.cluster.ListenAddrs()[i])
	n, _ := strconv.Atoi(p)
	return int32(n)
}

func (s *kafkaSetup) listenerPort() int32 {
	n, _ := strconv.Atoi(s.port)
	return int32(n)
}

// wantBroker checks one broker address of a response.
func (s *kafkaSetup) wantBroker(t *testing.T, where string, node int32, host string, port int32) {
	t.Helper()
	want := s.hosts[node]
	if want == "" {
		want = unrouted(node)
	}
	if host != want || port != s.listenerPort() {
		t.Errorf("%s: broker %d at %s:%d, want %s:%d", where, node, host, port, want, s.listenerPort())
	}
}

func TestMetadataRewritten(t *testing.T) {
	s := startKafka(t, 3, nil)
	c := s.raw(t, 0)
	for v := int16(0); v <= maxVersion(keyMetadata); v++ {
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(v)
		resp := kmsg.NewPtrMetadataResponse()
		resp.SetVersion(v)
		if err := roundTrip(c, int32(v)+1, req, resp); err != nil {
			t.Fatalf("Metadata v%d: %v", v, err)
		}
		if len(resp.Brokers) != 3 {
			t.Fatalf("Metadata v%d: %d brokers, want 3", v, len(resp.Brokers))
		}
		for _, b := range resp.Brokers {
			s.wantBroker(t, "Metadata v"+strconv.Itoa(int(v)), b.NodeID, b.Host, b.Port)
		}
	}
}

func TestDescribeClusterRewritten(t *testing.T) {
	s := startKafka(t, 3, nil)
	c := s.raw(t, 1)
	for v := int16(0); v <= maxVersion(keyDescribeCluster); v++ {
		req := kmsg.NewPtrDescribeClusterRequest()
		req.SetVersion(v)
		resp := kmsg.NewPtrDescribeClusterResponse()
		resp.SetVersion(v)
		if err := roundTrip(c, int32(v)+1, req, resp); err != nil {
			t.Fatalf("DescribeCluster v%d: %v", v, err)
		}
		if resp.ErrorCode != 0 || len(resp.Brokers) != 3 {
			t.Fatalf("DescribeCluster v%d: error %d, %d brokers", v, resp.ErrorCode, len(resp.Brokers))
		}
		for _, b := range resp.Brokers {
			s.wantBroker(t, "DescribeCluster v"+strconv.Itoa(int(v)), b.NodeID, b.Host, b.Port)
		}
	}
}

// groupOn returns a group name whose coordinator is node.
func groupOn(t *testing.T, s *kafkaSetup, node int32) string {
	t.Helper()
	for i := range 1000 {
		g := "group-" + strconv.Itoa(i)
		if s.cluster.CoordinatorFor(g) == node {
			return g
		}
	}
	t.Fatalf("no group found on node %d", node)
	return ""
}

// TestUnroutedBroker runs a cluster whose broker 2 has no route: its
// address becomes a name that never resolves, and a coordinator on it
// COORDINATOR_NOT_AVAILABLE; no backend address reaches the client.
func TestUnroutedBroker(t *testing.T) {
	s := startKafka(t, 3, func(i int) bool { return i != 2 })
	c := s.raw(t, 0)

	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	mdr := kmsg.NewPtrMetadataResponse()
	mdr.SetVersion(12)
	if err := roundTrip(c, 1, md, mdr); err != nil {
		t.Fatal(err)
	}
	for _, b := range mdr.Brokers {
		s.wantBroker(t, "Metadata", b.NodeID, b.Host, b.Port)
	}

	routed, lost := groupOn(t, s, 0), groupOn(t, s, 2)
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.SetVersion(4)
	fc.CoordinatorKeys = []string{routed, lost}
	fcr := kmsg.NewPtrFindCoordinatorResponse()
	fcr.SetVersion(4)
	if err := roundTrip(c, 2, fc, fcr); err != nil {
		t.Fatal(err)
	}
	if len(fcr.Coordinators) != 2 {
		t.Fatalf("%d coordinators, want 2", len(fcr.Coordinators))
	}
	for _, co := range fcr.Coordinators {
		switch co.Key {
		case routed:
			if co.ErrorCode != 0 {
				t.Errorf("coordinator of %s: error %d", routed, co.ErrorCode)
			}
			s.wantBroker(t, "FindCoordinator v4", co.NodeID, co.Host, co.Port)
		case lost:
			if co.ErrorCode != errCodeCoordinatorNotAvailable || co.Host != "" || co.ErrorMessage == nil || !strings.Contains(*co.ErrorMessage, "no route") {
				t.Errorf("coordinator on the unrouted broker: error %d, host %q, message %v; want COORDINATOR_NOT_AVAILABLE", co.ErrorCode, co.Host, co.ErrorMessage)
			}
		}
	}

	// FindCoordinator v3: one key, top-level fields.
	for i, g := range []string{routed, lost} {
		fc := kmsg.NewPtrFindCoordinatorRequest()
		fc.SetVersion(3)
		fc.CoordinatorKey = g
		fcr := kmsg.NewPtrFindCoordinatorResponse()
		fcr.SetVersion(3)
		if err := roundTrip(c, int32(3+i), fc, fcr); err != nil {
			t.Fatal(err)
		}
		if g == routed {
			s.wantBroker(t, "FindCoordinator v3", fcr.NodeID, fcr.Host, fcr.Port)
		} else if fcr.ErrorCode != errCodeCoordinatorNotAvailable || fcr.Host != "" {
			t.Errorf("FindCoordinator v3 on the unrouted broker: error %d host %q", fcr.ErrorCode, fcr.Host)
		}
	}
	if !strings.Contains(s.proxy.Logs.String(), "kafka broker has no route on this listener") {
		t.Error("no warning about the unrouted broker in the log")
	}
}

// TestApiVersionsClamped has the cluster advertise versions newer than
// leproxy knows: leproxy advertises at most what it can rewrite.
func TestApiVersionsClamped(t *testing.T) {
	s := startKafka(t, 1, nil)
	s.cluster.ControlKey(keyApiVersions, func(r kmsg.Request) (kmsg.Response, error, bool) {
		resp := r.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{
			{ApiKey: keyProduce, MinVersion: 3, MaxVersion: 99},
			{ApiKey: keyMetadata, MinVersion: 0, MaxVersion: 40},
			{ApiKey: keyApiVersions, MinVersion: 0, MaxVersion: 4},
			{ApiKey: keySASLHandshake, MinVersion: 0, MaxVersion: 1},
			{ApiKey: keyDescribeCluster, MinVersion: 50, MaxVersion: 60},
			{ApiKey: 11, MinVersion: 0, MaxVersion: 77}, // JoinGroup: not rewritten
		}
		return resp, nil, true
	})
	c := s.raw(t, 0)
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(3)
	if err := roundTrip(c, 1, req, resp); err != nil {
		t.Fatal(err)
	}
	got := map[int16][2]int16{}
	for _, k := range resp.ApiKeys {
		got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	want := map[int16][2]int16{
		keyProduce:       {3, maxVersion(keyProduce)},
		keyMetadata:      {0, maxVersion(keyMetadata)},
		keyApiVersions:   {0, 4},
		keySASLHandshake: {1, 1},
		11:               {0, 77},
	}
	if len(got) != len(want) {
		t.Errorf("advertised %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("api key %d: versions %v, want %v", k, got[k], w)
		}
	}
}

// TestNodeEndpointsRewritten has the cluster answer Produce and Fetch
// with NOT_LEADER_OR_FOLLOWER and KIP-951's new-leader endpoints.
func TestNodeEndpointsRewritten(t *testing.T) {
	s := startKafka(t, 3, nil)
	addr := s.cluster.ListenAddrs()[1]
	host, _, _ := net.SplitHostPort(addr)
	s.cluster.ControlKey(keyProduce, func(r kmsg.Request) (kmsg.Response, error, bool) {
		if r.(*kmsg.ProduceRequest).Acks == 0 {
			return nil, nil, false // kfake, as a broker, answers nothing
		}
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		p := kmsg.NewProduceResponseTopicPartition()
		p.ErrorCode = 6
		p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch = 1, 7
		resp.Topics = []kmsg.ProduceResponseTopic{{Topic: "franz", Partitions: []kmsg.ProduceResponseTopicPartition{p}}}
		resp.Brokers = []kmsg.ProduceResponseBroker{{NodeID: 1, Host: host, Port: s.backendPort(1)}}
		return resp, nil, true
	})
	s.cluster.ControlKey(keyFetch, func(r kmsg.Request) (kmsg.Response, error, bool) {
		resp := r.ResponseKind().(*kmsg.FetchResponse)
		resp.Brokers = []kmsg.FetchResponseBroker{{NodeID: 1, Host: host, Port: s.backendPort(1)}, {NodeID: 2, Host: host, Port: s.backendPort(2)}}
		return resp, nil, true
	})
	c := s.raw(t, 0)

	// A Produce with acks=0 gets no response: leproxy must not wait for one.
	p0 := kmsg.NewPtrProduceRequest()
	p0.SetVersion(11)
	p0.Acks = 0
	p0.TimeoutMillis = 1000
	c.SetDeadline(time.Now().Add(10 * time.Second))
	dbtest.MustWrite(t, c, appendRequest(nil, 50, p0))

	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(11)
	pr.Acks = -1
	pr.TimeoutMillis = 1000
	prr := kmsg.NewPtrProduceResponse()
	prr.SetVersion(11)
	if err := roundTrip(c, 51, pr, prr); err != nil {
		t.Fatal(err)
	}
	if len(prr.Brokers) != 1 {
		t.Fatalf("Produce response: %d NodeEndpoints, want 1", len(prr.Brokers))
	}
	s.wantBroker(t, "Produce NodeEndpoints", prr.Brokers[0].NodeID, prr.Brokers[0].Host, prr.Brokers[0].Port)

	fr := kmsg.NewPtrFetchRequest()
	fr.SetVersion(16)
	fr.MaxWaitMillis = 10
	frr := kmsg.NewPtrFetchResponse()
	frr.SetVersion(16)
	if err := roundTrip(c, 52, fr, frr); err != nil {
		t.Fatal(err)
	}
	if len(frr.Brokers) != 2 {
		t.Fatalf("Fetch response: %d NodeEndpoints, want 2", len(frr.Brokers))
	}
	for _, b := range frr.Brokers {
		s.wantBroker(t, "Fetch NodeEndpoints", b.NodeID, b.Host, b.Port)
	}
}

// TestRefusals checks that a refused client reads BROKER_NOT_AVAILABLE
// in answer to its ApiVersions.
func TestRefusals(t *testing.T) {
	s := startKafka(t, 1, nil)
	apiVersions := func(c net.Conn) int16 {
		t.Helper()
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(3)
		req.ClientSoftwareName, req.ClientSoftwareVersion = "leproxy-test", "1"
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.SetVersion(3)
		if err := roundTrip(c, 9, req, resp); err != nil {
			t.Fatalf("ApiVersions: %v", err)
		}
		return resp.ErrorCode
	}
	if code := apiVersions(s.raw(t, 0)); code != 0 {
		t.Fatalf("routed client: error %d", code)
	}
	if code := apiVersions(s.proxy.DialTLS(t, "nope.kafka.test", "b0.kafka.test")); code != errCodeBrokerNotAvailable {
		t.Errorf("unknown server name: error %d, want BROKER_NOT_AVAILABLE", code)
	}
	if code := apiVersions(s.proxy.Dial(t)); code != errCodeBrokerNotAvailable {
		t.Errorf("plaintext: error %d, want BROKER_NOT_AVAILABLE", code)
	}
}

// TestProtocolViolations checks the requests that end a session: a frame
// over the limit, a version newer than leproxy can rewrite, SaslHandshake
// v0.
func TestProtocolViolations(t *testing.T) {
	frame := func(key, version int16, extra int) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(10+extra))
		b = binary.BigEndian.AppendUint16(b, uint16(key))
		b = binary.BigEndian.AppendUint16(b, uint16(version))
		b = append(b, 0, 0, 0, 1, 0xff, 0xff)
		return append(b, bytes.Repeat([]byte{0}, extra)...)
	}
	for _, tc := range []struct {
		name string
		req  []byte
		want string
	}{
		{"TooLarge", frame(echoKey, 0, 2000)[:100], "frame size"},
		{"NewerVersion", frame(keyMetadata, maxVersion(keyMetadata)+1, 1), "newer than leproxy"},
		{"SaslHandshakeV0", frame(keySASLHandshake, 0, 2), "SaslHandshake v0"},
		{"NegativeSize", []byte{0xff, 0xff, 0xff, 0xf0}, "frame size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dbtest.ServeFake(t, l, 30*time.Second, nil, func(c net.Conn) { serveEcho(c, "x") })
			// The limit comes the way a mapping's max_request does.
			p := dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: newProtocol(),
				Options: map[string]string{optMaxRequest: "1KiB"},
				Routes:  []dbproxy.Route{{Host: "k.test", Backend: l.Addr().String()}}})
			c := p.DialTLS(t, "k.test", "k.test")
			dbtest.MustWrite(t, c, tc.req)
			if _, err := readFrame(c); err == nil {
				t.Error("got a response, want the connection closed")
			}
			if e := p.SessionError(t); !strings.Contains(e, tc.want) {
				t.Errorf("session error %q, want one about %q", e, tc.want)
			}
		})
	}
}

// TestReloadRebuildsBrokerMap renames a broker's route: sessions after
// the reload hand out the new name.
func TestReloadRebuildsBrokerMap(t *testing.T) {
	s := startKafka(t, 3, nil)
	brokerHost := func() string {
		t.Helper()
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(12)
		resp := kmsg.NewPtrMetadataResponse()
		resp.SetVersion(12)
		if err := roundTrip(s.raw(t, 0), 1, req, resp); err != nil {
			t.Fatal(err)
		}
		for _, b := range resp.Brokers {
			if b.NodeID == 1 {
				return b.Host
			}
		}
		t.Fatal("no broker 1 in Metadata")
		return ""
	}
	if h := brokerHost(); h != "b1.kafka.test" {
		t.Fatalf("before the reload broker 1 is %s", h)
	}
	addrs := s.cluster.ListenAddrs()
	routes := []dbproxy.Route{
		{Host: "b0.kafka.test", Backend: addrs[0]},
		{Host: "renamed.kafka.test", Backend: addrs[1]},
		{Host: "b2.kafka.test", Backend: addrs[2]},
	}
	if err := s.proxy.Srv.SetRoutes(routes, ""); err != nil {
		t.Fatal(err)
	}
	if h := brokerHost(); h != "renamed.kafka.test" {
		t.Errorf("after the reload broker 1 is %s, want renamed.kafka.test", h)
	}
}
