package main

import (
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestShippedCommandLines checks that the command lines the Dockerfile,
// the compose example and the systemd unit give leproxy parse with this
// leproxy's flags, so that renaming a flag cannot silently break them; and
// the Dockerfile's pins and health check.
func TestShippedCommandLines(t *testing.T) {
	t.Setenv("LEPROXY_EAB_HMAC", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	parses := func(t *testing.T, where string, args []string) {
		t.Helper()
		if _, _, err := parseArgs(args, io.Discard); err != nil {
			t.Errorf("%s: leproxy %q: %v", where, args, err)
		}
	}
	dockerfile := readText(t, "Dockerfile")
	jsonArray := func(instruction string) []string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + instruction + `\s+(\[.*\])\s*$`).FindStringSubmatch(dockerfile)
		if m == nil {
			t.Fatalf("Dockerfile: no %s [...] line", instruction)
		}
		var args []string
		if err := json.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatalf("Dockerfile %s: %v", instruction, err)
		}
		return args
	}
	entrypoint, cmd := jsonArray("ENTRYPOINT"), jsonArray("CMD")
	parses(t, "Dockerfile ENTRYPOINT and CMD", append(entrypoint[1:], cmd...))
	health := regexp.MustCompile(`(?m)^\s+CMD\s+(\[.*\])\s*$`).FindStringSubmatch(dockerfile)
	if health == nil || !strings.Contains(health[1], `"-probe", "http://127.0.0.1:9090/health/live"`) {
		t.Errorf("Dockerfile HEALTHCHECK does not probe /health/live: %v", health)
	}
	for _, m := range regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`).FindAllStringSubmatch(dockerfile, -1) {
		if image := m[1]; image != "scratch" && !regexp.MustCompile(`:\d+\.\d+\.\d+`).MatchString(image) {
			t.Errorf("Dockerfile: base image %s has no exact version tag", image)
		}
	}

	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(readText(t, "docker-compose.example.yml")), &compose); err != nil {
		t.Fatal(err)
	}
	svc, ok := compose.Services["leproxy"]
	if !ok || len(svc.Command) == 0 {
		t.Fatal("docker-compose.example.yml: no leproxy service with a command")
	}
	parses(t, "docker-compose.example.yml", append(entrypoint[1:], svc.Command...))

	unit := readText(t, "contrib/leproxy.service")
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+)\s+(.*)$`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatal("contrib/leproxy.service: no ExecStart=")
	}
	parses(t, "contrib/leproxy.service ExecStart", strings.Fields(strings.ReplaceAll(m[2], "${CACHE_DIRECTORY}", t.TempDir())))
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
