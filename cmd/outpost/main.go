// Command outpost is a connected OCI registry for the edge. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-registry/outpost/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()})
	stop()
	os.Exit(code)
}
