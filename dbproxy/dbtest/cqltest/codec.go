package cqltest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The fake's own CQL codec, written apart from the proxy's parser so that
// a misreading in one shows up as a failure in the other.

// Opcodes.
const (
	OpError        = 0x00
	OpStartup      = 0x01
	OpReady        = 0x02
	OpAuthenticate = 0x03
	OpOptions      = 0x05
	OpSupported    = 0x06
	OpQuery        = 0x07
	OpResult       = 0x08
	OpPrepare      = 0x09
	OpExecute      = 0x0a
	OpRegister     = 0x0b
	OpEvent        = 0x0c
	OpAuthResponse = 0x0f
	OpAuthSuccess  = 0x10
)

// Frame is one CQL frame.
type Frame struct {
	Version byte // with 0x80 for a response
	Flags   byte
	Stream  int16
	Opcode  byte
	Body    []byte
}

// MaxBody bounds the body the fake reads.
const MaxBody = 1 << 20

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (Frame, error) {
	var h [9]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(h[5:])
	if n > MaxBody {
		return Frame{}, fmt.Errorf("cqltest: body of %d bytes", n)
	}
	f := Frame{Version: h[0], Flags: h[1], Stream: int16(binary.BigEndian.Uint16(h[2:])), Opcode: h[4], Body: make([]byte, n)}
	if _, err := io.ReadFull(r, f.Body); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// Bytes encodes the frame.
func (f Frame) Bytes() []byte {
	b := []byte{f.Version, f.Flags, byte(uint16(f.Stream) >> 8), byte(f.Stream), f.Opcode, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], uint32(len(f.Body)))
	return append(b, f.Body...)
}

// enc builds a body.
type enc struct{ b []byte }

func (e *enc) int(v int32)   { e.b = binary.BigEndian.AppendUint32(e.b, uint32(v)) }
func (e *enc) short(v int)   { e.b = binary.BigEndian.AppendUint16(e.b, uint16(v)) }
func (e *enc) str(s string)  { e.short(len(s)); e.b = append(e.b, s...) }
func (e *enc) long(s string) { e.int(int32(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(v []byte) {
	if v == nil {
		e.int(-1)
		return
	}
	e.int(int32(len(v)))
	e.b = append(e.b, v...)
}

func (e *enc) strList(l []string) {
	e.short(len(l))
	for _, s := range l {
		e.str(s)
	}
}

// dec reads a body; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) n(k int) []byte {
	if d.err != nil || k < 0 || k > len(d.b) {
		d.err = errors.New("cqltest: short body")
		return nil
	}
	v := d.b[:k]
	d.b = d.b[k:]
	return v
}

func (d *dec) short() int {
	v := d.n(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (d *dec) int() int32 {
	v := d.n(4)
	if v == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(v))
}

func (d *dec) str() string  { return string(d.n(d.short())) }
func (d *dec) long() string { return string(d.n(int(d.int()))) }
func (d *dec) bytes() []byte {
	n := d.int()
	if n < 0 {
		return nil
	}
	return d.n(int(n))
}

// errorBody is an ERROR's body.
func errorBody(code int32, msg string) []byte {
	e := &enc{}
	e.int(code)
	e.str(msg)
	return e.b
}

// CQL type ids.
const (
	typeBlob    = 0x0003
	typeInt     = 0x0009
	typeUUID    = 0x000c
	typeVarchar = 0x000d
	typeInet    = 0x0010
	typeSet     = 0x0022
)

// Column is a result column: its name and type (a set's element type is
// varchar).
type Column struct {
	Name string
	Type int
}

// rowsBody is a RESULT of kind Rows for keyspace.table with cols and rows
// (each value already encoded, nil for null); noMeta sends NO_METADATA.
func rowsBody(keyspace, table string, cols []Column, rows [][][]byte, noMeta bool) []byte {
	e := &enc{}
	e.int(2)
	if noMeta {
		e.int(0x0004)
		e.int(int32(len(cols)))
	} else {
		appendMetadata(e, keyspace, table, cols)
	}
	e.int(int32(len(rows)))
	for _, r := range rows {
		for _, v := range r {
			e.bytes(v)
		}
	}
	return e.b
}

func appendMetadata(e *enc, keyspace, table string, cols []Column) {
	e.int(0x0001) // global table spec
	e.int(int32(len(cols)))
	e.str(keyspace)
	e.str(table)
	for _, c := range cols {
		e.str(c.Name)
		e.short(c.Type)
		if c.Type == typeSet {
			e.short(typeVarchar)
		}
	}
}

// ParsedRows is a Rows result as the fake's codec reads it.
type ParsedRows struct {
	Keyspace, Table string
	Columns         []Column
	Rows            [][][]byte
}

// ParseRows reads a RESULT body of kind Rows with a global table spec
// and simple column types (and sets of varchar).
func ParseRows(body []byte) (ParsedRows, error) {
	d := &dec{b: body}
	if k := d.int(); k != 2 {
		return ParsedRows{}, fmt.Errorf("cqltest: result kind %d, want rows", k)
	}
	flags := d.int()
	n := int(d.int())
	if flags&0x0002 != 0 {
		d.bytes()
	}
	if flags&0x0004 != 0 {
		return ParsedRows{}, errors.New("cqltest: rows without metadata")
	}
	if flags&0x0001 == 0 {
		return ParsedRows{}, errors.New("cqltest: rows without a global table spec")
	}
	var p ParsedRows
	p.Keyspace, p.Table = d.str(), d.str()
	for i := 0; i < n && d.err == nil; i++ {
		c := Column{Name: d.str(), Type: d.short()}
		if c.Type == typeSet {
			d.short()
		}
		p.Columns = append(p.Columns, c)
	}
	rows := int(d.int())
	for i := 0; i < rows && d.err == nil; i++ {
		row := make([][]byte, n)
		for j := range row {
			row[j] = d.bytes()
		}
		p.Rows = append(p.Rows, row)
	}
	if d.err == nil && len(d.b) != 0 {
		return p, fmt.Errorf("cqltest: %d bytes after the rows", len(d.b))
	}
	return p, d.err
}

// Value returns row's value of column name, and whether there is such a
// column.
func (p ParsedRows) Value(row int, name string) ([]byte, bool) {
	for j, c := range p.Columns {
		if c.Name == name {
			return p.Rows[row][j], true
		}
	}
	return nil, false
}
