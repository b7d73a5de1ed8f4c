package cassandra

import (
	"encoding/binary"
	"errors"
)

// errShort is the error of a body that ends inside a value.
var errShort = errors.New("body ends inside a value")

// reader decodes the CQL notation ([int], [short], [string], [bytes],
// [option]…) from a frame body. Every length is checked against what is
// left before anything is sliced; the first error sticks and every later
// read returns zero values.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// take returns the next n bytes.
func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.fail(errShort)
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

func (r *reader) byte() byte {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) short() int {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) int() int32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(b)) // #nosec G115 -- [int] is a signed 32-bit field
}

func (r *reader) string() string { return string(r.take(r.short())) }

func (r *reader) longString() []byte {
	n := r.int()
	if n < 0 {
		r.fail(errors.New("negative [long string] length"))
		return nil
	}
	return r.take(int(n))
}

// bytes reads a [bytes]; nil with ok false for null (a negative length).
func (r *reader) bytes() (v []byte, null bool) {
	n := r.int()
	if n < 0 {
		return nil, true
	}
	return r.take(int(n)), false
}

func (r *reader) stringList() []string {
	n := r.short()
	var out []string
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.string())
	}
	return out
}

func (r *reader) skipBytesMap() {
	n := r.short()
	for i := 0; i < n && r.err == nil; i++ {
		r.string()
		r.bytes()
	}
}

// maxOptionDepth bounds the nesting of [option] types (list of map of
// tuple…), so that a hostile body cannot recurse without end.
const maxOptionDepth = 32

// option reads an [option] type and returns its id.
func (r *reader) option(depth int) int {
	if depth > maxOptionDepth {
		r.fail(errors.New("type options nested too deep"))
		return 0
	}
	id := r.short()
	switch id {
	case 0x0000: // custom: the class name
		r.string()
	case 0x0020, 0x0022: // list, set
		r.option(depth + 1)
	case 0x0021: // map
		r.option(depth + 1)
		r.option(depth + 1)
	case 0x0030: // UDT: keyspace, name, fields
		r.string()
		r.string()
		n := r.short()
		for i := 0; i < n && r.err == nil; i++ {
			r.string()
			r.option(depth + 1)
		}
	case 0x0031: // tuple
		n := r.short()
		for i := 0; i < n && r.err == nil; i++ {
			r.option(depth + 1)
		}
	}
	return id
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	v := r.b[r.off:]
	r.off = len(r.b)
	return v
}

// skipResponsePrefix skips what a response's header flags put before
// its message: the tracing id, the warnings, the custom payload, in that
// order.
func (r *reader) skipResponsePrefix(flags byte) {
	if flags&flagTracing != 0 {
		r.take(16)
	}
	if flags&flagWarning != 0 {
		r.stringList()
	}
	if flags&flagPayload != 0 {
		r.skipBytesMap()
	}
}
