package expander

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/model"
)

// stepTable is the expansion's decision as a table, in order of precedence: the first row whose
// terms all hold gives the step. A term is a flag of Facts ("asked"), its negation ("!asked"), or
// "job=", "slice=", "lease=" and a value. TestStepTable checks Next against it on every reachable
// combination of facts, so changing a step, a rule's order or a condition fails it.
var stepTable = []struct {
	when string
	step Step
}{
	{"job=COMPLETED", StepIgnore},
	{"job=FAILED", StepIgnore},
	{"rejected", StepReject},
	{"spent", StepHandOff},
	{"down", StepPause},
	{"slice=missing", StepRefuse},
	{"slice=uncut !first", StepRefuse},
	{"slice=uncut job=PLANNED", StepRefuse},
	{"slice=uncut disconnected", StepDisconnect},
	{"slice=uncut reserve !asked", StepAskBudget},
	{"slice=uncut", StepCut},
	{"first job=PENDING parallel lease=takenover !restarted", StepRestart},
	{"lease=takenover !republished !searched", StepRepublish},
	{"slice=planned !republished !searched", StepRepublish},
	{"job=PENDING slice=pending disconnected", StepDisconnect},
	{"job=PENDING slice=pending reserve !asked", StepAskBudget},
	{"job=PENDING slice=pending first !decided", StepSearchAndDecide},
	{"job=PENDING slice=pending", StepSearch},
	{"job=PENDING !finished", StepFinish},
	{"", StepComplete},
}

var (
	sliceNames = map[SliceState]string{SliceUncut: "uncut", SlicePending: "pending", SlicePlanned: "planned", SliceMissing: "missing"}
	leaseNames = map[LeaseState]string{LeaseNew: "new", LeaseTakenOver: "takenover", LeaseContinued: "continued"}
)

// holds reports whether term holds for f.
func holds(t *testing.T, f Facts, term string) bool {
	t.Helper()
	if k, v, ok := strings.Cut(term, "="); ok {
		switch k {
		case "job":
			return string(f.Job) == v
		case "slice":
			return sliceNames[f.Slice] == v
		case "lease":
			return leaseNames[f.Lease] == v
		}
		t.Fatalf("unknown term %q", term)
	}
	want := !strings.HasPrefix(term, "!")
	flags := map[string]bool{
		"first": f.First, "decided": f.Decided, "parallel": f.Parallel, "reserve": f.Reserve, "asked": f.Asked, "down": f.Down,
		"spent": f.Spent, "rejected": f.Rejected, "restarted": f.Restarted, "republished": f.Republished, "searched": f.Searched,
		"finished": f.Finished, "disconnected": f.Disconnected,
	}
	v, ok := flags[strings.TrimPrefix(term, "!")]
	if !ok {
		t.Fatalf("unknown term %q", term)
	}
	return v == want
}

// fromTable returns the step of the first row of stepTable that holds for f, and its index.
func fromTable(t *testing.T, f Facts) (Step, int) {
	t.Helper()
	for i, row := range stepTable {
		all := true
		for _, term := range strings.Fields(row.when) {
			all = all && holds(t, f, term)
		}
		if all {
			return row.step, i
		}
	}
	t.Fatalf("no row for %+v", f)
	return 0, 0
}

// initial returns every combination of facts a delivery can start with: the Job and slice as read,
// the lease, and nothing done yet. A Job with no slices has not decided its parallelism, and a
// PLANNED Job has every slice planned.
func initial() []Facts {
	var out []Facts
	for _, job := range []model.JobStatus{model.JobPending, model.JobPlanned, model.JobCompleted, model.JobFailed} {
		for _, sl := range []SliceState{SliceUncut, SlicePending, SlicePlanned, SliceMissing} {
			for _, first := range []bool{false, true} {
				for _, slots := range []int{0, 1, 2} {
					for _, lease := range []LeaseState{LeaseNew, LeaseTakenOver, LeaseContinued} {
						for _, reserve := range []bool{false, true} {
							for _, disconnected := range []bool{false, true} {
								f := Facts{Job: job, Slice: sl, First: first, Decided: slots > 0, Parallel: slots > 1, Lease: lease, Reserve: reserve,
									Disconnected: disconnected}
								if sl == SliceUncut && f.Decided || job == model.JobPlanned && sl == SlicePending {
									continue
								}
								out = append(out, f)
							}
						}
					}
				}
			}
		}
	}
	return out
}

// outcomes returns the facts each outcome of step can leave, from f (a step that fails with a
// transient error ends the delivery, and is not a state). It is what expansion's actions do to
// the facts.
func outcomes(step Step, f Facts) []Facts {
	with := func(change func(*Facts)) Facts { g := f; change(&g); return g }
	switch step {
	case StepAskBudget:
		return []Facts{
			with(func(g *Facts) { g.Asked = true }),
			with(func(g *Facts) { g.Asked, g.Down = true, true }),
			with(func(g *Facts) { g.Asked, g.Rejected = true, true }),
			with(func(g *Facts) { g.Asked, g.Disconnected = true, true }),
		}
	case StepCut:
		return []Facts{
			with(func(g *Facts) { g.Rejected = true }),
			with(func(g *Facts) { g.Disconnected = true }),
			with(func(g *Facts) { g.Slice, g.Decided = SlicePending, true }), // one slice
			with(func(g *Facts) { g.Slice = SlicePending }),                  // several: decided on the first page
		}
	case StepRestart:
		return []Facts{with(func(g *Facts) { g.Restarted = true })}
	case StepRepublish:
		return []Facts{with(func(g *Facts) { g.Republished = true })}
	case StepSearch, StepSearchAndDecide:
		var out []Facts
		for _, parallel := range []bool{false, true} {
			d := with(func(g *Facts) {
				if step == StepSearchAndDecide {
					g.Decided, g.Parallel = true, parallel
				}
			})
			out = append(out,
				with(func(g *Facts) { *g = d; g.Rejected = true }),
				with(func(g *Facts) { *g = d; g.Disconnected = true }),
				with(func(g *Facts) { *g = d; g.Spent = true }),
				with(func(g *Facts) { *g = d; g.Down = true }),
				with(func(g *Facts) { *g = d; g.Slice, g.Searched = SlicePlanned, true }),
			)
		}
		return out
	case StepFinish:
		return []Facts{with(func(g *Facts) { g.Finished = true })}
	}
	return nil
}

// reachable explores every path of steps from every initial combination, and returns each
// combination of facts met, with the longest path to a final step from the start.
func reachable(t *testing.T) (map[Facts]Step, int) {
	t.Helper()
	seen := map[Facts]Step{}
	longest := 0
	var walk func(f Facts, depth int)
	walk = func(f Facts, depth int) {
		if depth > 20 {
			t.Fatalf("a delivery takes more than 20 steps from %+v: a step that changes nothing loops", f)
		}
		step := Next(f)
		seen[f] = step
		if step.Final() {
			longest = max(longest, depth+1)
			return
		}
		next := outcomes(step, f)
		if len(next) == 0 {
			t.Fatalf("step %v from %+v is not final and has no outcome", step, f)
		}
		for _, g := range next {
			if g == f {
				t.Fatalf("step %v from %+v changes nothing: it would loop", step, f)
			}
			walk(g, depth+1)
		}
	}
	for _, f := range initial() {
		walk(f, 0)
	}
	return seen, longest
}

func TestStepTable(t *testing.T) {
	seen, longest := reachable(t)
	used := make([]int, len(stepTable))
	for f, got := range seen {
		want, row := fromTable(t, f)
		used[row]++
		if got != want {
			t.Errorf("Next(%+v) = %v; the table says %v (row %d: %q)", f, got, want, row, stepTable[row].when)
		}
	}
	for i, n := range used {
		if n == 0 {
			t.Errorf("row %d (%q → %v) is reached by no combination of facts: remove it or say how it is reached", i, stepTable[i].when, stepTable[i].step)
		}
	}
	t.Logf("%d reachable combinations of facts, %d rows, at most %d steps a delivery", len(seen), len(stepTable), longest)
}

// TestNoPermanentErrorLoops: once the source refuses for good, whatever else holds, the next step
// rejects (fails the Job, dead-letters the message): no path sends a permanent error back.
func TestNoPermanentErrorLoops(t *testing.T) {
	seen, _ := reachable(t)
	n := 0
	for f, step := range seen {
		if !f.Rejected || f.Job == model.JobCompleted || f.Job == model.JobFailed {
			continue
		}
		n++
		if step != StepReject {
			t.Errorf("Next(%+v) = %v after a permanent refusal; want %v", f, step, StepReject)
		}
	}
	if n == 0 {
		t.Fatal("no reachable combination has a permanent refusal: the exploration lost the refusals")
	}
}

// TestEveryStepHasAnAction: the Handler carries out every step Next can return.
func TestEveryStepHasAnAction(t *testing.T) {
	for s := StepCut; s <= StepDisconnect; s++ {
		if strings.HasPrefix(s.String(), "step(") {
			t.Errorf("step %d has no name", int(s))
		}
	}
	x := &expansion{}
	for s := StepCut; s <= StepDisconnect; s++ {
		err := func() (err error) {
			defer func() {
				if recover() != nil {
					err = nil // it reached its action (which needs a real expansion)
				}
			}()
			return x.do(t.Context(), s)
		}()
		if err != nil && strings.Contains(err.Error(), "no action") {
			t.Errorf("%v: %v", s, err)
		}
	}
	if err := x.do(t.Context(), Step(99)); err == nil || !strings.Contains(err.Error(), "no action") {
		t.Errorf("an unknown step: %v; want no action", err)
	}
}

// A connection that cannot authenticate never fails a Job and never loops: whenever the next
// step would need the source, it disconnects (marks the tenant, pauses the Job); a delivery with
// nothing left to search finishes without the source.
func TestADisconnectedTenantPausesOnlyWhereTheSourceIsNeeded(t *testing.T) {
	seen, _ := reachable(t)
	n := 0
	for f, step := range seen {
		if !f.Disconnected || f.Rejected || f.Job == model.JobCompleted || f.Job == model.JobFailed {
			continue
		}
		needs := f.Slice == SliceUncut || f.Job == model.JobPending && f.Slice == SlicePending
		switch {
		case step == StepReject:
			t.Errorf("Next(%+v) = reject: a disconnected tenant's Job must not fail", f)
		case needs && (step == StepSearch || step == StepSearchAndDecide || step == StepCut || step == StepAskBudget):
			t.Errorf("Next(%+v) = %v: the source is used while the tenant is disconnected", f, step)
		case !needs && step == StepDisconnect:
			t.Errorf("Next(%+v) = disconnect, with nothing left to search: the key would wait for a sweep that never comes", f)
		}
		if step == StepDisconnect {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no reachable combination disconnects")
	}
}
