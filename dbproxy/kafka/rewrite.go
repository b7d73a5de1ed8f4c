package kafka

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Errors codes leproxy puts in responses.
const (
	errCodeBrokerNotAvailable      = 8
	errCodeCoordinatorNotAvailable = 15
	errCodeUnsupportedVersion      = 35
)

// maxWarned bounds the unrouted broker addresses one session warns about.
const maxWarned = 16

// A rewriter rewrites the broker addresses in one session's responses to
// the route hosts that serve them and the listener's port.
type rewriter struct {
	nodes  map[string]string // backend address → route host
	hosts  map[string]bool   // the listener's route hosts, lower case
	port   int32             // the listener's port
	logger *slog.Logger
	warned map[string]bool
}

// unrouted returns the host a broker that no route serves is given:
// a name under .invalid (RFC 6761), which never resolves, so that a client
// fails to reach that broker, naming it, instead of going around leproxy.
func unrouted(node int32) string {
	return "broker-" + strconv.Itoa(int(node)) + ".no-route.invalid"
}

// broker rewrites one broker's host and port; it reports whether a route
// serves the broker.
func (w *rewriter) broker(node int32, host *string, port *int32, where string) bool {
	p := strconv.Itoa(int(*port))
	if rh, ok := w.nodes[nodeKey(*host, p)]; ok {
		*host, *port = rh, w.port
		return true
	}
	if w.hosts[strings.ToLower(*host)] && *port == w.port {
		// Already the address leproxy serves it on (advertised.listeners
		// naming leproxy).
		return true
	}
	w.warn(*host+":"+p, where)
	*host, *port = unrouted(node), w.port
	return false
}

// warn logs, once per address, a broker no route serves.
func (w *rewriter) warn(addr, where string) {
	if w.warned[addr] || len(w.warned) >= maxWarned || w.logger == nil {
		return
	}
	if w.warned == nil {
		w.warned = make(map[string]bool)
	}
	w.warned[addr] = true
	w.logger.Warn("kafka broker has no route on this listener", "node", addr, "message", where)
}

// coordinator rewrites a FindCoordinator answer; one that no route serves
// becomes COORDINATOR_NOT_AVAILABLE, which clients retry, with a message
// naming the broker's node id.
func (w *rewriter) coordinator(node *int32, host *string, port *int32, code *int16, msg **string) {
	if *code != 0 {
		return
	}
	if w.broker(*node, host, port, "FindCoordinator") {
		return
	}
	// The broker's address is in leproxy's log, not told to the client.
	m := "leproxy has no route to coordinator " + strconv.Itoa(int(*node))
	*code, *msg = errCodeCoordinatorNotAvailable, &m
	*node, *host, *port = -1, "", -1
}

type unsafeReader interface{ UnsafeReadFrom([]byte) error }

// rewrite rewrites the content of the response (after its size) to req:
// the new content, or nil when nothing changed.
func (w *rewriter) rewrite(req request, content []byte) ([]byte, error) {
	hl, err := responseHeaderLen(content, req.key, req.version)
	if err != nil {
		return nil, err
	}
	body := content[hl:]
	version := req.version
	if req.key == keyApiVersions && len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) == errCodeUnsupportedVersion {
		// A broker answers an ApiVersions version it does not know at v0.
		version = 0
	}
	if version > maxVersion(req.key) {
		// Only ApiVersions gets here (the scanner refuses the others):
		// a client and a broker both newer than leproxy's codec.
		return nil, fmt.Errorf("kafka: %s v%d response is newer than leproxy can read (%d)",
			kmsg.NameForKey(req.key), version, maxVersion(req.key))
	}
	resp := kmsg.ResponseForKey(req.key)
	if resp == nil {
		return nil, fmt.Errorf("kafka: no codec for api key %d", req.key)
	}
	resp.SetVersion(version)
	if u, ok := resp.(unsafeReader); ok {
		err = u.UnsafeReadFrom(body)
	} else {
		err = resp.ReadFrom(body)
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: decoding %s v%d response: %w", kmsg.NameForKey(req.key), version, err)
	}
	if !w.apply(resp) {
		return nil, nil
	}
	out := append(make([]byte, 0, len(content)+64), content[:hl]...)
	return resp.AppendTo(out), nil
}

// apply rewrites a decoded response and reports whether it changed.
func (w *rewriter) apply(resp kmsg.Response) bool {
	switch r := resp.(type) {
	case *kmsg.ApiVersionsResponse:
		return clampVersions(r)
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "Metadata")
		}
		return len(r.Brokers) > 0
	case *kmsg.FindCoordinatorResponse:
		if r.Version < 4 {
			w.coordinator(&r.NodeID, &r.Host, &r.Port, &r.ErrorCode, &r.ErrorMessage)
			return true
		}
		for i := range r.Coordinators {
			c := &r.Coordinators[i]
			w.coordinator(&c.NodeID, &c.Host, &c.Port, &c.ErrorCode, &c.ErrorMessage)
		}
		return len(r.Coordinators) > 0
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "DescribeCluster")
		}
		return len(r.Brokers) > 0
	case *kmsg.ProduceResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "Produce")
		}
		return len(r.Brokers) > 0
	case *kmsg.FetchResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "Fetch")
		}
		return len(r.Brokers) > 0
	case *kmsg.ShareFetchResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "ShareFetch")
		}
		return len(r.NodeEndpoints) > 0
	case *kmsg.ShareAcknowledgeResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			w.broker(b.NodeID, &b.Host, &b.Port, "ShareAcknowledge")
		}
		return len(r.NodeEndpoints) > 0
	}
	return false
}

// clampVersions caps the versions an ApiVersions response advertises for
// the api keys leproxy rewrites at the highest it can decode, so that a
// client never uses a version whose broker addresses would pass through
// unread; a key left with no version is removed. SaslHandshake v0, after
// which SASL tokens travel unframed, is withdrawn (Kafka 4 dropped it).
func clampVersions(r *kmsg.ApiVersionsResponse) bool {
	changed := false
	keys := r.ApiKeys[:0]
	for _, k := range r.ApiKeys {
		if _, ok := rewritten[k.ApiKey]; ok {
			if mv := maxVersion(k.ApiKey); k.MaxVersion > mv {
				k.MaxVersion, changed = mv, true
			}
		}
		if k.ApiKey == keySASLHandshake && k.MinVersion < 1 {
			k.MinVersion, changed = 1, true
		}
		if k.MinVersion > k.MaxVersion {
			changed = true
			continue
		}
		keys = append(keys, k)
	}
	r.ApiKeys = keys
	return changed
}
