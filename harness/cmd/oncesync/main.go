// Command oncesync is the developer's tool: it runs the functions locally, runs the demo and the
// benchmark on the emulators, and starts the emulators around another command. The operator's
// tool against production (audit, dead letters) is oncesync-ops (shared/ops/cmd/oncesync-ops), which
// links none of the harness.
//
// Usage:
//
//	oncesync <command> [flags]
//
// Run "oncesync help" for the list of commands.
package main

import "github.com/oncesync/oncesync/shared/ops/cli"

func commands() map[string]cli.Command {
	return map[string]cli.Command{
		// Each subcommand lives in cmd_<name>.go.
		"run":       cmdRun(),
		"demo":      cmdDemo(),
		"emulators": cmdEmulators(),
		"bench":     cmdBench(),
	}
}

func main() { cli.Main("oncesync", commands()) }
