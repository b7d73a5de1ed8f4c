package tracing

import (
	"context"
	"net"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/leproxy/leproxy/dbproxy"
)

// Attributes of a tcp session span that the semantic conventions have no
// name for.
const (
	AttrRoute      = attribute.Key("leproxy.route")               // the route's host
	AttrBackend    = attribute.Key("leproxy.backend")             // the route's backend address
	AttrServerName = attribute.Key("leproxy.session.server_name") // the client's TLS server name (SNI)
	AttrBytesIn    = attribute.Key("leproxy.session.bytes_in")    // client → backend
	AttrBytesOut   = attribute.Key("leproxy.session.bytes_out")   // backend → client
	AttrClosedBy   = attribute.Key("leproxy.session.closed_by")   // dbproxy.End.By
	AttrEndReason  = attribute.Key("leproxy.session.end_reason")  // dbproxy.End.Reason
)

// SessionObserver returns the dbproxy.SessionObserver that makes one span
// per tcp session, or nil when tracing is off.
func (p *Provider) SessionObserver() dbproxy.SessionObserver {
	if p == nil {
		return nil
	}
	return SessionSpans(p.tracer)
}

// SessionSpans returns a dbproxy.SessionObserver making, with tracer, one
// server span per session, named "<protocol> session", from the accept to
// the end: the protocol (network.protocol.name), client.address and
// client.port, server.port (the listener's), server.address and the
// route, the backend, the bytes each way, who ended the session and how,
// and, when it failed, error.type (the End's reason) and an error status.
// The session's error text is not recorded: it may quote what the client
// or the backend sent. Nothing of the traffic is (startup packets, user
// names, passwords, queries).
func SessionSpans(tracer trace.Tracer) dbproxy.SessionObserver {
	return sessionSpans{tracer}
}

type sessionSpans struct{ tracer trace.Tracer }

// SessionStarted implements dbproxy.SessionObserver.
func (ss sessionSpans) SessionStarted(st dbproxy.SessionStart) func(dbproxy.SessionSummary) {
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs, semconv.NetworkTransportTCP, semconv.NetworkProtocolName(st.Protocol))
	if host, port, ok := hostPort(st.Client); ok {
		attrs = append(attrs, semconv.ClientAddress(host), semconv.ClientPort(port))
	}
	if _, port, ok := hostPort(st.Listener); ok {
		attrs = append(attrs, semconv.ServerPort(port))
	}
	_, span := ss.tracer.Start(context.Background(), st.Protocol+" session",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(st.Time),
		trace.WithAttributes(attrs...))
	return func(sum dbproxy.SessionSummary) {
		attrs := make([]attribute.KeyValue, 0, 8)
		if sum.Route != "" {
			attrs = append(attrs, semconv.ServerAddress(sum.Route), AttrRoute.String(sum.Route), AttrBackend.String(sum.Backend))
		}
		if sum.ServerName != "" {
			attrs = append(attrs, AttrServerName.String(sum.ServerName))
		}
		attrs = append(attrs,
			AttrBytesIn.Int64(sum.BytesIn),
			AttrBytesOut.Int64(sum.BytesOut),
			AttrClosedBy.String(sum.End.By),
			AttrEndReason.String(sum.End.Reason))
		if sum.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(sum.End.Reason))
			span.SetStatus(codes.Error, sum.End.By+": "+sum.End.Reason)
		}
		span.SetAttributes(attrs...)
		span.End(trace.WithTimestamp(sum.Time))
	}
}

// hostPort splits a TCP address into its host and port.
func hostPort(a net.Addr) (string, int, bool) {
	switch a := a.(type) {
	case nil:
		return "", 0, false
	case *net.TCPAddr:
		return a.IP.String(), a.Port, true
	}
	host, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.Atoi(p)
	return host, port, err == nil
}
