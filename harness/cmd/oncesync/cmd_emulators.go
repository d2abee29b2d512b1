package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/oncesync/oncesync/harness/emu"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

func cmdEmulators() cli.Command {
	return cli.Command{
		Summary: "start the Firestore and Pub/Sub emulators around a command: emulators [--logs DIR] -- CMD...",
		Run: func(ctx context.Context, args []string) int {
			fs := flag.NewFlagSet("emulators", flag.ContinueOnError)
			fs.Usage = func() {
				fmt.Fprintln(fs.Output(), "usage: oncesync emulators [flags] -- CMD [ARG...]\n\n"+
					"Starts the Firestore and Pub/Sub emulators on free ports, runs CMD with\n"+
					"FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST set, stops the emulators and\n"+
					"exits with CMD's exit code.\n\nflags:")
				fs.PrintDefaults()
			}
			logs := fs.String("logs", "", "write the emulators' logs to `DIR` (default: a temporary directory, removed afterwards)")
			heap := fs.String("firestore-heap", "", "maximum Java heap of the Firestore emulator, e.g. 2g")
			firestore := fs.Bool("firestore", true, "start the Firestore emulator")
			pubsub := fs.Bool("pubsub", true, "start the Pub/Sub emulator")
			if err := fs.Parse(args); err != nil {
				if err == flag.ErrHelp {
					return 0
				}
				return 2
			}
			if fs.NArg() == 0 {
				fs.Usage()
				return 2
			}
			code, err := emu.Run(ctx, emu.Options{
				Firestore:        *firestore,
				PubSub:           *pubsub,
				LogDir:           *logs,
				FirestoreMaxHeap: *heap,
			}, fs.Args())
			if err != nil {
				fmt.Fprintf(os.Stderr, "oncesync emulators: %v\n", err)
			}
			return code
		},
	}
}
