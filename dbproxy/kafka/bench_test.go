package kafka

import (
	"bytes"
	"encoding/binary"
	"io"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// BenchmarkResponses measures the response reader: bytes/s and
// allocations per response for a response streamed through unread, one
// decoded and found unchanged, and one rewritten.
func BenchmarkResponses(b *testing.B) {
	records := bytes.Repeat([]byte{0xab}, 1<<20)
	fetch := func(version int16) kmsg.Response {
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(version)
		for i := range 4 {
			r.Topics = append(r.Topics, kmsg.FetchResponseTopic{Topic: "t" + strconv.Itoa(i),
				Partitions: []kmsg.FetchResponseTopicPartition{{Partition: 0, RecordBatches: records[:len(records)/4]}}})
		}
		return r
	}
	md := kmsg.NewPtrMetadataResponse()
	md.SetVersion(12)
	md.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 0, Host: "127.0.0.1", Port: 9092}, {NodeID: 1, Host: "127.0.0.1", Port: 9093}, {NodeID: 2, Host: "10.0.0.9", Port: 9092}}
	for i := range 50 {
		md.Topics = append(md.Topics, kmsg.MetadataResponseTopic{Topic: kmsg.StringPtr("topic-" + strconv.Itoa(i)),
			Partitions: []kmsg.MetadataResponseTopicPartition{{Partition: 0, Leader: 0, Replicas: []int32{0, 1, 2}, ISR: []int32{0, 1, 2}}}})
	}
	pr := kmsg.NewPtrProduceResponse()
	pr.SetVersion(11)
	pr.Topics = []kmsg.ProduceResponseTopic{{Topic: "t", Partitions: []kmsg.ProduceResponseTopicPartition{{Partition: 0, BaseOffset: 42}}}}

	for _, bc := range []struct {
		name    string
		resp    kmsg.Response
		tracked bool
	}{
		{"Fetch-v12-streamed-1MiB", fetch(12), false},
		{"Fetch-v16-decoded-unchanged-1MiB", fetch(16), true},
		{"Metadata-v12-rewritten-50-topics", md, true},
		{"Produce-v11-decoded-unchanged", pr, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			content := responseContent(5, bc.resp)
			frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(content))), content...)
			rd := bytes.NewReader(frame)
			pend := new(pending)
			c := &backendConn{Conn: &byteConn{r: rd, step: 64 << 10}, pend: pend, w: testRewriter(), max: DefaultMaxResponse}
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(frame)
				if bc.tracked {
					pend.push(request{corr: 5, key: bc.resp.Key(), version: bc.resp.GetVersion()})
				}
				for {
					_, err := c.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
