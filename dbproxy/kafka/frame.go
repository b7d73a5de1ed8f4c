package kafka

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka's framing: every request and response is an int32 size and that
// many bytes. A request starts with its header: api key (int16), api
// version (int16), correlation id (int32), client id (nullable string,
// int16 length) and, from the first flexible version of the api key
// (KIP-482), tagged fields. A response starts with the correlation id
// and, at flexible versions, tagged fields, except ApiVersions responses,
// whose header never has them. Responses come back in request order and
// carry no api key: the reader of a response must remember what it asked.

// Default frame limits.
const (
	// DefaultMaxRequest bounds a client's request frame, as Kafka's
	// socket.request.max.bytes does (the broker's default, 100 MiB).
	DefaultMaxRequest = 100 << 20
	// DefaultMaxResponse bounds a response frame that leproxy reads whole
	// to rewrite (Metadata, FindCoordinator, DescribeCluster, ApiVersions,
	// Produce and Fetch at the versions that carry NodeEndpoints). Other
	// responses stream through unbuffered, whatever their size.
	DefaultMaxResponse = 100 << 20
	// maxPending bounds the requests of one connection whose responses
	// are awaited for rewriting.
	maxPending = 1024
	// headCap bounds the bytes of a request frame looked at: its header,
	// and for Produce the transactional id and acks.
	headCap = 4 + 8 + 2 + 32767 + 1024
)

// Api keys leproxy reads.
const (
	keyProduce          = 0
	keyFetch            = 1
	keyMetadata         = 3
	keyFindCoordinator  = 10
	keySASLHandshake    = 17
	keyApiVersions      = 18
	keyDescribeCluster  = 60
	keyShareFetch       = 78
	keyShareAcknowledge = 79
)

// rewritten lists the api keys whose responses leproxy decodes, with the
// first version that carries a broker address (Produce and Fetch only from
// KIP-951's NodeEndpoints on). Their max versions are what kmsg knows,
// which the ApiVersions clamp advertises.
var rewritten = map[int16]int16{
	keyProduce:          10,
	keyFetch:            16,
	keyMetadata:         0,
	keyFindCoordinator:  0,
	keyApiVersions:      0,
	keyDescribeCluster:  0,
	keyShareFetch:       0,
	keyShareAcknowledge: 0,
}

// maxVersion is the highest version of key that leproxy can decode.
func maxVersion(key int16) int16 {
	r := kmsg.ResponseForKey(key)
	if r == nil {
		return -1
	}
	return r.MaxVersion()
}

// flexible reports whether version of key uses flexible (KIP-482)
// encoding, and so tagged fields in its headers.
func flexible(key, version int16) bool {
	r := kmsg.RequestForKey(key)
	if r == nil {
		return false
	}
	r.SetVersion(version)
	return r.IsFlexible()
}

// A request is what leproxy remembers of a request whose response it
// rewrites.
type request struct {
	corr    int32
	key     int16
	version int16
}

// Errors of the framing.
var (
	errFrameSize = errors.New("kafka: frame size out of bounds")
	errShort     = errors.New("truncated")
)

// reqHeader is a parsed request header; body is what follows it in head.
type reqHeader struct {
	key     int16
	version int16
	corr    int32
	body    []byte
}

// parseRequestHeader parses the header at the start of a request frame's
// content (after the size), of which head may hold only the start.
// complete says whether head is the whole frame.
func parseRequestHeader(head []byte) (reqHeader, error) {
	var h reqHeader
	if len(head) < 10 {
		return h, errShort
	}
	h.key = int16(binary.BigEndian.Uint16(head))
	h.version = int16(binary.BigEndian.Uint16(head[2:]))
	h.corr = int32(binary.BigEndian.Uint32(head[4:]))
	b := head[8:]
	n := int16(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > 0 {
		if int(n) > len(b) {
			return h, errShort
		}
		b = b[n:]
	}
	if flexible(h.key, h.version) {
		rest, err := skipTags(b)
		if err != nil {
			return h, err
		}
		b = rest
	}
	h.body = b
	return h, nil
}

// produceAcks returns a Produce request's acks from the start of its
// body at version; ok is false when body is too short to tell.
func produceAcks(body []byte, version int16) (acks int16, ok bool) {
	b := body
	if version >= 3 {
		// transactional_id: nullable string, compact from v9.
		if version >= 9 {
			l, n := binary.Uvarint(b)
			if n <= 0 {
				return 0, false
			}
			b = b[n:]
			if l > 1 {
				if l-1 > uint64(len(b)) {
					return 0, false
				}
				b = b[l-1:]
			}
		} else {
			if len(b) < 2 {
				return 0, false
			}
			l := int16(binary.BigEndian.Uint16(b))
			b = b[2:]
			if l > 0 {
				if int(l) > len(b) {
					return 0, false
				}
				b = b[l:]
			}
		}
	}
	if len(b) < 2 {
		return 0, false
	}
	return int16(binary.BigEndian.Uint16(b)), true
}

// skipTags skips a tagged-field section: a count, then each tag's
// number, size and data.
func skipTags(b []byte) ([]byte, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, errShort
	}
	b = b[n:]
	for range count {
		_, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errShort
		}
		b = b[n:]
		size, n := binary.Uvarint(b)
		if n <= 0 || size > uint64(len(b)-n) {
			return nil, errShort
		}
		b = b[n+int(size):]
	}
	return b, nil
}

// responseHeaderLen returns the length of the header at the start of a
// response's content (correlation id and, when flexible, tagged fields).
func responseHeaderLen(content []byte, key, version int16) (int, error) {
	if len(content) < 4 {
		return 0, errShort
	}
	if key == keyApiVersions || !flexible(key, version) {
		return 4, nil
	}
	rest, err := skipTags(content[4:])
	if err != nil {
		return 0, fmt.Errorf("kafka: response header: %w", err)
	}
	return len(content) - len(rest), nil
}
