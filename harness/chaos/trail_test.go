package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/proof"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
)

// trailPlan turns a counterexample of the model (its events, in order) into the plan of the
// expand message's first delivery that replays it on the real code:
//
//   - the attempt that claims first is the delivery Pub/Sub made (A);
//   - the other instance's steps (B) run as a duplicate at A's probe step before them: after A's
//     claim (expander.claimed), after its search's first page (expander.searched) or after its
//     k-th write (the k-th expander.chunk_written);
//   - a lease that runs out before B's first step is the duplicate's delay (past the lease);
//   - a crash is a crash at that delivery's step.
//
// The real code decides everything else. A trail the harness cannot express (a third attempt, B
// running again after A went on) is an error that says so.
func trailPlan(events []proof.Event, lease time.Duration) (sim.Plan, error) {
	if len(events) == 0 || events[0].What != "claim" {
		return sim.Plan{}, fmt.Errorf("the trail does not begin with a claim")
	}
	a, b := events[0].Attempt, -1
	var plan, copyPlan sim.Plan
	step, nth := expander.StepClaimed, 1 // A's probe step reached so far
	writesA, writesB, resumed := 0, 0, false
	crashAt := func(writes int) (string, error) {
		switch writes {
		case 0:
			return expander.StepClaimed, nil
		case 1:
			return expander.StepChunkWritten, nil
		}
		return "", fmt.Errorf("a crash after the %d-th write is not expressible (a crash fires at a step's first occurrence)", writes)
	}
	for _, e := range events[1:] {
		var err error
		switch {
		case e.Attempt == 0 && e.What == "sweep":
			return sim.Plan{}, fmt.Errorf("%v: a sweep's message is not expressible: the harness's scheduler sweeps on its own ticks", e)
		case e.Attempt == 0: // the clock
			if b < 0 {
				plan.CopyDelay = lease + time.Second
			}
		case e.Attempt == a:
			resumed = resumed || b >= 0
			switch e.What {
			case "search":
				if b < 0 {
					step, nth = expander.StepSearched, 1
				}
			case "write":
				writesA++
				if b < 0 {
					step, nth = expander.StepChunkWritten, writesA
				}
			case "crash":
				plan.CrashAt, err = crashAt(writesA)
			}
		case b < 0 || e.Attempt == b:
			if resumed {
				return sim.Plan{}, fmt.Errorf("%v: the duplicate runs again after the first delivery went on", e)
			}
			b = e.Attempt
			switch e.What {
			case "write":
				writesB++
			case "crash":
				copyPlan.CrashAt, err = crashAt(writesB)
			}
		default:
			return sim.Plan{}, fmt.Errorf("%v: a third attempt (a redelivery) is not expressible: the harness redelivers by itself", e)
		}
		if err != nil {
			return sim.Plan{}, fmt.Errorf("%v: %w", e, err)
		}
	}
	if b < 0 {
		return sim.Plan{}, fmt.Errorf("the trail has one delivery")
	}
	plan.CopyAt, plan.CopyAtNth, plan.CopyPlan = step, nth, &copyPlan
	return plan, nil
}

// replayable returns the shortest trail trailPlan can express, with its plan.
func replayable(trails []string, lease time.Duration) ([]proof.Event, sim.Plan, error) {
	var best []proof.Event
	var plan sim.Plan
	var errs []string
	for _, tr := range trails {
		ev := proof.Events(tr)
		p, err := trailPlan(ev, lease)
		if err != nil {
			if len(errs) < 3 {
				errs = append(errs, fmt.Sprintf("%v: %v", ev, err))
			}
			continue
		}
		if best == nil || len(ev) < len(best) {
			best, plan = ev, p
		}
	}
	if best == nil {
		return nil, sim.Plan{}, fmt.Errorf("none of %d trails is expressible as a schedule, e.g.\n  %s", len(trails), strings.Join(errs, "\n  "))
	}
	return best, plan, nil
}

// TestModelTrailsReplay replays the shortest counterexample of each mutated model whose guard a
// code mutant removes, as a schedule of the chaos harness on the real code: harmless with the
// guards, and caught by the checkers with the code mutant.
func TestModelTrailsReplay(t *testing.T) {
	src, err := os.ReadFile("../proof/keys.pml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		define string
		m      Mutation
	}{
		{"LIVE_TAKEOVER", MutantLiveTakeover},
		{"NOFENCE", MutantNoFence},
		{"COMPLETE_EARLY", MutantCompleteEarly},
	} {
		t.Run(tc.define, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			// The replay's faults are those the harness expresses: no crash, transient error or
			// hand-off of the model's own (the real code's redeliveries follow by themselves).
			defines := []string{tc.define, "CRASHES=0", "RELEASES=0", "HANDOFFS=0"}
			r, err := proof.Check(ctx, t.TempDir(), src, proof.Options{Defines: defines, Shortest: true, Trails: 50})
			if err != nil {
				t.Fatal(err)
			}
			trails := r.Trails
			if r.Trail != "" {
				trails = append(trails, r.Trail)
			}
			if r.Errors == 0 || len(trails) == 0 {
				t.Fatalf("%s: no counterexample (%d errors)", tc.define, r.Errors)
			}
			c := pairs()[1].c // the expand message
			h := NewHarness(t, Mutation{})
			events, plan, err := replayable(trails, h.Env.Config.Lease)
			if err != nil {
				t.Fatalf("%s: %v", tc.define, err)
			}
			c.Faults.Deliveries = []DeliveryFault{{Target: Target{Function: config.Expander, Setting: 0, Tick: 0, Chunk: -1}, Nth: 1, Plan: plan}}
			t.Logf("%s: trail %v -> expand message: %s", tc.define, events, plan)

			res, err := h.Run(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Violations) > 0 {
				t.Fatalf("the guarded code fails the replayed trail:\n  %s", strings.Join(res.Violations, "\n  "))
			}
			mh := NewHarness(t, tc.m)
			mres, err := mh.Run(t.Context(), c)
			if err != nil {
				t.Fatal(err)
			}
			if len(mres.Violations) == 0 {
				t.Fatalf("mutant %q passes the replayed trail %v", tc.m.Name, events)
			}
			t.Logf("mutant %q caught by %s", tc.m.Name, strings.Join(mres.CaughtBy(), ", "))
			report.pin(fmt.Sprintf("model trail %s replayed (%d events: %v; the shortest expressible of %d trails): guarded code 0 violations; mutant %q caught by %s",
				tc.define, len(events), events, len(trails), tc.m.Name, strings.Join(mres.CaughtBy(), ", ")))
		})
	}
}
