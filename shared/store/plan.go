package store

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

// Fencer commits a batch only while a lease is held (idem.Store.CommitFenced).
type Fencer interface {
	CommitFenced(ctx context.Context, l *idem.Lease, stage func(b *firestore.WriteBatch)) error
}

var _ Fencer = (*idem.Store)(nil)

// Planner writes a Job's chunk plan, every write fenced by the expansion's lease: once another
// owner has taken the key over, a zombie's writes fail with idem.ErrLeaseLost and change nothing.
type Planner struct {
	*Store
	Fence Fencer
}

// WriteChunks writes chunks (of one Job) in one fenced batch: all of them or none.
func (p Planner) WriteChunks(ctx context.Context, l *idem.Lease, chunks []model.Chunk) error {
	if len(chunks) == 0 {
		return nil
	}
	err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) {
		for _, c := range chunks {
			b.Set(p.ChunkRef(c.JobID, c.Index), c)
		}
	})
	if err != nil {
		first, last := chunks[0], chunks[len(chunks)-1]
		return fmt.Errorf("store: write chunks %d..%d of job %q: %w", first.Index, last.Index, first.JobID, err)
	}
	return nil
}

// FinishPlan records the complete plan on the Job: PLANNED with its totals, or COMPLETED at once
// when it has no chunk. It returns the Job as written.
func (p Planner) FinishPlan(ctx context.Context, l *idem.Lease, job model.Job, chunks, rows, invalid int) (model.Job, error) {
	now := p.Now().UTC()
	job.Status, job.ChunkCount, job.RecordCount, job.InvalidCount, job.PlannedAt = model.JobPlanned, chunks, rows, invalid, now
	if chunks == 0 {
		job.Status, job.CompletedAt = model.JobCompleted, now // nothing to import: done at once
	}
	ups := []firestore.Update{
		{Path: "status", Value: job.Status},
		{Path: "chunkCount", Value: chunks},
		{Path: "recordCount", Value: rows},
		{Path: "invalidCount", Value: invalid},
		{Path: "plannedAt", Value: now},
		{Path: "completedAt", Value: job.CompletedAt},
	}
	ref := p.JobRef(job.ID)
	if err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) { b.Update(ref, ups) }); err != nil {
		return job, fmt.Errorf("store: finish plan of job %q: %w", job.ID, err)
	}
	return job, nil
}
