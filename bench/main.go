//go:build linux

// Command bench measures Sluice against nginx as a plain reverse proxy and
// against the fake upstream called directly, all on loopback, and writes a
// markdown report. The machine's speed drifts, so the report compares only
// numbers measured in the same round: each round measures direct, nginx and
// Sluice back to back, and the report gives the median across rounds of the
// per-round ratios and differences.
//
// Usage:
//
//	go run ./bench [-rounds 3] [-out docs/benchmarks.md] [-quick] [-skip-sluice]
//
// A separate measurement prints its own markdown section: the memory Sluice
// holds per request waiting in its queue (n connections, each with one
// request that waits, against Sluice's RSS after serving one request):
//
//	go run ./bench waiting [-n 10000] [-body-bytes 100]
//
// Another compares Sluice in shared mode (quotas in a redis-server the
// bench starts) with the same Sluice in single-replica mode, at fixed
// rates, and counts the Redis commands and CPU per request:
//
//	go run ./bench shared [-rounds 3] [-rates 1000,3000] [-duration 10s]
//
// The binary re-executes itself for its sub-processes, which the driver pins
// to their CPUs with taskset:
//
//	bench upstream -listen ADDR     the fake OpenAI-compatible upstream
//	bench load -mode MODE -addr ... one load phase; prints a JSON result on stdout
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

// run executes the sub-command in args, or the driver when there is none,
// until it is done or ctx is cancelled.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "upstream":
			return runUpstream(ctx, args[1:], stderr)
		case "load":
			return runLoad(ctx, args[1:], stdout, stderr)
		case "waiting":
			return runWaiting(ctx, args[1:], stdout, stderr)
		case "shared":
			return runShared(ctx, args[1:], stdout, stderr)
		}
	}
	return runDriver(ctx, args, stdout, stderr)
}
