package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHelpAndUsageErrors runs the real main as the flag package's
// programs behave: help on stdout with status 0 (so that "leproxy -h |
// less" works), a refused command line on stderr with the usage and
// status 2.
func TestHelpAndUsageErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	tests := []struct {
		args       []string
		wantCode   int
		wantStdout string // "" wants nothing on stdout
		wantStderr string // "" wants nothing on stderr
	}{
		{[]string{"-h"}, 0, "Usage:\n  leproxy -map", ""},
		{[]string{"-help"}, 0, "Usage:\n  leproxy -map", ""},
		{[]string{"--help"}, 0, "  -log-format string", ""},
		{[]string{"-no-such-flag"}, 2, "", "flag provided but not defined: -no-such-flag\nleproxy puts"},
		{[]string{"-idle", "soon"}, 2, "", `invalid value "soon" for flag -idle`},
		{[]string{"-check", "mapping.yml"}, 2, "", "unexpected argument \"mapping.yml\" (flags only)\nleproxy puts"},
	}
	for _, tt := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "LEPROXY_TEST_MAIN=1", "LEPROXY_TEST_ARGS="+strings.Join(tt.args, "\n"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if code != tt.wantCode {
			t.Errorf("%q: exit status %d, want %d\nstderr:\n%s", tt.args, code, tt.wantCode, &stderr)
		}
		check := func(name string, got *bytes.Buffer, want string) {
			t.Helper()
			if want == "" && got.Len() > 0 || !strings.Contains(got.String(), want) {
				t.Errorf("%q: %s %q, want it to contain %q", tt.args, name, got, want)
			}
		}
		check("stdout", &stdout, tt.wantStdout)
		check("stderr", &stderr, tt.wantStderr)
		if tt.wantCode == 2 && !strings.Contains(stderr.String(), "  -map string") {
			t.Errorf("%q: stderr lacks the usage:\n%s", tt.args, &stderr)
		}
	}
}
