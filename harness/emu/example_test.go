package emu_test

import (
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
)

// An emulator test: its own project, clients cleaned up with the test.
func ExampleRequire() {
	_ = func(t *testing.T) {
		emu.Require(t) // fails, never skips, without the emulators
		project := emu.ProjectID(t)
		fs := emu.Firestore(t, project)
		ps := emu.PubSub(t, project)
		if err := emu.EnsureTopic(t.Context(), ps, "jobs"); err != nil {
			t.Fatal(err)
		}
		if err := emu.EnsureSubscription(t.Context(), ps, "jobs-sub", "jobs", time.Minute); err != nil {
			t.Fatal(err)
		}
		_ = fs.Collection("jobs")
	}
}
