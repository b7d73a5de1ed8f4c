package kafka

import (
	"fmt"

	"github.com/leproxy/leproxy/internal/bytesize"
)

// Listener options (keys of a kafka listener in the mapping).
const (
	optMaxRequest  = "max_request"  // a client's request frame; default DefaultMaxRequest
	optMaxResponse = "max_response" // a response read whole to be rewritten; default DefaultMaxResponse
)

// maxFrameOption bounds what the options may set: Kafka's frame length is
// a signed 32-bit integer.
const maxFrameOption = 1<<31 - 1

// OptionKeys implements dbproxy.Optioner: max_request and max_response.
func (*protocol) OptionKeys() []string { return []string{optMaxRequest, optMaxResponse} }

// CheckOption implements dbproxy.Optioner: both are byte counts.
func (*protocol) CheckOption(key, value string) error {
	_, err := frameOption(value)
	return err
}

// SetOptions implements dbproxy.Optioner; sessions that begin later use
// the new limits.
func (p *protocol) SetOptions(opts map[string]string) error {
	lim := frameLimits{maxRequest: DefaultMaxRequest, maxResponse: DefaultMaxResponse}
	for key, dst := range map[string]*int{optMaxRequest: &lim.maxRequest, optMaxResponse: &lim.maxResponse} {
		v, ok := opts[key]
		if !ok {
			continue
		}
		n, err := frameOption(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		*dst = n
	}
	p.limits.Store(&lim)
	return nil
}

func frameOption(value string) (int, error) {
	n, err := bytesize.Parse(value)
	if err != nil {
		return 0, err
	}
	if n > maxFrameOption {
		return 0, fmt.Errorf("at most %d bytes (a Kafka frame's length is a 32-bit integer)", maxFrameOption)
	}
	if n < 64 {
		return 0, fmt.Errorf("at least 64 bytes")
	}
	return int(n), nil
}
