package backup

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the archive reader: no panic, and
// never a plaintext without the right key.
func FuzzOpen(f *testing.F) {
	// Keep scrypt cheap for mutated work factors; TestRestoreRefused
	// checks the real bound.
	setFuzzSeam(f, &maxWorkFactor, 6)
	const want = "not a tar, but authenticated"
	valid, err := seal([]byte(want), testPassphrase)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(ageMagic)+20])
	f.Add([]byte{})
	f.Add([]byte(ageMagic + "-> scrypt AAAAAAAAAAAAAAAAAAAAAA 40\n\n--- AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		plaintext, err := open(bytes.NewReader(data), testPassphrase)
		if err != nil {
			return
		}
		// Only an unmodified archive can authenticate. (valid itself
		// differs between fuzz worker processes: salt and nonce are
		// random, their lengths are not.)
		if string(plaintext) != want || len(data) != len(valid) {
			t.Fatalf("open accepted a modified archive (%d bytes) and returned %q", len(data), plaintext)
		}
	})
}

// FuzzOpenV1 is FuzzOpen for the version 1 format that Restore still
// reads.
func FuzzOpenV1(f *testing.F) {
	setFuzzSeam(f, &maxKDFMemory, 1<<8)
	setFuzzSeam(f, &maxKDFWork, 1<<10)
	const want = "not a tar, but authenticated"
	valid, err := sealV1([]byte(want), testPassphrase.passphrase)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:headerSize])
	f.Add(valid[:len(magic)+1])
	f.Add([]byte("LEPROXY-BACKUP\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		plaintext, err := openV1(bytes.NewReader(data), testPassphrase.passphrase)
		if err != nil {
			return
		}
		if string(plaintext) != want || len(data) != headerSize+len(want)+overhead {
			t.Fatalf("open accepted a modified archive (%d bytes) and returned %q", len(data), plaintext)
		}
	})
}

// FuzzCheckArchive feeds arbitrary tar streams to the entry checks and
// extracts the accepted ones: everything extracted must be an accepted
// entry, inside the directory.
func FuzzCheckArchive(f *testing.F) {
	f.Add(rawTar(f, directory("local-ca/", 0o700), regular("local-ca/root.pem", 0o644, "root"), regular("a", 0o600, "x")))
	f.Add(rawTar(f, regular("../x", 0o600, "x")))
	f.Add(rawTar(f, rawEntry{h: tarHeader('2', "l", "/")}))
	f.Add(rawTar(f, regular("a/b/c/d", 0o400, "deep")))
	setFuzzSeam(f, &syncFile, func(*os.File) error { return nil })
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := checkArchive(data)
		if err != nil {
			return
		}
		parent := t.TempDir()
		dir := filepath.Join(parent, "x")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := extract(data, entries, dir, nil); err != nil {
			t.Fatalf("extract of a checked archive: %v", err)
		}
		want := map[string]bool{".": true}
		for _, e := range entries {
			for p := e.name; p != "." && !want[p]; p = filepath.Dir(p) {
				want[p] = true
			}
		}
		err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if !want[filepath.ToSlash(rel)] {
				t.Errorf("extracted %q, not an archive entry", rel)
			}
			if !d.IsDir() && !d.Type().IsRegular() {
				t.Errorf("extracted %q of type %v", rel, d.Type())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		expectOnly(t, parent, "x")
	})
}

func setFuzzSeam[T any](f *testing.F, p *T, v T) {
	old := *p
	*p = v
	f.Cleanup(func() { *p = old })
}
