package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/oncesync/oncesync/harness/bench"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

func cmdBench() cli.Command {
	return cli.Command{
		Summary: "benchmark the pipeline against the raw Firestore ceiling on the emulators; writes OUT/REPORT.md: bench [--out DIR]",
		Run: func(ctx context.Context, args []string) int {
			fs := flag.NewFlagSet("bench", flag.ContinueOnError)
			var o bench.Options
			fs.StringVar(&o.Out, "out", "docs/bench", "write REPORT.md and the chart into `DIR`")
			sizes := fs.String("sizes", "10000,30000,100000", "dataset sizes, comma-separated")
			fs.IntVar(&o.DuplicateSize, "duplicate-size", 0, "records of the duplicate-heavy pass (default: the largest size)")
			fs.IntVar(&o.Reps, "reps", 5, "repetitions of the ceiling, guarded and unguarded runs at sizes up to --reps-up-to")
			fs.IntVar(&o.RepsUpTo, "reps-up-to", 10000, "largest size repeated --reps times")
			fs.IntVar(&o.LargeReps, "large-reps", 3, "repetitions at the largest size (sizes in between run once)")
			fs.IntVar(&o.DuplicateReps, "duplicate-reps", 1, "repetitions of the duplicate-heavy pass")
			fs.IntVar(&o.Concurrency, "concurrency", 8, "in-flight deliveries per function")
			fs.Float64Var(&o.Updated, "updated", 0, "fraction of records also served with a newer version, in every run")
			fs.Float64Var(&o.UpdatedShare, "updated-share", 0.01, "fraction of records updated during the window in the updated pass (beside each guarded run at the largest size)")
			fs.IntVar(&o.SlowSize, "slow-size", 0, "records of the slow-source pass, 1 s per 2,000-row page (default: the largest size)")
			fs.IntVar(&o.Largest, "largest", 300000, "records of the largest-dataset pass (-1: skip)")
			fs.IntVar(&o.WarmUp, "warm-up", 30000, "records imported, then written straight, before measuring, to warm the emulators' JVMs up (-1: none)")
			fs.Int64Var(&o.Seed, "seed", 1, "dataset seed")
			fs.BoolVar(&o.Profile, "profile", true, "record CPU profiles of the functions during the largest runs")
			tenantSizes := fs.String("tenant-sizes", "100,1000,10000", "settings of the many-tenants runs, comma-separated (10 to a tenant, a 10-record window each)")
			fs.IntVar(&o.FairSmall, "fair-small", 1000, "records of the small tenant's Job in the fairness runs (beside a --largest Job)")
			only := fs.String("only", "", "run only these parts, comma-separated: ceiling, guarded, unguarded, duplicates, updated, slowsource, largest, tenants, fairness")
			from := fs.String("rewrite", "", "measure nothing: render the report again from the `RESULTS` file (results.json) of an earlier run, into --out")
			fs.StringVar(&o.LogDir, "logs", "", "keep emulator and function logs in `DIR` (default: a temporary directory, removed)")
			if err := fs.Parse(args); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					return 0
				}
				return 2
			}
			var err error
			if o.Sizes, err = positives("sizes", *sizes); err == nil {
				o.TenantSizes, err = positives("tenant-sizes", *tenantSizes)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "oncesync bench: %v\n", err)
				return 2
			}
			if *only != "" {
				o.Only = strings.Split(*only, ",")
			}
			if *from != "" {
				res, err := bench.Rewrite(*from, o.Out)
				if err != nil {
					fmt.Fprintf(os.Stderr, "oncesync bench: %v\n", err)
					return 1
				}
				res.WriteHeadline(os.Stdout)
				return 0
			}
			res, err := bench.Bench(ctx, o)
			if res != nil {
				res.WriteHeadline(os.Stdout)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "oncesync bench: %v\n", err)
				return 1
			}
			return 0
		},
	}
}

// positives parses flag name's comma-separated list of positive numbers.
func positives(name, list string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not a positive number", name, s)
		}
		out = append(out, n)
	}
	return out, nil
}
