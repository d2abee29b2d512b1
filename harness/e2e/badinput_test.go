package e2e

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
)

// reasons returns the dead letters' "kind/function/reason", sorted.
func reasons(t *testing.T, e *sim.Env) []string {
	t.Helper()
	dls, err := e.DeadLetters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dls {
		out = append(out, d.Kind+"/"+d.Function+"/"+d.Reason)
	}
	sort.Strings(out)
	return out
}

func TestMalformedEventsAreDeadLetteredAndAcked(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 50, 20, 11, sim.Options{})
	ctx := t.Context()
	ev := func(id, typ string, data []byte) event.Event {
		e := event.New()
		e.SetID(id)
		e.SetType(typ)
		e.SetSource("//pubsub.googleapis.com/projects/p/topics/expand")
		_ = e.SetData("application/json", data)
		return e
	}
	cases := []struct {
		fn string
		ev event.Event
	}{
		{"Expander", ev("m1", "google.cloud.storage.object.v1.finalized", []byte(`{}`))},
		{"Expander", ev("m2", "google.cloud.pubsub.topic.v1.messagePublished", []byte(`not json`))},
		{"Importer", ev("m3", "google.cloud.pubsub.topic.v1.messagePublished", []byte(`{"message":{"messageId":"m3","data":"bm90IGpzb24="}}`))},
		{"Importer", ev("m4", "google.cloud.pubsub.topic.v1.messagePublished", []byte(`{"message":{"messageId":"m4","data":"e30="}}`))},
		{"Expander", ev("m5", "google.cloud.pubsub.topic.v1.messagePublished", mustJSON(t, map[string]any{"message": map[string]any{
			"messageId": "m5", "data": mustJSON(t, model.ExpandMessage{TenantID: "acme", JobID: "no-such-job"})}}))},
		{"Importer", ev("m6", "google.cloud.pubsub.topic.v1.messagePublished", mustJSON(t, map[string]any{"message": map[string]any{
			"messageId": "m6", "data": mustJSON(t, model.ChunkMessage{TenantID: "acme", JobID: "no-such-job", Chunk: 0})}}))},
	}
	for _, c := range cases {
		if err := w.CallEvent(ctx, c.fn, c.ev); err != nil {
			t.Errorf("%s %s: got error %v, want nil (acked, dead-lettered)", c.fn, c.ev.ID(), err)
		}
	}
	// A poison message redelivered is still one dead letter, with its attempts counted.
	if err := w.CallEvent(ctx, cases[1].fn, cases[1].ev); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"message/Expander/malformed_event", "message/Expander/malformed_event", "message/Expander/unknown_job",
		"message/Importer/malformed_message", "message/Importer/missing_field", "message/Importer/unknown_job",
	}
	if diff := cmp.Diff(want, reasons(t, w.Env)); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	dls, _ := w.DeadLetters(ctx)
	for _, d := range dls {
		if d.MessageID == "m2" && d.Attempts != 2 {
			t.Errorf("m2 dead letter attempts = %d, want 2", d.Attempts)
		}
	}
	// Nothing else was lost: the pipeline still imports everything.
	tick(t, w.Env, "t1")
	w.expect.PoisonMessages = 6
	w.settle(t, sim.Policy{})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnknownTenantIsDeadLetteredOthersImport(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 80, 25, 12, sim.Options{})
	ctx := t.Context()
	w.Setting(ctx, model.SyncSetting{ID: "ghost-contacts", TenantID: "ghost", SourceObject: "Contact", Target: model.TargetUpsert,
		ChunkSize: 10, Enabled: true, Watermark: windowStart})
	w.Setting(ctx, model.SyncSetting{ID: "acme-bad-target", TenantID: "acme", SourceObject: "Contact", Target: "spreadsheet",
		ChunkSize: 10, Enabled: true, Watermark: windowStart})
	tick(t, w.Env, "t1")
	w.expect.PoisonSettings = 2
	_, rep := w.settle(t, sim.Policy{})
	if rep.Jobs != 2 {
		t.Errorf("jobs = %d, want 2 (the unknown tenant's and the invalid setting make none)", rep.Jobs)
	}
	want := []string{"setting/Scheduler/invalid_setting", "setting/Scheduler/unknown_tenant"}
	got := reasons(t, w.Env)
	if diff := cmp.Diff(want, filter(got, "setting/")); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
}

func filter(s []string, prefix string) []string {
	var out []string
	for _, x := range s {
		if strings.HasPrefix(x, prefix) {
			out = append(out, x)
		}
	}
	return out
}

func TestBadSourceRowsAreDeadLetteredOneByOne(t *testing.T) {
	t.Parallel()
	from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)
	e := sim.New(t, sim.Options{Start: to})
	ctx := t.Context()
	object, rows, err := fixture.LoadFile(filepath.Join("..", "..", "fixtures", "salesforce", "contacts_bad.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.Fixture.Put(object, rows...)
	e.Tenant(ctx, "acme")
	st := model.SyncSetting{ID: "acme-bad", TenantID: "acme", SourceObject: object, Fields: []string{"Name"},
		Target: model.TargetGenerated, ChunkSize: 5, Enabled: true, Watermark: from}
	e.Setting(ctx, st)
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SettleAll(ctx, sim.Policy{}, 2); err != nil {
		t.Fatal(err)
	}
	jobs, err := e.Jobs(ctx)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v, err %v", jobs, err)
	}
	j := jobs[0]
	if j.Status != model.JobCompleted || j.RecordCount != 12 || j.InvalidCount != 10 {
		t.Errorf("job %s: status %s, %d rows, %d invalid; want COMPLETED, 12 rows, 10 invalid", j.ID, j.Status, j.RecordCount, j.InvalidCount)
	}
	if got := filter(reasons(t, e), "record/"); len(got) != 10 {
		t.Errorf("row dead letters = %v, want 10 invalid_source_row", got)
	}
	n, err := e.FS.Collection(model.EngagementsGen).Where("tenantId", "==", "acme").Documents(ctx).GetAll()
	if err != nil || len(n) != 12 {
		t.Errorf("engagements = %d (err %v), want the 12 good rows", len(n), err)
	}
}

func TestSourceRejectingTheSearchFailsOnlyThatJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 60, 25, 13, sim.Options{})
	w.Fixture.Inject(fixture.Rule{Match: func(r fixture.RequestInfo) bool { return r.Object == "Lead" }, Status: 400, Times: 0})
	tick(t, w.Env, "t1")
	ctx := t.Context()
	if _, err := w.SettleAll(ctx, sim.Policy{}, 2); err != nil {
		t.Fatal(err)
	}
	jobs, _ := w.Jobs(ctx)
	status := map[string]model.JobStatus{}
	for _, j := range jobs {
		status[j.SettingID] = j.Status
	}
	want := map[string]model.JobStatus{"acme-upsert": model.JobCompleted, "acme-generated": model.JobFailed}
	if diff := cmp.Diff(want, status); diff != "" {
		t.Errorf("job statuses (-want +got):\n%s", diff)
	}
	if got := reasons(t, w.Env); !cmp.Equal(got, []string{"message/Expander/source_rejected_search"}) {
		t.Errorf("dead letters = %v", got)
	}
}

// A FAILED Job is not lost for good: once the cause is fixed, replaying its dead letter reopens it,
// the plan resumes after the chunks written before the refusal, and every row of its window is
// imported exactly once. A second replay changes nothing.
func TestReplayAfterTheFixImportsAFailedJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 60, 10, 14, sim.Options{PageSize: 15})
	// The source refuses the Lead search from its third page on: two chunks are written first.
	w.Fixture.Inject(fixture.Rule{Match: func(r fixture.RequestInfo) bool { return r.Object == "Lead" && r.Page >= 2 }, Status: 400, Times: 0})
	tick(t, w.Env, "t1")
	ctx := t.Context()
	if _, err := w.SettleAll(ctx, sim.Policy{}, 2); err != nil {
		t.Fatal(err)
	}
	failed := jobOf(t, w.Env, "acme-generated")
	if failed.Status != model.JobFailed || failed.Searches != 1 {
		t.Fatalf("before the fix: Job %s is %s after %d searches, want FAILED after 1", failed.ID, failed.Status, failed.Searches)
	}
	written, err := w.FS.Collection(model.Jobs).Doc(failed.ID).Collection(model.Chunks).Documents(ctx).GetAll()
	if err != nil || len(written) == 0 {
		t.Fatalf("chunks written before the refusal: %d (err %v), want some, so that the replay resumes", len(written), err)
	}
	a := audit.New(w.FS)
	a.Now = w.Clock.Now
	dls, err := a.DeadLetters(ctx, audit.DeadLetterFilter{Job: failed.ID})
	if err != nil || len(dls) != 1 || dls[0].Reason != "source_rejected_search" {
		t.Fatalf("dead letters of the FAILED Job: %+v (err %v)", dls, err)
	}

	w.Fixture.ClearFaults() // the fix
	r := &audit.Replayer{Client: w.FS, Publisher: w.Pub, Now: w.Clock.Now}
	res, err := r.Replay(ctx, dls[0].ID, audit.ReplayOptions{})
	if err != nil || res.Outcome != audit.Replayed || res.ReopenedJob != failed.ID {
		t.Fatalf("replay: %+v (err %v), want replayed with Job %s reopened", res, err, failed.ID)
	}
	// Expected: the refused search's dead letter, and two searches of the FAILED Job (the refused
	// one, and the one after the fix).
	w.expect.PoisonMessages = 1
	w.expect.MaxSearches = func(id string) int {
		if id == failed.ID {
			return 2
		}
		return 1
	}
	w.settle(t, sim.Policy{})
	done := jobOf(t, w.Env, "acme-generated")
	if done.Status != model.JobCompleted || done.Reopens != 1 || done.Searches != 2 || done.Failure != "" {
		t.Errorf("after the replay: Job %s is %s, %d reopens, %d searches, failure %q; want COMPLETED, 1, 2, none",
			done.ID, done.Status, done.Reopens, done.Searches, done.Failure)
	}
	rep, err := a.Job(ctx, done.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Errorf("audit after the replay: %+v", rep.Findings)
	}
	again, err := r.Replay(ctx, dls[0].ID, audit.ReplayOptions{})
	if err != nil || again.Outcome != audit.AlreadyReplayed || again.ReopenedJob != "" {
		t.Errorf("second replay: %+v (err %v), want already replayed", again, err)
	}
	if j := jobOf(t, w.Env, "acme-generated"); j.Status != model.JobCompleted || j.Reopens != 1 {
		t.Errorf("after the second replay: %s, %d reopens", j.Status, j.Reopens)
	}
}

// jobOf returns the only Job of setting.
func jobOf(t *testing.T, e *sim.Env, setting string) model.Job {
	t.Helper()
	jobs, err := e.Jobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []model.Job
	for _, j := range jobs {
		if j.SettingID == setting {
			out = append(out, j)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d Jobs of setting %s, want 1", len(out), setting)
	}
	return out[0]
}
