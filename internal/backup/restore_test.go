package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		// prepare creates what is at the cache path before the restore
		// and returns the directory whose content must end up restored.
		prepare func(t *testing.T, cache string) string
		seams   func(t *testing.T)
	}{
		{
			name:    "missing cache directory",
			prepare: func(t *testing.T, cache string) string { return cache },
		},
		{
			name: "missing parent directories",
			prepare: func(t *testing.T, cache string) string {
				return cache
			},
		},
		{
			name: "existing cache replaced",
			prepare: func(t *testing.T, cache string) string {
				makeCache(t, cache, otherCache)
				return cache
			},
		},
		{
			name: "existing empty cache",
			prepare: func(t *testing.T, cache string) string {
				makeCache(t, cache, nil)
				return cache
			},
		},
		{
			name: "symbolic link to the cache kept",
			prepare: func(t *testing.T, cache string) string {
				real := makeCache(t, filepath.Join(t.TempDir(), "private", "leproxy"), otherCache)
				if err := os.Symlink(real, cache); err != nil {
					t.Fatal(err)
				}
				return real
			},
		},
		{
			name: "renames when exchange is unsupported",
			prepare: func(t *testing.T, cache string) string {
				makeCache(t, cache, otherCache)
				return cache
			},
			seams: func(t *testing.T) {
				setSeam(t, &exchange, func(a, b string) error { return errExchangeUnsupported })
			},
		},
		{
			name: "in place when the cache is a mount point",
			prepare: func(t *testing.T, cache string) string {
				makeCache(t, cache, otherCache)
				return cache
			},
			seams: func(t *testing.T) {
				setSeam(t, &isMountPoint, func(string) (bool, error) { return true, nil })
			},
		},
		{
			name: "in place when renaming the cache fails with EBUSY",
			prepare: func(t *testing.T, cache string) string {
				makeCache(t, cache, otherCache)
				return cache
			},
			seams: func(t *testing.T) {
				setSeam(t, &exchange, func(a, b string) error {
					return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: syscall.EBUSY}
				})
			},
		},
	}
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
	want := snapshot(t, src)
	archive := filepath.Join(t.TempDir(), "cache.lpb")
	if err := WriteFile(archive, src, testPassphrase); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if fi, err := os.Stat(archive); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600", fi.Mode().Perm())
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			cache := filepath.Join(parent, "leproxy")
			if tt.name == "missing parent directories" {
				parent = filepath.Join(parent, "a", "b")
				cache = filepath.Join(parent, "leproxy")
			}
			real := tt.prepare(t, cache)
			if tt.seams != nil {
				tt.seams(t)
			}
			if err := RestoreFile(archive, cache, testPassphrase); err != nil {
				t.Fatalf("RestoreFile: %v", err)
			}
			expectSnapshot(t, real, want)
			expectOnly(t, parent, "leproxy") // no staging or old directory left
			if real != cache {
				if fi, err := os.Lstat(cache); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("cache path is no longer a symbolic link: %v, %v", fi, err)
				}
				expectOnly(t, filepath.Dir(real), "leproxy")
			}
		})
	}
}

func TestRestoreTwice(t *testing.T) {
	// A second restore of another archive replaces the first completely.
	a := archiveOf(t, accountCache)
	b := archiveOf(t, otherCache)
	want := snapshot(t, makeCache(t, filepath.Join(t.TempDir(), "want"), otherCache))
	cache := filepath.Join(t.TempDir(), "leproxy")
	for i, archive := range [][]byte{a, b} {
		if err := Restore(bytes.NewReader(archive), cache, testPassphrase); err != nil {
			t.Fatalf("Restore %d: %v", i, err)
		}
	}
	expectSnapshot(t, cache, want)
}

func TestRestoreOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing file owners needs root")
	}
	const uid, gid = 54321, 54322
	for _, mount := range []bool{false, true} {
		t.Run(fmt.Sprintf("mount point %v", mount), func(t *testing.T) {
			setSeam(t, &isMountPoint, func(string) (bool, error) { return mount, nil })
			cache := makeCache(t, filepath.Join(t.TempDir(), "leproxy"), otherCache)
			if err := os.Chown(cache, uid, gid); err != nil {
				t.Fatal(err)
			}
			if err := Restore(bytes.NewReader(archiveOf(t, accountCache)), cache, testPassphrase); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			err := filepath.Walk(cache, func(p string, info os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				if p == cache && mount {
					return nil // the mount point itself is not recreated
				}
				st := info.Sys().(*syscall.Stat_t)
				if st.Uid != uid || st.Gid != gid {
					t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRestoreRefused checks that every bad archive is refused with its
// error, leaving the cache byte for byte as it was and no file behind.
func TestRestoreRefused(t *testing.T) {
	valid := archiveOf(t, accountCache)
	withVersion := bytes.Clone(valid)
	withVersion[len(magic)] = 2
	hugeN := bytes.Clone(valid)
	hugeN[len(magic)+1], hugeN[len(magic)+2] = 40, 8
	hugeLen := bytes.Clone(valid)
	copy(hugeLen[headerSize-8:], []byte{0, 0, 0, 0, 0x10, 0, 0, 0})
	tests := []struct {
		name       string
		archive    []byte
		passphrase string // the right one when empty
		want       error
		wantText   string
	}{
		{name: "wrong passphrase", archive: valid, passphrase: "Correct horse battery staple", want: ErrCorrupted,
			wantText: "backup: wrong passphrase or corrupted archive"},
		{name: "empty file", archive: nil, want: ErrTruncated, wantText: "backup: truncated archive"},
		{name: "not a backup", archive: []byte("-----BEGIN CERTIFICATE-----\n"), want: ErrNotBackup,
			wantText: "backup: not a leproxy backup"},
		{name: "short and not a backup", archive: []byte("LEPROXY-X"), want: ErrNotBackup},
		{name: "unsupported version", archive: withVersion, want: ErrUnsupportedVersion,
			wantText: "backup: unsupported version 2"},
		{name: "scrypt N=2^40", archive: hugeN, want: ErrUnsupportedParams},
		{name: "length beyond the limit", archive: hugeLen, want: ErrTooLarge},
		{name: "trailing data", archive: append(bytes.Clone(valid), 0), want: ErrCorrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
			before := snapshot(t, cache)
			passphrase := testPassphrase
			if tt.passphrase != "" {
				passphrase = []byte(tt.passphrase)
			}
			err := Restore(bytes.NewReader(tt.archive), cache, passphrase)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.wantText) {
				t.Errorf("got message %q, want it to start with %q", err, tt.wantText)
			}
			expectSnapshot(t, cache, before)
			expectOnly(t, parent, "leproxy")
		})
	}
}

func TestRestoreRefusedMissingCache(t *testing.T) {
	// A refused restore into a missing cache directory creates nothing.
	parent := t.TempDir()
	cache := filepath.Join(parent, "leproxy")
	archive := sealTar(t, rawTar(t, regular("ok", 0o600, "x"), regular("../evil", 0o600, "x")))
	if err := Restore(bytes.NewReader(archive), cache, testPassphrase); !errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("got error %v, want %v", err, ErrInvalidArchive)
	}
	expectOnly(t, parent)
}

func TestRestoreTruncated(t *testing.T) {
	valid := archiveOf(t, accountCache)
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)
	offsets := []int{0, 1, len(magic) - 1, len(magic), len(magic) + 1, 20, headerSize - 1, headerSize,
		headerSize + 1, headerSize + 100, len(valid) / 2, len(valid) - overhead, len(valid) - 1}
	for _, n := range offsets {
		err := Restore(bytes.NewReader(valid[:n]), cache, testPassphrase)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("truncated to %d of %d bytes: got error %v, want %v", n, len(valid), err, ErrTruncated)
		}
	}
	expectSnapshot(t, cache, before)
	expectOnly(t, parent, "leproxy")
}

func TestRestoreAlteredByte(t *testing.T) {
	valid := archiveOf(t, accountCache)
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)

	const (
		versionAt = len(magic)
		paramsAt  = versionAt + 1
		saltAt    = paramsAt + 3
		lengthAt  = headerSize - 8
	)
	// Every header byte, a spread of ciphertext bytes, and the whole tag.
	var offsets []int
	for i := 0; i < headerSize; i++ {
		offsets = append(offsets, i)
	}
	for i := headerSize; i < len(valid)-overhead; i += 97 {
		offsets = append(offsets, i)
	}
	for i := len(valid) - overhead; i < len(valid); i++ {
		offsets = append(offsets, i)
	}
	for _, off := range offsets {
		var allowed []error
		switch {
		case off < versionAt:
			allowed = []error{ErrNotBackup}
		case off == versionAt:
			allowed = []error{ErrUnsupportedVersion}
		case off < saltAt:
			allowed = []error{ErrUnsupportedParams, ErrCorrupted}
		case off >= lengthAt && off < headerSize:
			allowed = []error{ErrTruncated, ErrTooLarge, ErrCorrupted}
		default: // salt, nonce, ciphertext, tag
			allowed = []error{ErrCorrupted}
		}
		for _, mask := range []byte{0x01, 0x80} {
			altered := bytes.Clone(valid)
			altered[off] ^= mask
			err := Restore(bytes.NewReader(altered), cache, testPassphrase)
			if !isOneOf(err, allowed) {
				t.Errorf("byte %d of %d ^ %#x: got error %v, want one of %v", off, len(valid), mask, err, allowed)
			}
		}
	}
	expectSnapshot(t, cache, before)
	expectOnly(t, parent, "leproxy")
}

func isOneOf(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// TestRestoreMaliciousEntries feeds validly encrypted archives with
// entries that must be refused.
func TestRestoreMaliciousEntries(t *testing.T) {
	valid := rawTar(t, directory("local-ca/", 0o700), regular("local-ca/root.pem", 0o644, "root"))
	tests := []struct {
		name    string
		tarData []byte
	}{
		{"absolute path", rawTar(t, regular("/tmp/evil", 0o600, "x"))},
		{"parent directory", rawTar(t, regular("../evil", 0o600, "x"))},
		{"parent inside path", rawTar(t, regular("a/../../evil", 0o600, "x"))},
		{"unclean path", rawTar(t, regular("a/../b", 0o600, "x"))},
		{"dot slash", rawTar(t, regular("./a", 0o600, "x"))},
		{"double slash", rawTar(t, regular("a//b", 0o600, "x"))},
		{"dot", rawTar(t, directory("./", 0o700))},
		{"empty name", rawTar(t, regular("", 0o600, "x"))},
		{"symbolic link", rawTar(t, rawEntry{h: tarHeader('2', "link", "/etc/passwd")})},
		{"symbolic link then file through it", rawTar(t,
			rawEntry{h: tarHeader('2', "d", "/tmp")}, regular("d/evil", 0o600, "x"))},
		{"hard link", rawTar(t, rawEntry{h: tarHeader('1', "link", "/etc/passwd")})},
		{"character device", rawTar(t, rawEntry{h: tarHeader('3', "dev", "")})},
		{"named pipe", rawTar(t, rawEntry{h: tarHeader('6', "fifo", "")})},
		{"duplicate file", rawTar(t, regular("a", 0o600, "1"), regular("a", 0o600, "2"))},
		{"duplicate directory", rawTar(t, directory("d/", 0o700), directory("d/", 0o755))},
		{"file inside a file", rawTar(t, regular("a", 0o600, "1"), regular("a/b", 0o600, "2"))},
		{"file over a directory", rawTar(t, regular("a/b", 0o600, "1"), regular("a", 0o600, "2"))},
		{"reserved name", rawTar(t, regular(".leproxy-old-1", 0o600, "x"))},
		{"setuid mode", rawTar(t, regular("a", 0o104755|0o1000000, "x"))},
		{"sparse file", sparseTar(t)},
		{"truncated tar", valid[:700]},
		{"not tar", bytes.Repeat([]byte("garbage!"), 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
			before := snapshot(t, cache)
			err := Restore(bytes.NewReader(sealTar(t, tt.tarData)), cache, testPassphrase)
			if !errors.Is(err, ErrInvalidArchive) {
				t.Fatalf("got error %v, want %v", err, ErrInvalidArchive)
			}
			expectSnapshot(t, cache, before)
			expectOnly(t, parent, "leproxy")
		})
	}
	t.Run("valid control", func(t *testing.T) {
		cache := filepath.Join(t.TempDir(), "leproxy")
		if err := Restore(bytes.NewReader(sealTar(t, valid)), cache, testPassphrase); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	})
}

// sparseTar returns a PAX 1.0 sparse file claiming a terabyte of holes,
// which archive/tar reads as a TypeReg entry of that size. archive/tar
// cannot write one, so the PAX header block is patched by hand.
func sparseTar(t *testing.T) []byte {
	t.Helper()
	var records string
	for _, kv := range []string{"GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=a", "GNU.sparse.realsize=1099511627776"} {
		n := len(kv) + 4 // "NN " + kv + "\n", NN two digits
		records += fmt.Sprintf("%d %s\n", n, kv)
	}
	data := rawTar(t,
		regular("PaxHeaders/a", 0o600, records),
		regular("GNUSparseFile.0/a", 0o600, "1\n0\n0\n"+strings.Repeat("\x00", 506)))
	block := data[:512]
	block[156] = 'x' // typeflag: PAX extended header for the next entry
	copy(block[148:156], "        ")
	sum := 0
	for _, b := range block {
		sum += int(b)
	}
	copy(block[148:156], fmt.Sprintf("%06o\x00 ", sum))
	// Check the construction: archive/tar must see a sparse regular file.
	tr := tar.NewReader(bytes.NewReader(data))
	h, err := tr.Next()
	if err != nil || h.Typeflag != tar.TypeReg || h.Size != 1<<40 {
		t.Fatalf("sparse tar reads as %+v, %v; want a TypeReg of 1 TiB", h, err)
	}
	return data
}

func tarHeader(typ byte, name, link string) tar.Header {
	return tar.Header{Typeflag: typ, Name: name, Linkname: link, Mode: 0o644}
}

// TestRestoreSwapFailure makes the final renames fail and checks that the
// old cache is back in place, unchanged, with nothing left over.
func TestRestoreSwapFailure(t *testing.T) {
	archive := archiveOf(t, accountCache)
	tests := []struct {
		name  string
		mount bool
		// failAt is the rename call (counting from 1) that fails.
		failAt int
	}{
		{name: "moving the old cache aside", failAt: 1},
		{name: "moving the new cache into place", failAt: 2},
		{name: "in place, first old entry", mount: true, failAt: 1},
		{name: "in place, an old entry", mount: true, failAt: 3},
		{name: "in place, first new entry", mount: true, failAt: 5},
		{name: "in place, last new entry", mount: true, failAt: 4 + 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setSeam(t, &exchange, func(a, b string) error { return errExchangeUnsupported })
			setSeam(t, &isMountPoint, func(string) (bool, error) { return tt.mount, nil })
			calls := 0
			setSeam(t, &rename, func(from, to string) error {
				calls++
				if calls == tt.failAt {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: syscall.EIO}
				}
				return os.Rename(from, to)
			})
			parent := t.TempDir()
			cache := makeCache(t, filepath.Join(parent, "leproxy"), append(slicesClone(otherCache),
				testFile{name: "fourth", mode: 0o600, data: "4"}))
			before := snapshot(t, cache)
			err := Restore(bytes.NewReader(archive), cache, testPassphrase)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("got error %v, want the injected EIO", err)
			}
			if calls < tt.failAt {
				t.Fatalf("rename called %d times, the test wants call %d to fail", calls, tt.failAt)
			}
			expectSnapshot(t, cache, before)
			expectOnly(t, parent, "leproxy")
		})
	}
}

func slicesClone(f []testFile) []testFile { return append([]testFile(nil), f...) }

func TestRestoreNotADirectory(t *testing.T) {
	parent := t.TempDir()
	cache := filepath.Join(parent, "leproxy")
	if err := os.WriteFile(cache, []byte("a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Restore(bytes.NewReader(archiveOf(t, accountCache)), cache, testPassphrase)
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("got error %v, want one saying it is not a directory", err)
	}
	if data, err := os.ReadFile(cache); err != nil || string(data) != "a file" {
		t.Errorf("the file at the cache path changed: %q, %v", data, err)
	}
	expectOnly(t, parent, "leproxy")
}

// setSeam replaces *p with v for the duration of the test.
func setSeam[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}
