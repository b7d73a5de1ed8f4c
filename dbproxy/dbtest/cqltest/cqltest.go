// Package cqltest is a fake Cassandra cluster for tests: nodes that speak
// the CQL native protocol v3 and v4 (its own codec, shared with nothing
// in the proxy), answer OPTIONS, STARTUP, PasswordAuthenticator's SASL
// exchange, REGISTER, QUERY, PREPARE and EXECUTE, serve system.local,
// system.peers and system.peers_v2 as a cluster of the nodes it was
// given, and send topology and status events on demand. Any other query
// is answered with one row of one text column, "name:query", for the
// conformance suite.
//
// What a real node does that the fake does not: protocol v5 and its
// segment framing (the fake refuses v5 as a node of Cassandra 3 does),
// compression (it offers lz4 and snappy, and fails the frame if a client
// sends a compressed one), paging, bind values, schema tables
// (system_schema.*), tracing, warnings, and every system table column
// beyond those drivers read for discovery.
package cqltest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leproxy/leproxy/dbproxy/dbtest"
)

// Node is one node of a fake cluster.
type Node struct {
	// Name answers queries that are not about system tables ("name:query").
	Name string
	// Addr is the node's native transport address; the fake listens on
	// it unless Down is set.
	Addr netip.AddrPort
	// HostID is the node's host_id, as a UUID string.
	HostID string
	// Down nodes are in the cluster's tables and listen nowhere.
	Down bool
}

// Config is a fake cluster.
type Config struct {
	Nodes []Node
	// ReleaseVersion is the version system.local reports: "4.1.3" lets a
	// driver ask for system.peers_v2, "3.11.16" for system.peers.
	// Default "4.1.3".
	ReleaseVersion string
	// User and Password, when set, make every node require them through
	// PasswordAuthenticator.
	User, Password string
}

// Cluster is a running fake cluster.
type Cluster struct {
	t   testing.TB
	cfg Config

	mu         sync.Mutex
	registered map[*conn]bool
	v5         int      // frames of protocol version 5 or above seen
	compressed int      // compressed frames seen
	queries    []string // every QUERY and EXECUTE, by text
	skipMeta   int      // requests that asked for skip_metadata
}

// Start starts the nodes of cfg that are not Down, until the test ends.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.ReleaseVersion == "" {
		cfg.ReleaseVersion = "4.1.3"
	}
	c := &Cluster{t: t, cfg: cfg, registered: make(map[*conn]bool)}
	for i, n := range cfg.Nodes {
		if n.Down {
			continue
		}
		l, err := net.Listen("tcp", n.Addr.String())
		if err != nil {
			t.Fatalf("cqltest: node %s: %v", n.Name, err)
		}
		if n.Addr.Port() == 0 {
			c.cfg.Nodes[i].Addr = l.Addr().(*net.TCPAddr).AddrPort()
		}
		i := i
		dbtest.ServeFake(t, l, time.Minute, nil, func(nc net.Conn) { c.serve(i, nc) })
	}
	return c
}

// Addr is node i's address.
func (c *Cluster) Addr(i int) string { return c.cfg.Nodes[i].Addr.String() }

// Node returns node i.
func (c *Cluster) Node(i int) Node { return c.cfg.Nodes[i] }

// Stats are what the nodes saw that a proxy should have kept from them.
type Stats struct {
	V5Frames, CompressedFrames, SkipMetadata int
	Queries                                  []string
}

// Stats returns what the nodes saw so far.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{V5Frames: c.v5, CompressedFrames: c.compressed, SkipMetadata: c.skipMeta, Queries: append([]string(nil), c.queries...)}
}

// Registered is the number of connections that asked for events.
func (c *Cluster) Registered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.registered)
}

// Event sends a TOPOLOGY_CHANGE or STATUS_CHANGE event (typ) with change
// (NEW_NODE, REMOVED_NODE, UP, DOWN…) about node i to every connection
// that registered for it, and returns how many were sent.
func (c *Cluster) Event(typ, change string, i int) int {
	e := &enc{}
	e.str(typ)
	e.str(change)
	a := c.cfg.Nodes[i].Addr
	ip := a.Addr().AsSlice()
	e.b = append(e.b, byte(len(ip)))
	e.b = append(e.b, ip...)
	e.int(int32(a.Port()))
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for cn := range c.registered {
		if cn.types[typ] && cn.write(Frame{Version: cn.version | 0x80, Stream: -1, Opcode: OpEvent, Body: e.b}) == nil {
			n++
		}
	}
	return n
}

// conn is one client connection to a node.
type conn struct {
	nc      net.Conn
	wmu     sync.Mutex
	version byte
	types   map[string]bool
}

func (cn *conn) write(f Frame) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_, err := cn.nc.Write(f.Bytes())
	return err
}

// serve speaks CQL on one connection to node i until it ends.
func (c *Cluster) serve(i int, nc net.Conn) {
	cn := &conn{nc: nc}
	defer func() {
		c.mu.Lock()
		delete(c.registered, cn)
		c.mu.Unlock()
	}()
	prepared := map[string]string{}
	authed := c.cfg.User == ""
	for {
		f, err := ReadFrame(nc)
		if err != nil {
			return
		}
		v := f.Version & 0x7f
		reply := func(op byte, body []byte) error {
			return cn.write(Frame{Version: v | 0x80, Stream: f.Stream, Opcode: op, Body: body})
		}
		if v >= 5 || v < 3 {
			c.mu.Lock()
			c.v5++
			c.mu.Unlock()
			if v < 3 || v > 5 {
				v = 4
			}
			reply(OpError, errorBody(0x000a, fmt.Sprintf("Invalid or unsupported protocol version (%d); supported versions are (3/v3, 4/v4)", f.Version&0x7f)))
			continue
		}
		cn.version = v
		if f.Flags&0x01 != 0 {
			c.mu.Lock()
			c.compressed++
			c.mu.Unlock()
			reply(OpError, errorBody(0x000a, "cqltest: compressed frame"))
			return
		}
		d := &dec{b: f.Body}
		switch f.Opcode {
		case OpOptions:
			err = reply(OpSupported, supportedBody())
		case OpStartup:
			n := d.short()
			for k := 0; k < n && d.err == nil; k++ {
				if key, val := d.str(), d.str(); key == "COMPRESSION" {
					reply(OpError, errorBody(0x000a, "cqltest: compression "+val+" asked for"))
					return
				}
			}
			if authed {
				err = reply(OpReady, nil)
			} else {
				e := &enc{}
				e.str("org.apache.cassandra.auth.PasswordAuthenticator")
				err = reply(OpAuthenticate, e.b)
			}
		case OpAuthResponse:
			tok := d.bytes()
			if string(tok) != "\x00"+c.cfg.User+"\x00"+c.cfg.Password {
				reply(OpError, errorBody(0x0100, "Provided username and/or password are incorrect"))
				return
			}
			authed = true
			e := &enc{}
			e.bytes(nil)
			err = reply(OpAuthSuccess, e.b)
		case OpRegister:
			cn.types = map[string]bool{}
			n := d.short()
			for k := 0; k < n && d.err == nil; k++ {
				cn.types[d.str()] = true
			}
			c.mu.Lock()
			c.registered[cn] = true
			c.mu.Unlock()
			err = reply(OpReady, nil)
		case OpQuery, OpPrepare, OpExecute:
			if !authed {
				reply(OpError, errorBody(0x0100, "cqltest: not authenticated"))
				return
			}
			err = c.request(i, f.Opcode, d, prepared, reply)
		default:
			err = reply(OpError, errorBody(0x000a, fmt.Sprintf("cqltest: opcode %#x", f.Opcode)))
		}
		if err != nil {
			return
		}
	}
}

// request answers QUERY, PREPARE and EXECUTE on node i.
func (c *Cluster) request(i int, op byte, d *dec, prepared map[string]string, reply func(byte, []byte) error) error {
	if op == OpPrepare {
		q := d.long()
		sum := sha256.Sum256([]byte(q))
		id := sum[:16] // a node uses an MD5 of the statement: 16 bytes too
		prepared[string(id)] = q
		ks, table, cols, _ := c.answer(i, q)
		e := &enc{}
		e.int(4)
		e.short(len(id))
		e.b = append(e.b, id...)
		e.int(0) // bind metadata: no flags, no values, no keys
		e.int(0)
		e.int(0)
		appendMetadata(e, ks, table, cols)
		return reply(OpResult, e.b)
	}
	var q string
	if op == OpQuery {
		q = d.long()
	} else {
		id := d.n(d.short())
		var ok bool
		if q, ok = prepared[string(id)]; !ok {
			e := &enc{}
			e.int(0x2500)
			e.str("cqltest: unknown prepared id")
			e.short(len(id))
			e.b = append(e.b, id...)
			return reply(OpError, e.b)
		}
	}
	d.short() // consistency
	flags := d.n(1)
	if d.err != nil {
		return reply(OpError, errorBody(0x000a, "cqltest: short request"))
	}
	skip := flags[0]&0x02 != 0
	c.mu.Lock()
	c.queries = append(c.queries, q)
	if skip {
		c.skipMeta++
	}
	c.mu.Unlock()
	ks, table, cols, rows := c.answer(i, q)
	if cols == nil {
		return reply(OpError, errorBody(0x2200, "unconfigured table "+table))
	}
	return reply(OpResult, rowsBody(ks, table, cols, rows, skip))
}

var (
	localCols = []Column{{"key", typeVarchar}, {"broadcast_address", typeInet}, {"cluster_name", typeVarchar},
		{"cql_version", typeVarchar}, {"data_center", typeVarchar}, {"host_id", typeUUID}, {"listen_address", typeInet},
		{"partitioner", typeVarchar}, {"rack", typeVarchar}, {"release_version", typeVarchar}, {"rpc_address", typeInet},
		{"rpc_port", typeInt}, {"schema_version", typeUUID}, {"tokens", typeSet}}
	peersCols = []Column{{"peer", typeInet}, {"data_center", typeVarchar}, {"host_id", typeUUID}, {"preferred_ip", typeInet},
		{"rack", typeVarchar}, {"release_version", typeVarchar}, {"rpc_address", typeInet}, {"schema_version", typeUUID}, {"tokens", typeSet}}
	peersV2Cols = []Column{{"peer", typeInet}, {"peer_port", typeInt}, {"data_center", typeVarchar}, {"host_id", typeUUID},
		{"native_address", typeInet}, {"native_port", typeInt}, {"preferred_ip", typeInet}, {"preferred_port", typeInt},
		{"rack", typeVarchar}, {"release_version", typeVarchar}, {"schema_version", typeUUID}, {"tokens", typeSet}}
)

const schemaVersion = "5a3a6f6e-8c59-3b2d-9a2b-2f8d3e4c5b6a"

// answer is the result of query q on node i: its table and rows; nil
// columns for a system table the fake does not have.
func (c *Cluster) answer(i int, q string) (ks, table string, cols []Column, rows [][][]byte) {
	lq := strings.ToLower(strings.Join(strings.Fields(q), " "))
	self := c.cfg.Nodes[i]
	switch {
	case strings.Contains(lq, "from system.local"):
		if strings.HasPrefix(lq, "select schema_version ") {
			return "system", "local", []Column{{"schema_version", typeUUID}}, [][][]byte{{uuid(schemaVersion)}}
		}
		return "system", "local", localCols, [][][]byte{{
			[]byte("local"), inet(self.Addr), []byte("leproxy-test"), []byte("3.4.6"), []byte("dc1"), uuid(self.HostID),
			inet(self.Addr), []byte("org.apache.cassandra.dht.Murmur3Partitioner"), []byte("rack1"), []byte(c.cfg.ReleaseVersion),
			inet(self.Addr), int32be(int32(self.Addr.Port())), uuid(schemaVersion), tokens(i),
		}}
	case strings.Contains(lq, "from system.peers_v2"):
		if strings.HasPrefix(c.cfg.ReleaseVersion, "3.") {
			return "system", "peers_v2", nil, nil
		}
		for j, n := range c.cfg.Nodes {
			if j == i {
				continue
			}
			rows = append(rows, [][]byte{inet(n.Addr), int32be(7000), []byte("dc1"), uuid(n.HostID), inet(n.Addr),
				int32be(int32(n.Addr.Port())), nil, nil, []byte("rack1"), []byte(c.cfg.ReleaseVersion), uuid(schemaVersion), tokens(j)})
		}
		return "system", "peers_v2", peersV2Cols, rows
	case strings.Contains(lq, "from system.peers"):
		for j, n := range c.cfg.Nodes {
			if j == i {
				continue
			}
			rows = append(rows, [][]byte{inet(n.Addr), []byte("dc1"), uuid(n.HostID), inet(n.Addr), []byte("rack1"),
				[]byte(c.cfg.ReleaseVersion), inet(n.Addr), uuid(schemaVersion), tokens(j)})
		}
		return "system", "peers", peersCols, rows
	}
	return "leproxy", "echo", []Column{{"answer", typeVarchar}}, [][][]byte{{[]byte(self.Name + ":" + q)}}
}

func inet(a netip.AddrPort) []byte { return a.Addr().AsSlice() }

func int32be(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// uuid encodes a UUID string's 16 bytes.
func uuid(s string) []byte {
	var out []byte
	h := strings.ReplaceAll(s, "-", "")
	for k := 0; k+1 < len(h); k += 2 {
		var b byte
		fmt.Sscanf(h[k:k+2], "%02x", &b)
		out = append(out, b)
	}
	return out
}

// tokens is node i's set<text> of one Murmur3 token.
func tokens(i int) []byte {
	e := &enc{}
	e.int(1)
	t := fmt.Sprint(int64(i)*3074457345618258602 - 9223372036854775807)
	e.bytes([]byte(t))
	return e.b
}

func supportedBody() []byte {
	e := &enc{}
	e.short(3)
	e.str("CQL_VERSION")
	e.strList([]string{"3.4.6"})
	e.str("COMPRESSION")
	e.strList([]string{"snappy", "lz4"})
	e.str("PROTOCOL_VERSIONS")
	e.strList([]string{"3/v3", "4/v4", "5/v5"})
	return e.b
}
