//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// runUpstream serves the fake upstream on the -listen address until ctx is
// cancelled (the driver sends SIGTERM).
func runUpstream(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback `address` to serve on")
	chunks := fs.Int("chunks", 3, "SSE chunks per streamed completion")
	chunkDelay := fs.Duration("chunk-delay", 2*time.Millisecond, "pause between SSE chunks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv, err := upstreamtest.Start(*listen, upstreamtest.Options{Chunks: *chunks, ChunkDelay: *chunkDelay})
	if err != nil {
		return fmt.Errorf("starting upstream on %s: %w", *listen, err)
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return fmt.Errorf("closing upstream: %w", err)
	}
	return nil
}
