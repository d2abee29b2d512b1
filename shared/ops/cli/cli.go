// Package cli is the subcommand dispatch that oncesync's two binaries share: oncesync-ops, the
// operator's tool against production (audit, dead letters), and oncesync, the developer's tool
// (local run, demo, benchmark, emulators).
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Command is one subcommand. Run returns the process exit code.
type Command struct {
	Summary string
	Run     func(ctx context.Context, args []string) int
}

// Main runs the subcommand named by os.Args[1] with a context canceled by SIGINT or SIGTERM, and
// exits with its code.
func Main(name string, cmds map[string]Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Dispatch(ctx, name, cmds, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Dispatch runs the subcommand args[0] names and returns its exit code: 2 for an unknown one,
// 0 for help.
func Dispatch(ctx context.Context, name string, cmds map[string]Command, args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(name, cmds, stderr)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n", name, args[0])
		usage(name, cmds, stderr)
		return 2
	}
	return c.Run(ctx, args[1:])
}

func usage(name string, cmds map[string]Command, w io.Writer) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", name)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].Summary)
	}
}
