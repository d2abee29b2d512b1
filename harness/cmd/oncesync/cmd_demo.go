package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/oncesync/oncesync/harness/demo"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

func cmdDemo() cli.Command {
	return cli.Command{
		Summary: "run the whole pipeline end to end on the emulators and report: demo [--records N] [--duplicates]",
		Run: func(ctx context.Context, args []string) int {
			fs := flag.NewFlagSet("demo", flag.ContinueOnError)
			var o demo.Options
			fs.IntVar(&o.Records, "records", 20000, "distinct source records in the Job's window")
			fs.IntVar(&o.ChunkSize, "chunk-size", 500, "records per chunk")
			fs.BoolVar(&o.Duplicates, "duplicates", false, "deliver every message twice, the copy 2 s after the first")
			fs.Int64Var(&o.Seed, "seed", 1, "dataset seed")
			fs.Float64Var(&o.Updated, "updated", 0.01, "fraction of records also served with a newer version, as if updated while the search paged")
			fs.StringVar(&o.Stack.LogDir, "logs", "", "keep emulator and function logs in `DIR`")
			fs.StringVar(&o.TracePage, "trace-page", "bin/demo-trace.html", "write the Job's trace as an HTML page `FILE` to open in a browser (\"\": none)")
			if err := fs.Parse(args); err != nil {
				return 2
			}
			o.Out = os.Stdout
			r, err := demo.Run(ctx, o)
			r.Write(os.Stdout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "oncesync demo: %v\n", err)
				return 1
			}
			if !r.OK() {
				return 1
			}
			return 0
		},
	}
}
