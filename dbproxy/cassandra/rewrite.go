package cassandra

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// rewriter rewrites the node addresses of one session's responses; see
// nodes.go for what and why.
type rewriter struct {
	nodes       nodes
	self        node // the node of the session's own route
	port        int  // the listener's port
	backendPort int  // the session backend's port: system.peers has none
	logger      *slog.Logger
	warned      map[string]bool
}

// maxWarned bounds the unrouted node addresses one session warns about.
const maxWarned = 16

// unrouted logs, once per address, a node no route serves.
func (w *rewriter) unrouted(addr, where string) {
	if w.warned[addr] || len(w.warned) >= maxWarned || w.logger == nil {
		return
	}
	if w.warned == nil {
		w.warned = make(map[string]bool)
	}
	w.warned[addr] = true
	w.logger.Warn("cassandra node has no route on this listener", "node", addr, "message", where)
}

// The system tables whose rows name nodes.
const (
	tableNone = iota
	tableLocal
	tablePeers
	tablePeersV2
)

func systemTable(ks, table string) int {
	if !strings.EqualFold(ks, "system") {
		return tableNone
	}
	switch strings.ToLower(table) {
	case "local":
		return tableLocal
	case "peers":
		return tablePeers
	case "peers_v2":
		return tablePeersV2
	}
	return tableNone
}

// CQL type ids of the columns rewritten.
const (
	typeInt  = 0x0009
	typeInet = 0x0010
)

// Result kinds and metadata flags.
const (
	resultRows = 0x0002

	metaGlobalSpec = 0x0001
	metaMorePages  = 0x0002
	metaNoMetadata = 0x0004
)

// column is a result column's name and type id.
type column struct {
	name string
	typ  int
}

// rowsHead is what the start of a RESULT body says: whether it is a
// system table's rows and, if so, where its rows begin.
type rowsHead struct {
	table   int
	cols    []column
	rowsOff int // offset of rows_count in the body
}

// parseRowsHead reads the start of a RESULT body (which may be cut
// short: then the error is errShort) up to its rows. A result that is
// not rows, or whose metadata names no system table, has table
// tableNone.
func parseRowsHead(flags byte, body []byte) (rowsHead, error) {
	r := &reader{b: body}
	r.skipResponsePrefix(flags)
	if kind := r.int(); r.err != nil || kind != resultRows {
		return rowsHead{}, r.err
	}
	mflags := r.int()
	ncols := r.int()
	if mflags&metaMorePages != 0 {
		r.bytes()
	}
	if r.err != nil {
		return rowsHead{}, r.err
	}
	if mflags&metaNoMetadata != 0 {
		// Only for a request that asked for it: leproxy clears
		// skip_metadata in every QUERY and EXECUTE.
		return rowsHead{}, nil
	}
	// A column spec takes at least 6 bytes: bounds ncols before the
	// slice is made.
	if ncols < 0 || int(ncols) > (len(body)-r.off)/6+1 {
		return rowsHead{}, errShort
	}
	var ks, table string
	global := mflags&metaGlobalSpec != 0
	if global {
		ks, table = r.string(), r.string()
		if systemTable(ks, table) == tableNone {
			return rowsHead{}, r.err
		}
	}
	cols := make([]column, 0, ncols)
	for i := 0; i < int(ncols) && r.err == nil; i++ {
		if !global {
			k, t := r.string(), r.string()
			if i == 0 {
				ks, table = k, t
			}
		}
		name := r.string()
		cols = append(cols, column{name: name, typ: r.option(0)})
	}
	if r.err != nil {
		return rowsHead{}, r.err
	}
	return rowsHead{table: systemTable(ks, table), cols: cols, rowsOff: r.off}, nil
}

// cell is one value of a row: nil data with null set for a null.
type cell struct {
	data []byte
	null bool
}

// rows rewrites the rows of a system table's RESULT body whose head is
// h: every inet of a node a route serves becomes its stand-in, its client
// ports the listener's; rows of peers no route serves are dropped. It
// returns the new body.
func (w *rewriter) rows(h rowsHead, body []byte) ([]byte, error) {
	r := &reader{b: body, off: h.rowsOff}
	n := r.int()
	// A cell takes at least 4 bytes.
	if r.err != nil || n < 0 || (len(h.cols) > 0 && int(n) > (len(body)-r.off)/(4*len(h.cols))) {
		return nil, fmt.Errorf("rewriting system table rows: %w", errShort)
	}
	if len(h.cols) == 0 {
		return nil, nil
	}
	out := make([]byte, 0, len(body)+64)
	out = append(out, body[:h.rowsOff]...)
	out = append(out, 0, 0, 0, 0) // rows_count, set below
	row := make([]cell, len(h.cols))
	kept := 0
	for i := 0; i < int(n); i++ {
		for j := range row {
			d, null := r.bytes()
			row[j] = cell{data: d, null: null}
		}
		if r.err != nil {
			return nil, fmt.Errorf("rewriting system table rows: %w", r.err)
		}
		if !w.row(h, row) {
			continue
		}
		kept++
		for _, c := range row {
			if c.null {
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
				continue
			}
			out = binary.BigEndian.AppendUint32(out, uint32(len(c.data))) // #nosec G115 -- bounded by the body's length
			out = append(out, c.data...)
		}
	}
	out = append(out, r.rest()...)                            // nothing, in a well-formed body
	binary.BigEndian.PutUint32(out[h.rowsOff:], uint32(kept)) // #nosec G115 -- at most the rows read
	return out, nil
}

// Columns that name a node's client address, most telling first.
var addrColumns = []string{"native_address", "rpc_address", "broadcast_address", "peer", "listen_address", "preferred_ip"}

// row rewrites one row in place and reports whether to keep it.
func (w *rewriter) row(h rowsHead, row []cell) bool {
	nd, ok := w.self, true
	if h.table != tableLocal {
		nd, ok = w.rowNode(h, row)
	}
	if !ok {
		return false
	}
	ip := nd.standIn.As4()
	port := binary.BigEndian.AppendUint32(nil, uint32(w.port)) // #nosec G115 -- a TCP port
	for j, c := range h.cols {
		if row[j].null {
			continue
		}
		switch {
		case c.typ == typeInet:
			row[j].data = ip[:]
		case c.typ == typeInt && (c.name == "native_port" || c.name == "rpc_port"):
			row[j].data = port
		}
	}
	return true
}

// rowNode finds the node a peers row is about; false when the row names
// an address no route serves (or names none it could be checked by, yet
// holds an address).
func (w *rewriter) rowNode(h rowsHead, row []cell) (node, bool) {
	port := w.backendPort
	addrs := map[string]netip.Addr{}
	for j, c := range h.cols {
		if row[j].null {
			continue
		}
		switch {
		case c.typ == typeInet:
			if a, ok := netip.AddrFromSlice(row[j].data); ok {
				addrs[c.name] = a
			}
		case c.typ == typeInt && c.name == "native_port" && len(row[j].data) == 4:
			port = int(binary.BigEndian.Uint32(row[j].data))
		}
	}
	if len(addrs) == 0 {
		hasInet := false
		for j, c := range h.cols {
			hasInet = hasInet || (c.typ == typeInet && !row[j].null)
		}
		return node{}, !hasInet
	}
	for _, name := range addrColumns {
		if a, ok := addrs[name]; ok {
			if nd, ok := w.nodes[ipKey(a, port)]; ok {
				return nd, true
			}
		}
	}
	for _, name := range addrColumns {
		if a, ok := addrs[name]; ok {
			w.unrouted(ipKey(a, port), "system.peers")
			break
		}
	}
	return node{}, false
}

// event rewrites an EVENT body: the address of a TOPOLOGY_CHANGE or
// STATUS_CHANGE becomes the node's stand-in and the listener's port.
// drop is set for an event about a node no route serves; nil body and
// no drop mean the event passes as it is.
func (w *rewriter) event(flags byte, body []byte) (out []byte, drop bool, err error) {
	r := &reader{b: body}
	r.skipResponsePrefix(flags)
	typ := r.string()
	if typ != "TOPOLOGY_CHANGE" && typ != "STATUS_CHANGE" {
		return nil, false, r.err
	}
	r.string() // the change
	addrOff := r.off
	ip, ok := netip.AddrFromSlice(r.take(int(r.byte())))
	port := r.int()
	if r.err != nil || !ok {
		return nil, false, fmt.Errorf("reading %s event: %w", typ, errors.Join(r.err, errShort))
	}
	key := ipKey(ip, int(port))
	nd, ok := w.nodes[key]
	if !ok {
		w.unrouted(key, typ)
		return nil, true, nil
	}
	a := nd.standIn.As4()
	out = append(make([]byte, 0, len(body)), body[:addrOff]...)
	out = append(out, 4)
	out = append(out, a[:]...)
	out = binary.BigEndian.AppendUint32(out, uint32(w.port)) // #nosec G115 -- a TCP port
	return append(out, r.rest()...), false, nil
}

// supported rewrites a SUPPORTED body: COMPRESSION is taken out, since
// leproxy reads the frames it rewrites, and PROTOCOL_VERSIONS keeps the
// versions leproxy speaks (3 and 4).
func supported(flags byte, body []byte) ([]byte, error) {
	r := &reader{b: body}
	r.skipResponsePrefix(flags)
	prefix := body[:r.off]
	n := r.short()
	type entry struct {
		key  string
		vals []string
	}
	var entries []entry
	for i := 0; i < n && r.err == nil; i++ {
		k := r.string()
		vals := r.stringList()
		switch k {
		case "COMPRESSION":
			continue
		case "PROTOCOL_VERSIONS":
			vals = slicesFilter(vals, func(v string) bool { return strings.HasPrefix(v, "3/") || strings.HasPrefix(v, "4/") })
		}
		entries = append(entries, entry{k, vals})
	}
	if r.err != nil {
		return nil, fmt.Errorf("reading SUPPORTED: %w", r.err)
	}
	out := append(make([]byte, 0, len(body)), prefix...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(entries))) // #nosec G115 -- at most the entries read
	for _, e := range entries {
		out = appendString(out, e.key)
		out = binary.BigEndian.AppendUint16(out, uint16(len(e.vals))) // #nosec G115 -- at most the values read
		for _, v := range e.vals {
			out = appendString(out, v)
		}
	}
	return out, nil
}

func slicesFilter(in []string, keep func(string) bool) []string {
	out := in[:0:0]
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
