//lint:file-ignore SA1019 OP_QUERY is deprecated, but drivers still open with a legacy isMaster in one, which leproxy must read and answer.

package mongodb

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// Replica sets. FerretDB is a single server, and no mongod runs here, so
// these tests use fake members: each answers hello with the replica set
// fields a test gives it, and records the commands it gets. The real
// driver discovers the set through leproxy and chooses where to send
// writes and reads, which is what is under test: whether the host names in
// hello replies lead the driver back through leproxy or around it.

// fakeMember is one member of a fake replica set.
type fakeMember struct {
	name string
	addr string
	// hello holds the member's replica set fields: set, hosts, primary,
	// me, whether it is the primary. Set before the driver connects.
	hello atomic.Pointer[bson.D]
	// bypassed counts connections that opened with a TLS ClientHello:
	// a driver that reached the member without leproxy.
	bypassed atomic.Int32

	mu       sync.Mutex
	commands []string
	docs     []bson.Raw
	connID   int32
}

func startFakeMember(t *testing.T, name string) *fakeMember {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMember{name: name, addr: l.Addr().String()}
	dbtest.ServeFake(t, l, time.Minute, nil, m.serve)
	return m
}

// setHello makes m a member of set rs0 with hosts, primary and me.
func (m *fakeMember) setHello(hosts []string, primary, me string) {
	isPrimary := primary == me
	d := bson.D{
		{Key: "ismaster", Value: isPrimary},
		{Key: "isWritablePrimary", Value: isPrimary},
		{Key: "secondary", Value: !isPrimary},
		{Key: "setName", Value: "rs0"},
		{Key: "setVersion", Value: int32(1)},
		{Key: "hosts", Value: hosts},
		{Key: "primary", Value: primary},
		{Key: "me", Value: me},
	}
	if isPrimary {
		d = append(d, bson.E{Key: "electionId", Value: bson.ObjectID{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1}})
	}
	m.hello.Store(&d)
}

// got returns the commands m received, and the documents inserted.
func (m *fakeMember) got() ([]string, []bson.Raw) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.commands), slices.Clone(m.docs)
}

// serve answers the requests of one connection.
func (m *fakeMember) serve(c net.Conn) {
	for {
		var hdr [headerLen]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if hdr[0] == dbproxy.TLSRecordHandshake && hdr[1] == 3 {
			m.bypassed.Add(1)
			return
		}
		length, reqID, _, op, _, ok := wiremessage.ReadHeader(hdr[:])
		if !ok || length < headerLen || length > 16<<20 {
			return
		}
		body := make([]byte, length-headerLen)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		var (
			cmd  bsoncore.Document
			seqs []bsoncore.Document
		)
		switch op {
		case wiremessage.OpQuery:
			_, rem, _ := wiremessage.ReadQueryFlags(body)
			_, rem, _ = wiremessage.ReadQueryFullCollectionName(rem)
			_, rem, _ = wiremessage.ReadQueryNumberToSkip(rem)
			_, rem, _ = wiremessage.ReadQueryNumberToReturn(rem)
			if cmd, _, ok = wiremessage.ReadQueryQuery(rem); !ok {
				return
			}
		case wiremessage.OpMsg:
			flags, rem, _ := wiremessage.ReadMsgFlags(body)
			if flags&wiremessage.ChecksumPresent != 0 && len(rem) >= 4 {
				rem = rem[:len(rem)-4]
			}
			for len(rem) > 0 {
				var st wiremessage.SectionType
				st, rem, _ = wiremessage.ReadMsgSectionType(rem)
				switch st {
				case wiremessage.SingleDocument:
					cmd, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
				case wiremessage.DocumentSequence:
					var docs []bsoncore.Document
					_, docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem)
					seqs = append(seqs, docs...)
				default:
					ok = false
				}
				if !ok {
					return
				}
			}
		default:
			return
		}
		reply := m.command(cmd, seqs)
		doc, err := bson.Marshal(reply)
		if err != nil {
			return
		}
		var out []byte
		if op == wiremessage.OpQuery {
			idx, b := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), reqID, wiremessage.OpReply)
			b = wiremessage.AppendReplyFlags(b, 0)
			b = wiremessage.AppendReplyCursorID(b, 0)
			b = wiremessage.AppendReplyStartingFrom(b, 0)
			b = wiremessage.AppendReplyNumberReturned(b, 1)
			b = append(b, doc...)
			out = bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
		} else {
			out = buildOpMsgReply(reqID, doc)
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// command runs one command and returns the reply document.
func (m *fakeMember) command(cmd bsoncore.Document, seqs []bsoncore.Document) bson.D {
	elems, err := cmd.Elements()
	if err != nil || len(elems) == 0 {
		return bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: "bad command"}, {Key: "code", Value: int32(9)}}
	}
	name := strings.ToLower(elems[0].Key())
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commands = append(m.commands, name)
	ok := bson.E{Key: "ok", Value: 1.0}
	switch name {
	case "hello", "ismaster":
		m.connID++
		d := slices.Clone(*m.hello.Load())
		return append(d,
			bson.E{Key: "maxBsonObjectSize", Value: int32(16 << 20)},
			bson.E{Key: "maxMessageSizeBytes", Value: int32(maxMessage)},
			bson.E{Key: "maxWriteBatchSize", Value: int32(100000)},
			bson.E{Key: "localTime", Value: bson.NewDateTimeFromTime(time.Now())},
			bson.E{Key: "logicalSessionTimeoutMinutes", Value: int32(30)},
			bson.E{Key: "connectionId", Value: m.connID},
			bson.E{Key: "minWireVersion", Value: int32(0)},
			bson.E{Key: "maxWireVersion", Value: int32(21)},
			ok)
	case "insert":
		if docs, err := cmd.LookupErr("documents"); err == nil {
			vals, _ := docs.Array().Values()
			for _, v := range vals {
				seqs = append(seqs, v.Document())
			}
		}
		for _, d := range seqs {
			m.docs = append(m.docs, bson.Raw(slices.Clone(d)))
		}
		return bson.D{{Key: "n", Value: int32(len(seqs))}, ok}
	case "find":
		coll, _ := elems[0].Value().StringValueOK()
		db, _ := cmd.Lookup("$db").StringValueOK()
		batch := bson.A{}
		for _, d := range m.docs {
			batch = append(batch, d)
		}
		return bson.D{{Key: "cursor", Value: bson.D{
			{Key: "firstBatch", Value: batch},
			{Key: "id", Value: int64(0)},
			{Key: "ns", Value: db + "." + coll},
		}}, ok}
	case "ping", "endsessions":
		return bson.D{ok}
	}
	return bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: "no such command: " + name}, {Key: "code", Value: int32(59)}}
}

// testDialer dials host names ending in .test at 127.0.0.1, as a
// resolver would send them to leproxy, and other addresses as they are.
type testDialer struct{ d net.Dialer }

func (md *testDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".test") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return md.d.DialContext(ctx, network, addr)
}

// fakeReplicaSet starts members a (the primary), b and c, and a proxy
// with a route to each: a.test, b.test and c.test.
func fakeReplicaSet(t *testing.T) (p *dbtest.Proxy, ca *dbtest.CA, members []*fakeMember) {
	t.Helper()
	ca = dbtest.NewCA(t)
	var routes []dbproxy.Route
	for _, name := range []string{"a", "b", "c"} {
		m := startFakeMember(t, name)
		members = append(members, m)
		routes = append(routes, dbproxy.Route{Host: name + ".test", Backend: m.addr})
	}
	return startProxy(t, ca, dbproxy.Config{Routes: routes}), ca, members
}

// The set-up the README recommends: each member has its own leproxy host
// name, and the replica set configuration names the members by those
// names and leproxy's port. The driver discovers the set through leproxy,
// writes to the primary and reads from a secondary, all over verified
// TLS, and never goes around leproxy.
func TestMongoReplicaSetNamedByRoutes(t *testing.T) {
	p, ca, members := fakeReplicaSet(t)
	_, port, _ := net.SplitHostPort(p.Addr)
	var hosts []string
	for _, m := range members {
		hosts = append(hosts, net.JoinHostPort(m.name+".test", port))
	}
	for i, m := range members {
		m.setHello(hosts, hosts[0], hosts[i])
	}
	c := connect(t, "mongodb://a.test:"+port+"/?replicaSet=rs0&tls=true",
		options.Client().SetDialer(&testDialer{}).SetTLSConfig(&tls.Config{RootCAs: ca.Pool}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	coll := c.Database("d").Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "v", Value: "written"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	secondaries := c.Database("d", options.Database().SetReadPreference(readpref.Secondary())).Collection("c")
	cur, err := secondaries.Find(ctx, bson.D{})
	if err != nil {
		t.Fatalf("find on a secondary: %v", err)
	}
	cur.Close(ctx)

	for i, m := range members {
		cmds, docs := m.got()
		inserted, found := slices.Contains(cmds, "insert"), slices.Contains(cmds, "find")
		if wantInsert := i == 0; inserted != wantInsert || (len(docs) == 1) != wantInsert {
			t.Errorf("member %s: insert %t with %d documents, want insert %t", m.name, inserted, len(docs), wantInsert)
		}
		if i == 0 && found {
			t.Errorf("primary %s got the secondary read", m.name)
		}
		if n := m.bypassed.Load(); n != 0 {
			t.Errorf("member %s: %d connections went around leproxy", m.name, n)
		}
	}
	bGot, _ := members[1].got()
	cGot, _ := members[2].got()
	if !slices.Contains(bGot, "find") && !slices.Contains(cGot, "find") {
		t.Error("no secondary got the read")
	}
	// The driver monitors every member it discovered, through leproxy;
	// those connections start in the background, so wait for them.
	dbtest.WaitFor(t, "a session on every member's route", func() bool {
		for _, r := range p.Srv.Stats().Routes {
			if r.Sessions == 0 {
				return false
			}
		}
		return true
	})
}

// The trap: members named by their own addresses, as a replica set
// configured for its private network is. The driver learns those
// addresses from the hello reply leproxy passes through, drops the name it
// was given and connects to the members directly, around leproxy, where
// its TLS fails. directConnection=true keeps it on the name it was given.
func TestMongoReplicaSetNamedByAddresses(t *testing.T) {
	p, ca, members := fakeReplicaSet(t)
	_, port, _ := net.SplitHostPort(p.Addr)
	var hosts []string
	for _, m := range members {
		hosts = append(hosts, m.addr)
	}
	for i, m := range members {
		m.setHello(hosts, hosts[0], hosts[i])
	}
	tlsOpts := options.Client().SetDialer(&testDialer{}).SetTLSConfig(&tls.Config{RootCAs: ca.Pool})

	t.Run("discovery goes around leproxy", func(t *testing.T) {
		c := connect(t, "mongodb://a.test:"+port+"/?replicaSet=rs0&tls=true", tlsOpts,
			options.Client().SetServerSelectionTimeout(3*time.Second))
		_, err := c.Database("d").Collection("c").InsertOne(context.Background(), bson.D{{Key: "v", Value: "lost"}})
		if err == nil {
			t.Fatal("insert succeeded, want server selection to fail")
		}
		dbtest.WaitFor(t, "a TLS ClientHello at a member", func() bool {
			n := int32(0)
			for _, m := range members {
				n += m.bypassed.Load()
			}
			return n > 0
		})
		if _, docs := members[0].got(); len(docs) != 0 {
			t.Errorf("primary got %d documents, want 0", len(docs))
		}
	})

	t.Run("directConnection stays on leproxy", func(t *testing.T) {
		before := members[0].bypassed.Load()
		c := connect(t, "mongodb://a.test:"+port+"/?directConnection=true&tls=true", tlsOpts)
		if _, err := c.Database("d").Collection("c").InsertOne(context.Background(), bson.D{{Key: "v", Value: "kept"}}); err != nil {
			t.Fatalf("insert: %v", err)
		}
		if _, docs := members[0].got(); len(docs) != 1 {
			t.Errorf("primary has %d documents, want 1", len(docs))
		}
		if n := members[0].bypassed.Load(); n != before {
			t.Errorf("%d more connections went around leproxy", n-before)
		}
	})
}
