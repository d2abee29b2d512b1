package store_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/emu"
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
