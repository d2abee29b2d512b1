package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	mu         sync.Mutex
	settings   []model.SyncSetting
	tenants    map[string]model.Tenant
	unfinished []model.Job
	pending    map[string][]int
	slices     map[string][]model.Slice
	paused     map[string]bool // settings whose last Job is paused
	finished   []string        // FinishPlan calls
	created    []string
	completed  []string
	published  map[string][]string // topic → job or job#chunk
	parts      []delivery.Message  // messages on the ticks topic, not yet delivered
	dead       []model.DeadLetter
	keys       []idem.Key
}

func (f *fakes) EnabledSettingIDs(_ context.Context, after string, limit int) ([]string, error) {
	var ids []string
	for _, st := range f.settings {
		if st.ID > after && len(ids) < limit {
			ids = append(ids, st.ID)
		}
	}
	return ids, nil
}
func (f *fakes) Settings(_ context.Context, ids []string) ([]model.SyncSetting, error) {
	var out []model.SyncSetting
	for _, st := range f.settings {
		if slices.Contains(ids, st.ID) {
			st.Enabled = true
			out = append(out, st)
		}
	}
	return out, nil
}
func (f *fakes) Tenants(_ context.Context, ids []string) (map[string]model.Tenant, error) {
	out := map[string]model.Tenant{}
	for _, id := range ids {
		if t, ok := f.tenants[id]; ok {
			out[id] = t
		}
	}
	return out, nil
}
func (f *fakes) CreateJob(_ context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paused[settingID] {
		return model.Job{}, false, fmt.Errorf("setting %q: %w", settingID, store.ErrPaused)
	}
	f.created = append(f.created, settingID)
	return model.Job{ID: model.JobID(settingID, tickID), TenantID: "acme", Status: model.JobPending, WindowTo: to, ChunkSize: size}, true, nil
}
func (f *fakes) UnfinishedJobs(_ context.Context, _ time.Time, after *model.JobCursor, limit int) ([]model.Job, error) {
	start := 0
	if after != nil {
		start = slices.IndexFunc(f.unfinished, func(j model.Job) bool { return j.ID == after.ID }) + 1
	}
	return f.unfinished[start:min(len(f.unfinished), start+limit)], nil
}
func (f *fakes) CountUnfinished(context.Context, time.Time) (int, error) {
	return len(f.unfinished), nil
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
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		if topic == "ticks" {
			f.parts = append(f.parts, delivery.Message{ID: fmt.Sprintf("part-%d", len(f.parts)), Data: m.Data})
			continue
		}
		var cm struct {
			model.ChunkMessage
			Slice int `json:"slice"`
		}
		_ = json.Unmarshal(m.Data, &cm)
		what := cm.JobID
		switch {
		case topic == "chunks" || topic == "chunks-bulk":
			what = fmt.Sprintf("%s#%d", cm.JobID, cm.Chunk)
		case cm.Slice > 0:
			what = fmt.Sprintf("%s/%d", cm.JobID, cm.Slice)
		}
		f.published[topic] = append(f.published[topic], what)
	}
	return make([]string, len(msgs)), nil
}
func (f *fakes) DeadLetter(_ context.Context, d model.DeadLetter) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dead = append(f.dead, d)
	return nil
}
func (f *fakes) Run(ctx context.Context, k idem.Key, owner string, _ map[string]string, work idem.Work) error {
	f.keys = append(f.keys, k)
	return work(ctx, &idem.Lease{Key: k, Owner: owner, Attempt: 1})
}

// run delivers m, then every part of the tick it publishes, until none is left.
func run(t *testing.T, f *fakes, m delivery.Message) error {
	t.Helper()
	return runWith(t, f, m, func(*scheduler.Config) {})
}

func runWith(t *testing.T, f *fakes, m delivery.Message, adjust func(*scheduler.Config)) error {
	t.Helper()
	if f.published == nil {
		f.published = map[string][]string{}
	}
	cfg := scheduler.Config{Store: f, Guard: f, Publisher: f, DeadLetters: f, TopicTicks: "ticks", TopicExpand: "expand", TopicChunks: "chunks",
		ChunkSize: 500, WindowLag: time.Minute, StuckAfter: 20 * time.Minute, SweepLimit: 10, Now: func() time.Time { return t0 }}
	adjust(&cfg)
	h, err := scheduler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(t.Context(), m); err != nil {
		return err
	}
	for len(f.parts) > 0 {
		p := f.parts[0]
		f.parts = f.parts[1:]
		if err := h.Handle(t.Context(), p); err != nil {
			return err
		}
	}
	return nil
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
	slices.Sort(f.created)
	if !slices.Equal(f.created, []string{"good1", "good2"}) || len(f.published["expand"]) != 2 || f.keys[0] != idem.TickKey("t1") {
		t.Errorf("created %v, expand messages %v, keys %v", f.created, f.published["expand"], f.keys)
	}
	var reasons []string
	for _, d := range f.dead {
		reasons = append(reasons, d.Reason)
	}
	slices.Sort(reasons)
	if !slices.Equal(reasons, []string{"invalid_setting", "invalid_setting", "tenant_disabled", "unknown_tenant"}) {
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

// The sweep re-publishes a stuck Job's chunks to its class's lane: a bulk Job's backlog never
// lands in front of small Jobs' chunks; with one lane configured, every Job's go to it.
func TestTheSweepRepublishesChunksToTheirJobsLane(t *testing.T) {
	jobs := func() *fakes {
		return &fakes{
			unfinished: []model.Job{
				{ID: "j-small", TenantID: "acme", Status: model.JobPlanned, ChunkCount: 2},
				{ID: "j-bulk", TenantID: "globex", Status: model.JobPlanned, ChunkCount: 90, Class: model.ClassBulk},
			},
			pending: map[string][]int{"j-small": {1}, "j-bulk": {7, 88}},
		}
	}
	f := jobs()
	if err := runWith(t, f, tick("t2"), func(c *scheduler.Config) { c.TopicChunksBulk = "chunks-bulk" }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.published["chunks"], []string{"j-small#1"}) || !slices.Equal(f.published["chunks-bulk"], []string{"j-bulk#7", "j-bulk#88"}) {
		t.Errorf("standard lane %v, bulk lane %v; want j-small#1 and j-bulk#7, j-bulk#88", f.published["chunks"], f.published["chunks-bulk"])
	}
	one := jobs()
	if err := run(t, one, tick("t2")); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(one.published["chunks"], []string{"j-small#1", "j-bulk#7", "j-bulk#88"}) || len(one.published["chunks-bulk"]) > 0 {
		t.Errorf("one lane: chunks %v, bulk %v", one.published["chunks"], one.published["chunks-bulk"])
	}
}

// A tick fans out: units of UnitSize settings, each its own part and key, and the sweep's pages;
// a paused setting and a disconnected tenant's get no Job.
func TestATickFansOutIntoUnitsAndSweepPages(t *testing.T) {
	f := &fakes{tenants: map[string]model.Tenant{
		"acme": {ID: "acme", Enabled: true},
		"gone": {ID: "gone", Enabled: true, Connection: &model.ConnectionState{State: model.Disconnected, Reason: "invalid_grant"}},
	}, paused: map[string]bool{"s-003": true}}
	for i := range 25 {
		f.settings = append(f.settings, model.SyncSetting{ID: fmt.Sprintf("s-%03d", i), TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert})
	}
	f.settings = append(f.settings, model.SyncSetting{ID: "t-gone", TenantID: "gone", SourceObject: "Contact", Target: model.TargetUpsert})
	for i := range 7 {
		f.unfinished = append(f.unfinished, model.Job{ID: fmt.Sprintf("j%d", i), TenantID: "acme", Status: model.JobPending})
	}
	err := runWith(t, f, tick("t1"), func(c *scheduler.Config) { c.UnitSize, c.SweepLimit = 10, 3 })
	if err != nil {
		t.Fatal(err)
	}
	if len(f.created) != 24 || slices.Contains(f.created, "s-003") || slices.Contains(f.created, "t-gone") {
		t.Errorf("created %d Jobs %v; want 24: one per setting, none for the paused one nor the disconnected tenant's", len(f.created), f.created)
	}
	units, sweeps := 0, 0
	seen := map[idem.Key]bool{}
	for _, k := range f.keys {
		if seen[k] {
			t.Errorf("key %v claimed twice", k)
		}
		seen[k] = true
		switch {
		case strings.Contains(k.ID, "~unit~"):
			units++
		case strings.Contains(k.ID, "~sweep~"):
			sweeps++
		}
	}
	// 26 settings in units of 10; 7 stuck Jobs in pages of 3 (the last page short).
	if units != 3 || sweeps != 3 || len(f.published["expand"]) != 24+7 {
		t.Errorf("%d units, %d sweep pages, %d expand messages; want 3, 3 and 31", units, sweeps, len(f.published["expand"]))
	}
}

// A spent budget hands the rest of a unit off as a smaller unit, and every setting still gets its
// Job once.
func TestASpentBudgetHandsTheRestOfAUnitOff(t *testing.T) {
	f := &fakes{tenants: map[string]model.Tenant{"acme": {ID: "acme", Enabled: true}}}
	for i := range 12 {
		f.settings = append(f.settings, model.SyncSetting{ID: fmt.Sprintf("s-%02d", i), TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert})
	}
	err := runWith(t, f, tick("t1"), func(c *scheduler.Config) {
		c.UnitSize, c.Concurrency, c.Budget, c.Elapsed = 12, 1, 5*time.Second, secondPerReading()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(f.created)
	if len(f.created) != 12 || len(slices.Compact(slices.Clone(f.created))) != 12 {
		t.Errorf("created %v; want each of the 12 settings once", f.created)
	}
	units := 0
	for _, k := range f.keys {
		if strings.Contains(k.ID, "~unit~") {
			units++
		}
	}
	if units < 3 {
		t.Errorf("%d unit deliveries; want the unit handed off at least twice (5 s of budget, 1 s a setting)", units)
	}
}

// A listing of more settings than a page hands the rest off when its budget is spent: each
// continuation is its own part (and key), and every setting still gets its Job once.
func TestASpentBudgetHandsTheListingOff(t *testing.T) {
	f := &fakes{tenants: map[string]model.Tenant{"acme": {ID: "acme", Enabled: true}}}
	for i := range 2500 {
		f.settings = append(f.settings, model.SyncSetting{ID: fmt.Sprintf("s-%05d", i), TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert})
	}
	err := runWith(t, f, tick("t1"), func(c *scheduler.Config) { c.Budget, c.Elapsed = time.Second, secondPerReading() })
	if err != nil {
		t.Fatal(err)
	}
	lists := 0
	for _, k := range f.keys {
		if k == idem.TickKey("t1") || strings.Contains(k.ID, "~list~") {
			lists++
		}
	}
	slices.Sort(f.created)
	if len(f.created) != 2500 || len(slices.Compact(slices.Clone(f.created))) != 2500 || lists != 3 {
		t.Errorf("%d Jobs (%d settings), %d listing deliveries; want every setting once, listed by the tick and 2 continuations",
			len(f.created), len(slices.Compact(slices.Clone(f.created))), lists)
	}
}

// secondPerReading is a budget clock that moves a second each time it is read.
func secondPerReading() func() time.Time {
	var mu sync.Mutex
	clock := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Second)
		return clock
	}
}

// slowFakes creates the Job of "s-slow" slowly, and counts Job creations still running.
type slowFakes struct {
	*fakes
	running atomic.Int32
}

func (s *slowFakes) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	s.running.Add(1)
	defer s.running.Add(-1)
	if settingID == "s-slow" {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return model.Job{}, false, ctx.Err()
		}
	}
	return s.fakes.CreateJob(ctx, settingID, tickID, to, size)
}

// A unit that dies between two Jobs (a crash at StepScheduled) leaves nothing of itself running:
// no Job is created after the delivery has returned.
func TestACrashedUnitLeavesNoJobBeingCreated(t *testing.T) {
	f := &slowFakes{fakes: &fakes{tenants: map[string]model.Tenant{"acme": {ID: "acme", Enabled: true}}, published: map[string][]string{}}}
	for _, id := range []string{"s-fast", "s-slow"} {
		f.settings = append(f.settings, model.SyncSetting{ID: id, TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert})
	}
	h, err := scheduler.New(scheduler.Config{Store: f, Guard: f, Publisher: f, DeadLetters: f, TopicTicks: "ticks", TopicExpand: "expand",
		TopicChunks: "chunks", ChunkSize: 500, StuckAfter: time.Hour, SweepLimit: 10, Now: func() time.Time { return t0 },
		Probe: func(_ context.Context, step string) {
			if step == scheduler.StepScheduled {
				panic("crash")
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(model.TickMessage{TickID: "t1", At: t0, Unit: []string{"s-fast", "s-slow"}})
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the probe did not crash the delivery")
			}
		}()
		_ = h.Handle(t.Context(), delivery.Message{ID: "u1", Data: b})
	}()
	if n := f.running.Load(); n != 0 {
		t.Errorf("%d Job creations still running after the delivery crashed", n)
	}
}
