package chaos

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestChaosPipeline is the main property: for any dataset of up to a few hundred records, any
// settings and ticks, and any fault schedule, once the faults stop and the recovery sweep has
// run, no record is duplicated or lost and every checker holds.
func TestChaosPipeline(t *testing.T) {
	sharded(t, pipelineChecks(), func(t *testing.T, h *Harness) {
		rapid.Check(t, h.Property(h.Gen, nil))
	})
}

// shards is how many rapid searches of one property run in parallel, each on its own Env: a case
// waits on the emulators most of the time. With a fixed seed there is one shard, so the seed
// names the cases.
func shards() int {
	if *seedFlag != 0 {
		return 1
	}
	return *shardsFlag
}

// sharded splits checks cases of a property over shards() parallel subtests.
func sharded(t *testing.T, checks int, run func(t *testing.T, h *Harness)) {
	n := shards()
	withRapid(t, (checks+n-1)/n, false, func() {
		t.Run("shards", func(t *testing.T) {
			for i := range n {
				t.Run(fmt.Sprintf("shard%d", i), func(t *testing.T) {
					t.Parallel()
					run(t, NewHarness(t, Mutation{}))
				})
			}
		})
	})
}

// TestChaosLargeDatasets is the same property on datasets of thousands of records.
func TestChaosLargeDatasets(t *testing.T) {
	sharded(t, largeChecks(), func(t *testing.T, h *Harness) {
		g := h.Gen
		g.Large = true
		rapid.Check(t, h.Property(g, nil))
	})
}

// Property returns the property a Harness checks with generator g. last, if not nil, receives
// every failing result (the last one is rapid's minimized case).
func (h *Harness) Property(g gen, last func(*Case, *Result)) func(*rapid.T) {
	return func(rt *rapid.T) {
		c := g.draw(rt)
		rt.Logf("case:\n%s", c)
		res, err := h.Run(rt.Context(), c)
		if err != nil {
			rt.Fatalf("chaos: the harness failed (not a finding about the pipeline): %v", err)
		}
		report.record(h.T.Name(), h.Mut.Name != "", &c, res)
		rt.Logf("outcome: %s", res.Brief())
		if len(res.Violations) > 0 {
			if last != nil {
				last(&c, res)
			}
			rt.Fatalf("%d violation(s), caught by %s:\n  %s\nreport: %s", len(res.Violations), strings.Join(res.CaughtBy(), ", "),
				strings.Join(res.Violations, "\n  "), res.Report)
		}
	}
}

// Brief is one line about what a case did.
func (r *Result) Brief() string {
	keys := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var f []string
	for _, k := range keys {
		f = append(f, fmt.Sprintf("%s=%d", k, r.Faults[k]))
	}
	return fmt.Sprintf("%d deliveries (%d rounds), %d duplicates suppressed, jobs %d/%d completed, %d engagements; faults: %s; %v",
		r.Stats.Deliveries, r.Stats.Rounds, r.Suppressed, r.Report.Completed, r.Report.Jobs, r.Report.Engagements,
		strings.Join(f, " "), r.Elapsed.Round(1e6))
}

// CaughtBy names the checkers that reported violations.
func (r *Result) CaughtBy() []string {
	var out []string
	add := func(n int, name string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%s (%d)", name, n))
		}
	}
	rep, x := r.Report, r.Extra
	add(rep.Duplicates, "duplicate records")
	add(rep.Lost, "lost records")
	add(rep.Stale, "stale records")
	add(rep.Extra, "records outside every window")
	add(rep.PlanErrors, "chunk count")
	add(x.ChunkRewrites, "chunk created twice")
	add(x.PlanMismatches, "plan differs from the window")
	add(rep.CounterErrors, "job counters vs chunks")
	add(x.CounterErrors, "imported counters")
	add(x.SearchCounter, "searches counter")
	add(rep.SearchOveruse, "source searches")
	add(rep.OpenLeases, "lease left in progress")
	add(x.ForeignDead, "dead letter of a good message")
	add(rep.Jobs-rep.Completed, "jobs not completed")
	if len(out) == 0 && len(r.Violations) > 0 {
		out = append(out, "other")
	}
	return out
}
