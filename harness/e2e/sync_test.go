package e2e

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
)

// record reads the target record of one external ID of a setting.
func record(t *testing.T, w *world, st model.SyncSetting, id string) model.Engagement {
	t.Helper()
	kind, _ := model.Kind(st.Target)
	docs, err := w.FS.Collection(kind.Records).Where("tenantId", "==", st.TenantID).Where("sourceObject", "==", st.SourceObject).
		Where("externalId", "==", id).Documents(t.Context()).GetAll()
	if err != nil || len(docs) != 1 {
		t.Fatalf("record %s of %s: %d documents, %v", id, st.ID, len(docs), err)
	}
	var e model.Engagement
	if err := docs[0].DataTo(&e); err != nil {
		t.Fatal(err)
	}
	return e
}

// put adds rows to a setting's source and to what the checkers expect.
func (w *world) put(i int, rows ...fixture.Row) {
	ds := &w.expect.Datasets[i]
	w.Fixture.PutRecords(ds.Setting.SourceObject, rows...)
	ds.Rows = append(ds.Rows, rows...)
}

// A record deleted in the source, and one deleted then restored, end right in both targets after
// the next tick: a tombstone with the version that deleted it, and a live record at the
// restoring version.
func TestDeleteAndRestoreEndRightInBothTargets(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 40, 7, 31, sim.Options{PageSize: 9})
	tick(t, w.Env, "t1")
	w.settle(t, sim.Policy{})
	at := func(d time.Duration) time.Time { return simStart.Add(d) }
	deleted, restored := map[string]string{}, map[string]string{}
	for i, ds := range w.expect.Datasets {
		a, b := ds.Rows[3], ds.Rows[11]
		deleted[ds.Setting.ID], restored[ds.Setting.ID] = a.ID, b.ID
		w.put(i, fixture.Row{ID: a.ID, Modstamp: at(10 * time.Minute), Fields: maps.Clone(a.Fields), Deleted: true},
			fixture.Row{ID: b.ID, Modstamp: at(20 * time.Minute), Fields: maps.Clone(b.Fields), Deleted: true})
	}
	w.Clock.Advance(time.Hour)
	tick(t, w.Env, "t2")
	w.settle(t, sim.Policy{})
	for _, ds := range w.expect.Datasets {
		for _, id := range []string{deleted[ds.Setting.ID], restored[ds.Setting.ID]} {
			if e := record(t, w, ds.Setting, id); !e.Deleted || e.DeletedBy != model.DeletedBySource {
				t.Errorf("%s %s after its delete: %+v, want a tombstone by the source", ds.Setting.ID, id, e)
			}
		}
	}
	for i, ds := range w.expect.Datasets {
		w.put(i, fixture.Row{ID: restored[ds.Setting.ID], Modstamp: at(70 * time.Minute), Fields: map[string]any{"Name": "restored"}})
	}
	w.Clock.Advance(time.Hour)
	tick(t, w.Env, "t3")
	_, rep := w.settle(t, sim.Policy{})
	for _, ds := range w.expect.Datasets {
		if e := record(t, w, ds.Setting, deleted[ds.Setting.ID]); !e.Deleted || !e.Version.Equal(at(10*time.Minute)) {
			t.Errorf("%s: deleted record %+v, want still a tombstone at its delete", ds.Setting.ID, e)
		}
		if e := record(t, w, ds.Setting, restored[ds.Setting.ID]); e.Deleted || !e.Version.Equal(at(70*time.Minute)) || e.Fields["Name"] != "restored" {
			t.Errorf("%s: restored record %+v, want live at its restoring version", ds.Setting.ID, e)
		}
	}
	if rep.DeleteErrors != 0 || rep.Duplicates != 0 {
		t.Errorf("report %s", rep)
	}
}

// A record whose transaction commits after the tick but is stamped before it (Salesforce stamps
// SystemModstamp when a transaction starts) is imported by the next Job when its delay is within
// the window lag, and lost without a lag: the trade-off the lag buys.
func TestLateCommitInsideTheLagIsImported(t *testing.T) {
	t.Parallel()
	for _, lag := range []time.Duration{2 * time.Minute, 0} {
		t.Run("lag="+lag.String(), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 20, 10, 7, sim.Options{Config: func(c *config.Config) { c.WindowLag = lag }})
			tick(t, w.Env, "t1")
			w.settle(t, sim.Policy{})
			// Stamped 30 s before tick 2, committed 90 s after its stamp: 60 s after tick 2.
			t2 := w.Clock.Now().Add(time.Hour)
			late := fixture.Row{ID: "003LATE000000000AA", Modstamp: t2.Add(-30 * time.Second), Fields: map[string]any{"Name": "late"}}
			late.VisibleAt = late.Modstamp.Add(90 * time.Second)
			w.put(0, late)
			w.Clock.Set(t2)
			tick(t, w.Env, "t2")
			if _, err := w.Drain(t.Context(), sim.Policy{}, 500); err != nil {
				t.Fatal(err)
			}
			w.Clock.Advance(10 * time.Minute)
			tick(t, w.Env, "t3")
			ctx := t.Context()
			if _, err := w.SettleAll(ctx, sim.Policy{}, 3); err != nil {
				t.Fatal(err)
			}
			rep, err := w.Check(ctx, w.expect)
			if err != nil {
				t.Fatal(err)
			}
			if lag > 0 && len(rep.Violations) > 0 {
				t.Errorf("with a %v lag: %s", lag, rep)
			}
			if lag == 0 && (rep.LateLost != 1 || !strings.Contains(strings.Join(rep.Violations, "\n"), late.ID)) {
				t.Errorf("without a lag the late record must be lost (the reason for the lag); report %s", rep)
			}
		})
	}
}

// Jobs whose source budget runs down to their setting's reserve pause (not failed, not
// dead-lettered), say so, and resume without loss once the budget is back.
func TestBudgetPauseResumesWithoutLoss(t *testing.T) {
	t.Parallel()
	const limit, reserve = 1000, 50
	w := newWorld(t, 300, 25, 5, sim.Options{PageSize: 20, APILimit: limit})
	ctx := t.Context()
	for i := range w.expect.Datasets {
		st := &w.expect.Datasets[i].Setting
		st.APIReserve = reserve
		w.Setting(ctx, *st)
	}
	w.Fixture.SetAPIUsage(limit - reserve - 4) // four requests, then the reserve
	tick(t, w.Env, "t1")
	if _, err := w.Drain(ctx, sim.Policy{}, 500); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Status != model.JobPending || j.Pauses == 0 || !strings.Contains(j.Pause, "reserve 50") {
			t.Errorf("job %s: %s, %d pauses (%q); want PENDING and paused", j.ID, j.Status, j.Pauses, j.Pause)
		}
	}
	if used, _ := w.Fixture.APIUsage(); used > limit-reserve+2 { // each Job's search ends on the page that reached the reserve
		t.Errorf("the source's budget is %d of %d spent: the searches went on past the reserve of %d", used, limit, reserve)
	}
	if dls, err := w.DeadLetters(ctx); err != nil || len(dls) != 0 {
		t.Errorf("dead letters %v, %v; a pause is not a failure", dls, err)
	}
	w.Fixture.SetAPIUsage(0)                             // a new day
	w.expect.MaxSearches = func(string) int { return 1 } // the resumption after the pause
	_, rep := w.settle(t, sim.Policy{})
	if rep.Completed != rep.Jobs {
		t.Errorf("report %s", rep)
	}
}

// A setting with an API reserve whose connection may not read the org's limits (Salesforce answers
// /limits with 403 INSUFFICIENT_ACCESS without "View Setup and Configuration") disconnects its
// tenant, saying which permission: its Jobs pause — none FAILED, no dead letter, no key left in
// progress, nothing looping. Once the permission is granted and the tenant connected again, the
// recovery sweep resumes every paused Job and everything is imported once.
func TestAMissingPermissionDisconnectsTheTenantAndReconnectingResumes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 60, 25, 9, sim.Options{PageSize: 20, APILimit: 1000})
	ctx := t.Context()
	st := &w.expect.Datasets[0].Setting
	st.APIReserve = 50
	w.Setting(ctx, *st)
	w.Fixture.Inject(fixture.Rule{Match: func(r fixture.RequestInfo) bool { return r.Limits }, Status: 403, Times: 0})
	tick(t, w.Env, "t1")
	if _, err := w.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	paused := jobOf(t, w.Env, st.ID)
	if paused.Status != model.JobPending || paused.Pauses == 0 || !strings.Contains(paused.Pause, "disconnected") || paused.Searches != 0 {
		t.Errorf("job %s: %s, %d pauses (%q), %d searches; want PENDING, paused as disconnected, nothing searched", paused.ID, paused.Status, paused.Pauses, paused.Pause, paused.Searches)
	}
	tenant, err := w.Comps.Store.Tenant(ctx, "acme")
	if err != nil || !tenant.IsDisconnected() || !strings.Contains(tenant.Connection.Reason, "View Setup and Configuration") {
		t.Errorf("tenant %+v (%v): want disconnected, naming the permission", tenant.Connection, err)
	}
	if dls, err := w.DeadLetters(ctx); err != nil || len(dls) != 0 {
		t.Errorf("dead letters %v, %v; a disconnected tenant is paused, not failed", dls, err)
	}
	// The audit says why.
	a := audit.New(w.FS)
	a.Now = w.Clock.Now
	trep, err := a.Tenant(ctx, "acme", time.Time{}, time.Time{})
	var text strings.Builder
	if err != nil || trep.WriteText(&text) != nil || !strings.Contains(text.String(), "CONNECTION  disconnected since") ||
		!strings.Contains(text.String(), "View Setup and Configuration") {
		t.Errorf("audit tenant (%v):\n%s", err, text.String())
	}
	keys, err := w.FS.Collection(model.Keys).Where("state", "==", idem.InProgress).Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys { // a paused key is released at its checkpoint: no live lease waits
		if until, _ := k.DataAt("leaseUntil"); until != nil && until.(time.Time).After(w.Clock.Now()) {
			t.Errorf("key %s is held under a live lease after the pause", k.Ref.ID)
		}
	}
	// Two recovery sweeps (and the ticks that carry them) while it is disconnected: every Job
	// pauses again without a single request to the source.
	before := w.Fixture.Requests().Requests
	if _, err := w.SettleAll(ctx, sim.Policy{}, 2); err != nil {
		t.Fatal(err)
	}
	if n := w.Fixture.Requests().Requests - before; n != 0 {
		t.Errorf("%d source requests during two sweeps: a disconnected tenant must not be searched", n)
	}
	if jobs, _ := w.Jobs(ctx); slices.ContainsFunc(jobs, func(j model.Job) bool { return j.Status == model.JobFailed }) {
		t.Errorf("a Job FAILED while its tenant was disconnected")
	}

	// The permission granted, the tenant connected again: the sweep resumes, nothing is lost.
	w.Fixture.ClearFaults()
	if _, err := w.FS.Collection(model.Tenants).Doc("acme").Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: model.Connected, ChangedAt: w.Clock.Now()}},
	}); err != nil {
		t.Fatal(err)
	}
	w.expect.MaxSearches = func(string) int { return 1 } // the resumption after the pause
	_, rep := w.settle(t, sim.Policy{})
	if rep.Completed != rep.Jobs {
		t.Errorf("after reconnecting: %s", rep)
	}
}
