package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/store"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s := store.New(emu.Firestore(t, emu.ProjectID(t)), func() time.Time { return t0 })
	if _, err := s.Client.Collection(model.SyncSettings).Doc("s1").Set(t.Context(), model.SyncSetting{
		TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert, Enabled: true, Watermark: t0.Add(-time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateJobOncePerTickAndAdvancesTheWatermarkOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	created := make([]bool, 5)
	for i := range created {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, ok, err := s.CreateJob(ctx, "s1", "tick-1", t0, 500)
			if err != nil {
				t.Errorf("create %d: %v", i, err)
			}
			if j.ID != model.JobID("s1", "tick-1") || !j.WindowFrom.Equal(t0.Add(-time.Hour)) || !j.WindowTo.Equal(t0) || j.ChunkSize != 500 {
				t.Errorf("job %+v", j)
			}
			created[i] = ok
		}()
	}
	wg.Wait()
	n := 0
	for _, c := range created {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 5 racing deliveries created the job, want 1", n)
	}
	// The next tick's window starts where this one ended.
	j2, ok, err := s.CreateJob(ctx, "s1", "tick-2", t0.Add(10*time.Minute), 500)
	if err != nil || !ok || !j2.WindowFrom.Equal(t0) {
		t.Fatalf("second tick: %+v %v %v", j2, ok, err)
	}
	// A late tick makes nothing.
	if _, _, err := s.CreateJob(ctx, "s1", "tick-0", t0, 500); !errors.Is(err, store.ErrEmptyWindow) {
		t.Errorf("late tick: %v, want ErrEmptyWindow", err)
	}
	if _, _, err := s.CreateJob(ctx, "nope", "tick-3", t0, 500); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown setting: %v, want ErrNotFound", err)
	}
}

func TestCompleteJobOnlyWhenEveryChunkIsDoneAndOnlyOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	j, _, err := s.CreateJob(ctx, "s1", "t", t0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.JobRef(j.ID).Update(ctx, []firestore.Update{{Path: "status", Value: model.JobPlanned}, {Path: "chunkCount", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []model.ChunkStatus{model.ChunkDone, model.ChunkPending} {
		if _, err := s.ChunkRef(j.ID, i).Set(ctx, model.Chunk{Index: i, Status: st, Count: 2, Imported: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.CompleteJob(ctx, j.ID); err != nil || ok {
		t.Fatalf("with a chunk pending: completed %v, err %v", ok, err)
	}
	if p, err := s.PendingChunks(ctx, j.ID); err != nil || len(p) != 1 || p[0] != 1 {
		t.Fatalf("pending = %v, %v", p, err)
	}
	if _, err := s.ChunkRef(j.ID, 1).Set(ctx, model.Chunk{Index: 1, Status: model.ChunkDone, Count: 2, Imported: 1, Unchanged: 1}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	completions := 0
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.CompleteJob(ctx, j.ID)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				completions++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if completions != 1 {
		t.Fatalf("%d completions, want 1", completions)
	}
	got, err := s.Job(ctx, j.ID)
	if err != nil || got.Status != model.JobCompleted || got.Imported != 3 || got.Unchanged != 1 {
		t.Errorf("job %+v, err %v: want COMPLETED with imported 3, unchanged 1", got, err)
	}
	done, err := s.JobRef(j.ID).Collection(model.Chunks).Where("status", "==", model.ChunkDone).Documents(ctx).GetAll()
	if err != nil || len(done) != 2 {
		t.Errorf("done chunks %d %v", len(done), err)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if _, err := s.Job(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("job: %v", err)
	}
	if _, err := s.Tenant(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("tenant: %v", err)
	}
}

// TestSlicedPlanIsRecordedOnceByTheLastSlice: each slice's plan is recorded under its own key;
// FinishPlan, asked by both slices' expansions at once after the last slice is recorded, marks the
// Job PLANNED once, with totals summed from the slices, and not before every slice is planned.
func TestSlicedPlanIsRecordedOnceByTheLastSlice(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	keys, err := idem.New(idem.Config{Client: s.Client, Lease: 15 * time.Minute, Retention: 192 * time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	p := store.Planner{Store: s, Fence: keys}
	job, _, err := s.CreateJob(ctx, "s1", "tick-1", t0, 2)
	if err != nil {
		t.Fatal(err)
	}
	mid := t0.Add(-30 * time.Minute)
	cut := []model.Slice{
		{Index: 0, From: job.WindowFrom, To: mid, Estimate: 3, Status: model.SlicePending},
		{Index: 1, From: mid, To: job.WindowTo, Estimate: 2, Status: model.SlicePending},
	}
	leases := make([]*idem.Lease, len(cut))
	for i := range cut {
		if leases[i], err = keys.Claim(ctx, idem.SliceKey(job.ID, i), fmt.Sprint("owner-", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if job, err = p.CutSlices(ctx, leases[0], job, cut, 0); err != nil || job.SliceCount != 2 {
		t.Fatalf("cut: %v, %+v", err, job)
	}
	if job, err = p.DecideSlots(ctx, leases[0], job, 2); err != nil || job.SearchSlots != 2 {
		t.Fatalf("decide: %v, %+v", err, job)
	}
	// Slice 0: chunks 0 and 1; slice 1: chunk 1,000,000, found by its slice's index range only.
	chunk := func(index, n int) model.Chunk {
		return model.Chunk{Index: index, JobID: job.ID, TenantID: "acme", Status: model.ChunkPending, Count: n, LastID: fmt.Sprint("r", index)}
	}
	if err := p.WriteChunks(ctx, leases[0], []model.Chunk{chunk(0, 2), chunk(1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteChunks(ctx, leases[1], []model.Chunk{chunk(model.ChunkIndex(1, 0), 2)}); err != nil {
		t.Fatal(err)
	}
	for sl, want := range map[int][2]int{0: {2, 3}, 1: {1, 2}} {
		last, err := s.LastChunk(ctx, job.ID, sl)
		n, rows, terr := s.PlanTotals(ctx, job.ID, sl)
		if err != nil || terr != nil || last == nil || last.Index != model.ChunkIndex(sl, want[0]-1) || n != want[0] || rows != want[1] {
			t.Errorf("slice %d: last %+v (%v), totals %d chunks %d rows (%v); want %v", sl, last, err, n, rows, terr, want)
		}
	}
	if err := p.FinishSlice(ctx, leases[0], job.ID, cut[0], 2, 3); err != nil {
		t.Fatal(err)
	}
	if j, rec, err := s.FinishPlan(ctx, job.ID); err != nil || j.Status != model.JobPending || rec {
		t.Fatalf("with slice 1 still searched, FinishPlan gave %v, %s; want the Job left PENDING", err, j.Status)
	}
	if open, err := s.OpenSlice(ctx, job.ID); err != nil || !open {
		t.Fatalf("open slice: %v, %v", open, err)
	}
	if err := p.FinishSlice(ctx, leases[1], job.ID, cut[1], 1, 2); err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		recorded atomic.Int32
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, rec, err := s.FinishPlan(ctx, job.ID)
			if err != nil || j.Status != model.JobPlanned {
				t.Errorf("FinishPlan: %v, %s", err, j.Status)
			}
			if rec {
				recorded.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := recorded.Load(); n != 1 {
		t.Errorf("%d of 4 racing FinishPlan calls say they recorded the plan; want exactly 1 (job_planned is logged once per Job)", n)
	}
	j, err := s.Job(ctx, job.ID)
	if err != nil || j.Status != model.JobPlanned || j.ChunkCount != 3 || j.RecordCount != 5 {
		t.Fatalf("job %+v (%v): want PLANNED with 3 chunks and 5 rows", j, err)
	}
	slices, err := s.Slices(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := model.PlanIndexes(j, slices); fmt.Sprint(got) != fmt.Sprint([]int{0, 1, model.ChunkIndex(1, 0)}) {
		t.Errorf("plan indexes %v, want 0 1 1000000", got)
	}
}
