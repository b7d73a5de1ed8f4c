package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// A kafkaSetup is a kfake cluster behind leproxy: broker i is the route
// b<i>.kafka.test of one kafka listener.
type kafkaSetup struct {
	cluster *kfake.Cluster
	proxy   *dbtest.Proxy
	hosts   []string // route host of broker i; "" for a broker without a route
	port    string   // leproxy's listener port
	guard   *dialGuard
}

// startKafka starts a cluster of n brokers with topics of 3 partitions,
// partition p led by broker p, and leproxy in front of the brokers whose
// index routed accepts (nil: all).
func startKafka(t *testing.T, n int, routed func(i int) bool, opts ...kfake.Opt) *kafkaSetup {
	t.Helper()
	cl := testenv.StartKafka(t, n, append([]kfake.Opt{kfake.SeedTopics(3, "franz", "sarama")}, opts...)...)
	for _, topic := range []string{"franz", "sarama"} {
		for p := range int32(3) {
			if err := cl.MoveTopicPartition(topic, p, p%int32(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := &kafkaSetup{cluster: cl, hosts: make([]string, n)}
	var routes []dbproxy.Route
	for i, addr := range cl.ListenAddrs() {
		if routed != nil && !routed(i) {
			continue
		}
		s.hosts[i] = "b" + strconv.Itoa(i) + ".kafka.test"
		routes = append(routes, dbproxy.Route{Host: s.hosts[i], Backend: addr})
	}
	proto, _ := dbproxy.Lookup("kafka")
	s.proxy = dbtest.StartProxy(t, dbtest.NewCA(t), dbproxy.Config{Protocol: proto, Routes: routes})
	_, s.port, _ = net.SplitHostPort(s.proxy.Addr)
	s.guard = &dialGuard{t: t, s: s, dialed: map[string]int{}}
	return s
}

// seed is the bootstrap address of broker 0 through leproxy.
func (s *kafkaSetup) seed() string { return s.hosts[0] + ":" + s.port }

// A dialGuard is the clients' dialer: it fails the test when a client
// dials anything but one of leproxy's route hosts on its port, and
// otherwise connects to leproxy, with TLS verified for that host.
type dialGuard struct {
	t  *testing.T
	s  *kafkaSetup
	mu sync.Mutex
	// dialed counts dials per route host.
	dialed map[string]int
}

// check fails the test unless addr is a route of leproxy's.
func (g *dialGuard) check(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	ok := err == nil && port == g.s.port
	if ok {
		ok = false
		for _, h := range g.s.hosts {
			ok = ok || (h != "" && h == host)
		}
	}
	if !ok {
		g.t.Errorf("a client dialed %s, which is not leproxy (%v on port %s)", addr, g.s.hosts, g.s.port)
		return fmt.Errorf("test dialer: %s is not leproxy", addr)
	}
	g.mu.Lock()
	g.dialed[host]++
	g.mu.Unlock()
	return nil
}

// dial is a plain connection to leproxy for addr, for a client that runs
// TLS itself (sarama).
func (g *dialGuard) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := g.check(addr); err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, g.s.proxy.Addr)
}

// dialTLS is dial with TLS verifying leproxy's certificate for addr's
// host (franz-go's dialer).
func (g *dialGuard) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := g.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: g.s.proxy.CA.Pool, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// Dial implements sarama's proxy.Dialer.
func (g *dialGuard) Dial(network, addr string) (net.Conn, error) {
	return g.dial(context.Background(), network, addr)
}

// count returns the dials to host.
func (g *dialGuard) count(host string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dialed[host]
}

// wantAllDialed checks that every routed broker was dialed through leproxy.
func (g *dialGuard) wantAllDialed(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	t.Logf("dials through leproxy: %v", g.dialed)
	for _, h := range g.s.hosts {
		if h != "" && g.dialed[h] == 0 {
			t.Errorf("no connection to %s through leproxy (dialed %v)", h, g.dialed)
		}
	}
}

// TestFranzGo produces to and consumes with a group from a 3-broker
// cluster through leproxy with franz-go: Metadata sends it to every
// partition leader, FindCoordinator and the group APIs to the group's
// coordinator, all by their route hosts.
func TestFranzGo(t *testing.T) {
	s := startKafka(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	prod, err := kgo.NewClient(kgo.SeedBrokers(s.seed()), kgo.Dialer(s.guard.dialTLS),
		kgo.DefaultProduceTopic("franz"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 30
	for i := range n {
		r := &kgo.Record{Partition: int32(i % 3), Value: []byte("v" + strconv.Itoa(i))}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("producing record %d: %v", i, err)
		}
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(s.seed()), kgo.Dialer(s.guard.dialTLS),
		kgo.ConsumerGroup("franz-group"), kgo.ConsumeTopics("franz"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[string]bool{}
	for len(got) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Value)] = true })
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Errorf("committing offsets: %v", err)
	}
	s.guard.wantAllDialed(t)
	if st := s.proxy.Srv.Stats(); st.Unrouted != 0 {
		t.Errorf("%d unrouted sessions", st.Unrouted)
	}
}

// TestSarama does the same with sarama: a sync producer and a consumer
// group.
func TestSarama(t *testing.T) {
	s := startKafka(t, 3, nil)
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "leproxy-test"
	cfg.Net.TLS.Enable = true
	cfg.Net.TLS.Config = &tls.Config{RootCAs: s.proxy.CA.Pool, MinVersion: tls.VersionTLS12}
	cfg.Net.Proxy.Enable = true
	cfg.Net.Proxy.Dialer = s.guard
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Rebalance.Timeout = 5 * time.Second
	cfg.Metadata.Retry.Backoff = 50 * time.Millisecond

	prod, err := sarama.NewSyncProducer([]string{s.seed()}, cfg)
	if err != nil {
		t.Fatalf("sarama producer: %v", err)
	}
	defer prod.Close()
	const n = 30
	for i := range n {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "sarama", Partition: int32(i % 3), Value: sarama.StringEncoder("v" + strconv.Itoa(i))})
		if err != nil {
			t.Fatalf("producing message %d: %v", i, err)
		}
	}

	group, err := sarama.NewConsumerGroup([]string{s.seed()}, "sarama-group", cfg)
	if err != nil {
		t.Fatalf("sarama consumer group: %v", err)
	}
	defer group.Close()
	h := &groupHandler{want: n, got: map[string]bool{}, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := group.Consume(ctx, []string{"sarama"}, h); err != nil {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Errorf("consumed %d of %d messages before the deadline", h.count(), n)
	}
	cancel()
	if err := <-consumed; err != nil {
		t.Errorf("consuming: %v", err)
	}
	s.guard.wantAllDialed(t)
}

// groupHandler collects the values of a consumer group's messages.
type groupHandler struct {
	want int
	mu   sync.Mutex
	got  map[string]bool
	done chan struct{}
	once sync.Once
}

func (h *groupHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

func (*groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		sess.MarkMessage(m, "")
		h.mu.Lock()
		h.got[string(m.Value)] = true
		if len(h.got) >= h.want {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

// TestFranzGoLeaderMoves moves a partition's leadership while franz-go
// produces to it: the old leader answers NOT_LEADER_OR_FOLLOWER with the
// new leader's KIP-951 NodeEndpoints, which leproxy rewrites, and the
// client follows them to the new leader through leproxy.
func TestFranzGoLeaderMoves(t *testing.T) {
	s := startKafka(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(s.seed()), kgo.Dialer(s.guard.dialTLS),
		kgo.DefaultProduceTopic("franz"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MetadataMinAge(time.Hour), kgo.MetadataMaxAge(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	// Asynchronously, with a deadline of its own: a franz-go producer whose
	// broker cannot be dialled retries past its context.
	produce := func() {
		t.Helper()
		done := make(chan error, 1)
		prod.Produce(ctx, &kgo.Record{Partition: 0, Value: []byte("x")}, func(_ *kgo.Record, err error) { done <- err })
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("producing: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("producing: no answer before the deadline")
		}
	}
	produce()
	if err := s.cluster.MoveTopicPartition("franz", 0, 2); err != nil {
		t.Fatal(err)
	}
	var notLeader atomic.Int32
	s.cluster.ControlKey(keyProduce, func(kmsg.Request) (kmsg.Response, error, bool) {
		s.cluster.KeepControl()
		if s.cluster.CurrentNode() == 0 {
			notLeader.Add(1)
		}
		return nil, nil, false
	})
	produce()
	if notLeader.Load() == 0 {
		t.Error("the old leader saw no produce after the move")
	}
	if s.guard.count(s.hosts[2]) == 0 {
		t.Error("the client never connected to the new leader")
	}
}
