package cassandra

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/apache/cassandra-gocql-driver/v2/snappy"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/dbproxy/dbtest/cqltest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// The fake cluster for the gocql tests: three nodes with routes and a
// fourth, in every node's system.peers, that has none (and listens
// nowhere). All listen on one port, on their own loopback address, as a
// real cluster's nodes share a native_port (system.peers has none).
var hostIDs = []string{
	"6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0001",
	"6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0002",
	"6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0003",
	"6a2d0e5c-1b0f-4c52-9a44-1f0d7f0b0004",
}

// contactName is the route gocql's first connection asks for: one more
// name for node 1.
const contactName = "cass.test"

// nodeName is node id's route host: its host_id under the contact name,
// so that the driver's dialer derives it from what it learns.
func nodeName(id string) string { return id + "." + contactName }

type cluster struct {
	fake  *cqltest.Cluster
	proxy *dbtest.Proxy
	// backends are the nodes' own addresses, which the driver must never
	// dial.
	backends map[netip.Addr]bool
}

func startCluster(t *testing.T, release, user, password string) *cluster {
	t.Helper()
	port := uint16(testenv.FreePort(t)) // #nosec G115 -- a TCP port
	var nodes []cqltest.Node
	for i, id := range hostIDs {
		nodes = append(nodes, cqltest.Node{
			Name:   fmt.Sprintf("node%d", i+1),
			Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}), port),
			HostID: id,
			Down:   i == 3,
		})
	}
	fake := cqltest.Start(t, cqltest.Config{Nodes: nodes, ReleaseVersion: release, User: user, Password: password})
	routes := []dbproxy.Route{{Host: contactName, Backend: fake.Addr(0)}}
	for i := range 3 {
		routes = append(routes, dbproxy.Route{Host: nodeName(hostIDs[i]), Backend: fake.Addr(i)})
	}
	c := &cluster{fake: fake, backends: map[netip.Addr]bool{}}
	for _, n := range nodes {
		c.backends[n.Addr.Addr()] = true
	}
	c.proxy = dbtest.StartProtocol(t, dbtest.NewCA(t), "cassandra", "", routes...)
	return c
}

// sniDialer is the gocql HostDialer a user of leproxy writes (see the
// README): every connection goes to leproxy's address, with the node's
// route host as its TLS server name and full certificate verification.
// It records what the driver asked it to dial that it must not.
type sniDialer struct {
	proxy string
	roots *tls.Config

	mu         sync.Mutex
	violations []string
	names      map[string]int // server names dialled
}

func (d *sniDialer) DialHost(ctx context.Context, host *gocql.HostInfo) (*gocql.DialedHost, error) {
	name := contactName
	if id := host.HostID(); id != "" {
		name = nodeName(id)
	}
	d.mu.Lock()
	d.names[name]++
	d.mu.Unlock()
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", d.proxy)
	if err != nil {
		return nil, err
	}
	cfg := d.roots.Clone()
	cfg.ServerName = name
	return gocql.WrapTLS(ctx, conn, d.proxy, cfg)
}

func (d *sniDialer) violate(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.violations = append(d.violations, fmt.Sprintf(format, args...))
}

// hostEvents collects the driver's host up and down notifications.
type hostEvents struct{ down chan string }

func (h *hostEvents) OnHostUp(gocql.HostUpEvent) {}
func (h *hostEvents) OnHostDown(e gocql.HostDownEvent) {
	select {
	case h.down <- e.Host.HostID():
	default:
	}
}

// newSession connects gocql to the proxy with host discovery on (its
// default), protocol version discovery (it tries v5 first) and a snappy
// compressor configured.
func (c *cluster) newSession(t *testing.T, auth gocql.Authenticator, events *hostEvents) (*gocql.Session, *sniDialer, error) {
	t.Helper()
	d := &sniDialer{proxy: c.proxy.Addr, roots: &tls.Config{RootCAs: c.proxy.CA.Pool, MinVersion: tls.VersionTLS12}, names: map[string]int{}}
	cfg := gocql.NewCluster(c.proxy.Addr)
	cfg.HostDialer = d
	cfg.Authenticator = auth
	cfg.Compressor = snappy.SnappyCompressor{}
	cfg.Timeout = 5 * time.Second
	cfg.ConnectTimeout = 5 * time.Second
	cfg.Consistency = gocql.One
	// Every host the driver learns passes here: none may be a backend.
	cfg.HostFilter = gocql.HostFilterFunc(func(h *gocql.HostInfo) bool {
		if a, ok := netip.AddrFromSlice(h.ConnectAddress()); ok && c.backends[a.Unmap()] {
			d.violate("the driver learned backend address %v (host %s)", a, h.HostID())
		}
		return true
	})
	if events != nil {
		cfg.Metadata.HostListener.HostStateChangeListener = events
	}
	s, err := cfg.CreateSession()
	if err != nil {
		return nil, d, err
	}
	t.Cleanup(s.Close)
	return s, d, nil
}

func (d *sniDialer) check(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.violations {
		t.Error(v)
	}
}

func TestGocqlDiscovery(t *testing.T) {
	for _, tc := range []struct{ name, release string }{
		{"peers_v2", "4.1.3"},
		{"peers", "3.11.16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, tc.release, "", "")
			events := &hostEvents{down: make(chan string, 4)}
			s, d, err := c.newSession(t, nil, events)
			if err != nil {
				t.Fatalf("creating the session: %v\n%s", err, c.proxy.Logs)
			}
			defer d.check(t)

			// The driver knows the three routed nodes, by stand-ins, and
			// not the fourth.
			// The node of the control connection keeps the address the
			// driver reached it at, leproxy's (gocql ignores
			// system.local's); the others have stand-ins.
			proxyIP := netip.MustParseAddrPort(c.proxy.Addr).Addr()
			hosts := s.GetHosts()
			if len(hosts) != 3 {
				t.Errorf("the driver knows %d hosts, want 3: %v", len(hosts), hosts)
			}
			for _, h := range hosts {
				a, _ := netip.AddrFromSlice(h.ConnectAddress())
				if !standInNet.Contains(a.Unmap()) && a.Unmap() != proxyIP {
					t.Errorf("host %s has address %v, want a stand-in in %v or leproxy's", h.HostID(), a, standInNet)
				}
				if h.HostID() == hostIDs[3] {
					t.Errorf("the driver learned node 4, which has no route")
				}
			}

			// Queries reach all three nodes through leproxy, each
			// connection to its node's route.
			seen := map[string]bool{}
			dbtest.WaitFor(t, "answers from all three nodes", func() bool {
				var ans string
				if err := s.Query("SELECT answer FROM leproxy.echo").Scan(&ans); err != nil {
					t.Logf("query: %v", err)
					return false
				}
				seen[strings.SplitN(ans, ":", 2)[0]] = true
				return len(seen) == 3
			})
			d.mu.Lock()
			for i := range 3 {
				if d.names[nodeName(hostIDs[i])] == 0 {
					t.Errorf("no connection asked for %s: %v", nodeName(hostIDs[i]), d.names)
				}
			}
			d.mu.Unlock()

			// A user's own, prepared, query of system.peers: gocql asks
			// for skip_metadata, leproxy clears it and rewrites the rows.
			iter := s.Query("SELECT * FROM system.peers").Iter()
			rows, err := iter.SliceMap()
			if err != nil {
				t.Fatalf("SELECT * FROM system.peers: %v", err)
			}
			if len(rows) != 2 {
				t.Errorf("system.peers has %d rows, want the 2 other routed nodes: %v", len(rows), rows)
			}
			for _, r := range rows {
				for _, col := range []string{"peer", "rpc_address", "preferred_ip"} {
					ip, ok := r[col].(net.IP)
					if a, _ := netip.AddrFromSlice(ip); !ok || !standInNet.Contains(a.Unmap()) {
						t.Errorf("system.peers %s = %v, want a stand-in", col, r[col])
					}
				}
			}
			st := c.fake.Stats()
			if st.SkipMetadata != 0 {
				t.Errorf("%d requests reached the nodes with skip_metadata set", st.SkipMetadata)
			}
			if st.V5Frames != 0 || st.CompressedFrames != 0 {
				t.Errorf("the nodes saw %d v5 frames and %d compressed ones, want none", st.V5Frames, st.CompressedFrames)
			}

			// Events: node 4's is dropped, node 3's reaches the driver
			// with node 3's stand-in, which names it.
			dbtest.WaitFor(t, "the control connection to register for events", func() bool { return c.fake.Registered() > 0 })
			c.fake.Event("STATUS_CHANGE", "UP", 3)
			c.fake.Event("STATUS_CHANGE", "DOWN", 2)
			select {
			case id := <-events.down:
				if id != hostIDs[2] {
					t.Errorf("the driver took node %s down, want node 3 (%s)", id, hostIDs[2])
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the driver heard of no node going down")
			}
			warned := false
			for _, r := range c.proxy.Logs.Records(t, "cassandra node has no route on this listener") {
				warned = warned || r["node"] == c.fake.Addr(3)
			}
			if !warned {
				t.Errorf("no warning about node 4's event; log:\n%s", c.proxy.Logs)
			}
		})
	}
}

func TestGocqlPasswordAuthenticator(t *testing.T) {
	c := startCluster(t, "4.1.3", "app", "s3cret")
	s, d, err := c.newSession(t, gocql.PasswordAuthenticator{Username: "app", Password: "s3cret"}, nil)
	if err != nil {
		t.Fatalf("creating the session: %v", err)
	}
	defer d.check(t)
	var ans string
	if err := s.Query("SELECT answer FROM leproxy.echo").Scan(&ans); err != nil || !strings.HasPrefix(ans, "node") {
		t.Fatalf("query: %q, %v", ans, err)
	}

	_, _, err = c.newSession(t, gocql.PasswordAuthenticator{Username: "app", Password: "wrong"}, nil)
	if err == nil || !strings.Contains(err.Error(), "username and/or password are incorrect") {
		t.Fatalf("a wrong password: got %v, want the node's refusal", err)
	}
}

func TestGocqlUnknownName(t *testing.T) {
	c := startCluster(t, "4.1.3", "", "")
	cfg := gocql.NewCluster(c.proxy.Addr)
	cfg.ConnectTimeout = 5 * time.Second
	cfg.DisableInitialHostLookup = true
	cfg.HostDialer = dialerFunc(func(ctx context.Context, host *gocql.HostInfo) (*gocql.DialedHost, error) {
		conn, err := new(net.Dialer).DialContext(ctx, "tcp", c.proxy.Addr)
		if err != nil {
			return nil, err
		}
		return gocql.WrapTLS(ctx, conn, c.proxy.Addr, &tls.Config{RootCAs: c.proxy.CA.Pool, ServerName: "nowhere." + contactName, MinVersion: tls.VersionTLS12,
			// The default route's certificate comes back: check it for
			// the name it is for, as the driver cannot know better.
			VerifyConnection: func(cs tls.ConnectionState) error {
				_, err := cs.PeerCertificates[0].Verify(x509Opts(c.proxy.CA, contactName))
				return err
			}, InsecureSkipVerify: true}) // #nosec G402 -- VerifyConnection verifies the chain
	})
	_, err := cfg.CreateSession()
	if err == nil || !strings.Contains(err.Error(), "no route for server name nowhere.cass.test") {
		t.Fatalf("unknown server name: got %v, want leproxy's ERROR", err)
	}
	var se *cqltest.ServerError
	_ = errors.As(err, &se)
}

type dialerFunc func(ctx context.Context, host *gocql.HostInfo) (*gocql.DialedHost, error)

func (f dialerFunc) DialHost(ctx context.Context, host *gocql.HostInfo) (*gocql.DialedHost, error) {
	return f(ctx, host)
}

// x509Opts verifies a certificate from ca for name.
func x509Opts(ca *dbtest.CA, name string) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: ca.Pool, DNSName: name}
}

// TestGocqlDefaultDialer: a driver set up without the SNI dialer, with
// one server name for every connection, dials the stand-ins it learned
// for the other nodes, never a backend, and keeps working through its
// contact point.
func TestGocqlDefaultDialer(t *testing.T) {
	c := startCluster(t, "4.1.3", "", "")
	var mu sync.Mutex
	var dialed []string
	cfg := gocql.NewCluster(c.proxy.Addr)
	cfg.ConnectTimeout = 5 * time.Second
	cfg.SslOpts = &gocql.SslOptions{Config: &tls.Config{RootCAs: c.proxy.CA.Pool, ServerName: contactName, MinVersion: tls.VersionTLS12}, EnableHostVerification: true}
	cfg.Dialer = dialerCtx(func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		if c.backends[ap.Addr().Unmap()] {
			t.Errorf("the driver dialled backend %s", addr)
		}
		if addr != c.proxy.Addr {
			return nil, errors.New("not leproxy's address")
		}
		return new(net.Dialer).DialContext(ctx, network, addr)
	})
	s, err := cfg.CreateSession()
	if err != nil {
		t.Fatalf("creating the session: %v", err)
	}
	defer s.Close()
	var ans string
	if err := s.Query("SELECT answer FROM leproxy.echo").Scan(&ans); err != nil || !strings.HasPrefix(ans, "node1:") {
		t.Fatalf("query: %q, %v; want node 1's answer", ans, err)
	}
	dbtest.WaitFor(t, "the driver to try the other nodes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range dialed {
			if ap, err := netip.ParseAddrPort(a); err == nil && standInNet.Contains(ap.Addr()) {
				n++
			}
		}
		return n >= 2
	})
}

type dialerCtx func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialerCtx) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}
