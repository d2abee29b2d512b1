// Package importer is the Importer function: it imports one chunk into the target records exactly
// once in effect, and completes the Job when its last chunk is done.
//
// The chunk is claimed with the key chunk:{jobId~index}, so a concurrent duplicate is sent back
// for redelivery instead of racing. The guarantee itself does not rest on the key: the records and
// the chunk's DONE transition commit in one transaction (see package target), so a zombie owner
// or a delivery after the key expired finds the chunk DONE and writes nothing.
//
// The Job document is not written per chunk. After its commit, the importer counts the Job's DONE
// chunks (an aggregation query); the delivery that sees the count reach the Job's chunk count
// completes the Job with an update conditioned on the Job being unchanged since it was read
// PLANNED (see store.CompleteJob), so it happens once.
package importer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

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
	DoneChunks(ctx context.Context, jobID string) (int, error)
	CompleteJob(ctx context.Context, jobID string) (bool, error)
}

// Keys claims idempotency keys.
type Keys interface {
	Claim(ctx context.Context, k idem.Key, owner string, labels map[string]string) (*idem.Lease, error)
	Complete(ctx context.Context, l *idem.Lease) error
	Release(ctx context.Context, l *idem.Lease) error
	Abandon(ctx context.Context, l *idem.Lease) error
}

// Committer imports a chunk atomically with its DONE transition.
type Committer interface {
	Commit(ctx context.Context, job model.Job, index int) (target.Result, error)
}

var (
	_ Store     = (*store.Store)(nil)
	_ Keys      = (*idem.Store)(nil)
	_ Committer = (*target.Committer)(nil)
)

// Config holds the importer's dependencies.
type Config struct {
	Store     Store
	Keys      Keys
	Committer Committer
	Now       func() time.Time
	Probe     probe.Func
}

// Handler handles chunk messages.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Keys == nil || cfg.Committer == nil {
		return nil, errors.New("importer: missing dependency")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg}, nil
}

// Handle handles one chunk message.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	var cm model.ChunkMessage
	if err := delivery.DecodeJSON(m, &cm); err != nil {
		return err
	}
	if cm.JobID == "" || cm.TenantID == "" || cm.Chunk < 0 {
		return delivery.Poison("missing_field", "chunk message %s needs jobId, tenantId and a chunk index >= 0", m.ID)
	}
	key := idem.Key{Scope: "chunk", ID: model.DocID(cm.JobID, model.ChunkID(cm.Chunk))}
	ctx = logging.With(ctx, slog.String(logging.Tenant, cm.TenantID), slog.String(logging.Job, cm.JobID),
		slog.String(logging.Chunk, strconv.Itoa(cm.Chunk)), slog.String(logging.Key, key.String()))
	lease, err := h.cfg.Keys.Claim(ctx, key, "Importer/"+m.ID+"/"+uuid.NewString(),
		map[string]string{"tenant": cm.TenantID, "job": cm.JobID, "chunk": strconv.Itoa(cm.Chunk), "messageId": m.ID})
	if err != nil {
		return err
	}
	ctx = logging.With(ctx, slog.Int("leaseAttempt", lease.Attempt))
	if lease.TakenOver {
		logging.From(ctx).Warn("expired import lease taken over", slog.String(logging.Event, "lease_taken_over"))
	}
	h.cfg.Probe.At(ctx, StepClaimed)
	job, err := h.importChunk(ctx, cm)
	if err == nil {
		// The Job's completion is checked before the key is DONE: if it fails, the key is
		// released and the redelivery (finding the chunk DONE) checks again, instead of being
		// acked as a duplicate and leaving the Job to the recovery sweep.
		err = h.completeJob(ctx, job)
	}
	switch {
	case err == nil:
		// A lost lease is returned too (as a retry): the owner that took the key over may have
		// died, and only a redelivery can then complete the key.
		if cerr := h.cfg.Keys.Complete(ctx, lease); cerr != nil {
			return cerr
		}
	case errors.Is(err, delivery.ErrPoison):
		// Dead-lettered: give the key up entirely, so that a replay after a fix can claim it.
		return idem.GiveUp(ctx, h.cfg.Keys, lease, err)
	default:
		if rerr := h.cfg.Keys.Release(ctx, lease); rerr != nil {
			logging.From(ctx).Warn("could not release import key", slog.String("error", rerr.Error()))
		}
		return err
	}
	h.cfg.Probe.At(ctx, StepFinished)
	return nil
}

// importChunk commits the chunk and returns its Job as read before the commit.
func (h *Handler) importChunk(ctx context.Context, cm model.ChunkMessage) (model.Job, error) {
	log := logging.From(ctx)
	job, err := h.cfg.Store.Job(ctx, cm.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return job, delivery.Poison("unknown_job", "importer: %w", err)
	}
	if err != nil {
		return job, err
	}
	switch {
	case job.TenantID != cm.TenantID:
		return job, delivery.Poison("tenant_mismatch", "importer: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, cm.TenantID)
	case job.Status == model.JobPending:
		return job, errors.New("importer: job is not planned yet; retrying")
	case cm.Chunk >= job.ChunkCount:
		return job, delivery.Poison("unknown_chunk", "importer: job %s has %d chunks, message names chunk %d", job.ID, job.ChunkCount, cm.Chunk)
	}
	res, err := h.cfg.Committer.Commit(ctx, job, cm.Chunk)
	if errors.Is(err, target.ErrNoChunk) || errors.Is(err, target.ErrUnknownTarget) {
		return job, delivery.Poison("bad_chunk", "importer: %w", err)
	}
	if err != nil {
		return job, err
	}
	h.cfg.Probe.At(ctx, StepCommitted)
	if res.AlreadyDone {
		log.Info("chunk was already imported by an earlier delivery", slog.String(logging.Event, "duplicate_suppressed"))
		return job, nil
	}
	log.Info("chunk imported", slog.String(logging.Event, "chunk_imported"), slog.Int("rows", res.Rows),
		slog.Int("imported", res.Imported), slog.Int("unchanged", res.Unchanged))
	return job, nil
}

// completeJob completes the Job when every chunk is DONE.
func (h *Handler) completeJob(ctx context.Context, job model.Job) error {
	if job.Status != model.JobPlanned {
		return nil
	}
	done, err := h.cfg.Store.DoneChunks(ctx, job.ID)
	if err != nil || done < job.ChunkCount {
		return err
	}
	ok, err := h.cfg.Store.CompleteJob(ctx, job.ID)
	if err != nil {
		return err
	}
	if ok {
		logging.From(ctx).Info("job completed", slog.String(logging.Event, "job_completed"), slog.Int("chunks", job.ChunkCount))
	}
	return nil
}
