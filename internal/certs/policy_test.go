package certs

import (
	"slices"
	"testing"
)

func TestStripPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "www.example.com:8080", want: "www.example.com"},
		{in: "www.example.com", want: "www.example.com"},
		{in: "[::1]:80", want: "::1"},
		{in: "[::1]", want: "[::1]"},
		{in: "", want: ""},
	}
	for _, tt := range tests {
		if got := stripPort(tt.in); got != tt.want {
			t.Errorf("stripPort(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsLocalhostName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{in: "localhost", want: true},
		{in: "app.localhost", want: true},
		{in: "a.b.localhost", want: true},
		{in: "localhost.example.com", want: false},
		{in: "mylocalhost", want: false},
		{in: "example.com", want: false},
	}
	for _, tt := range tests {
		if got := isLocalhostName(tt.in); got != tt.want {
			t.Errorf("isLocalhostName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAllowList(t *testing.T) {
	m := newTestManager(t, Config{CacheDir: t.TempDir(), Local: true})
	if m.Allowed("www.example.com") {
		t.Error("a new Manager allows a name; want an empty allow-list")
	}
	m.SetHosts([]string{"WWW.Example.com", "db.example.com.", "bücher.example", ""})
	tests := []struct {
		name string
		want bool
	}{
		{name: "www.example.com", want: true},
		{name: "WWW.EXAMPLE.COM", want: true},
		{name: "www.example.com.", want: true},
		{name: "db.example.com", want: true},
		{name: "xn--bcher-kva.example", want: true},
		{name: "bücher.example", want: true},
		{name: "example.com", want: false},
		{name: "evil.www.example.com", want: false},
		{name: "", want: false},
	}
	for _, tt := range tests {
		if got := m.Allowed(tt.name); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	var hosts []string
	for _, s := range m.Status() {
		hosts = append(hosts, s.Host)
	}
	if want := []string{"db.example.com", "www.example.com", "xn--bcher-kva.example"}; !slices.Equal(hosts, want) {
		t.Errorf("Status hosts = %q, want %q", hosts, want)
	}

	m.SetHosts([]string{"new.example.com"})
	if m.Allowed("www.example.com") || !m.Allowed("new.example.com") {
		t.Error("SetHosts did not replace the allow-list")
	}
}
