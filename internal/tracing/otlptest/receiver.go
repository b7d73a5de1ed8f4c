// Package otlptest is test support for tracing: an in-process OTLP
// receiver, over HTTP (protobuf, as a collector's /v1/traces takes it) or
// gRPC, that decodes what an exporter sends into plain Span values.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// maxRequest bounds one export request's body.
const maxRequest = 32 << 20

// A Span is one exported span, decoded.
type Span struct {
	Resource     map[string]any // the resource's attributes
	Scope        string         // the instrumentation scope's name
	TraceID      string         // hex
	SpanID       string         // hex
	ParentSpanID string         // hex; "" for a root span
	TraceState   string
	Name         string
	Kind         tracepb.Span_SpanKind
	Start, End   time.Time
	// Attrs are the span's attributes: string, int64, float64, bool,
	// []any, map[string]any or []byte values.
	Attrs         map[string]any
	Events        []Event
	StatusCode    tracepb.Status_StatusCode
	StatusMessage string
}

// An Event is a span event.
type Event struct {
	Name  string
	Attrs map[string]any
}

// A Receiver collects the spans exported to it. Safe for concurrent use.
type Receiver struct {
	// URL is the base URL of an HTTP receiver (http://127.0.0.1:port),
	// for OTEL_EXPORTER_OTLP_ENDPOINT; Addr is host:port of either kind.
	URL, Addr string

	mu      sync.Mutex
	spans   []Span
	headers []http.Header // of each export request (gRPC metadata too)
}

// StartHTTP starts an OTLP/HTTP receiver on 127.0.0.1, stopped when the
// test ends. It accepts POST /v1/traces with a protobuf body, gzipped or
// not.
func StartHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	r.URL, r.Addr = srv.URL, srv.Listener.Addr().String()
	return r
}

// StartGRPC starts an OTLP/gRPC receiver (plaintext) on 127.0.0.1,
// stopped when the test ends.
func StartGRPC(t testing.TB) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlptest: %v", err)
	}
	r := &Receiver{Addr: l.Addr().String()}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxRequest))
	coltracepb.RegisterTraceServiceServer(srv, grpcService{r: r})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return r
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "not an OTLP traces endpoint", http.StatusNotFound)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "content type "+ct+": want application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = io.LimitReader(req.Body, maxRequest)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxRequest)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(&msg, req.Header.Clone())
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

type grpcService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s grpcService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	h := http.Header{}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for k, vv := range md {
			for _, v := range vv {
				h.Add(k, v)
			}
		}
	}
	s.r.add(req, h)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) add(msg *coltracepb.ExportTraceServiceRequest, h http.Header) {
	var spans []Span
	for _, rs := range msg.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					Resource:      res,
					Scope:         ss.GetScope().GetName(),
					TraceID:       hex.EncodeToString(s.GetTraceId()),
					SpanID:        hex.EncodeToString(s.GetSpanId()),
					ParentSpanID:  hex.EncodeToString(s.GetParentSpanId()),
					TraceState:    s.GetTraceState(),
					Name:          s.GetName(),
					Kind:          s.GetKind(),
					Start:         time.Unix(0, int64(s.GetStartTimeUnixNano())), // #nosec G115 -- nanoseconds since 1970 fit int64 until 2262
					End:           time.Unix(0, int64(s.GetEndTimeUnixNano())),   // #nosec G115 -- as above
					Attrs:         attrMap(s.GetAttributes()),
					StatusCode:    s.GetStatus().GetCode(),
					StatusMessage: s.GetStatus().GetMessage(),
				}
				for _, e := range s.GetEvents() {
					sp.Events = append(sp.Events, Event{Name: e.GetName(), Attrs: attrMap(e.GetAttributes())})
				}
				spans = append(spans, sp)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, spans...)
	r.headers = append(r.headers, h)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = anyValue(kv.GetValue())
	}
	return m
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrMap(x.KvlistValue.GetValues())
	}
	return nil
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Headers returns the HTTP headers (or gRPC metadata) of each export
// request so far.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

// WaitFor polls the spans received until ok says they are what the test
// waits for, and returns them; after 20 s it fails the test, naming what.
func (r *Receiver) WaitFor(t testing.TB, what string, ok func([]Span) bool) []Span {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		spans := r.Spans()
		if ok(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("otlptest: no %s after 20s; received:\n%s", what, Dump(spans))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Dump formats spans for a test's failure message.
func Dump(spans []Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q kind=%v trace=%s span=%s parent=%s status=%v %q attrs=%v events=%v\n",
			s.Scope, s.Name, s.Kind, s.TraceID, s.SpanID, s.ParentSpanID, s.StatusCode, s.StatusMessage, s.Attrs, s.Events)
	}
	return b.String()
}
