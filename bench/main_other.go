//go:build !linux

// Command bench measures Sluice against nginx on loopback. It reads CPU time
// from /proc and pins processes with taskset, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: runs on Linux only (it reads /proc and pins processes with taskset)")
	os.Exit(1)
}
