package backup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"
)

// Backups written before leproxy moved to the age format (see age.go) are
// in this format; Restore still reads them, Write no longer writes them.
//
// The archive layout, version 1. All of the header is the additional data
// of the AEAD, so that changing any header byte fails authentication.
//
//	offset size
//	0      14   magic "LEPROXY-BACKUP"
//	14     1    format version (1)
//	15     1    scrypt log2(N)
//	16     1    scrypt r
//	17     1    scrypt p
//	18     16   scrypt salt
//	34     24   XChaCha20-Poly1305 nonce
//	58     8    ciphertext length, big endian (tar length + 16)
//	66          ciphertext: the tar stream sealed with the scrypt key
const (
	magic         = "LEPROXY-BACKUP"
	version1      = 1
	saltSize      = 16
	headerSize    = len(magic) + 1 + 3 + saltSize + chacha20poly1305.NonceSizeX + 8
	overhead      = chacha20poly1305.Overhead
	maxCiphertext = MaxSize + overhead
)

// kdfParams are scrypt's cost parameters: N = 1<<logN.
type kdfParams struct {
	logN, r, p uint8
}

func (k kdfParams) String() string {
	return fmt.Sprintf("N=2^%d r=%d p=%d", k.logN, k.r, k.p)
}

// Bounds on the scrypt parameters that Restore accepts in a version 1 archive, checked before the
// key is derived so that a header cannot make Restore allocate or compute
// without limit: memory is 128*N*r bytes, time is proportional to N*r*p.
var (
	maxKDFMemory = uint64(1) << 21 // N*r: 256 MiB
	maxKDFWork   = uint64(1) << 22 // N*r*p: four times what version 1 wrote (N=2^17 r=8 p=1)
)

// check reports whether Restore accepts k.
func (k kdfParams) check() error {
	if k.logN < 1 || k.logN > 40 || k.r < 1 || k.p < 1 {
		return fmt.Errorf("%w %s", ErrUnsupportedParams, k)
	}
	mem := uint64(1) << k.logN * uint64(k.r)
	if mem > maxKDFMemory || mem*uint64(k.p) > maxKDFWork {
		return fmt.Errorf("%w %s: above the accepted cost", ErrUnsupportedParams, k)
	}
	return nil
}

// header is a parsed archive header.
type header struct {
	params kdfParams
	salt   [saltSize]byte
	nonce  [chacha20poly1305.NonceSizeX]byte
	ctLen  uint64
}

// readHeader reads and checks a header from r. It returns the raw bytes as
// well, the additional data of the AEAD.
func readHeader(r io.Reader) (*header, []byte, error) {
	raw := make([]byte, headerSize)
	prefix := len(magic) + 1
	n, err := io.ReadFull(r, raw[:prefix])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, nil, fmt.Errorf("backup: reading header: %w", err)
	}
	if m := min(n, len(magic)); !bytes.Equal(raw[:m], []byte(magic)[:m]) {
		return nil, nil, ErrNotBackup
	}
	if n < prefix {
		return nil, nil, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTruncated, n, headerSize)
	}
	if v := raw[len(magic)]; v != version1 {
		return nil, nil, fmt.Errorf("%w %d (this leproxy reads version %d)", ErrUnsupportedVersion, v, version1)
	}
	m, err := io.ReadFull(r, raw[prefix:])
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return nil, nil, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrTruncated, prefix+m, headerSize)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("backup: reading header: %w", err)
	}
	h := new(header)
	rest := raw[prefix:]
	h.params = kdfParams{logN: rest[0], r: rest[1], p: rest[2]}
	rest = rest[3:]
	rest = rest[copy(h.salt[:], rest):]
	rest = rest[copy(h.nonce[:], rest):]
	h.ctLen = binary.BigEndian.Uint64(rest)
	if err := h.params.check(); err != nil {
		return nil, nil, err
	}
	if h.ctLen < overhead {
		return nil, nil, fmt.Errorf("%w: ciphertext length %d is below the minimum %d", ErrCorrupted, h.ctLen, overhead)
	}
	if h.ctLen > maxCiphertext {
		return nil, nil, fmt.Errorf("%w: header says %d bytes", ErrTooLarge, h.ctLen-overhead)
	}
	return h, raw, nil
}

// deriveKey returns the AEAD key for passphrase under p and salt.
func deriveKey(passphrase []byte, p kdfParams, salt []byte) ([]byte, error) {
	key, err := scrypt.Key(passphrase, salt, 1<<p.logN, int(p.r), int(p.p), chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("backup: deriving key: %w", err)
	}
	return key, nil
}

// openV1 reads a complete version 1 archive from r, checks its header and
// length before deriving the key, authenticates it and returns the
// plaintext.
func openV1(r io.Reader, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, ErrNoPassphrase
	}
	h, hdr, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	// Read one byte past the declared length to see trailing data; the
	// buffer grows with what is actually read, not with the header's claim.
	ct, err := io.ReadAll(io.LimitReader(r, int64(h.ctLen)+1))
	if err != nil {
		return nil, fmt.Errorf("backup: reading archive: %w", err)
	}
	switch n := uint64(len(ct)); {
	case n < h.ctLen:
		return nil, fmt.Errorf("%w: %d of %d bytes", ErrTruncated, uint64(headerSize)+n, uint64(headerSize)+h.ctLen)
	case n > h.ctLen:
		return nil, fmt.Errorf("%w: data after the end of the archive", ErrCorrupted)
	}
	key, err := deriveKey(passphrase, h.params, h.salt[:])
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("backup: creating cipher: %w", err)
	}
	plaintext, err := aead.Open(ct[:0], h.nonce[:], ct, hdr)
	if err != nil {
		return nil, ErrCorrupted
	}
	return plaintext, nil
}
