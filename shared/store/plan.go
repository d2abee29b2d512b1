package store

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
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
	ctx, span := telemetry.Start(ctx, "plan commit", attribute.Int("oncesync.chunks", len(chunks)),
		attribute.Int("oncesync.chunk.first", chunks[0].Index), attribute.Int("oncesync.chunk.last", chunks[len(chunks)-1].Index))
	err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) {
		for _, c := range chunks {
			b.Set(p.ChunkRef(c.JobID, c.Index), c)
		}
	})
	telemetry.End(span, err)
	if err == nil {
		telemetry.MetricsFrom(ctx).ChunksPlanned(ctx, len(chunks))
	}
	if err != nil {
		first, last := chunks[0], chunks[len(chunks)-1]
		return fmt.Errorf("store: write chunks %d..%d of job %q: %w", first.Index, last.Index, first.JobID, err)
	}
	return nil
}

// CutSlices records a Job's slices, its class (job.Class) and how many slices are searched at
// once (0: to be decided, see DecideSlots), before any search: one fenced batch, so a takeover
// finds them all or none.
func (p Planner) CutSlices(ctx context.Context, l *idem.Lease, job model.Job, slices []model.Slice, slots int) (model.Job, error) {
	ref := p.JobRef(job.ID)
	err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) {
		for _, sl := range slices {
			b.Set(ref.Collection(model.Slices).Doc(model.SliceID(sl.Index)), sl)
		}
		b.Update(ref, []firestore.Update{{Path: "sliceCount", Value: len(slices)}, {Path: "searchSlots", Value: slots}, {Path: "class", Value: job.Class}})
	})
	if err != nil {
		return job, fmt.Errorf("store: cut %d slices of job %q: %w", len(slices), job.ID, err)
	}
	job.SliceCount, job.SearchSlots = len(slices), slots
	return job, nil
}

// DecideSlots records how many of the Job's slices are searched at once (0 in CutSlices: not
// decided yet).
func (p Planner) DecideSlots(ctx context.Context, l *idem.Lease, job model.Job, slots int) (model.Job, error) {
	ref := p.JobRef(job.ID)
	if err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) {
		b.Update(ref, []firestore.Update{{Path: "searchSlots", Value: slots}})
	}); err != nil {
		return job, fmt.Errorf("store: decide search slots of job %q: %w", job.ID, err)
	}
	job.SearchSlots = slots
	return job, nil
}

// FinishSlice records that a slice's plan is complete, with its totals.
func (p Planner) FinishSlice(ctx context.Context, l *idem.Lease, jobID string, sl model.Slice, chunks, rows int) error {
	ref := p.JobRef(jobID).Collection(model.Slices).Doc(model.SliceID(sl.Index))
	ups := []firestore.Update{
		{Path: "status", Value: model.SlicePlanned}, {Path: "chunks", Value: chunks}, {Path: "rows", Value: rows},
		{Path: "plannedAt", Value: p.Now().UTC()},
	}
	if err := p.Fence.CommitFenced(ctx, l, func(b *firestore.WriteBatch) { b.Update(ref, ups) }); err != nil {
		return fmt.Errorf("store: finish slice %d of job %q: %w", sl.Index, jobID, err)
	}
	return nil
}

// FinishPlan records the complete plan on the Job once every slice is PLANNED: PLANNED with its
// totals (summed from the slices), or COMPLETED at once when it has no chunk. Every slice's
// expansion calls it after its own slice is recorded, so the last to finish does it: whichever
// reads the others' state after its own write cannot miss them all. An update conditioned on the
// Job as read makes it happen once; a Job no longer PENDING is returned as it is. recorded is true
// for the one call that recorded the plan. With several slices, one still open is found with one
// index read before any slice document is read.
func (p *Store) FinishPlan(ctx context.Context, jobID string) (job model.Job, recorded bool, err error) {
	for attempt := 1; ; attempt++ {
		job, st, err := p.finishPlanOnce(ctx, jobID)
		if err == nil && st == planRetry && attempt == completeAttempts {
			err = fmt.Errorf("the Job changed under %d attempts", attempt) // the delivery is retried
		}
		if err != nil {
			return job, false, fmt.Errorf("store: finish plan of job %q: %w", jobID, err)
		}
		if st != planRetry {
			return job, st == planRecorded, nil
		}
	}
}

// The outcomes of one attempt to finish a plan.
type planOutcome int

const (
	planRetry    planOutcome = iota // the Job changed since it was read: read again
	planAsIs                        // not for this call: a slice is open, or the Job is not PENDING
	planRecorded                    // this call recorded the plan
)

func (p *Store) finishPlanOnce(ctx context.Context, jobID string) (job model.Job, _ planOutcome, err error) {
	ref := p.JobRef(jobID)
	snap, err := ref.Get(ctx)
	if err != nil {
		return job, planRetry, err
	}
	if err := snap.DataTo(&job); err != nil {
		return job, planRetry, fmt.Errorf("decode: %w", err)
	}
	job.ID = jobID
	if job.Status != model.JobPending {
		return job, planAsIs, nil
	}
	if job.SliceCount > 1 {
		if open, err := p.OpenSlice(ctx, jobID); err != nil || open {
			return job, planAsIs, err // a slice is still being searched; its expansion finishes the plan
		}
	}
	slices, err := p.Slices(ctx, jobID)
	if err != nil {
		return job, planRetry, err
	}
	chunks, rows := 0, 0
	for _, sl := range slices {
		if sl.Status != model.SlicePlanned {
			return job, planAsIs, nil
		}
		chunks, rows = chunks+sl.Chunks, rows+sl.Rows
	}
	if len(slices) == 0 || len(slices) != job.SliceCount {
		return job, planRetry, fmt.Errorf("%d slice documents, sliceCount %d", len(slices), job.SliceCount)
	}
	invalid, err := p.CountDeadRows(ctx, jobID)
	if err != nil {
		return job, planRetry, err
	}
	now := p.Now().UTC()
	job.Status, job.ChunkCount, job.RecordCount, job.InvalidCount, job.PlannedAt = model.JobPlanned, chunks, rows, invalid, now
	if chunks == 0 {
		job.Status, job.CompletedAt = model.JobCompleted, now // nothing to import: done at once
	}
	_, err = ref.Update(ctx, []firestore.Update{
		{Path: "status", Value: job.Status},
		{Path: "chunkCount", Value: chunks},
		{Path: "recordCount", Value: rows},
		{Path: "invalidCount", Value: invalid},
		{Path: "plannedAt", Value: now},
		{Path: "completedAt", Value: job.CompletedAt},
	}, firestore.LastUpdateTime(snap.UpdateTime))
	if status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.Aborted {
		return job, planRetry, nil // the Job changed since the read (a search counted, another finisher): read again
	}
	if err != nil {
		return job, planRetry, err
	}
	return job, planRecorded, nil
}
