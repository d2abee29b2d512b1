// Package importer is the Importer function: it imports one chunk into the target records exactly
// once in effect, and completes the Job when its last chunk is done.
//
// The chunk is claimed with the key chunk:{jobId~index} (idem.Guard), so a concurrent duplicate
// is sent back for redelivery instead of racing. The guarantee itself does not rest on the key:
// the records and the chunk's DONE transition commit in one preconditioned batch (see package
// target), so a zombie owner or a delivery after the key expired finds the chunk DONE and writes
// nothing.
//
// Chunks are published while the plan is still being written (the expander streams them), so a
// chunk of a PENDING Job is imported at once. The Job document is not written per chunk: after its
// commit the importer asks store.CompleteIfDone, which completes the Job only when its plan is
// complete and no chunk is open. The expander asks the same after it finishes the plan, so
// whichever finishes last completes the Job, once.
package importer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/google/uuid"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/probe"
	"github.com/oncesync/oncesync/shared/store"
	"github.com/oncesync/oncesync/shared/target"
)

// Steps where the probe is called.
const (
	StepClaimed   = "importer.claimed"   // key held, nothing written
	StepCommitted = "importer.committed" // records and DONE committed, key not yet DONE
	StepFinished  = "importer.finished"  // Job completion checked, key DONE
)

// Store is the data the importer reads and writes.
type Store interface {
	Job(ctx context.Context, id string) (model.Job, error)
	CompleteIfDone(ctx context.Context, jobID string) (bool, error)
}

// Committer imports a chunk atomically with its DONE transition.
type Committer interface {
	Commit(ctx context.Context, job model.Job, index int) (target.Result, error)
}

var (
	_ Store     = (*store.Store)(nil)
	_ Committer = (*target.Committer)(nil)
)

// Config holds the importer's dependencies.
type Config struct {
	Store     Store
	Guard     idem.Runner // runs the import under the chunk's key
	Committer Committer
	Probe     probe.Func
}

// Handler handles chunk messages.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Guard == nil || cfg.Committer == nil {
		return nil, errors.New("importer: missing dependency")
	}
	return &Handler{cfg: cfg}, nil
}

// decode reads a chunk message. Errors are poison.
func decode(m delivery.Message) (model.ChunkMessage, error) {
	var cm model.ChunkMessage
	if err := delivery.DecodeJSON(m, &cm); err != nil {
		return cm, err
	}
	if cm.JobID == "" || cm.TenantID == "" || cm.Chunk < 0 {
		return cm, delivery.Poison("missing_field", "chunk message %s needs jobId, tenantId and a chunk index >= 0", m.ID)
	}
	return cm, nil
}

// Handle handles one chunk message.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	cm, err := decode(m)
	if err != nil {
		return err
	}
	key := idem.ChunkKey(cm.JobID, cm.Chunk).WithPayload(cm)
	ctx = logging.With(ctx, slog.String(logging.Tenant, cm.TenantID), slog.String(logging.Job, cm.JobID),
		slog.String(logging.Chunk, strconv.Itoa(cm.Chunk)), slog.String(logging.Key, key.String()))
	labels := map[string]string{"tenant": cm.TenantID, "job": cm.JobID, "chunk": strconv.Itoa(cm.Chunk), "messageId": m.ID}
	err = h.cfg.Guard.Run(ctx, key, "Importer/"+m.ID+"/"+uuid.NewString(), labels, func(ctx context.Context, _ *idem.Lease) error {
		h.cfg.Probe.At(ctx, StepClaimed)
		if err := h.importChunk(ctx, cm); err != nil {
			return err
		}
		// The Job's completion is checked before the key is DONE: if it fails, the key is
		// released and the redelivery (finding the chunk DONE) checks again, instead of being
		// acked as a duplicate and leaving the Job to the recovery sweep.
		return h.completeJob(ctx, cm.JobID)
	})
	if err == nil {
		h.cfg.Probe.At(ctx, StepFinished)
	}
	return err
}

// importChunk commits the chunk.
func (h *Handler) importChunk(ctx context.Context, cm model.ChunkMessage) error {
	log := logging.From(ctx)
	job, err := h.cfg.Store.Job(ctx, cm.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return delivery.Poison("unknown_job", "importer: %w", err)
	}
	if err != nil {
		return err
	}
	planning := job.Status == model.JobPending // chunks are imported while the plan is written
	planned := job.Status == model.JobPlanned || job.Status == model.JobCompleted
	switch {
	case job.TenantID != cm.TenantID:
		return delivery.Poison("tenant_mismatch", "importer: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, cm.TenantID)
	}
	res, err := h.cfg.Committer.Commit(ctx, job, cm.Chunk)
	switch {
	case errors.Is(err, target.ErrNoChunk) && planning:
		// The plan is still being written and holds no such chunk yet: a message that ran ahead
		// of its chunk cannot exist (chunks are published after they are written), so this is a
		// forged or stray index, judged once the plan is complete.
		return fmt.Errorf("importer: job %s is still being planned and has no chunk %d yet: %w", job.ID, cm.Chunk, err)
	case errors.Is(err, target.ErrNoChunk) && planned:
		return delivery.Poison("unknown_chunk", "importer: job %s has %d chunks, none is chunk %d: %w", job.ID, job.ChunkCount, cm.Chunk, err)
	case errors.Is(err, target.ErrNoChunk), errors.Is(err, target.ErrUnknownTarget):
		return delivery.Poison("bad_chunk", "importer: %w", err)
	case err != nil:
		return err
	}
	h.cfg.Probe.At(ctx, StepCommitted)
	if res.AlreadyDone {
		log.Info("chunk was already imported by an earlier delivery", slog.String(logging.Event, "duplicate_suppressed"))
		return nil
	}
	log.Info("chunk imported", slog.String(logging.Event, "chunk_imported"), slog.Int("rows", res.Rows),
		slog.Int("imported", res.Imported), slog.Int("unchanged", res.Unchanged))
	return nil
}

// completeJob completes the Job when its plan is complete and every chunk is DONE.
func (h *Handler) completeJob(ctx context.Context, jobID string) error {
	ok, err := h.cfg.Store.CompleteIfDone(ctx, jobID)
	if err != nil {
		return err
	}
	if ok {
		logging.From(ctx).Info("job completed", slog.String(logging.Event, "job_completed"))
	}
	return nil
}
