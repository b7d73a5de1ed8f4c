package dbproxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

// optProto is a Protocol that takes one option, "color", red or blue.
type optProto struct {
	mu  sync.Mutex
	set []map[string]string
}

func (*optProto) Name() string         { return "opttest" }
func (*optProto) ALPN() []string       { return nil }
func (*optProto) OptionKeys() []string { return []string{"color"} }
func (*optProto) CheckOption(key, value string) error {
	if value != "red" && value != "blue" {
		return errors.New("expected red or blue")
	}
	return nil
}
func (p *optProto) SetOptions(opts map[string]string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set = append(p.set, opts)
	return nil
}
func (*optProto) Handshake(context.Context, net.Conn, *dbproxy.Session) (net.Conn, net.Conn, error) {
	return nil, nil, errors.New("not served")
}

func init() {
	dbproxy.Register("opttest", func() dbproxy.Protocol { return &optProto{} })
}

func TestOptions(t *testing.T) {
	if got := dbproxy.OptionKeys("opttest"); len(got) != 1 || got[0] != "color" {
		t.Errorf("OptionKeys(opttest) = %q, want [color]", got)
	}
	if got := dbproxy.OptionKeys("nosuchprotocol"); got != nil {
		t.Errorf("OptionKeys of a protocol without options = %q, want nil", got)
	}
	if err := dbproxy.CheckOption("opttest", "color", "red"); err != nil {
		t.Errorf("CheckOption(color, red): %v", err)
	}
	if err := dbproxy.CheckOption("opttest", "color", "green"); err == nil || !strings.Contains(err.Error(), "red or blue") {
		t.Errorf("CheckOption(color, green) = %v, want the protocol's error", err)
	}
	if err := dbproxy.CheckOption("opttest", "size", "1"); err == nil {
		t.Error("CheckOption(size) accepted a key the protocol does not list")
	}

	p := &optProto{}
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("none") }
	cfg := dbproxy.Config{
		Listen: "127.0.0.1:0", Protocol: p, GetCertificate: getCert,
		Routes:  []dbproxy.Route{{Host: "a.test", Backend: "127.0.0.1:1"}},
		Options: map[string]string{"color": "red"},
	}
	srv, err := dbproxy.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.CheckOptions(map[string]string{"color": "green"}); err == nil {
		t.Error("CheckOptions accepted a bad value")
	}
	if err := srv.SetOptions(map[string]string{"color": "green"}); err == nil {
		t.Error("SetOptions accepted a bad value")
	}
	if err := srv.SetOptions(map[string]string{"color": "blue"}); err != nil {
		t.Errorf("SetOptions(blue): %v", err)
	}
	if len(p.set) != 2 || p.set[0]["color"] != "red" || p.set[1]["color"] != "blue" {
		t.Errorf("options applied: %v, want red then blue", p.set)
	}

	cfg.Protocol, cfg.Options = &optProto{}, map[string]string{"size": "1"}
	if _, err := dbproxy.New(cfg); err == nil || !strings.Contains(err.Error(), `no option "size"`) {
		t.Errorf("New with an unknown option: %v, want an error naming it", err)
	}
}
