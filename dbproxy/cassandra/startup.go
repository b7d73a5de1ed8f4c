package cassandra

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// errVersionRefused is startup's error for a client that closed after
// leproxy refused its protocol version: a negotiation, not a failure.
var errVersionRefused = errors.New("protocol version refused")

// startupState is what the exchange before STARTUP leaves the relay:
// the protocol version and the bytes each side sent past it.
type startupState struct {
	opts    Options // the listener's limits when the session began
	proto   byte
	client  frameReader
	backend frameReader
}

// maxRetries bounds the frames of unsupported versions one connection
// is answered before it is closed.
const maxRetries = 8

// startup runs the exchange before STARTUP on the client connection c
// and the backend b; see the package documentation. It tells the client
// why it is refused, in an ERROR frame, before it returns an error.
func (p *protocol) startup(c, b net.Conn) (*startupState, error) {
	st := &startupState{opts: *p.opts.Load(), client: frameReader{r: c}, backend: frameReader{r: b}}
	refuse := func(h header, proto byte, code uint32, msg string, err error) (*startupState, error) {
		c.Write(errorFrame(proto, h.stream, code, msg))
		return nil, err
	}
	for retries := 0; ; {
		if err := st.client.need(headerLen); err != nil {
			if retries > 0 && errors.Is(err, io.EOF) {
				// Refused a version, the client went to try the
				// next one on a new connection: leproxy's business.
				return nil, errVersionRefused
			}
			return nil, fmt.Errorf("reading the client's first frame: %w", err)
		}
		h := parseHeader(st.client.peek(headerLen))
		v := h.proto()
		if v < 3 || v > 4 || h.version&responseBit != 0 {
			// What a node says to a version it does not speak, in that
			// version when it knows its framing, so that the driver
			// tries the next one down.
			proto := byte(4)
			if v == 3 || v == 5 {
				proto = v
			}
			retries++
			if retries > maxRetries || h.length > st.opts.MaxFrame {
				return refuse(h, proto, errProtocol, "too many frames of unsupported versions", errors.New("unsupported protocol version"))
			}
			c.Write(errorFrame(proto, h.stream, errProtocol,
				fmt.Sprintf("Invalid or unsupported protocol version (%d); supported versions are (3/v3, 4/v4)", v)))
			if err := st.client.need(headerLen + int(h.length)); err != nil {
				return nil, fmt.Errorf("reading a frame of protocol version %d: %w", v, err)
			}
			st.client.discard(headerLen + int(h.length))
			continue
		}
		if h.length > st.opts.MaxFrame {
			return refuse(h, v, errProtocol, fmt.Sprintf("frame of %d bytes exceeds leproxy's limit of %d", h.length, st.opts.MaxFrame), errFrameTooLarge)
		}
		if h.flags&flagCompression != 0 {
			return refuse(h, v, errProtocol, "compressed frame before STARTUP", errors.New("compressed frame before STARTUP"))
		}
		n := headerLen + int(h.length)
		if err := st.client.need(n); err != nil {
			return nil, fmt.Errorf("reading the client's frame: %w", err)
		}
		frame := st.client.peek(n)
		switch h.opcode {
		case opOptions:
			if _, err := b.Write(frame); err != nil {
				return refuse(h, v, errOverloaded, "could not write to the backend", fmt.Errorf("passing OPTIONS: %w", err))
			}
			st.client.discard(n)
			if err := p.supportedAnswer(st, c, v); err != nil {
				return refuse(h, v, errServer, "the backend's answer to OPTIONS could not be read", err)
			}
		case opStartup:
			r := &reader{b: frame[headerLen:]}
			if h.flags&flagPayload != 0 {
				r.skipBytesMap()
			}
			opts := map[string]string{}
			for i, n := 0, r.short(); i < n && r.err == nil; i++ {
				k := r.string()
				opts[k] = r.string()
			}
			if r.err != nil {
				return refuse(h, v, errProtocol, "malformed STARTUP", fmt.Errorf("reading STARTUP: %w", r.err))
			}
			if comp, ok := opts["COMPRESSION"]; ok && comp != "" {
				return refuse(h, v, errProtocol, "compression "+comp+" is not supported through leproxy", errors.New("STARTUP asked for compression "+comp))
			}
			if _, err := b.Write(frame); err != nil {
				return refuse(h, v, errOverloaded, "could not write to the backend", fmt.Errorf("passing STARTUP: %w", err))
			}
			st.client.discard(n)
			st.proto = v
			return st, nil
		default:
			return refuse(h, v, errProtocol, fmt.Sprintf("unexpected opcode %#02x before STARTUP", h.opcode), fmt.Errorf("opcode %#02x before STARTUP", h.opcode))
		}
	}
}

// supportedAnswer passes the backend's answer to OPTIONS to the client,
// COMPRESSION taken out of a SUPPORTED.
func (p *protocol) supportedAnswer(st *startupState, c net.Conn, v byte) error {
	if err := st.backend.need(headerLen); err != nil {
		return fmt.Errorf("reading the backend's answer to OPTIONS: %w", err)
	}
	h := parseHeader(st.backend.peek(headerLen))
	if h.length > maxSmall {
		return fmt.Errorf("backend answer to OPTIONS: %w: %d bytes", errFrameTooLarge, h.length)
	}
	if h.proto() != v || h.version&responseBit == 0 {
		return fmt.Errorf("backend answered OPTIONS of version %d with version %#02x", v, h.version)
	}
	n := headerLen + int(h.length)
	if err := st.backend.need(n); err != nil {
		return fmt.Errorf("reading the backend's answer to OPTIONS: %w", err)
	}
	frame := st.backend.peek(n)
	out := frame
	if h.opcode == opSupported {
		body, err := supported(h.flags, frame[headerLen:])
		if err != nil {
			return err
		}
		out = appendFrame(nil, h, body)
	}
	st.backend.discard(n)
	_, err := c.Write(out)
	return err
}
