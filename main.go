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
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "leproxy:", err)
		os.Exit(1)
	}
}
