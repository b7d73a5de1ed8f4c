package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// maxSocketPath is the longest unix socket address Linux accepts
// (sizeof(sun_path) less the terminating or leading NUL byte).
const maxSocketPath = 107

// String returns the kind's short name: tcp, url, unix, abstract or static.
func (k BackendKind) String() string {
	switch k {
	case BackendTCP:
		return "tcp"
	case BackendURL:
		return "url"
	case BackendUnix:
		return "unix"
	case BackendAbstract:
		return "abstract"
	case BackendStatic:
		return "static"
	}
	return "BackendKind(" + strconv.Itoa(int(k)) + ")"
}

// parseBackend parses an HTTP backend as the original leproxy did: "@name"
// is an abstract unix socket, an absolute path ending in a slash a static
// directory, any other absolute path a unix socket, an http:// or https://
// URL a URL backend, and anything else host:port. Directories are checked
// now; a unix socket need not exist yet (its application may start later)
// but its directory must.
func parseBackend(raw string) (Backend, error) {
	b := Backend{Raw: raw}
	switch {
	case raw == "":
		return b, errors.New("empty backend")
	case raw[0] == '@':
		if len(raw) == 1 {
			return b, errors.New("abstract socket name is empty")
		}
		if runtime.GOOS != "linux" {
			return b, errors.New("abstract unix sockets exist on Linux only")
		}
		if len(raw) > maxSocketPath {
			return b, fmt.Errorf("socket name longer than %d bytes", maxSocketPath)
		}
		b.Kind, b.Addr = BackendAbstract, raw
		return b, nil
	case strings.Contains(raw, "://"):
		u, err := parseURL(raw)
		if err != nil {
			return b, err
		}
		b.Kind, b.URL = BackendURL, u
		return b, nil
	case strings.HasPrefix(raw, "/"):
		if strings.HasSuffix(raw, "/") {
			if err := checkStaticDir(raw); err != nil {
				return b, err
			}
			b.Kind, b.Dir = BackendStatic, strings.TrimSuffix(filepath.Clean(raw), "/")+"/"
			return b, nil
		}
		if err := checkSocketPath(raw); err != nil {
			return b, err
		}
		b.Kind, b.Addr = BackendUnix, raw
		return b, nil
	case strings.HasPrefix(raw, "./") || strings.HasPrefix(raw, "../") || !strings.Contains(raw, ":") && strings.Contains(raw, "/"):
		return b, errors.New("relative path; write an absolute path (a directory ends in a slash)")
	}
	if err := checkHostPort(raw); err != nil {
		return b, err
	}
	b.Kind, b.Addr = BackendTCP, raw
	return b, nil
}

// parseURL checks an http:// or https:// backend URL: a host, an optional
// port and path prefix, and nothing else.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("invalid URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("unsupported scheme %q (want http or https)", u.Scheme)
	case u.User != nil:
		return nil, errors.New("user info in a backend URL is not supported")
	case u.Host == "":
		return nil, errors.New("URL has no host")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("a backend URL cannot have a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, errors.New("a backend URL cannot have a fragment")
	}
	if err := checkAddrHost(u.Hostname()); err != nil {
		return nil, err
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		if err := checkPort(p); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// checkHostPort checks a host:port address with a numeric port 1-65535;
// the host may be empty (the local machine).
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			switch ae.Err {
			case "missing port in address":
				return errors.New("missing port (want host:port)")
			case "too many colons in address":
				return errors.New("too many colons (write an IPv6 address in brackets: [::1]:8080)")
			}
			return errors.New(ae.Err)
		}
		return err
	}
	if strings.HasPrefix(addr, "[") {
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return errors.New("brackets are for IPv6 addresses only")
		}
	} else if err := checkAddrHost(host); err != nil {
		return err
	}
	return checkPort(port)
}

// checkPort checks a numeric port 1-65535.
func checkPort(port string) error {
	if port == "" {
		return errors.New("empty port")
	}
	n, err := strconv.Atoi(port)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Errorf("port %q is not a number", port)
	}
	if n < 1 || n > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", n)
	}
	return nil
}

// checkStaticDir checks that dir exists and is a directory.
func checkStaticDir(dir string) error {
	fi, err := os.Stat(filepath.Clean(dir))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return causeError{fmt.Sprintf("static directory %s does not exist", dir), err}
	case err != nil:
		return fmt.Errorf("checking static directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("static directory %s is not a directory", dir)
	}
	return nil
}

// checkSocketPath checks a unix socket path: the socket may not exist yet,
// but its directory must; if the path exists it must be a socket.
func checkSocketPath(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("unix socket path longer than %d bytes", maxSocketPath)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return causeError{fmt.Sprintf("directory %s of the unix socket does not exist", dir), err}
	case err != nil:
		return fmt.Errorf("checking unix socket directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%s, the directory of the unix socket, is not a directory", dir)
	}
	fi, err = os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // the application has not started yet
	case err != nil:
		return fmt.Errorf("checking unix socket: %w", err)
	case fi.IsDir():
		return fmt.Errorf("%s is a directory; end it with a slash to serve static files", path)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a unix socket", path)
	}
	return nil
}

// checkRouteBackend checks a tcp route's backend: host:port only.
func checkRouteBackend(raw string) error {
	switch {
	case raw == "":
		return errors.New("empty backend")
	case strings.Contains(raw, "://"), strings.HasPrefix(raw, "/"), strings.HasPrefix(raw, "@"):
		return errors.New("a tcp route's backend is host:port")
	}
	return checkHostPort(raw)
}

// causeError is a message for the mapping's author that keeps the
// underlying error for errors.Is without repeating its text.
type causeError struct {
	msg string
	err error
}

func (e causeError) Error() string { return e.msg }
func (e causeError) Unwrap() error { return e.err }
