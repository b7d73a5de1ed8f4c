package mongodb

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// startProxy starts a mongodb Server for cfg; see dbtest.StartProxy.
func startProxy(t *testing.T, ca *dbtest.CA, cfg dbproxy.Config) *dbtest.Proxy {
	t.Helper()
	proto, ok := dbproxy.Lookup("mongodb")
	if !ok {
		t.Fatal("mongodb is not registered")
	}
	cfg.Protocol = proto
	return dbtest.StartProxy(t, ca, cfg)
}

// driverTLS is the driver's TLS config: trust ca, send sni ("" for
// none) and accept the certificate of verifyName.
func driverTLS(ca *dbtest.CA, sni, verifyName string) *tls.Config {
	cfg := &tls.Config{ServerName: sni, RootCAs: ca.Pool}
	if sni == verifyName {
		return cfg
	}
	// The driver sets ServerName to the host it dials when it is empty;
	// Go sends no SNI for an IP address. Verify the certificate by hand.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: verifyName, Roots: ca.Pool})
		return err
	}
	return cfg
}

// connect returns a driver client for uri with opts, disconnected
// when the test ends. Server selection gives up after 10 s.
func connect(t *testing.T, uri string, opts ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	all := append([]*options.ClientOptions{
		options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second).SetConnectTimeout(10 * time.Second),
	}, opts...)
	c, err := mongo.Connect(all...)
	if err != nil {
		t.Fatalf("mongo.Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// roundTrip inserts a document with a fresh value through c and
// finds it again.
func roundTrip(t *testing.T, c *mongo.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	coll := c.Database("leproxy").Collection(strings.ReplaceAll(t.Name(), "/", "_"))
	want := time.Now().Format(time.RFC3339Nano)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "v", Value: want}}); err != nil {
		return err
	}
	var got struct {
		V string `bson:"v"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "v", Value: want}}).Decode(&got); err != nil {
		return err
	}
	if got.V != want {
		t.Errorf("found %q, want %q", got.V, want)
	}
	return nil
}

// backendSink is a backend that accepts connections, counts them and closes
// them: no session of a refusal test may reach it.
type backendSink struct {
	addr     string
	accepted atomic.Int32
}

func startSink(t *testing.T) *backendSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &backendSink{addr: l.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return s
}

// legacyHello leaves the driver's first hello a legacy OP_QUERY
// isMaster, as drivers send it.
func legacyHello() *options.ClientOptions { return options.Client() }

// msgHello declares a server API version, which makes the driver's
// first hello an OP_MSG.
func msgHello() *options.ClientOptions {
	return options.Client().SetServerAPIOptions(options.ServerAPI(options.ServerAPIVersion1))
}

func TestMongoDriverThroughProxy(t *testing.T) {
	ca := dbtest.NewCA(t)
	plain := testenv.StartFerretDB(t, testenv.FerretDBOptions{})
	_, certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	secure := testenv.StartFerretDB(t, testenv.FerretDBOptions{CertPEM: certPEM, KeyPEM: keyPEM})
	p := startProxy(t, ca, dbproxy.Config{
		Routes: []dbproxy.Route{
			{Host: "mongo.test", Backend: plain.Addr},
			{Host: "secure.test", Backend: secure.Addr, TLS: dbproxy.TLSVerify, RootCAs: ca.Pool},
		},
		Default: "mongo.test",
	})
	uri := "mongodb://" + p.Addr + "/?directConnection=true&tls=true"
	tests := []struct {
		name      string
		tls       *tls.Config
		hello     *options.ClientOptions
		wantRoute string
	}{
		{"legacy hello", driverTLS(ca, "mongo.test", "mongo.test"), legacyHello(), "mongo.test"},
		{"OP_MSG hello", driverTLS(ca, "mongo.test", "mongo.test"), msgHello(), "mongo.test"},
		{"no SNI gets the default", driverTLS(ca, "", "mongo.test"), legacyHello(), "mongo.test"},
		{"backend with its own TLS", driverTLS(ca, "secure.test", "secure.test"), msgHello(), "secure.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := routeSessions(p, tt.wantRoute)
			c := connect(t, uri, options.Client().SetTLSConfig(tt.tls), tt.hello)
			if err := roundTrip(t, c); err != nil {
				t.Fatalf("round trip: %v", err)
			}
			if got := routeSessions(p, tt.wantRoute); got <= before {
				t.Errorf("route %s: %d sessions before and %d after, want more", tt.wantRoute, before, got)
			}
		})
	}
}

// routeSessions is the Sessions counter of route host.
func routeSessions(p *dbtest.Proxy, host string) uint64 {
	for _, r := range p.Srv.Stats().Routes {
		if r.Host == host {
			return r.Sessions
		}
	}
	return 0
}

func TestMongoPlaintextAllowed(t *testing.T) {
	ca := dbtest.NewCA(t)
	db := testenv.StartFerretDB(t, testenv.FerretDBOptions{})
	p := startProxy(t, ca, dbproxy.Config{
		Routes:  []dbproxy.Route{{Host: "mongo.test", Backend: db.Addr, AllowPlaintext: true}},
		Default: "mongo.test",
	})
	c := connect(t, "mongodb://"+p.Addr+"/?directConnection=true")
	if err := roundTrip(t, c); err != nil {
		t.Fatalf("round trip without TLS: %v", err)
	}
}

// TestMongoRefusals drives the real driver into each refusal and checks
// the message it reports, and that no backend saw the session.
func TestMongoRefusals(t *testing.T) {
	tests := []struct {
		name    string
		noDef   bool // no default route
		down    bool // the route's backend is down
		tls     func(ca *dbtest.CA) *tls.Config
		wantMsg string // in the driver's error
	}{{
		name:    "plaintext on the TLS port",
		wantMsg: "(Unauthorized) TLS is required for mongo.test: connect with tls=true (leproxy)",
	}, {
		name:    "plaintext, no default route",
		noDef:   true,
		wantMsg: "(Unauthorized) TLS is required: connect with tls=true (leproxy)",
	}, {
		name:    "unknown server name",
		tls:     func(ca *dbtest.CA) *tls.Config { return driverTLS(ca, "other.test", "mongo.test") },
		wantMsg: `(HostNotFound) no route for server name "other.test" (leproxy)`,
	}, {
		name:    "no SNI, no default route",
		noDef:   true,
		tls:     func(ca *dbtest.CA) *tls.Config { return driverTLS(ca, "", "mongo.test") },
		wantMsg: "(HostNotFound) no route for clients that send no server name (SNI) (leproxy)",
	}, {
		name:    "backend down",
		down:    true,
		tls:     func(ca *dbtest.CA) *tls.Config { return driverTLS(ca, "mongo.test", "mongo.test") },
		wantMsg: "(HostUnreachable) could not connect to the backend of mongo.test (leproxy)",
	}}
	for _, tt := range tests {
		for _, hello := range []struct {
			name string
			opts *options.ClientOptions
		}{{"legacy hello", legacyHello()}, {"OP_MSG hello", msgHello()}} {
			t.Run(tt.name+"/"+hello.name, func(t *testing.T) {
				// Each waits out the driver's server selection.
				t.Parallel()
				ca := dbtest.NewCA(t)
				sink := startSink(t)
				backend := sink.addr
				if tt.down {
					backend = dbtest.ClosedAddr(t)
				}
				cfg := dbproxy.Config{Routes: []dbproxy.Route{{Host: "mongo.test", Backend: backend}}, Default: "mongo.test"}
				if tt.noDef {
					cfg.Default = ""
				}
				p := startProxy(t, ca, cfg)
				uri := "mongodb://" + p.Addr + "/?directConnection=true"
				opts := options.Client().SetServerSelectionTimeout(2 * time.Second)
				if tt.tls != nil {
					opts.SetTLSConfig(tt.tls(ca))
				}
				c := connect(t, uri, opts, hello.opts)
				err := c.Ping(context.Background(), nil)
				if err == nil {
					t.Fatal("ping succeeded, want the refusal")
				}
				t.Logf("driver error: %v", err)
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("driver error:\n%v\nwant it to contain %q", err, tt.wantMsg)
				}
				if strings.Contains(err.Error(), backend) {
					t.Errorf("driver error shows the backend address %s", backend)
				}
				if n := sink.accepted.Load(); n != 0 {
					t.Errorf("backend got %d connections, want 0", n)
				}
			})
		}
	}
}

// TestMongoRefusalWire checks the refusals byte by byte: the reply answers
// the request's id in the request's own format, and the proxy then closes.
func TestMongoRefusalWire(t *testing.T) {
	ca := dbtest.NewCA(t)
	sink := startSink(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "mongo.test", Backend: sink.addr}}, Default: "mongo.test"})
	hello := bsonDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "$db", Value: "admin"}})
	isMaster := bsonDoc(t, bson.D{{Key: "isMaster", Value: 1}})
	// A hello of exactly 790 bytes starts 0x16 0x03 0x00, as a TLS
	// record would but for the version: still MongoDB.
	pad := bson.D{{Key: "hello", Value: 1}, {Key: "pad", Value: ""}}
	pad[1].Value = strings.Repeat("x", 790-len(buildOpMsg(1, bsonDoc(t, pad), "", false)))
	hello790 := buildOpMsg(790, bsonDoc(t, pad), "", false)
	if len(hello790) != 790 || hello790[0] != 0x16 || hello790[1] != 3 {
		t.Fatalf("790-byte hello is %d bytes, starting % x", len(hello790), hello790[:3])
	}
	tests := []struct {
		name     string
		tlsSNI   string // "" for plaintext
		msg      []byte
		wantOp   int32
		wantID   int32
		wantCode int32
	}{
		{"plaintext OP_MSG", "", buildOpMsg(11, hello, "", false), opMsg, 11, codeUnauthorized},
		{"plaintext OP_QUERY", "", buildOpQuery(-12, "admin.$cmd", isMaster), opReply, -12, codeUnauthorized},
		{"plaintext 790 bytes", "", hello790, opMsg, 790, codeUnauthorized},
		{"unknown SNI, OP_QUERY", "other.test", buildOpQuery(13, "admin.$cmd", isMaster), opReply, 13, codeHostNotFound},
		{"unknown SNI, OP_MSG", "other.test", buildOpMsg(14, hello, "", true), opMsg, 14, codeHostNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := p.Dial(t)
			if tt.tlsSNI != "" {
				tc := ca.ClientTLS(conn, tt.tlsSNI, "mongo.test", "h2", "http/1.1")
				if err := tc.Handshake(); err != nil {
					t.Fatalf("TLS handshake: %v", err)
				}
				if got := tc.ConnectionState().NegotiatedProtocol; got != "" {
					t.Errorf("ALPN: got %q, want none", got)
				}
				conn = tc
			}
			dbtest.MustWrite(t, conn, tt.msg)
			reply, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			got := decodeReply(t, reply)
			if int32(got.opCode) != tt.wantOp || got.responseTo != tt.wantID || got.Code != tt.wantCode || got.OK != 0 {
				t.Errorf("got %+v, want opcode %d answering %d with code %d", got, tt.wantOp, tt.wantID, tt.wantCode)
			}
		})
	}
	if n := sink.accepted.Load(); n != 0 {
		t.Errorf("backend got %d connections, want 0", n)
	}
}

// Bytes that are neither TLS nor MongoDB get no answer, and the log says
// why.
func TestMongoNotMongo(t *testing.T) {
	ca := dbtest.NewCA(t)
	sink := startSink(t)
	p := startProxy(t, ca, dbproxy.Config{Routes: []dbproxy.Route{{Host: "mongo.test", Backend: sink.addr}}, Default: "mongo.test"})
	conn := p.Dial(t)
	dbtest.MustWrite(t, conn, []byte("GET / HTTP/1.1\r\nHost: mongo.test\r\n\r\n"))
	if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
		t.Fatalf("got %q, %v; want EOF and nothing", b, err)
	}
	dbtest.WaitFor(t, "the session-end log line", func() bool { return len(p.Logs.Records(t, "session end")) == 1 })
	rec := p.Logs.Records(t, "session end")[0]
	if msg, _ := rec["error"].(string); !strings.Contains(msg, "not a MongoDB message") || !strings.Contains(msg, "TLS is required") {
		t.Errorf("logged error %q, want it to say TLS is required and the bytes are not MongoDB", msg)
	}
}

func TestMongoHandshakeTimeout(t *testing.T) {
	ca := dbtest.NewCA(t)
	sink := startSink(t)
	p := startProxy(t, ca, dbproxy.Config{
		Routes:           []dbproxy.Route{{Host: "mongo.test", Backend: sink.addr}},
		HandshakeTimeout: 200 * time.Millisecond,
	})
	conn := p.Dial(t)
	dbtest.MustWrite(t, conn, []byte{0x40, 0}) // two bytes of a length, then nothing
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("got %v, want the proxy to close the connection", err)
	}
	dbtest.WaitFor(t, "the session-end log line", func() bool { return len(p.Logs.Records(t, "session end")) == 1 })
	if msg, _ := p.Logs.Records(t, "session end")[0]["error"].(string); !strings.Contains(msg, "timeout") {
		t.Errorf("logged error %q, want a timeout", msg)
	}
}

func TestRegistered(t *testing.T) {
	for _, name := range []string{"mongodb", "mongo", "MongoDB"} {
		if got, ok := dbproxy.Canonical(name); !ok || got != "mongodb" {
			t.Errorf("Canonical(%q) = %q, %t; want mongodb", name, got, ok)
		}
	}
}
