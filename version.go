package main

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Stamped by the release build (release/build.sh):
//
//	go build -ldflags "-X main.buildVersion=1.2.3 -X main.buildCommit=$(git rev-parse HEAD)"
var (
	buildVersion string
	buildCommit  string
)

// build describes this binary.
type build struct {
	Version   string // the release, "devel" for a build from a checkout
	Commit    string // the git revision, "" when unknown
	Modified  bool   // built from a work tree with changes
	GoVersion string
}

// buildInfo returns the stamped version and commit, or else what the Go
// toolchain recorded: the module version (go install …@v1.2.3) and the
// vcs.revision and vcs.modified of a build inside a git checkout.
func buildInfo() build {
	b := build{Version: buildVersion, Commit: buildCommit}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		b.GoVersion = bi.GoVersion
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		if b.Commit == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					b.Commit = s.Value
				case "vcs.modified":
					b.Modified = s.Value == "true"
				}
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// version is what -version prints after "leproxy".
func version() string {
	b := buildInfo()
	var parts []string
	if b.Commit != "" {
		c := "commit " + b.Commit
		if b.Modified {
			c += " (modified)"
		}
		parts = append(parts, c)
	}
	if b.GoVersion != "" {
		parts = append(parts, b.GoVersion)
	}
	if len(parts) == 0 {
		return b.Version
	}
	return fmt.Sprintf("%s, %s", b.Version, strings.Join(parts, ", "))
}
