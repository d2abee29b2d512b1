package e2e

import (
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
)

// A Job far larger than one delivery's budget completes through a chain of continuations, each
// resuming the search after the last chunk, without waiting out any lease, and imports every
// record once.
func TestExpansionHandsOffToContinuations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		plan func(d sim.Delivery) sim.Plan
	}{
		// Every expand delivery, continuations included, spends its budget at its first chunk.
		{"plain", func(d sim.Delivery) sim.Plan {
			if d.Function() == config.Expander {
				return sim.Plan{BudgetAt: expander.StepChunkWritten}
			}
			return sim.Plan{}
		}},
		// The same, and each is copied 2 s later while it writes.
		{"duplicated", func(d sim.Delivery) sim.Plan {
			if d.Function() == config.Expander && d.Copy == 0 {
				return sim.Plan{BudgetAt: expander.StepChunkWritten, CopyAt: expander.StepChunkWritten, CopyDelay: 2 * time.Second}
			}
			return sim.Plan{}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 300, 25, 11, sim.Options{PageSize: 60})
			tick(t, w.Env, "t1")
			// Each continuation queries the source again, after the last chunk written.
			w.expect.MaxSearches = func(job string) int {
				k, err := w.Comps.Keys.(*idem.Store).Get(t.Context(), idem.ExpandKey(job))
				if err != nil || k == nil {
					return 1
				}
				return 1 + k.HandOffs
			}
			stats, _ := w.settle(t, sim.Policy{Plan: tc.plan})
			if stats.ClockJumps != 0 {
				t.Errorf("%d clock jumps: a continuation waited out a lease", stats.ClockJumps)
			}
			jobs, err := w.Jobs(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range jobs {
				k, err := w.Comps.Keys.(*idem.Store).Get(t.Context(), idem.ExpandKey(j.ID))
				if err != nil || k == nil {
					t.Fatalf("job %s: expansion key %v, %v", j.ID, k, err)
				}
				// Each delivery writes its first page, spends its budget there, writes the next and
				// hands off: a chain of continuations, each one takeover, none after a crash.
				if k.HandOffs < 2 || k.Takeovers != k.HandOffs || k.State != idem.Done || j.Searches != 1+k.HandOffs {
					t.Errorf("job %s: %d chunks, key %+v, %d searches; want a chain of hand-offs (one takeover each), DONE, 1 search + 1 per continuation",
						j.ID, j.ChunkCount, k, j.Searches)
				}
			}
		})
	}
}
