package chaos

import (
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"pgregory.net/rapid"
)

// TestChaosPipeline is the main property: for any dataset of up to a few hundred records, any
// settings and ticks, and any fault schedule, once the faults stop and the recovery sweep has
// run, no record is duplicated or lost and every checker holds.
func TestChaosPipeline(t *testing.T) {
	sharded(t, pipelineChecks(), func(t *testing.T, h *Harness, check func(func(*rapid.T))) {
		check(h.Property(h.Gen, nil))
	})
}

// sharded splits checks cases of a property over -chaos.shards parallel subtests, each with its own
// Env. run gets check, which runs rapid on a property. With -chaos.seed, shard 0 starts from that
// seed (so a seed rapid printed replays as shard 0's first case) and shard i from a seed derived
// from it: the same seed always runs the same cases.
func sharded(t *testing.T, checks int, run func(t *testing.T, h *Harness, check func(func(*rapid.T)))) {
	n := max(1, *shardsFlag)
	withRapid(t, (checks+n-1)/n, false, func() {
		t.Run("shards", func(t *testing.T) {
			for i := range n {
				t.Run(fmt.Sprintf("shard%d", i), func(t *testing.T) {
					t.Parallel()
					run(t, NewHarness(t, Mutation{}), func(prop func(*rapid.T)) { checkFrom(t, shardSeed(*seedFlag, i), prop) })
				})
			}
		})
	})
	if *seedFlag != 0 {
		setRapidSeed(t, *seedFlag)
	}
}

// seedMu is held from setting rapid's seed flag until rapid has read it: rapid reads it once, when
// a Check starts and before it runs the first case, so parallel shards each start from their own.
var seedMu sync.Mutex

// checkFrom runs rapid.Check(t, prop) starting from seed (0: a random seed).
func checkFrom(t *testing.T, seed uint64, prop func(*rapid.T)) {
	if seed == 0 {
		rapid.Check(t, prop)
		return
	}
	seedMu.Lock()
	var once sync.Once
	release := func() { once.Do(seedMu.Unlock) }
	defer release()
	setRapidSeed(t, seed)
	rapid.Check(t, func(rt *rapid.T) {
		release() // rapid has read the seed: it runs cases only after
		prop(rt)
	})
}

func setRapidSeed(t *testing.T, seed uint64) {
	if err := flag.Set("rapid.seed", strconv.FormatUint(seed, 10)); err != nil {
		t.Fatal(err)
	}
}

// shardSeed is shard i's seed in a run from seed: seed itself for shard 0, and a splitmix64 mix
// for the others, far from the seeds rapid derives for shard 0's cases (seed + 0, 1, 3, 6, …).
func shardSeed(seed uint64, i int) uint64 {
	if seed == 0 || i == 0 {
		return seed
	}
	z := seed + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return max(1, z^(z>>31))
}

// TestChaosLargeDatasets is the same property on datasets of thousands of records.
func TestChaosLargeDatasets(t *testing.T) {
	sharded(t, largeChecks(), func(t *testing.T, h *Harness, check func(func(*rapid.T))) {
		g := h.Gen
		g.Large = true
		check(h.Property(g, nil))
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
	add(rep.LateLost, "late-committed records lost")
	add(rep.DeleteErrors, "deleted in the source, live in the target (or the reverse)")
	add(x.Overdrawn, "searched past the API reserve")
	add(x.ReconcileRepeats, "reconcile run again changed records")
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
	add(rep.Outlived, "work after its delivery returned")
	add(rep.NotRewritten, "records a resync did not rewrite")
	add(x.ForeignDead, "dead letter of a good message")
	add(x.AuditFindings, "audit findings")
	add(x.NeededSweep, "needed the recovery sweep")
	add(x.JobsPerTick, "a second Job for one tick")
	add(x.WindowErrors, "a gap or overlap between a setting's windows")
	add(x.PausedJobs, "a Job while the setting's last one was paused")
	add(x.SweepRevisits, "a sweep page that visits another's Jobs")
	add(x.LaneErrors, "a Job's class or its chunks' lane")
	add(x.ResyncJobs, "resync Jobs per request")
	add(rep.Jobs-rep.Completed, "jobs not completed")
	if len(out) == 0 && len(r.Violations) > 0 {
		out = append(out, "other")
	}
	return out
}
