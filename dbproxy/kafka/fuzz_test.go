package kafka

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testRewriter serves brokers 127.0.0.1:9092 and :9093 as b0.test and
// b1.test on port 9094.
func testRewriter() *rewriter {
	return &rewriter{
		nodes: map[string]string{"127.0.0.1:9092": "b0.test", "127.0.0.1:9093": "b1.test"},
		hosts: map[string]bool{"b0.test": true, "b1.test": true},
		port:  9094,
	}
}

// sampleResponses are responses of every rewritten key, with brokers, at
// their highest version.
func sampleResponses() []kmsg.Response {
	rack := "r1"
	md := kmsg.NewPtrMetadataResponse()
	md.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 0, Host: "127.0.0.1", Port: 9092, Rack: &rack}, {NodeID: 2, Host: "10.0.0.9", Port: 9092}}
	md.Topics = []kmsg.MetadataResponseTopic{{Topic: kmsg.StringPtr("t"), Partitions: []kmsg.MetadataResponseTopicPartition{{Leader: 0, Replicas: []int32{0, 2}}}}}
	fc := kmsg.NewPtrFindCoordinatorResponse()
	fc.Coordinators = []kmsg.FindCoordinatorResponseCoordinator{{Key: "g", NodeID: 1, Host: "127.0.0.1", Port: 9093}, {Key: "h", NodeID: 2, Host: "10.0.0.9", Port: 9092}}
	dc := kmsg.NewPtrDescribeClusterResponse()
	dc.Brokers = []kmsg.DescribeClusterResponseBroker{{NodeID: 1, Host: "127.0.0.1", Port: 9093}}
	pr := kmsg.NewPtrProduceResponse()
	pr.Brokers = []kmsg.ProduceResponseBroker{{NodeID: 0, Host: "127.0.0.1", Port: 9092}}
	fr := kmsg.NewPtrFetchResponse()
	fr.Topics = []kmsg.FetchResponseTopic{{Topic: "t", Partitions: []kmsg.FetchResponseTopicPartition{{RecordBatches: bytes.Repeat([]byte{1}, 100)}}}}
	fr.Brokers = []kmsg.FetchResponseBroker{{NodeID: 1, Host: "127.0.0.1", Port: 9093}}
	sf := kmsg.NewPtrShareFetchResponse()
	sf.NodeEndpoints = []kmsg.ShareFetchResponseNodeEndpoint{{NodeID: 0, Host: "127.0.0.1", Port: 9092}}
	sa := kmsg.NewPtrShareAcknowledgeResponse()
	sa.NodeEndpoints = []kmsg.ShareAcknowledgeResponseNodeEndpoint{{NodeID: 2, Host: "10.0.0.9", Port: 9092}}
	av := kmsg.NewPtrApiVersionsResponse()
	av.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: keyMetadata, MaxVersion: 99}, {ApiKey: keySASLHandshake, MaxVersion: 1}}
	out := []kmsg.Response{md, fc, dc, pr, fr, sf, sa, av}
	for _, r := range out {
		r.SetVersion(r.MaxVersion())
	}
	return out
}

// responseContent is a response's frame content: correlation id, header
// tags when flexible, body.
func responseContent(corr int32, r kmsg.Response) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(corr))
	if r.IsFlexible() && r.Key() != keyApiVersions {
		b = append(b, 0)
	}
	return r.AppendTo(b)
}

func TestRewriteSamples(t *testing.T) {
	w := testRewriter()
	for _, r := range sampleResponses() {
		name := kmsg.NameForKey(r.Key())
		out, err := w.rewrite(request{corr: 7, key: r.Key(), version: r.GetVersion()}, responseContent(7, r))
		if err != nil || out == nil {
			t.Fatalf("%s: rewrite returned %v, %v", name, out, err)
		}
		got := kmsg.ResponseForKey(r.Key())
		got.SetVersion(r.GetVersion())
		hl, _ := responseHeaderLen(out, r.Key(), r.GetVersion())
		if err := got.ReadFrom(out[hl:]); err != nil {
			t.Fatalf("%s: rewritten response does not decode: %v", name, err)
		}
		text := reflectString(got)
		if strings.Contains(text, "127.0.0.1") || strings.Contains(text, "10.0.0.9") {
			t.Errorf("%s: a backend address is left: %s", name, text)
		}
	}
}

// reflectString renders a decoded response for searching.
func reflectString(v any) string {
	var sb strings.Builder
	var walk func(reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				return
			}
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.String:
			sb.WriteString(v.String() + " ")
		}
	}
	walk(reflect.ValueOf(v))
	return sb.String()
}

// FuzzRewrite feeds every rewriter arbitrary response content: it must
// return an error or a response that decodes, never panic.
func FuzzRewrite(f *testing.F) {
	keys := []int16{keyProduce, keyFetch, keyMetadata, keyFindCoordinator, keyApiVersions, keyDescribeCluster, keyShareFetch, keyShareAcknowledge}
	for _, r := range sampleResponses() {
		f.Add(r.Key(), r.GetVersion(), responseContent(1, r))
		for v := int16(0); v < r.GetVersion(); v += 3 {
			r.SetVersion(v)
			f.Add(r.Key(), v, responseContent(1, r))
		}
	}
	f.Fuzz(func(t *testing.T, key, version int16, content []byte) {
		key = keys[int(uint16(key))%len(keys)]
		version = int16(int(uint16(version)) % int(maxVersion(key)+1))
		out, err := testRewriter().rewrite(request{key: key, version: version}, content)
		if err != nil || out == nil {
			return
		}
		hl, err := responseHeaderLen(out, key, version)
		if err != nil {
			t.Fatalf("rewritten header: %v", err)
		}
		r := kmsg.ResponseForKey(key)
		r.SetVersion(version)
		if key == keyApiVersions && len(out) >= hl+2 && binary.BigEndian.Uint16(out[hl:]) == errCodeUnsupportedVersion {
			r.SetVersion(0)
		}
		if err := r.ReadFrom(out[hl:]); err != nil {
			t.Fatalf("rewritten %s v%d does not decode: %v", kmsg.NameForKey(key), version, err)
		}
	})
}

// FuzzRequestScanner scans arbitrary client bytes, whole and in chunks:
// both must agree on the requests tracked and the outcome, and never
// panic.
func FuzzRequestScanner(f *testing.F) {
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(11)
	txn := "tx"
	pr.TransactionID = &txn
	pr0 := kmsg.NewPtrProduceRequest()
	pr0.SetVersion(8)
	pr0.Acks = 0
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	seed := appendRequest(appendRequest(appendRequest(appendRequest(nil, 1, md), 2, pr), 3, pr0), 4, av)
	f.Add(seed, uint8(7))
	f.Add(echoRequest("hello"), uint8(1))
	f.Add([]byte{0, 0, 0, 12, 0, 17, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		scan := func(step int) ([]request, error) {
			var got []request
			s := reqScanner{max: 1 << 16, track: func(r request) error {
				got = append(got, r)
				if len(got) > 100 {
					return errTooMany
				}
				return nil
			}}
			for b := data; len(b) > 0; {
				n := min(step, len(b))
				if err := s.feed(b[:n]); err != nil {
					return got, err
				}
				b = b[n:]
			}
			return got, nil
		}
		whole, errWhole := scan(len(data) + 1)
		parts, errParts := scan(int(chunk%64) + 1)
		if (errWhole == nil) != (errParts == nil) || !reflect.DeepEqual(whole, parts) {
			t.Fatalf("whole: %v, %v; in chunks: %v, %v", whole, errWhole, parts, errParts)
		}
	})
}

// byteConn is a net.Conn reading from r, in reads of at most step bytes.
type byteConn struct {
	net.Conn
	r    io.Reader
	step int
}

func (c *byteConn) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.step)])
}

// FuzzBackendConn reads arbitrary backend bytes through the response
// reader with one rewritten request pending: untracked frames must come
// out unchanged, and nothing may panic.
func FuzzBackendConn(f *testing.F) {
	for _, r := range sampleResponses() {
		c := responseContent(5, r)
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(c)))
		f.Add(append(frame, c...), r.Key(), r.GetVersion(), uint8(13))
	}
	f.Add(echoRequest("x"), int16(keyMetadata), int16(3), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, key, version int16, step uint8) {
		pend := new(pending)
		if _, ok := rewritten[key]; ok && version >= 0 && version <= maxVersion(key) {
			pend.push(request{corr: 5, key: key, version: version})
		}
		c := &backendConn{
			Conn: nil, pend: pend, w: testRewriter(), max: 1 << 20,
		}
		c.Conn = &byteConn{r: bytes.NewReader(data), step: int(step%32) + 1}
		out, err := io.ReadAll(c)
		if err != nil && !strings.HasPrefix(err.Error(), "kafka: ") {
			t.Fatalf("unexpected error %v", err)
		}
		if len(pend.q) == 1 && !bytes.HasPrefix(data, out) {
			t.Fatalf("no response was rewritten, yet the output differs from the input")
		}
	})
}
