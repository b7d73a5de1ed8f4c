package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/truststore"
)

// trustArgs are the flags of `leproxy trust` and `leproxy untrust`.
type trustArgs struct {
	Cache string // -cache
	ACME  string // -acme: local makes a new root unconstrained, as the daemon would
}

// trustUsage heads `leproxy trust -h`.
const trustUsage = `Usage:
  leproxy trust [-cache DIR] [-acme local]
  leproxy untrust [-cache DIR]

trust adds the local CA's root (DIR/local-ca/root.pem, created if missing) to
the system trust store (update-ca-certificates; run as root) and to the NSS
databases of Chromium and Firefox under $HOME (certutil, from libnss3-tools).
untrust removes it. Each prints what it changed.

Flags:
`

// trustSeam lets tests choose the stores; nil means the machine's.
var trustSeam *truststore.Options

// trust runs `leproxy trust` (install) or `leproxy untrust`.
func (env runEnv) trust(ctx context.Context, install bool, args []string) error {
	cmd := "untrust"
	if install {
		cmd = "trust"
	}
	a := trustArgs{ACME: "letsencrypt"}
	fs := flag.NewFlagSet("leproxy "+cmd, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.StringVar(&a.Cache, "cache", "", "the daemon's cache directory, whose local CA root is trusted or untrusted; empty means $XDG_CACHE_HOME/leproxy")
	fs.StringVar(&a.ACME, "acme", a.ACME, "as given to the daemon: with local, a root created here may sign any name; otherwise it only signs localhost names")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), trustUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if a.Cache == "" {
		var err error
		if a.Cache, err = defaultCacheDir(); err != nil {
			return err
		}
	}
	rootFile, err := localRoot(a, install)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	root, err := truststore.ReadRoot(rootFile)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	fmt.Fprintf(env.stdout, "local CA root %s (%s, SHA-256 %s...)\n", rootFile, root.Cert.Subject.CommonName, root.Fingerprint())
	var opts truststore.Options
	if trustSeam != nil {
		opts = *trustSeam
	}
	apply := truststore.Uninstall
	if install {
		apply = truststore.Install
	}
	lines, err := apply(ctx, root, opts)
	for _, l := range lines {
		fmt.Fprintln(env.stdout, l)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

// localRoot returns the path of the cache's local CA root. trust creates
// the CA when it is missing, through the certificate manager as the daemon
// would; untrust never does.
func localRoot(a trustArgs, create bool) (string, error) {
	path := filepath.Join(a.Cache, "local-ca", "root.pem")
	if !create {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("no local CA root: %w", err)
		}
		return path, nil
	}
	_, local, err := certs.ResolveDirectory(a.ACME)
	if err != nil {
		return "", fmt.Errorf("-acme: %w", err)
	}
	cm, err := certs.New(certs.Config{CacheDir: a.Cache, Local: local})
	if err != nil {
		return "", err
	}
	defer cm.Close()
	path, err = cm.EnsureLocalCA()
	if err != nil {
		return "", err
	}
	if err := giveLocalCAToCacheOwner(a.Cache); err != nil {
		return "", fmt.Errorf("giving the local CA to the cache's owner: %w", err)
	}
	return path, nil
}

// subcommand reports whether args start with trust or untrust.
func subcommand(args []string) (install bool, ok bool) {
	if len(args) == 0 {
		return false, false
	}
	switch args[0] {
	case "trust":
		return true, true
	case "untrust":
		return false, true
	}
	return false, false
}
