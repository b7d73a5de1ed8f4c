package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretSources checks where each secret comes from, in order:
// -NAME, -NAME-file, $ENV, $CREDENTIALS_DIRECTORY/NAME.
func TestSecretSources(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "hmac", "from-file\n")
	creds := t.TempDir()
	writeFile(t, creds, "eab-hmac", "from-credential\r\n")
	writeFile(t, creds, "backup-passphrase", "pass from credential")
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantHMAC  string
		wantPass  string
		wantWarns []string
	}{
		{name: "nothing", args: nil},
		{name: "flag", args: []string{"-eab-hmac", "from-flag"}, wantHMAC: "from-flag", wantWarns: []string{"eab-hmac"}},
		{name: "file drops one newline", args: []string{"-eab-hmac-file", file}, wantHMAC: "from-file"},
		{name: "environment", env: map[string]string{"LEPROXY_EAB_HMAC": "from-env", "LEPROXY_BACKUP_PASSPHRASE": " p \n"},
			wantHMAC: "from-env", wantPass: " p \n"},
		{name: "file over environment", args: []string{"-eab-hmac-file", file}, env: map[string]string{"LEPROXY_EAB_HMAC": "from-env"},
			wantHMAC: "from-file"},
		{name: "flag over environment and credential", args: []string{"-eab-hmac", "from-flag"},
			env:      map[string]string{"LEPROXY_EAB_HMAC": "from-env", "CREDENTIALS_DIRECTORY": creds},
			wantHMAC: "from-flag", wantPass: "pass from credential", wantWarns: []string{"eab-hmac"}},
		{name: "systemd credential", env: map[string]string{"CREDENTIALS_DIRECTORY": creds},
			wantHMAC: "from-credential", wantPass: "pass from credential"},
		{name: "environment over credential", env: map[string]string{"CREDENTIALS_DIRECTORY": creds, "LEPROXY_BACKUP_PASSPHRASE": "env"},
			wantHMAC: "from-credential", wantPass: "env"},
		{name: "credential directory without the name", env: map[string]string{"CREDENTIALS_DIRECTORY": dir}},
		{name: "backup passphrase file", args: []string{"-backup-passphrase-file", file}, wantPass: "from-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"LEPROXY_EAB_HMAC", "LEPROXY_BACKUP_PASSPHRASE", "CREDENTIALS_DIRECTORY"} {
				t.Setenv(k, tt.env[k])
			}
			a, _, err := parseArgs(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			if a.EABHMAC != tt.wantHMAC || a.BackupPassphrase != tt.wantPass {
				t.Errorf("got eab-hmac %q, backup passphrase %q; want %q, %q", a.EABHMAC, a.BackupPassphrase, tt.wantHMAC, tt.wantPass)
			}
			if strings.Join(a.secretsOnCommandLine, ",") != strings.Join(tt.wantWarns, ",") {
				t.Errorf("secrets on the command line %q, want %q", a.secretsOnCommandLine, tt.wantWarns)
			}
		})
	}
}

func TestSecretErrors(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty", "\n")
	big := writeFile(t, dir, "big", strings.Repeat("x", maxSecretFile+1))
	creds := t.TempDir()
	if err := os.Mkdir(filepath.Join(creds, "eab-hmac"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  string // CREDENTIALS_DIRECTORY
		want []string
	}{
		{name: "missing file", args: []string{"-eab-hmac-file", filepath.Join(dir, "missing")},
			want: []string{"-eab-hmac-file: open ", "missing: no such file or directory"}},
		{name: "empty file", args: []string{"-backup-passphrase-file", empty}, want: []string{"-backup-passphrase-file: ", "empty is empty"}},
		{name: "large file", args: []string{"-eab-hmac-file", big}, want: []string{"-eab-hmac-file: ", "larger than 64 KiB"}},
		{name: "both forms", args: []string{"-eab-hmac", "x", "-eab-hmac-file", empty}, want: []string{"-eab-hmac and -eab-hmac-file both given"}},
		{name: "unreadable credential", env: creds, want: []string{"systemd credential eab-hmac: reading ", "is a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LEPROXY_EAB_HMAC", "")
			t.Setenv("LEPROXY_BACKUP_PASSPHRASE", "")
			t.Setenv("CREDENTIALS_DIRECTORY", tt.env)
			_, _, err := parseArgs(tt.args, io.Discard)
			if err == nil {
				t.Fatalf("parseArgs(%q): no error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestSecretOnCommandLineWarns checks that run logs the warning, naming
// the flag and never the value.
func TestSecretOnCommandLineWarns(t *testing.T) {
	t.Setenv("LEPROXY_EAB_HMAC", "")
	var stderr bytes.Buffer
	mapping := writeFile(t, t.TempDir(), "mapping.yml", "a.test: 127.0.0.1:1\n")
	err := runIO(context.Background(), []string{"-check", "-map", mapping, "-eab-hmac", "c2VjcmV0LXZhbHVl"}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	log := stderr.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "flag=-eab-hmac") || !strings.Contains(log, "/proc") {
		t.Errorf("no warning naming -eab-hmac and /proc in:\n%s", log)
	}
	if strings.Contains(log, "c2VjcmV0LXZhbHVl") {
		t.Errorf("the warning shows the secret:\n%s", log)
	}
}

func TestVersion(t *testing.T) {
	if v := version(); !strings.HasPrefix(v, "devel") && !strings.HasPrefix(v, "v") {
		t.Errorf("unstamped version %q, want devel or the module version", v)
	}
	oldV, oldC := buildVersion, buildCommit
	t.Cleanup(func() { buildVersion, buildCommit = oldV, oldC })
	buildVersion, buildCommit = "1.2.3", "0123456789abcdef0123456789abcdef01234567"
	var out bytes.Buffer
	if err := runIO(context.Background(), []string{"-version"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "leproxy 1.2.3, commit 0123456789abcdef0123456789abcdef01234567, go1."
	if !strings.HasPrefix(out.String(), want) {
		t.Errorf("-version printed %q, want it to start with %q", out.String(), want)
	}
}
