package dbproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// Client messages are built with the driver's own wire message and BSON
// code, so that leproxy's reading of them is checked against the driver's
// writing.

func mongoDoc(t testing.TB, d bson.D) []byte {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildOpMsg is an OP_MSG: an optional document sequence, then the
// command document, then an optional checksum.
func buildOpMsg(requestID int32, cmd []byte, seq string, checksum bool) []byte {
	idx, b := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpMsg)
	var flags wiremessage.MsgFlag
	if checksum {
		flags |= wiremessage.ChecksumPresent
	}
	b = wiremessage.AppendMsgFlags(b, flags)
	if seq != "" {
		b = wiremessage.AppendMsgSectionType(b, wiremessage.DocumentSequence)
		doc := bsoncore.NewDocumentBuilder().AppendInt32("x", 1).Build()
		b = binary.LittleEndian.AppendUint32(b, uint32(4+len(seq)+1+len(doc)))
		b = append(append(b, seq...), 0)
		b = append(b, doc...)
	}
	b = wiremessage.AppendMsgSectionType(b, wiremessage.SingleDocument)
	b = append(b, cmd...)
	if checksum {
		b = binary.LittleEndian.AppendUint32(b, 0xdeadbeef)
	}
	return bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
}

// buildOpQuery is a legacy OP_QUERY command, as the drivers' first hello.
func buildOpQuery(requestID int32, ns string, cmd []byte) []byte {
	idx, b := wiremessage.AppendHeaderStart(nil, requestID, 0, wiremessage.OpQuery)
	b = wiremessage.AppendQueryFlags(b, 0)
	b = wiremessage.AppendQueryFullCollectionName(b, ns)
	b = wiremessage.AppendQueryNumberToSkip(b, 0)
	b = wiremessage.AppendQueryNumberToReturn(b, -1)
	b = append(b, cmd...)
	return bsoncore.UpdateLength(b, idx, int32(len(b)-int(idx)))
}

func TestParseMongoHeader(t *testing.T) {
	hello := buildOpMsg(7, mongoDoc(t, bson.D{{Key: "hello", Value: 1}}), "", false)
	header := func(length, requestID, responseTo, opCode int32) []byte {
		return wiremessage.AppendHeader(nil, length, requestID, responseTo, wiremessage.OpCode(opCode))
	}
	tests := []struct {
		name    string
		in      []byte
		want    mongoHeader
		wantErr bool
	}{
		{"OP_MSG hello", hello[:16], mongoHeader{length: int32(len(hello)), requestID: 7, opCode: mongoOpMsg}, false},
		{"OP_QUERY", header(100, 1, 0, mongoOpQuery), mongoHeader{length: 100, requestID: 1, opCode: mongoOpQuery}, false},
		{"largest message", header(mongoMaxMessage, 1, 0, mongoOpMsg), mongoHeader{length: mongoMaxMessage, requestID: 1, opCode: mongoOpMsg}, false},
		{"too long", header(mongoMaxMessage+1, 1, 0, mongoOpMsg), mongoHeader{}, true},
		{"negative length", header(-1, 1, 0, mongoOpMsg), mongoHeader{}, true},
		{"shorter than a command", header(25, 1, 0, mongoOpMsg), mongoHeader{}, true},
		{"OP_COMPRESSED first", header(100, 1, 0, 2012), mongoHeader{}, true},
		{"a reply", header(100, 1, 0, mongoOpReply), mongoHeader{}, true},
		{"responseTo set", header(100, 1, 5, mongoOpMsg), mongoHeader{}, true},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHo"), mongoHeader{}, true},
		{"short", hello[:15], mongoHeader{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMongoHeader(tt.in)
			if tt.wantErr {
				if !errors.Is(err, errNotMongo) {
					t.Errorf("got %+v, %v; want errNotMongo", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMongoCommandName(t *testing.T) {
	hello := mongoDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "$db", Value: "admin"}})
	isMaster := mongoDoc(t, bson.D{{Key: "isMaster", Value: 1}, {Key: "client", Value: bson.D{{Key: "driver", Value: "x"}}}})
	insert := mongoDoc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "d"}})
	empty := mongoDoc(t, bson.D{})
	body := func(msg []byte) []byte { return msg[mongoHeaderLen:] }
	tests := []struct {
		name   string
		opCode int32
		body   []byte
		want   string // "" for an error
	}{
		{"OP_MSG", mongoOpMsg, body(buildOpMsg(1, hello, "", false)), "hello"},
		{"OP_MSG with checksum", mongoOpMsg, body(buildOpMsg(1, hello, "", true)), "hello"},
		{"OP_MSG sequence first", mongoOpMsg, body(buildOpMsg(1, insert, "documents", false)), "insert"},
		{"OP_QUERY", mongoOpQuery, body(buildOpQuery(1, "admin.$cmd", isMaster)), "isMaster"},
		{"empty command", mongoOpMsg, body(buildOpMsg(1, empty, "", false)), ""},
		{"truncated command", mongoOpMsg, body(buildOpMsg(1, hello, "", false))[:10], ""},
		{"no flags", mongoOpMsg, []byte{1, 2}, ""},
		{"unknown section kind", mongoOpMsg, append([]byte{0, 0, 0, 0, 2}, hello...), ""},
		{"sequence overruns", mongoOpMsg, []byte{0, 0, 0, 0, 1, 0xff, 0, 0, 0, 'x', 0}, ""},
		{"sequence size below 4", mongoOpMsg, []byte{0, 0, 0, 0, 1, 3, 0, 0, 0, 'x', 0}, ""},
		{"only a sequence", mongoOpMsg, []byte{0, 0, 0, 0, 1, 4, 0, 0, 0}, ""},
		{"checksum only", mongoOpMsg, []byte{1, 0, 0, 0}, ""},
		{"OP_QUERY unterminated name", mongoOpQuery, []byte{0, 0, 0, 0, 'a', 'b'}, ""},
		{"OP_QUERY no query", mongoOpQuery, []byte{0, 0, 0, 0, 'a', 0, 0, 0, 0, 0}, ""},
		{"document length lies", mongoOpMsg, append([]byte{0, 0, 0, 0, 0}, 0x40, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 0), ""},
		{"document not NUL-terminated", mongoOpMsg, append([]byte{0, 0, 0, 0, 0}, 12, 0, 0, 0, 0x10, 'a', 0, 1, 0, 0, 0, 1), ""},
		{"other opcode", 2012, body(buildOpMsg(1, hello, "", false)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mongoCommandName(tt.opCode, tt.body)
			if tt.want == "" {
				if err == nil {
					t.Errorf("got %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestReadMongoFirstMessage(t *testing.T) {
	hello := buildOpMsg(42, mongoDoc(t, bson.D{{Key: "hello", Value: 1}}), "", false)
	big := buildOpMsg(43, mongoDoc(t, bson.D{{Key: "hello", Value: 1}, {Key: "pad", Value: strings.Repeat("x", mongoMaxFirstMessage)}}), "", false)
	tests := []struct {
		name     string
		start    int // bytes of the message read before
		in       []byte
		wantID   int32
		wantCmd  string
		wantRead int // bytes read from the reader, at most
		wantErr  bool
	}{
		{"whole", 0, hello, 42, "hello", len(hello), false},
		{"three bytes read before", 3, hello, 42, "hello", len(hello) - 3, false},
		{"longer than the limit: header only", 0, big, 43, "", mongoHeaderLen, false},
		{"body cut short", 0, hello[:len(hello)-1], 0, "", len(hello), true},
		{"not MongoDB", 0, []byte("GET / HTTP/1.1\r\n\r\n"), 0, "", mongoHeaderLen, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in[tt.start:])
			h, cmd, err := readMongoFirstMessage(r, tt.in[:tt.start])
			if read := len(tt.in) - tt.start - r.Len(); read > tt.wantRead {
				t.Errorf("read %d bytes, want at most %d", read, tt.wantRead)
			}
			if tt.wantErr {
				if err == nil {
					t.Errorf("got %+v %q, want an error", h, cmd)
				}
				return
			}
			if err != nil || h.requestID != tt.wantID || cmd != tt.wantCmd {
				t.Errorf("got %+v %q %v, want request %d, command %q", h, cmd, err, tt.wantID, tt.wantCmd)
			}
		})
	}
}

// mongoErrorReply is a decoded leproxy error reply.
type mongoErrorReply struct {
	requestID, responseTo int32
	opCode                wiremessage.OpCode
	OK                    float64 `bson:"ok"`
	Errmsg                string  `bson:"errmsg"`
	Code                  int32   `bson:"code"`
	CodeName              string  `bson:"codeName"`
}

// decodeMongoReply decodes an OP_MSG or OP_REPLY holding one document with
// the driver's code.
func decodeMongoReply(t testing.TB, msg []byte) mongoErrorReply {
	t.Helper()
	length, reqID, respTo, op, rem, ok := wiremessage.ReadHeader(msg)
	if !ok || int(length) != len(msg) {
		t.Fatalf("reply header: length %d of %d bytes, ok %t", length, len(msg), ok)
	}
	var doc bsoncore.Document
	switch op {
	case wiremessage.OpMsg:
		flags, rem, ok := wiremessage.ReadMsgFlags(rem)
		if !ok || flags != 0 {
			t.Fatalf("OP_MSG flags %v, ok %t", flags, ok)
		}
		st, rem, ok := wiremessage.ReadMsgSectionType(rem)
		if !ok || st != wiremessage.SingleDocument {
			t.Fatalf("OP_MSG section %v, ok %t", st, ok)
		}
		doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem)
		if !ok || len(rem) != 0 {
			t.Fatalf("OP_MSG document ok %t, %d bytes after it", ok, len(rem))
		}
	case wiremessage.OpReply:
		var n int32
		var cursor int64
		_, rem, _ = wiremessage.ReadReplyFlags(rem)
		cursor, rem, _ = wiremessage.ReadReplyCursorID(rem)
		_, rem, _ = wiremessage.ReadReplyStartingFrom(rem)
		n, rem, ok = wiremessage.ReadReplyNumberReturned(rem)
		if !ok || n != 1 || cursor != 0 {
			t.Fatalf("OP_REPLY returns %d documents, cursor %d", n, cursor)
		}
		doc, rem, ok = wiremessage.ReadReplyDocument(rem)
		if !ok || len(rem) != 0 {
			t.Fatalf("OP_REPLY document ok %t, %d bytes after it", ok, len(rem))
		}
	default:
		t.Fatalf("reply opcode %v", op)
	}
	if err := doc.Validate(); err != nil {
		t.Fatalf("reply document: %v", err)
	}
	var r mongoErrorReply
	if err := bson.Unmarshal(doc, &r); err != nil {
		t.Fatalf("reply document: %v", err)
	}
	r.requestID, r.responseTo, r.opCode = reqID, respTo, op
	return r
}

func TestAppendMongoError(t *testing.T) {
	tests := []struct {
		name     string
		req      mongoHeader
		code     int32
		msg      string
		wantOp   wiremessage.OpCode
		wantName string
		wantMsg  string
	}{
		{"OP_MSG", mongoHeader{requestID: 5, opCode: mongoOpMsg}, mongoCodeUnauthorized, "TLS is required", wiremessage.OpMsg, "Unauthorized", "TLS is required"},
		{"OP_QUERY gets OP_REPLY", mongoHeader{requestID: -9, opCode: mongoOpQuery}, mongoCodeHostNotFound, "no route", wiremessage.OpReply, "HostNotFound", "no route"},
		{"unreachable", mongoHeader{requestID: 1, opCode: mongoOpMsg}, mongoCodeHostUnreachable, "down", wiremessage.OpMsg, "HostUnreachable", "down"},
		{"NUL and bad UTF-8 cleaned", mongoHeader{requestID: 1, opCode: mongoOpMsg}, mongoCodeHostNotFound, "a\x00b\xffc", wiremessage.OpMsg, "HostNotFound", "ab\uFFFDc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("kept")
			b := appendMongoError(bytes.Clone(prefix), tt.req, 77, tt.code, tt.msg)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("dst's bytes were overwritten: %q", b[:4])
			}
			got := decodeMongoReply(t, b[len(prefix):])
			if got.requestID != 77 || got.responseTo != tt.req.requestID || got.opCode != tt.wantOp {
				t.Errorf("header: got id %d, responseTo %d, %v; want 77, %d, %v", got.requestID, got.responseTo, got.opCode, tt.req.requestID, tt.wantOp)
			}
			if got.OK != 0 || got.Code != tt.code || got.CodeName != tt.wantName || got.Errmsg != tt.wantMsg {
				t.Errorf("document: got %+v, want ok 0, code %d %s, errmsg %q", got, tt.code, tt.wantName, tt.wantMsg)
			}
		})
	}
}

func FuzzMongoFirstMessage(f *testing.F) {
	f.Add(buildOpMsg(1, mongoDoc(f, bson.D{{Key: "hello", Value: 1}}), "", false))
	f.Add(buildOpMsg(2, mongoDoc(f, bson.D{{Key: "insert", Value: "c"}}), "documents", true))
	f.Add(buildOpQuery(3, "admin.$cmd", mongoDoc(f, bson.D{{Key: "isMaster", Value: 1}})))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, cmd, err := readMongoFirstMessage(r, nil)
		if read := len(data) - r.Len(); read > mongoHeaderLen+mongoMaxFirstMessage {
			t.Fatalf("read %d bytes", read)
		}
		if err == nil {
			if h.length < mongoHeaderLen || h.length > mongoMaxMessage || (h.opCode != mongoOpMsg && h.opCode != mongoOpQuery) {
				t.Fatalf("accepted header %+v", h)
			}
			if strings.IndexByte(cmd, 0) >= 0 {
				t.Fatalf("command name %q holds a NUL", cmd)
			}
			// Whatever it was, the answer is a well-formed reply.
			got := decodeMongoReply(t, appendMongoError(nil, h, 1, mongoCodeUnauthorized, cmd))
			if got.responseTo != h.requestID {
				t.Fatalf("reply to %d answers %d", h.requestID, got.responseTo)
			}
		}
		for _, op := range []int32{mongoOpMsg, mongoOpQuery} {
			if name, err := mongoCommandName(op, data); err == nil && strings.IndexByte(name, 0) >= 0 {
				t.Fatalf("command name %q holds a NUL", name)
			}
		}
		io.Copy(io.Discard, r)
	})
}
