package cassandra

import (
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

func TestOptions(t *testing.T) {
	if got := dbproxy.OptionKeys("cassandra"); len(got) != 2 || got[0] != optMaxFrame || got[1] != optMaxResponseFrame {
		t.Errorf("OptionKeys(cassandra) = %q, want max_frame, max_response_frame", got)
	}
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"16MiB", true}, {"1024", true}, {"2GiB", false}, {"1023", false}, {"big", false},
	} {
		if err := dbproxy.CheckOption("cql", optMaxFrame, tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckOption(max_frame, %q) = %v, want ok %t", tc.value, err, tc.ok)
		}
	}
	p := New(Options{}).(*protocol)
	if err := p.SetOptions(map[string]string{optMaxFrame: "1KiB"}); err != nil {
		t.Fatal(err)
	}
	if got := *p.opts.Load(); got.MaxFrame != 1024 || got.MaxResponseFrame != DefaultMaxResponseFrame {
		t.Errorf("limits after SetOptions = %+v, want max_frame 1024 and the default response limit", got)
	}
	if err := p.SetOptions(map[string]string{optMaxResponseFrame: "x"}); err == nil {
		t.Error("SetOptions with a bad value succeeded")
	}
	if err := p.SetOptions(nil); err != nil || *p.opts.Load() != (Options{DefaultMaxFrame, DefaultMaxResponseFrame}) {
		t.Errorf("SetOptions(nil) = %v, limits %+v; want the defaults", err, *p.opts.Load())
	}
}
