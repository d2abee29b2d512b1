package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/store"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

type fakes struct {
	settings   []model.SyncSetting
	tenants    map[string]model.Tenant
	unfinished []model.Job
	pending    map[string][]int
	slices     map[string][]model.Slice
	finished   []string // FinishPlan calls
	created    []string
	completed  []string
	published  map[string][]string // topic → job or job#chunk
	dead       []model.DeadLetter
	key        idem.Key
}

func (f *fakes) EnabledSettings(context.Context) ([]model.SyncSetting, error) { return f.settings, nil }
func (f *fakes) Tenant(_ context.Context, id string) (model.Tenant, error) {
	t, ok := f.tenants[id]
	if !ok {
		return t, fmt.Errorf("tenant %q: %w", id, store.ErrNotFound)
	}
	return t, nil
}
func (f *fakes) CreateJob(_ context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	f.created = append(f.created, settingID)
	return model.Job{ID: model.JobID(settingID, tickID), TenantID: "acme", Status: model.JobPending, WindowTo: to, ChunkSize: size}, true, nil
}
func (f *fakes) UnfinishedJobs(context.Context, time.Time, int) ([]model.Job, error) {
	return f.unfinished, nil
}
func (f *fakes) PendingChunks(_ context.Context, jobID string) ([]int, error) {
	return f.pending[jobID], nil
}
func (f *fakes) CompleteJob(_ context.Context, jobID string) (bool, error) {
	f.completed = append(f.completed, jobID)
	return true, nil
}
func (f *fakes) Slices(_ context.Context, jobID string) ([]model.Slice, error) {
	return f.slices[jobID], nil
}
func (f *fakes) FinishPlan(_ context.Context, jobID string) (model.Job, bool, error) {
	f.finished = append(f.finished, jobID)
	return model.Job{ID: jobID, Status: model.JobPlanned}, true, nil
}
func (f *fakes) Publish(_ context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	for _, m := range msgs {
		var cm struct {
			model.ChunkMessage
			Slice int `json:"slice"`
		}
		_ = json.Unmarshal(m.Data, &cm)
		what := cm.JobID
		switch {
		case topic == "chunks":
			what = fmt.Sprintf("%s#%d", cm.JobID, cm.Chunk)
		case cm.Slice > 0:
			what = fmt.Sprintf("%s/%d", cm.JobID, cm.Slice)
		}
		f.published[topic] = append(f.published[topic], what)
	}
	return make([]string, len(msgs)), nil
}
func (f *fakes) DeadLetter(_ context.Context, d model.DeadLetter) error {
	f.dead = append(f.dead, d)
	return nil
}
func (f *fakes) Run(ctx context.Context, k idem.Key, owner string, _ map[string]string, work idem.Work) error {
	f.key = k
	return work(ctx, &idem.Lease{Key: k, Owner: owner, Attempt: 1})
}

func run(t *testing.T, f *fakes, m delivery.Message) error {
	t.Helper()
	if f.published == nil {
		f.published = map[string][]string{}
	}
	h, err := scheduler.New(scheduler.Config{Store: f, Guard: f, Publisher: f, DeadLetters: f, TopicExpand: "expand", TopicChunks: "chunks",
		ChunkSize: 500, WindowLag: time.Minute, StuckAfter: 20 * time.Minute, SweepLimit: 10, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return h.Handle(t.Context(), m)
}

func tick(id string) delivery.Message {
	b, _ := json.Marshal(model.TickMessage{TickID: id, At: t0})
	return delivery.Message{ID: "m-" + id, Data: b}
}

func TestOneJobPerSchedulableSettingAndBadSettingsDeadLettered(t *testing.T) {
	f := &fakes{
		tenants: map[string]model.Tenant{"acme": {ID: "acme", Enabled: true}, "off": {ID: "off"}},
		settings: []model.SyncSetting{
			{ID: "good1", TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert},
			{ID: "ghost", TenantID: "nobody", SourceObject: "Contact", Target: model.TargetUpsert},
			{ID: "disabled", TenantID: "off", SourceObject: "Contact", Target: model.TargetUpsert},
			{ID: "noobject", TenantID: "acme", Target: model.TargetUpsert},
			{ID: "badtarget", TenantID: "acme", SourceObject: "Contact", Target: "spreadsheet"},
			{ID: "good2", TenantID: "acme", SourceObject: "Lead", Target: model.TargetGenerated},
		},
	}
	if err := run(t, f, tick("t1")); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.created, []string{"good1", "good2"}) || len(f.published["expand"]) != 2 || f.key != idem.TickKey("t1") {
		t.Errorf("created %v, expand messages %v, key %v", f.created, f.published["expand"], f.key)
	}
	var reasons []string
	for _, d := range f.dead {
		reasons = append(reasons, d.Reason)
	}
	if !slices.Equal(reasons, []string{"unknown_tenant", "tenant_disabled", "invalid_setting", "invalid_setting"}) {
		t.Errorf("dead letters %v", reasons)
	}
}

func TestTickWithoutTimeIsPoison(t *testing.T) {
	err := run(t, &fakes{}, delivery.Message{ID: "m", Data: []byte(`{"tickId":"x"}`)})
	var pe *delivery.PoisonError
	if !errors.As(err, &pe) || pe.Reason != "malformed_message" {
		t.Errorf("Handle() = %v, want malformed_message", err)
	}
}

func TestSweepRepublishesStuckWork(t *testing.T) {
	f := &fakes{
		unfinished: []model.Job{
			{ID: "j-pending", TenantID: "acme", Status: model.JobPending},
			{ID: "j-planned", TenantID: "acme", Status: model.JobPlanned, ChunkCount: 3},
			{ID: "j-alldone", TenantID: "acme", Status: model.JobPlanned, ChunkCount: 2},
			// Sliced, 2 searched at once: slice 0 and 1 planned, so 2 and 3 may run; 4 waits for 2.
			{ID: "j-sliced", TenantID: "acme", Status: model.JobPending, SliceCount: 5, SearchSlots: 2},
			// Every slice planned, the plan not recorded: the sweep records it.
			{ID: "j-slices-done", TenantID: "acme", Status: model.JobPending, SliceCount: 2, SearchSlots: 2},
		},
		pending: map[string][]int{"j-planned": {0, 2}},
		slices: map[string][]model.Slice{
			"j-sliced": {{Index: 0, Status: model.SlicePlanned}, {Index: 1, Status: model.SlicePlanned}, {Index: 2, Status: model.SlicePending},
				{Index: 3, Status: model.SlicePending}, {Index: 4, Status: model.SlicePending}},
			"j-slices-done": {{Index: 0, Status: model.SlicePlanned}, {Index: 1, Status: model.SlicePlanned}},
		},
	}
	if err := run(t, f, tick("t2")); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.finished, []string{"j-slices-done"}) {
		t.Errorf("plans finished by the sweep %v, want j-slices-done", f.finished)
	}
	if !slices.Equal(f.published["expand"], []string{"j-pending", "j-sliced/2", "j-sliced/3"}) || !slices.Equal(f.published["chunks"], []string{"j-planned#0", "j-planned#2"}) ||
		!slices.Equal(f.completed, []string{"j-alldone"}) {
		t.Errorf("expand %v, chunks %v, completed %v", f.published["expand"], f.published["chunks"], f.completed)
	}
}
