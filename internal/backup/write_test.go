package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// archivedNames decrypts archive and returns its tar entry names.
func archivedNames(t *testing.T, archive []byte) []string {
	t.Helper()
	plaintext, err := open(bytes.NewReader(archive), testPassphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(plaintext))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sort.Strings(names)
	return names
}

func TestWriteSkipsReservedNames(t *testing.T) {
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), []testFile{
		{name: "example.com", mode: 0o600, data: "c"},
		{name: ".leproxy-write-check-123", mode: 0o600},
		{name: ".leproxy-old-456/", mode: 0o700},
		{name: ".leproxy-old-456/example.com", mode: 0o600, data: "old"},
		{name: "local-ca/", mode: 0o700},
		{name: "local-ca/.leproxy-kept", mode: 0o600, data: "only the top level is reserved"},
	})
	var buf bytes.Buffer
	if err := Write(&buf, src, testPassphrase); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := strings.Join(archivedNames(t, buf.Bytes()), " ")
	want := "example.com local-ca/ local-ca/.leproxy-kept"
	if got != want {
		t.Errorf("archived %q, want %q", got, want)
	}
}

func TestWriteRefused(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		pass    *Key
		want    error
	}{
		{
			name: "symbolic link",
			prepare: func(t *testing.T, dir string) {
				if err := os.Symlink("/etc/hostname", filepath.Join(dir, "local-ca", "link")); err != nil {
					t.Fatal(err)
				}
			},
			want: ErrUnsupportedFile,
		},
		{
			name: "socket",
			prepare: func(t *testing.T, dir string) {
				ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
			},
			want: ErrUnsupportedFile,
		},
		{
			name: "larger than MaxSize",
			prepare: func(t *testing.T, dir string) {
				// A sparse file: its size is checked before it is read.
				if err := os.Truncate(filepath.Join(dir, "empty"), MaxSize); err != nil {
					t.Fatal(err)
				}
			},
			want: ErrTooLarge,
		},
		{
			name:    "empty passphrase",
			prepare: func(t *testing.T, dir string) {},
			pass:    Passphrase([]byte{}),
			want:    ErrNoPassphrase,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := makeCache(t, filepath.Join(t.TempDir(), "src"), accountCache)
			tt.prepare(t, src)
			pass := tt.pass
			if pass == nil {
				pass = testPassphrase
			}
			var buf bytes.Buffer
			if err := Write(&buf, src, pass); !errors.Is(err, tt.want) {
				t.Errorf("Write: got error %v, want %v", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing", buf.Len())
			}
			out := t.TempDir()
			if err := WriteFile(filepath.Join(out, "cache.lpb"), src, pass); !errors.Is(err, tt.want) {
				t.Errorf("WriteFile: got error %v, want %v", err, tt.want)
			}
			expectOnly(t, out)
		})
	}
}

func TestWriteMissingCache(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, filepath.Join(t.TempDir(), "missing"), testPassphrase)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got error %v, want one wrapping %v", err, os.ErrNotExist)
	}
}

func TestWriteFileReplaces(t *testing.T) {
	out := t.TempDir()
	path := filepath.Join(out, "cache.lpb")
	if err := os.WriteFile(path, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := makeCache(t, filepath.Join(t.TempDir(), "src"), otherCache)
	if err := WriteFile(path, src, testPassphrase); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	expectOnly(t, out, "cache.lpb")
	cache := filepath.Join(t.TempDir(), "leproxy")
	if err := RestoreFile(path, cache, testPassphrase); err != nil {
		t.Fatalf("RestoreFile: %v", err)
	}
	expectSnapshot(t, cache, snapshot(t, src))
}
