package cassandra

import (
	"fmt"

	"github.com/leproxy/leproxy/internal/bytesize"
)

// Listener options (keys of a cassandra listener in the mapping).
const (
	optMaxFrame         = "max_frame"          // Options.MaxFrame
	optMaxResponseFrame = "max_response_frame" // Options.MaxResponseFrame
)

// maxFrameOption bounds what the options may set: a CQL frame's length is
// a signed 32-bit integer.
const maxFrameOption = 1<<31 - 1

// OptionKeys implements dbproxy.Optioner: max_frame and max_response_frame.
func (*protocol) OptionKeys() []string { return []string{optMaxFrame, optMaxResponseFrame} }

// CheckOption implements dbproxy.Optioner: both are byte counts.
func (*protocol) CheckOption(key, value string) error {
	_, err := frameOption(value)
	return err
}

// SetOptions implements dbproxy.Optioner: a key left out takes New's
// value; sessions that begin later use the new limits.
func (p *protocol) SetOptions(opts map[string]string) error {
	o := p.base
	for key, dst := range map[string]*uint32{optMaxFrame: &o.MaxFrame, optMaxResponseFrame: &o.MaxResponseFrame} {
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
	p.opts.Store(&o)
	return nil
}

func frameOption(value string) (uint32, error) {
	n, err := bytesize.Parse(value)
	if err != nil {
		return 0, err
	}
	if n > maxFrameOption {
		return 0, fmt.Errorf("at most %d bytes (a CQL frame's length is a 32-bit integer)", maxFrameOption)
	}
	if n < 1024 {
		return 0, fmt.Errorf("at least 1024 bytes (a STARTUP frame must fit)")
	}
	return uint32(n), nil
}
