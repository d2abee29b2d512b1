package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// smallCase is one tenant, one setting per target, a few chunks, one tick.
func smallCase() Case {
	return Case{
		PageSize: 7,
		Objects:  []Object{{Name: "Contact", Prefix: "003", Rows: 30, Updated: 10, Seed: 21}},
		Settings: []Setting{
			{ID: "pin-upsert", Tenant: "acme", Object: 0, Target: model.TargetUpsert, ChunkSize: 10},
			{ID: "pin-generated", Tenant: "beta", Object: 0, Target: model.TargetGenerated, ChunkSize: 10},
		},
		Ticks: []Tick{{}},
	}
}

// TestChaosPinned holds hand-written and exhaustive schedules: small, deterministic
// reproductions of what the properties found, and fault classes worth covering completely.
func TestChaosPinned(t *testing.T) {
	// A chunk's first delivery outlives its lease at importer.committed (the chunk is DONE); its
	// redelivery takes the key over and is killed at the same step. The first delivery then acks.
	t.Run("chunk redelivered after the lease, redelivery killed after the commit", func(t *testing.T) {
		h := NewHarness(t, Mutation{})
		c := smallCase()
		c.Faults.Deliveries = []DeliveryFault{{
			Target: Target{Function: config.Importer, Setting: -1, Tick: -1, Chunk: 0}, Nth: 1,
			Plan: sim.Plan{CopyAt: importer.StepCommitted, CopyDelay: h.Env.Config.Lease + time.Second, CopyPlan: &sim.Plan{CrashAt: importer.StepCommitted}},
		}}
		res := runPinned(t, h, c)
		if len(res.Violations) > 0 {
			t.Errorf("caught by %s:\n  %s", strings.Join(res.CaughtBy(), ", "), strings.Join(res.Violations, "\n  "))
		}
		report.pin(fmt.Sprintf("chunk redelivered after the lease and killed after the commit: %d violation(s) %v", len(res.Violations), res.CaughtBy()))
	})

	// Every Commit of the run fails once with Unavailable after it was applied (the answer is
	// lost), one run per Commit: the ambiguous failure, covered exhaustively rather than by chance.
	t.Run("every commit fails ambiguously once", func(t *testing.T) {
		everyCommitFailsOnce(t, smallCase(), codes.Unavailable, true, "every one of %d commits failing ambiguously once: %d distinct violation(s)")
	})

	// The same with poison messages that get past the claim, every Commit failing once before it
	// is applied: the case CI's random search found, where the delete of a poisoned key failed and
	// the message was dead-lettered anyway, leaving the key IN_PROGRESS for good.
	t.Run("every commit fails once with poison messages", func(t *testing.T) {
		c := smallCase()
		c.Poison = []string{"expand-unknown-job", "chunk-unknown-job"}
		everyCommitFailsOnce(t, c, codes.Aborted, false, "every one of %d commits failing once, with poison messages: %d distinct violation(s)")
	})
}

// everyCommitFailsOnce runs c once per Commit call n of the run, with the nth Commit failing with
// code (after being applied, if after), and fails t on any violation. summary gets the number of
// runs and of distinct violations.
func everyCommitFailsOnce(t *testing.T, c Case, code codes.Code, after bool, summary string) {
	h := NewHarness(t, Mutation{})
	failing := map[string][]int{}
	runs := 0
	for n := 1; n <= 200; n++ {
		c.Faults.Firestore = []sim.Fault{{Method: "Commit", Nth: n, Code: code, After: after}}
		res, err := h.Run(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		if res.Faults["firestore Commit/"+code.String()] == 0 {
			break // the run has fewer commits: every one has been failed
		}
		runs++
		for _, v := range res.Violations {
			failing[v] = append(failing[v], n)
		}
		if len(res.Violations) > 0 {
			t.Logf("commit #%d failing with %v (applied: %v): caught by %s", n, code, after, strings.Join(res.CaughtBy(), ", "))
		}
	}
	if runs < 10 {
		t.Fatalf("only %d commits in the run: the schedule does not exercise the pipeline", runs)
	}
	for v, ns := range failing {
		t.Errorf("commits %v failing: %s", ns, v)
	}
	report.pin(fmt.Sprintf(summary, runs, len(failing)))
}
