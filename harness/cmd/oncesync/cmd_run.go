package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/oncesync/oncesync/harness/bench"

	// The deployable bundle: registers Scheduler, Expander and Importer.
	_ "github.com/oncesync/oncesync"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

func cmdRun() cli.Command {
	return cli.Command{
		Summary: "serve the three functions locally with the functions framework: run [--addr HOST:PORT]",
		Run: func(ctx context.Context, args []string) int {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			addr := fs.String("addr", "127.0.0.1:8080", "listen address; the functions are served at /Scheduler, /Expander and /Importer")
			benchMode := fs.Bool("bench", false, "also serve the benchmark's instrumented functions at "+bench.PathPrefix+"/<Name>, with their counters at "+
				bench.PathPrefix+"/stats and pprof at /debug/pprof/ (emulators only)")
			unguarded := fs.Bool("unguarded", false, "with --bench: remove the idempotency guard (the incident's design), to price it")
			if err := fs.Parse(args); err != nil {
				return 2
			}
			if os.Getenv("FUNCTION_TARGET") != "" {
				fmt.Fprintln(os.Stderr, "oncesync run: FUNCTION_TARGET is set; only that function is served, at /")
			}
			host, port, err := net.SplitHostPort(*addr)
			if err != nil {
				fmt.Fprintf(os.Stderr, "oncesync run: --addr %q: %v\n", *addr, err)
				return 2
			}
			if *unguarded && !*benchMode {
				fmt.Fprintln(os.Stderr, "oncesync run: --unguarded needs --bench")
				return 2
			}
			errc := make(chan error, 1)
			if *benchMode {
				go func() { errc <- bench.Serve(ctx, bench.ServeOptions{Host: host, Port: port, Unguarded: *unguarded}) }()
			} else {
				go func() { errc <- funcframework.StartHostPort(host, port) }()
			}
			select {
			case err := <-errc:
				fmt.Fprintf(os.Stderr, "oncesync run: %v\n", err)
				return 1
			case <-ctx.Done():
				return 0
			}
		},
	}
}
