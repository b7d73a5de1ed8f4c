package kafka

import (
	"testing"

	"github.com/leproxy/leproxy/dbproxy"
)

func TestOptions(t *testing.T) {
	if got := dbproxy.OptionKeys("kafka"); len(got) != 2 || got[0] != optMaxRequest || got[1] != optMaxResponse {
		t.Errorf("OptionKeys(kafka) = %q, want max_request, max_response", got)
	}
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"1MiB", true}, {"64", true}, {"2GiB", false}, {"63", false}, {"lots", false}, {"0", false},
	} {
		if err := dbproxy.CheckOption("kafka", optMaxResponse, tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckOption(max_response, %q) = %v, want ok %t", tc.value, err, tc.ok)
		}
	}
	p := newProtocol()
	if err := p.SetOptions(map[string]string{optMaxResponse: "2MiB"}); err != nil {
		t.Fatal(err)
	}
	if got := *p.limits.Load(); got.maxResponse != 2<<20 || got.maxRequest != DefaultMaxRequest {
		t.Errorf("limits after SetOptions = %+v, want max_response 2 MiB and the default max_request", got)
	}
	if err := p.SetOptions(map[string]string{optMaxRequest: "nope"}); err == nil {
		t.Error("SetOptions with a bad value succeeded")
	}
	if got := *p.limits.Load(); got.maxResponse != 2<<20 {
		t.Errorf("a failed SetOptions changed the limits to %+v", got)
	}
	if err := p.SetOptions(nil); err != nil || *p.limits.Load() != (frameLimits{DefaultMaxRequest, DefaultMaxResponse}) {
		t.Errorf("SetOptions(nil) = %v, limits %+v; want the defaults", err, *p.limits.Load())
	}
}
