// Command oncesync is the operator's tool: it runs the functions locally, runs the demo and the
// benchmark on the emulators, starts the emulators around another command, serves the source
// fixture, and audits Jobs and dead letters against the emulators or production.
//
// Usage:
//
//	oncesync <command> [flags]
//
// Run "oncesync help" for the list of commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run returns the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) int
}

func commands() map[string]command {
	return map[string]command{
		// Each subcommand lives in cmd_<name>.go.
		"run":         cmdRun(),
		"demo":        cmdDemo(),
		"emulators":   cmdEmulators(),
		"audit":       cmdAudit(),
		"deadletters": cmdDeadLetters(),
		"bench":       cmdBench(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(cmds)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "oncesync: unknown command %q\n", args[0])
		usage(cmds)
		return 2
	}
	return c.run(ctx, args[1:])
}

func usage(cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: oncesync <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, cmds[n].summary)
	}
}
