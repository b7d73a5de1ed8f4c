package httpproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/leproxy/leproxy/internal/config"
	"github.com/leproxy/leproxy/internal/tracing"
	"github.com/leproxy/leproxy/internal/tracing/otlptest"
)

// Trace context the tests' clients send.
const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientState   = "vendor=opaque1,other=2"
)

// Secrets the tests' clients and backends send, which no span may carry.
const (
	secretQuery  = "token=q-s3cret"
	secretBearer = "Bearer b-s3cret"
	secretCookie = "session=c-s3cret"
	secretSetCk  = "sid=sc-s3cret"
)

// startTracer returns a tracing Provider exporting over OTLP/HTTP to a
// new in-process receiver.
func startTracer(t *testing.T) (*tracing.Provider, *otlptest.Receiver) {
	t.Helper()
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_HEADERS"} {
		t.Setenv(k, "")
	}
	r := otlptest.StartHTTP(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: export at once, not every 5 s
	p, err := tracing.New(t.Context(), tracing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p, r
}

// secretBackend is an echoHandler that also sets a secret cookie.
func secretBackend() http.Handler {
	echo := echoHandler("b")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", secretSetCk)
		echo.ServeHTTP(w, r)
	})
}

// tracedGet sends a GET of path to the proxy with the secret headers and,
// when traceparent is set, that trace context.
func tracedGet(t *testing.T, c *http.Client, rawURL, traceparent string) (*http.Response, string) {
	t.Helper()
	hdr := http.Header{
		"Host":          {"a.example.test"},
		"Authorization": {secretBearer},
		"Cookie":        {secretCookie},
		"User-Agent":    {"trace-test/1.0"},
	}
	if traceparent != "" {
		hdr.Set("Traceparent", traceparent)
		hdr.Set("Tracestate", clientState)
	}
	return do(t, c, rawURL, hdr)
}

// spanPair waits for the server span and the client span of one trace.
func spanPair(t *testing.T, r *otlptest.Receiver, traceID string) (server, client otlptest.Span) {
	t.Helper()
	spans := r.WaitFor(t, "server and client span of trace "+traceID, func(spans []otlptest.Span) bool {
		n := 0
		for _, s := range spans {
			if s.TraceID == traceID {
				n++
			}
		}
		return n == 2
	})
	for _, s := range spans {
		if s.TraceID != traceID {
			continue
		}
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = s
		case tracepb.Span_SPAN_KIND_CLIENT:
			client = s
		}
	}
	if server.SpanID == "" || client.SpanID == "" {
		t.Fatalf("trace %s: want a server and a client span, got:\n%s", traceID, otlptest.Dump(spans))
	}
	return server, client
}

func wantAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := s.Attrs[k]; !ok || got != v {
			t.Errorf("%v span: %s = %#v, want %#v", s.Kind, k, got, v)
		}
	}
	for k, v := range s.Attrs {
		if _, ok := want[k]; !ok {
			t.Errorf("%v span: unexpected attribute %s = %#v", s.Kind, k, v)
		}
	}
}

// noSecrets fails if any span's name, attributes, events or status hold a
// secret or part of the query.
func noSecrets(t *testing.T, spans []otlptest.Span) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.Name, s.StatusMessage, fmt.Sprint(s.Attrs), fmt.Sprint(s.Resource)}
		for _, e := range s.Events {
			texts = append(texts, e.Name, fmt.Sprint(e.Attrs))
		}
		for _, text := range texts {
			for _, secret := range []string{"s3cret", "token", "?", "Bearer", "session="} {
				if strings.Contains(text, secret) {
					t.Errorf("%v span %q carries %q: %s", s.Kind, s.Name, secret, text)
				}
			}
		}
	}
}

func portOf(t *testing.T, addr string) int64 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}

// TestTracingContinuesTrace sends a request with a sampled W3C trace
// context and checks that leproxy's server span continues it, that its
// client span is the server span's child, that the backend receives the
// client span as its parent with the client's tracestate, the attributes
// of both spans exactly, and that no span holds the query, the
// Authorization or Cookie header or the backend's Set-Cookie.
func TestTracingContinuesTrace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		h2      bool
		version string
	}{{"HTTP/1.1", false, "1.1"}, {"HTTP/2", true, "2"}} {
		t.Run(tc.name, func(t *testing.T) {
			p, rcv := startTracer(t)
			backend := startBackend(t, secretBackend())
			h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Tracer: p.Tracer()})
			srv, c := serve(t, h, false, tc.h2)
			resp, body := tracedGet(t, c, "https://a.example.test/p/x%3Fy?"+secretQuery,
				"00-"+clientTraceID+"-"+clientSpanID+"-01")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d %q", resp.StatusCode, body)
			}
			if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[tc.h2] {
				t.Fatalf("client spoke %s", resp.Proto)
			}
			got := decodeEcho(t, body)
			server, client := spanPair(t, rcv, clientTraceID)

			if want := "00-" + clientTraceID + "-" + client.SpanID + "-01"; got.Header.Get("Traceparent") != want {
				t.Errorf("backend got traceparent %q, want %q (leproxy's client span as parent)", got.Header.Get("Traceparent"), want)
			}
			if got.Header.Get("Tracestate") != clientState {
				t.Errorf("backend got tracestate %q, want %q", got.Header.Get("Tracestate"), clientState)
			}
			if server.ParentSpanID != clientSpanID {
				t.Errorf("server span's parent %q, want the client's %s", server.ParentSpanID, clientSpanID)
			}
			if client.ParentSpanID != server.SpanID {
				t.Errorf("client span's parent %q, want the server span %s", client.ParentSpanID, server.SpanID)
			}
			if server.TraceState != clientState {
				t.Errorf("server span's tracestate %q, want %q", server.TraceState, clientState)
			}
			if server.Name != "GET" || client.Name != "GET" {
				t.Errorf("span names %q and %q, want GET", server.Name, client.Name)
			}
			if server.Scope != "github.com/leproxy/leproxy" {
				t.Errorf("scope %q", server.Scope)
			}
			wantAttrs(t, server, map[string]any{
				"http.request.method":       "GET",
				"url.path":                  "/p/x%3Fy",
				"url.scheme":                "https",
				"http.response.status_code": int64(200),
				"server.address":            "a.example.test",
				"server.port":               portOf(t, srv.Listener.Addr().String()),
				"network.protocol.version":  tc.version,
				"client.address":            "127.0.0.1",
				"user_agent.original":       "trace-test/1.0",
			})
			backendAddr := backend.Listener.Addr().String()
			wantAttrs(t, client, map[string]any{
				"http.request.method":       "GET",
				"server.address":            "127.0.0.1",
				"server.port":               portOf(t, backendAddr),
				"url.full":                  "http://" + backendAddr + "/p/x%3Fy",
				"http.response.status_code": int64(200),
				"network.protocol.version":  "1.1",
			})
			for _, s := range []otlptest.Span{server, client} {
				if s.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
					t.Errorf("%v span of a 200 has error status", s.Kind)
				}
				if !s.Start.Before(s.End) {
					t.Errorf("%v span from %v to %v", s.Kind, s.Start, s.End)
				}
			}
			if client.Start.Before(server.Start) || client.End.After(server.End) {
				t.Error("the client span is not within the server span")
			}
			noSecrets(t, rcv.Spans())
		})
	}
}

// TestTracingStartsTrace checks that a request without trace context gets
// a new trace, which the backend joins.
func TestTracingStartsTrace(t *testing.T) {
	p, rcv := startTracer(t)
	backend := startBackend(t, secretBackend())
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Tracer: p.Tracer()})
	_, c := serve(t, h, false, false)
	_, body := tracedGet(t, c, "https://a.example.test/?"+secretQuery, "")
	got := decodeEcho(t, body)
	parts := strings.Split(got.Header.Get("Traceparent"), "-")
	if len(parts) != 4 || parts[0] != "00" || parts[3] != "01" {
		t.Fatalf("backend got traceparent %q, want a sampled one", got.Header.Get("Traceparent"))
	}
	server, client := spanPair(t, rcv, parts[1])
	if server.ParentSpanID != "" {
		t.Errorf("server span has parent %q, want a root span", server.ParentSpanID)
	}
	if parts[2] != client.SpanID {
		t.Errorf("backend's parent %s, want the client span %s", parts[2], client.SpanID)
	}
	if got.Header.Get("Tracestate") != "" {
		t.Errorf("backend got tracestate %q for a new trace", got.Header.Get("Tracestate"))
	}
	noSecrets(t, rcv.Spans())
}

// TestTracingFollowsUnsampledParent checks the default sampler,
// parentbased_always_on: a client's unsampled trace is not exported, and
// the backend is told it is not sampled; a sampled one sent after it is.
func TestTracingFollowsUnsampledParent(t *testing.T) {
	p, rcv := startTracer(t)
	backend := startBackend(t, secretBackend())
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Tracer: p.Tracer()})
	_, c := serve(t, h, false, false)
	const unsampled = "0af7651916cd43dd8448eb211c80319c"
	_, body := tracedGet(t, c, "https://a.example.test/", "00-"+unsampled+"-b7ad6b7169203331-00")
	tp := decodeEcho(t, body).Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-"+unsampled+"-") || !strings.HasSuffix(tp, "-00") || strings.Contains(tp, "b7ad6b7169203331") {
		t.Errorf("backend got traceparent %q, want trace %s unsampled with leproxy's span as parent", tp, unsampled)
	}
	tracedGet(t, c, "https://a.example.test/", "00-"+clientTraceID+"-"+clientSpanID+"-01")
	spanPair(t, rcv, clientTraceID)
	if err := p.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, s := range rcv.Spans() {
		if s.TraceID == unsampled {
			t.Errorf("exported a span of the unsampled trace: %+v", s)
		}
	}
}

// TestTracingBackendDown checks a 502: error.type and an error status on
// both spans, and the error's text (which names the backend URL) nowhere.
func TestTracingBackendDown(t *testing.T) {
	p, rcv := startTracer(t)
	backend := startBackend(t, secretBackend())
	host := tcpHost("a.example.test", backend)
	backend.Close()
	h := mustNew(t, []config.Host{host}, Options{Tracer: p.Tracer()})
	_, c := serve(t, h, false, false)
	resp, _ := tracedGet(t, c, "https://a.example.test/down?"+secretQuery, "00-"+clientTraceID+"-"+clientSpanID+"-01")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	server, client := spanPair(t, rcv, clientTraceID)
	if server.Attrs["error.type"] != "502" || server.Attrs["http.response.status_code"] != int64(502) {
		t.Errorf("server span attributes %v, want error.type 502 and status 502", server.Attrs)
	}
	if client.Attrs["error.type"] != "*net.OpError" {
		t.Errorf("client span error.type %v, want *net.OpError", client.Attrs["error.type"])
	}
	if _, ok := client.Attrs["http.response.status_code"]; ok {
		t.Error("client span has a status code for a round trip that got no response")
	}
	for _, s := range []otlptest.Span{server, client} {
		if s.StatusCode != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("%v span status %v, want error", s.Kind, s.StatusCode)
		}
		if strings.Contains(s.StatusMessage, "refused") || len(s.Events) > 0 {
			t.Errorf("%v span records the error's text: %q %v", s.Kind, s.StatusMessage, s.Events)
		}
	}
	noSecrets(t, rcv.Spans())
}

// TestTracingUnknownHost checks that a refused request still has its
// server span, and no client span.
func TestTracingUnknownHost(t *testing.T) {
	p, rcv := startTracer(t)
	backend := startBackend(t, secretBackend())
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{Tracer: p.Tracer()})
	_, c := serve(t, h, false, false)
	resp, _ := do(t, c, "https://other.example.test/", http.Header{
		"Host": {"other.example.test"}, "Traceparent": {"00-" + clientTraceID + "-" + clientSpanID + "-01"},
	})
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	rcv.WaitFor(t, "the server span", func(s []otlptest.Span) bool { return len(s) > 0 })
	if err := p.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 || spans[0].Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("got:\n%s\nwant one server span", otlptest.Dump(spans))
	}
	s := spans[0]
	if s.Attrs["http.response.status_code"] != int64(404) || s.Attrs["server.address"] != "other.example.test" {
		t.Errorf("attributes %v", s.Attrs)
	}
	if _, ok := s.Attrs["error.type"]; ok || s.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
		t.Error("a 404 is an error on the server span; the conventions say only 5xx")
	}
}

// TestTracingOffPassesTraceHeaders checks that without a Tracer the
// client's traceparent and tracestate reach the backend untouched.
func TestTracingOffPassesTraceHeaders(t *testing.T) {
	backend := startBackend(t, secretBackend())
	h := mustNew(t, []config.Host{tcpHost("a.example.test", backend)}, Options{})
	_, c := serve(t, h, false, false)
	tp := "00-" + clientTraceID + "-" + clientSpanID + "-01"
	_, body := tracedGet(t, c, "https://a.example.test/", tp)
	got := decodeEcho(t, body)
	if got.Header.Get("Traceparent") != tp || got.Header.Get("Tracestate") != clientState {
		t.Errorf("backend got traceparent %q tracestate %q, want %q and %q untouched",
			got.Header.Get("Traceparent"), got.Header.Get("Tracestate"), tp, clientState)
	}
}

// TestTracedWebsocket checks that a websocket upgrade still works inside
// a server span (Hijack through the status writer) and that both spans
// report 101.
func TestTracedWebsocket(t *testing.T) {
	p, rcv := startTracer(t)
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err == nil {
			c.Write(r.Context(), typ, append([]byte("echo "), msg...))
		}
		c.Read(r.Context()) // until the client closes
	}))
	h := mustNew(t, []config.Host{tcpHost("ws.example.test", backend)}, Options{Tracer: p.Tracer()})
	_, client := serve(t, h, false, false)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://ws.example.test/socket", &websocket.DialOptions{
		HTTPClient: client,
		HTTPHeader: http.Header{"Traceparent": {"00-" + clientTraceID + "-" + clientSpanID + "-01"}},
	})
	if err != nil {
		t.Fatalf("dialing through the proxy: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "echo hi" {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	server, cl := spanPair(t, rcv, clientTraceID)
	if server.Attrs["http.response.status_code"] != int64(101) || cl.Attrs["http.response.status_code"] != int64(101) {
		t.Errorf("status codes %v and %v, want 101", server.Attrs["http.response.status_code"], cl.Attrs["http.response.status_code"])
	}
}
