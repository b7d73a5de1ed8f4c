package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"filippo.io/age/armor"
	"github.com/leproxy/leproxy/internal/testenv"
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
	// The scrypt stanza names its work factor in clear: "-> scrypt SALT 4".
	costly := bytes.Replace(valid, []byte(fmt.Sprintf(" %d\n", writeWorkFactor)), []byte(" 19\n"), 1)
	if bytes.Equal(costly, valid) {
		t.Fatal("no scrypt work factor found in the header")
	}
	other := newIdentity(t)
	toOther := sealWith(t, other.recipientKey(t), rawTar(t, regular("ok", 0o600, "x")))
	tests := []struct {
		name     string
		archive  []byte
		key      *Key // testPassphrase when nil
		want     error
		wantText string
	}{
		{name: "wrong passphrase", archive: valid, key: Passphrase([]byte("Correct horse battery staple")), want: ErrCorrupted,
			wantText: "backup: wrong passphrase or corrupted archive"},
		{name: "identity of another recipient", archive: valid, key: other.Key, want: ErrCorrupted},
		{name: "passphrase for a file sealed to a recipient", archive: toOther, want: ErrCorrupted},
		{name: "recipient instead of identity", archive: toOther, key: other.recipientKey(t), want: nil,
			wantText: "backup: a recipient (age1...) only writes backups"},
		{name: "empty passphrase", archive: valid, key: Passphrase(nil), want: ErrNoPassphrase},
		{name: "empty file", archive: nil, want: ErrTruncated, wantText: "backup: truncated archive"},
		{name: "not a backup", archive: []byte("-----BEGIN CERTIFICATE-----\n"), want: ErrNotBackup,
			wantText: "backup: not a leproxy backup"},
		{name: "short and not a backup", archive: []byte("age-X"), want: ErrNotBackup},
		{name: "another age version", archive: bytes.Replace(valid, []byte("org/v1"), []byte("org/v2"), 1), want: ErrNotBackup},
		{name: "scrypt work factor 19", archive: costly, want: ErrUnsupportedParams},
		{name: "trailing data", archive: append(bytes.Clone(valid), 0), want: ErrCorrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
			before := snapshot(t, cache)
			key := testPassphrase
			if tt.key != nil {
				key = tt.key
			}
			err := Restore(bytes.NewReader(tt.archive), cache, key)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
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

// TestRestoreTooLarge feeds more than an archive can be: refused after
// reading at most maxArchive+1 bytes.
func TestRestoreTooLarge(t *testing.T) {
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)
	huge := &countingReader{r: io.MultiReader(bytes.NewReader(archiveOf(t, otherCache)), zeros{})}
	if err := Restore(huge, cache, testPassphrase); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got error %v, want %v", err, ErrTooLarge)
	}
	if huge.n > maxArchive+1 {
		t.Errorf("read %d bytes, want at most %d", huge.n, maxArchive+1)
	}
	expectSnapshot(t, cache, before)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestRestoreRecipient writes a backup with only a public key and restores
// it with the identity file, as an operator would keep it off the server.
func TestRestoreRecipient(t *testing.T) {
	id := newIdentity(t)
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
	var buf bytes.Buffer
	if err := Write(&buf, src, id.recipientKey(t)); err != nil {
		t.Fatalf("Write to a recipient: %v", err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte(ageMagic+"-> X25519 ")) {
		t.Errorf("archive starts %q, want an age header with an X25519 stanza", buf.Bytes()[:40])
	}
	cache := makeCache(t, filepath.Join(t.TempDir(), "leproxy"), otherCache)
	if err := Restore(bytes.NewReader(buf.Bytes()), cache, id.Key); err != nil {
		t.Fatalf("Restore with the identity: %v", err)
	}
	expectSnapshot(t, cache, snapshot(t, src))
}

// TestRestoreArmored restores an ASCII-armored age file (age -a).
func TestRestoreArmored(t *testing.T) {
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
	binary := archiveOf(t, accountCache)
	pt, err := open(bytes.NewReader(binary), testPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	if _, err := aw.Write(sealWith(t, testPassphrase, pt)); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "leproxy")
	if err := Restore(&buf, cache, testPassphrase); err != nil {
		t.Fatalf("Restore of an armored backup: %v", err)
	}
	expectSnapshot(t, cache, snapshot(t, src))
}

// TestAgeCLI checks the promise of the format: the age tool alone
// decrypts a backup, with the passphrase (typed on a terminal: script(1)
// gives age one) and with an identity file, and encrypts one that
// Restore reads.
func TestAgeCLI(t *testing.T) {
	ageBin := testenv.LookBinary(t, "age", "age")
	script := testenv.LookBinary(t, "script", "bsdutils")
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
	want := snapshot(t, src)
	dir := t.TempDir()

	untar := func(t *testing.T, tarFile string) {
		t.Helper()
		plaintext, err := os.ReadFile(tarFile)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := checkArchive(plaintext)
		if err != nil {
			t.Fatalf("age -d output is not the cache's tar stream: %v", err)
		}
		out := filepath.Join(t.TempDir(), "x")
		if err := installNew(plaintext, entries, out); err != nil {
			t.Fatal(err)
		}
		expectSnapshot(t, out, want)
	}

	t.Run("passphrase", func(t *testing.T) {
		archive := filepath.Join(dir, "cache.age")
		if err := WriteFile(archive, src, testPassphrase); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "cache.tar")
		cmd := exec.Command(script, "-qec", ageBin+" -d -o "+out+" "+archive, "/dev/null")
		cmd.Stdin = strings.NewReader(testPassphraseText + "\n")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("age -d: %v\n%s", err, b)
		}
		untar(t, out)
	})
	t.Run("identity", func(t *testing.T) {
		id := newIdentity(t)
		archive := filepath.Join(dir, "cache-x25519.age")
		if err := WriteFile(archive, src, id.recipientKey(t)); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "cache-x25519.tar")
		if b, err := exec.Command(ageBin, "-d", "-i", id.file, "-o", out, archive).CombinedOutput(); err != nil {
			t.Fatalf("age -d -i: %v\n%s", err, b)
		}
		untar(t, out)
	})
	t.Run("age -e to leproxy", func(t *testing.T) {
		id := newIdentity(t)
		plaintext, err := archiveDir(src)
		if err != nil {
			t.Fatal(err)
		}
		tarFile := filepath.Join(dir, "plain.tar")
		if err := os.WriteFile(tarFile, plaintext, 0o600); err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(dir, "by-age.age")
		if b, err := exec.Command(ageBin, "-e", "-a", "-r", id.recipient, "-o", archive, tarFile).CombinedOutput(); err != nil {
			t.Fatalf("age -e: %v\n%s", err, b)
		}
		cache := filepath.Join(t.TempDir(), "leproxy")
		if err := RestoreFile(archive, cache, id.Key); err != nil {
			t.Fatalf("Restore of what age -e -a wrote: %v", err)
		}
		expectSnapshot(t, cache, want)
	})
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
	headerEnd := bytes.Index(valid, []byte("\n--- ")) + 1
	payload := bytes.IndexByte(valid[headerEnd:], '\n') + headerEnd + 1
	offsets := []int{0, 1, len(ageMagic) - 1, len(ageMagic), len(ageMagic) + 1, headerEnd - 1, headerEnd, headerEnd + 5,
		payload - 1, payload, payload + 8, payload + 16, payload + 17, len(valid) / 2, len(valid) - 16, len(valid) - 1}
	for _, n := range offsets {
		err := Restore(bytes.NewReader(valid[:n]), cache, testPassphrase)
		if !isOneOf(err, []error{ErrTruncated, ErrCorrupted}) {
			t.Errorf("truncated to %d of %d bytes: got error %v, want %v", n, len(valid), err, ErrTruncated)
		}
	}
	// Cut inside the final chunk, the file looks corrupted; cut after the
	// payload's nonce or at a chunk boundary (a cache of more than one
	// 64 KiB chunk), age reports the missing end of the stream.
	big := archiveOf(t, append(slicesClone(accountCache), testFile{name: "big", mode: 0o600, data: strings.Repeat("x", 100<<10)}))
	bigPayload := bytes.Index(big, []byte("\n--- "))
	bigPayload += bytes.IndexByte(big[bigPayload+1:], '\n') + 2
	for _, n := range []int{bigPayload + 16, bigPayload + 16 + 64<<10 + 16} {
		if err := Restore(bytes.NewReader(big[:n]), cache, testPassphrase); !errors.Is(err, ErrTruncated) {
			t.Errorf("truncated to %d of %d bytes: got error %v, want %v", n, len(big), err, ErrTruncated)
		}
	}
	expectSnapshot(t, cache, before)
	expectOnly(t, parent, "leproxy")
}

// TestRestoreAlteredByte flips bits in every header byte and a spread of
// payload bytes: each altered archive is refused, and the cache unchanged.
func TestRestoreAlteredByte(t *testing.T) {
	valid := archiveOf(t, accountCache)
	parent := t.TempDir()
	cache := makeCache(t, filepath.Join(parent, "leproxy"), otherCache)
	before := snapshot(t, cache)
	payload := bytes.Index(valid, []byte("\n--- "))
	payload += bytes.IndexByte(valid[payload+1:], '\n') + 2

	var offsets []int
	for i := 0; i < payload; i++ {
		offsets = append(offsets, i)
	}
	for i := payload; i < len(valid); i += 97 {
		offsets = append(offsets, i)
	}
	for i := len(valid) - 16; i < len(valid); i++ {
		offsets = append(offsets, i)
	}
	for _, off := range offsets {
		allowed := []error{ErrCorrupted}
		switch {
		case off < len(ageMagic):
			allowed = []error{ErrNotBackup, ErrCorrupted}
		case off < payload:
			// A changed work factor or a line run on into the payload.
			allowed = []error{ErrCorrupted, ErrUnsupportedParams, ErrTruncated}
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

// TestWorkFactors checks that what Write uses in production, Restore
// accepts: 128 MiB to write, up to age -p's 256 MiB to read.
func TestWorkFactors(t *testing.T) {
	if productionWorkFactor != 17 || maxWorkFactor != 18 {
		t.Errorf("work factors: write %d, restore at most %d; want 17 and 18 as documented", productionWorkFactor, maxWorkFactor)
	}
}
