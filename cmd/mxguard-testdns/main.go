// Command mxguard-testdns serves a zone file over DNS on the loopback
// interface, for shell and end-to-end tests that need names to resolve the
// way they would on the Internet.
//
// Usage:
//
//	mxguard-testdns -zone FILE [-listen 127.0.0.1:PORT]
//
// It answers over UDP and TCP on the same port until it gets SIGINT or
// SIGTERM. Once it is ready it prints "listening on ADDR" on standard output,
// so that a script started with -listen 127.0.0.1:0 can learn the port.
// Unknown names get NXDOMAIN; CNAMEs inside the zone are followed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mxguard/mxguard/internal/dnstest"
)

func main() {
	zoneFile := flag.String("zone", "", "zone `file` to serve (RFC 1035 syntax, fully qualified or with $ORIGIN)")
	listen := flag.String("listen", "127.0.0.1:0", "`address` to serve on, UDP and TCP")
	flag.Parse()
	if *zoneFile == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *zoneFile, *listen, os.Stdout, logger); err != nil {
		logger.Error("mxguard-testdns", "err", err)
		os.Exit(1)
	}
}

// run serves zoneFile on listen until ctx is done, and announces the bound
// address on ready.
func run(ctx context.Context, zoneFile, listen string, ready io.Writer, logger *slog.Logger) error {
	f, err := os.Open(zoneFile)
	if err != nil {
		return err
	}
	zone := dnstest.NewZone()
	err = zone.Load(f, zoneFile)
	f.Close()
	if err != nil {
		return err
	}
	pc, ln, err := dnstest.Listen(listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(ready, "listening on %s\n", pc.LocalAddr())
	logger.Info("serving", "zone", zoneFile, "addr", pc.LocalAddr().String())
	err = dnstest.Serve(ctx, pc, ln, zone)
	logger.Info("stopped", "queries", zone.Queries())
	return err
}
