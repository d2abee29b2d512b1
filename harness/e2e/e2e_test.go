// Package e2e holds the end-to-end tests of the pipeline: tick → Jobs → chunk plan → imported
// engagements, on the real Firestore and Pub/Sub emulators, with the delivery patterns of the
// incident replayed deterministically (see package sim).
package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
)

var (
	windowStart = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	simStart    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// world is an Env with one tenant and one setting per target, each with n generated rows.
type world struct {
	*sim.Env
	expect sim.Expect
}

func newWorld(t *testing.T, n, chunkSize int, seed int64, opts sim.Options) *world {
	t.Helper()
	opts.Start = simStart
	e := sim.New(t, opts)
	ctx := t.Context()
	w := &world{Env: e}
	e.Tenant(ctx, "acme")
	for i, target := range []string{model.TargetUpsert, model.TargetGenerated} {
		object := []string{"Contact", "Lead"}[i]
		st := model.SyncSetting{
			ID: "acme-" + target, TenantID: "acme", SourceObject: object, Fields: []string{"Name", "Email"},
			Target: target, ChunkSize: chunkSize, Enabled: true, Watermark: windowStart,
		}
		e.Setting(ctx, st)
		rows := fixture.Generate(seed+int64(i), n, windowStart, simStart, fixture.GenOptions{UpdatedInWindow: 0.1})
		e.Fixture.PutRecords(object, rows...)
		w.expect.Datasets = append(w.expect.Datasets, sim.Dataset{Setting: st, Rows: rows})
	}
	return w
}

// settle drains, sweeps until every Job is finished, and runs the checkers.
func (w *world) settle(t testing.TB, p sim.Policy) (sim.Stats, sim.Report) {
	t.Helper()
	ctx := t.Context()
	stats, err := w.SettleAll(ctx, p, 3)
	if err != nil {
		t.Fatalf("settle: %v (stats %+v)", err, stats)
	}
	rep, err := w.Check(ctx, w.expect)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	t.Logf("stats: %+v", stats)
	t.Logf("report: %s", rep)
	if len(rep.Violations) > 0 {
		t.Errorf("violations:\n%s", rep)
	}
	return stats, rep
}

func tick(t testing.TB, e *sim.Env, id string) {
	t.Helper()
	if err := e.Tick(t.Context(), id); err != nil {
		t.Fatal(err)
	}
}

func only(fn string, plan sim.Plan) func(d sim.Delivery) sim.Plan {
	return func(d sim.Delivery) sim.Plan {
		if d.Function() == fn && d.Attempt == 1 && d.Copy == 0 {
			return plan
		}
		return sim.Plan{}
	}
}

func TestTickImportsEveryRecordOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 500, 37, 1, sim.Options{PageSize: 60})
	tick(t, w.Env, "t1")
	_, rep := w.settle(t, sim.Policy{})
	if rep.Jobs != 2 || rep.Completed != 2 {
		t.Fatalf("jobs %d completed %d, want 2 and 2", rep.Jobs, rep.Completed)
	}
	distinct := 0
	for _, ds := range w.expect.Datasets {
		ids := map[string]bool{}
		for _, r := range ds.Rows {
			ids[r.ID] = true
		}
		distinct += len(ids)
	}
	if rep.Engagements != distinct {
		t.Errorf("engagements = %d, want %d (one per distinct external ID)", rep.Engagements, distinct)
	}
}

func TestDuplicateTickCreatesNothingNew(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 120, 50, 2, sim.Options{})
	tick(t, w.Env, "t1")
	tick(t, w.Env, "t1") // Cloud Scheduler's at-least-once: the same tick published twice
	stats, rep := w.settle(t, sim.Policy{Plan: only("Scheduler", sim.Plan{CopyAfter: true, LoseAck: true})})
	if rep.Jobs != 2 {
		t.Errorf("jobs = %d, want 2 (one per setting)", rep.Jobs)
	}
	if stats.ByFunction["Scheduler"] < 4 {
		t.Errorf("scheduler deliveries = %d, want >= 4", stats.ByFunction["Scheduler"])
	}
}

func TestExpandDeliveredTwiceTwoSecondsApart(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 300, 40, 3, sim.Options{PageSize: 50})
	tick(t, w.Env, "t1")
	// The incident: the second delivery arrives 2 s after the first, while the first is writing
	// its chunk plan.
	stats, _ := w.settle(t, sim.Policy{Plan: only("Expander", sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: 2 * time.Second})})
	if stats.Copies != 2 || stats.Suppressed < 2 {
		t.Errorf("copies %d suppressed %d, want 2 copies sent back for redelivery", stats.Copies, stats.Suppressed)
	}
	jobs, _ := w.Jobs(t.Context())
	for _, j := range jobs {
		if j.Searches != 1 {
			t.Errorf("job %s: %d searches, want 1", j.ID, j.Searches)
		}
	}
}

func TestExpandDeliveredTwiceAfterCompletion(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 90, 40, 4, sim.Options{})
	tick(t, w.Env, "t1")
	w.settle(t, sim.Policy{Plan: only("Expander", sim.Plan{CopyAfter: true, LoseAck: true})})
	for _, ds := range w.expect.Datasets {
		if n := w.Fixture.Queries(ds.Setting.SourceObject, windowStart, simStart); n != 1 {
			t.Errorf("%s: source searched %d times, want 1", ds.Setting.SourceObject, n)
		}
	}
}

func TestExpandDeliveredConcurrently(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 200, 30, 5, sim.Options{PageSize: 40})
	tick(t, w.Env, "t1")
	w.settle(t, sim.Policy{Plan: only("Expander", sim.Plan{Concurrent: 3})})
}

func TestChunkDeliveredConcurrently(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 200, 30, 6, sim.Options{})
	tick(t, w.Env, "t1")
	stats, _ := w.settle(t, sim.Policy{Plan: only("Importer", sim.Plan{Concurrent: 2})})
	if stats.Copies == 0 {
		t.Error("no concurrent copies were delivered")
	}
}

func TestCrashAfterClaimCompletesAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fn, step string
		searches int
	}{
		{"Expander", expander.StepClaimed, 2},
		{"Expander", expander.StepChunkWritten, 2},
		{"Expander", expander.StepPlanned, 1},
		{"Expander", expander.StepPublished, 1},
		{"Importer", importer.StepClaimed, 1},
		{"Importer", importer.StepCommitted, 1},
		{"Scheduler", scheduler.StepClaimed, 1},
		{"Scheduler", scheduler.StepScheduled, 1},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.fn, tc.step), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 150, 40, 7, sim.Options{PageSize: 50})
			tick(t, w.Env, "t1")
			w.expect.MaxSearches = func(string) int { return tc.searches }
			stats, _ := w.settle(t, sim.Policy{Plan: only(tc.fn, sim.Plan{CrashAt: tc.step})})
			if stats.Crashes == 0 {
				t.Fatal("no crash was injected")
			}
			if stats.Suppressed == 0 {
				t.Error("no redelivery was sent back while the crashed owner's lease was alive")
			}
			if stats.ClockJumps == 0 {
				t.Error("the work completed without waiting for the lease to expire")
			}
		})
	}
}

func TestCrashMidPlanResumesToTheSamePlan(t *testing.T) {
	t.Parallel()
	var plans [2][]int
	for i := range plans {
		w := newWorld(t, 400, 33, 8, sim.Options{PageSize: 45})
		tick(t, w.Env, "t1")
		p := sim.Policy{}
		if i == 1 {
			w.expect.MaxSearches = func(string) int { return 2 }
			p.Plan = only("Expander", sim.Plan{CrashAt: expander.StepChunkWritten})
		}
		w.settle(t, p)
		jobs, _ := w.Jobs(t.Context())
		for _, j := range jobs {
			plans[i] = append(plans[i], j.ChunkCount, j.RecordCount)
		}
	}
	if fmt.Sprint(plans[0]) != fmt.Sprint(plans[1]) {
		t.Errorf("plan after a crash %v differs from the plan without %v", plans[1], plans[0])
	}
}
