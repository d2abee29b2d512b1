// Command oncesync-ops is the operator's tool against production (or the emulators, when
// FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST are set): audit Jobs and tenants, list and
// replay dead letters, add and enable tenants and sync settings. It links none of the test harness (no simulator, fixture, local Eventarc
// or benchmark); a test checks that.
//
// Usage:
//
//	oncesync-ops <command> [flags]
//
// Run "oncesync-ops help" for the list of commands.
package main

import "github.com/oncesync/oncesync/shared/ops/cli"

func commands() map[string]cli.Command {
	return map[string]cli.Command{
		// Each subcommand lives in cmd_<name>.go.
		"audit":       cmdAudit(),
		"deadletters": cmdDeadLetters(),
		"keyset":      cmdKeyset(),
		"settings":    cmdSettings(),
		"tenants":     cmdTenants(),
	}
}

func main() { cli.Main("oncesync-ops", commands()) }
