package importer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/store"
	"github.com/oncesync/oncesync/shared/target"
)

type fakes struct {
	job         model.Job
	jobErr      error
	commits     int
	commitRes   target.Result
	commitErr   error
	completions int
	completeErr error
	key         idem.Key
}

func (f *fakes) Job(context.Context, string) (model.Job, error) { return f.job, f.jobErr }
func (f *fakes) CompleteIfDone(context.Context, string) (bool, error) {
	f.completions++
	return f.completeErr == nil, f.completeErr
}
func (f *fakes) Commit(context.Context, model.Job, int) (target.Result, error) {
	f.commits++
	return f.commitRes, f.commitErr
}

// Run runs the work as idem.Guard would after a successful claim, and hands its error back as is.
func (f *fakes) Run(ctx context.Context, k idem.Key, owner string, _ map[string]string, work idem.Work) error {
	f.key = k
	return work(ctx, &idem.Lease{Key: k, Owner: owner, Attempt: 1})
}

func msg(v any) delivery.Message {
	b, _ := json.Marshal(v)
	return delivery.Message{ID: "m1", Data: b}
}

func run(t *testing.T, f *fakes, m delivery.Message) error {
	t.Helper()
	h, err := importer.New(importer.Config{Store: f, Guard: f, Committer: f})
	if err != nil {
		t.Fatal(err)
	}
	return h.Handle(t.Context(), m)
}

func planned(count int) model.Job {
	return model.Job{ID: "s1-job", TenantID: "acme", Status: model.JobPlanned, ChunkCount: count, Target: model.TargetUpsert}
}

func TestImportsAndChecksCompletion(t *testing.T) {
	for _, tc := range []struct {
		name string
		job  model.Job
		res  target.Result
	}{
		{"planned job", planned(3), target.Result{Rows: 2, Stats: target.Stats{Imported: 2}}},
		{"job still being planned (streamed chunk)", model.Job{ID: "s1-job", TenantID: "acme", Status: model.JobPending}, target.Result{Rows: 2}},
		{"chunk already done (duplicate after the key expired)", planned(3), target.Result{AlreadyDone: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakes{job: tc.job, commitRes: tc.res}
			if err := run(t, f, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "acme", Chunk: 2})); err != nil {
				t.Fatal(err)
			}
			if f.commits != 1 || f.completions != 1 || f.key.String() != idem.ChunkKey("s1-job", 2).String() || f.key.Payload == "" {
				t.Errorf("commits %d, completion checks %d, key %v; want 1, 1, chunk:s1-job~000002", f.commits, f.completions, f.key)
			}
		})
	}
}

func TestPoisonReasons(t *testing.T) {
	for _, tc := range []struct {
		reason string
		f      fakes
		m      delivery.Message
	}{
		{"malformed_message", fakes{job: planned(1)}, delivery.Message{ID: "m", Data: []byte("[")}},
		{"missing_field", fakes{job: planned(1)}, msg(model.ChunkMessage{JobID: "s1-job", Chunk: 0})},
		{"missing_field", fakes{job: planned(1)}, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "acme", Chunk: -1})},
		{"unknown_job", fakes{jobErr: fmt.Errorf("x: %w", store.ErrNotFound)}, msg(model.ChunkMessage{JobID: "nope", TenantID: "acme"})},
		{"tenant_mismatch", fakes{job: planned(1)}, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "globex"})},
		{"unknown_chunk", fakes{job: planned(2), commitErr: fmt.Errorf("x: %w", target.ErrNoChunk)}, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "acme", Chunk: 2})},
		{"bad_chunk", fakes{job: planned(2), commitErr: fmt.Errorf("x: %w", target.ErrUnknownTarget)}, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "acme", Chunk: 1})},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			f := tc.f
			err := run(t, &f, tc.m)
			var pe *delivery.PoisonError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Fatalf("Handle() = %v, want poison %q", err, tc.reason)
			}
			if f.completions != 0 {
				t.Errorf("a poisoned chunk checked the Job's completion")
			}
		})
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	pending := model.Job{ID: "s1-job", TenantID: "acme", Status: model.JobPending}
	for name, f := range map[string]*fakes{
		"job read":   {jobErr: errors.New("unavailable")},
		"commit":     {job: planned(3), commitErr: errors.New("deadline exceeded")},
		"completion": {job: planned(3), completeErr: errors.New("aborted")},
		// A chunk the plan has not written yet is judged once the plan is complete.
		"chunk of a plan in progress": {job: pending, commitErr: fmt.Errorf("x: %w", target.ErrNoChunk)},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(t, f, msg(model.ChunkMessage{JobID: "s1-job", TenantID: "acme", Chunk: 1}))
			if err == nil || errors.Is(err, delivery.ErrPoison) || errors.Is(err, delivery.ErrDuplicate) {
				t.Errorf("Handle() = %v, want a transient error (redeliver)", err)
			}
		})
	}
}
