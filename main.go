// Command leproxy puts publicly trusted TLS in front of anything: an HTTPS
// reverse proxy and protocol-aware TLS terminators for databases and
// services, with certificates obtained and renewed by ACME.
//
// Usage:
//
//	leproxy -map mapping.yml -cache /var/cache/leproxy
//
// Run without -map, leproxy serves an embedded demo on *.localhost names
// with certificates from its local CA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := exitCode(run(ctx, os.Args[1:]), os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode is the exit status for run's result err, which it prints to
// stderr when it has not been printed yet: 0 for success and -h, 2 for a
// command line the flags refuse (already printed with the usage), 1 for
// any other error.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	fmt.Fprintln(stderr, "leproxy:", err)
	return 1
}
