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
