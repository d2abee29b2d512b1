// Package expander is the Expander function: for one Job it runs the source's paged search over
// the Job's fixed window, writes the chunk plan, and publishes one message per chunk — exactly one
// plan per Job, however often and however early the expand message arrives.
//
// # Once, and never stuck
//
// The expansion is claimed with the idempotency key expand:{jobId}. While its lease is alive, a
// duplicate is sent back for redelivery, not acked: it may be the crashed owner's own redelivery.
// Once the key is DONE, a duplicate is acked without a search.
//
// The plan is written chunk by chunk in (SystemModstamp, Id) order, each chunk with a
// deterministic ID and the search position after its last row, each in a batch fenced by the
// lease. An owner that takes an expired lease over reads the last written chunk and resumes the
// search strictly after it, so a crash after partial writes resumes to the same plan. Only when
// the plan is complete does the Job get its chunk count (status PLANNED), and only then are the
// chunk messages published. Memory is bounded by one page plus one chunk.
package expander

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/uuid"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/probe"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/store"
)

// Steps where the probe is called.
const (
	StepClaimed      = "expander.claimed"       // key held, nothing searched
	StepChunkWritten = "expander.chunk_written" // one more chunk of the plan written
	StepPlanned      = "expander.planned"       // plan complete, chunk messages not yet published
	StepPublished    = "expander.published"     // chunk messages published, key not yet DONE
)

// Store is the data the expander reads and writes.
type Store interface {
	Job(ctx context.Context, id string) (model.Job, error)
	Tenant(ctx context.Context, id string) (model.Tenant, error)
	JobRef(id string) *firestore.DocumentRef
	ChunkRef(jobID string, index int) *firestore.DocumentRef
	LastChunk(ctx context.Context, jobID string) (*model.Chunk, error)
	CountSearch(ctx context.Context, jobID, owner string) error
	CountDeadRows(ctx context.Context, jobID string) (int, error)
	PlanTotals(ctx context.Context, jobID string) (chunks, rows int, err error)
	FailJob(ctx context.Context, jobID, reason string) error
}

// Keys claims idempotency keys and fences the plan's writes.
type Keys interface {
	Claim(ctx context.Context, k idem.Key, owner string, labels map[string]string) (*idem.Lease, error)
	CommitFenced(ctx context.Context, l *idem.Lease, stage func(b *firestore.WriteBatch)) error
	Complete(ctx context.Context, l *idem.Lease) error
	Release(ctx context.Context, l *idem.Lease) error
	Abandon(ctx context.Context, l *idem.Lease) error
}

// Source runs a paged search.
type Source interface {
	Search(ctx context.Context, q source.Query, fn func(ctx context.Context, p source.Page) error) error
}

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

var (
	_ Store     = (*store.Store)(nil)
	_ Keys      = (*idem.Store)(nil)
	_ Source    = (*source.Client)(nil)
	_ Publisher = (*bus.PubSub)(nil)
)

// Config holds the expander's dependencies and settings.
type Config struct {
	Store         Store
	Keys          Keys
	Source        Source
	Publisher     Publisher
	DeadLetters   delivery.Sink
	TopicChunks   string
	MaxChunkBytes int // a chunk is cut early rather than grow past this many encoded bytes
	Now           func() time.Time
	Probe         probe.Func
}

// Handler handles expand messages.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Keys == nil || cfg.Source == nil || cfg.Publisher == nil || cfg.DeadLetters == nil {
		return nil, errors.New("expander: missing dependency")
	}
	if cfg.TopicChunks == "" || cfg.MaxChunkBytes < 1 {
		return nil, errors.New("expander: chunk topic and max chunk bytes are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg}, nil
}

// Handle handles one expand message.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	var em model.ExpandMessage
	if err := delivery.DecodeJSON(m, &em); err != nil {
		return err
	}
	if em.JobID == "" || em.TenantID == "" {
		return delivery.Poison("missing_field", "expand message %s needs jobId and tenantId", m.ID)
	}
	key := idem.Key{Scope: "expand", ID: em.JobID}
	ctx = logging.With(ctx, slog.String(logging.Tenant, em.TenantID), slog.String(logging.Job, em.JobID), slog.String(logging.Key, key.String()))
	lease, err := h.cfg.Keys.Claim(ctx, key, "Expander/"+m.ID+"/"+uuid.NewString(),
		map[string]string{"tenant": em.TenantID, "job": em.JobID, "messageId": m.ID})
	if err != nil {
		return err
	}
	ctx = logging.With(ctx, slog.Int("leaseAttempt", lease.Attempt))
	if lease.TakenOver {
		logging.From(ctx).Warn("expired expansion lease taken over; resuming", slog.String(logging.Event, "lease_taken_over"))
	}
	h.cfg.Probe.At(ctx, StepClaimed)
	err = h.expand(ctx, lease, em)
	switch {
	case err == nil, errors.Is(err, delivery.ErrDuplicate):
		if cerr := h.cfg.Keys.Complete(ctx, lease); cerr != nil {
			return cerr
		}
		return err
	case errors.Is(err, delivery.ErrPoison):
		// Dead-lettered: give the key up entirely, so that a replay after a fix can claim it.
		return idem.GiveUp(ctx, h.cfg.Keys, lease, err)
	case errors.Is(err, idem.ErrLeaseLost):
		return err
	default:
		if rerr := h.cfg.Keys.Release(ctx, lease); rerr != nil {
			logging.From(ctx).Warn("could not release expansion key", slog.String("error", rerr.Error()))
		}
		return err
	}
}

func (h *Handler) expand(ctx context.Context, lease *idem.Lease, em model.ExpandMessage) error {
	job, err := h.cfg.Store.Job(ctx, em.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return delivery.Poison("unknown_job", "expander: %w", err)
	}
	if err != nil {
		return err
	}
	if job.TenantID != em.TenantID {
		return delivery.Poison("tenant_mismatch", "expander: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, em.TenantID)
	}
	t, err := h.cfg.Store.Tenant(ctx, em.TenantID)
	if errors.Is(err, store.ErrNotFound) {
		return delivery.Poison("unknown_tenant", "expander: %w", err)
	}
	if err != nil {
		return err
	}
	if !t.Enabled {
		return delivery.Poison("tenant_disabled", "expander: tenant %q is disabled", t.ID)
	}
	switch job.Status {
	case model.JobCompleted, model.JobFailed:
		return fmt.Errorf("%w: job %s is already %s", delivery.ErrDuplicate, job.ID, job.Status)
	case model.JobPending:
		if job, err = h.plan(ctx, lease, job); err != nil {
			return err
		}
	}
	h.cfg.Probe.At(ctx, StepPlanned)
	msgs := make([]bus.Message, job.ChunkCount)
	for i := range msgs {
		msgs[i] = bus.Chunk(job, i)
	}
	if len(msgs) > 0 {
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicChunks, msgs...); err != nil {
			return fmt.Errorf("expander: publish chunks of job %s: %w", job.ID, err)
		}
	}
	logging.From(ctx).Info("chunk messages published", slog.String(logging.Event, "chunks_published"), slog.Int("chunks", len(msgs)))
	h.cfg.Probe.At(ctx, StepPublished)
	return nil
}

// plan writes the Job's chunk plan, resuming after the last chunk a previous owner wrote, and
// returns the Job as PLANNED (or COMPLETED when the window is empty).
func (h *Handler) plan(ctx context.Context, lease *idem.Lease, job model.Job) (model.Job, error) {
	log := logging.From(ctx)
	last, err := h.cfg.Store.LastChunk(ctx, job.ID)
	if err != nil {
		return job, err
	}
	q := source.Query{Object: job.SourceObject, Fields: job.Fields, From: job.WindowFrom, To: job.WindowTo}
	next := 0
	if last != nil {
		next = last.Index + 1
		q.After = &source.Key{Modstamp: last.LastModstamp, ID: last.LastID}
		log.Info("resuming the search after the last written chunk", slog.String(logging.Event, "expansion_resumed"),
			slog.Int("nextChunk", next), slog.String("afterId", last.LastID))
	}
	if err := h.cfg.Store.CountSearch(ctx, job.ID, lease.Owner); err != nil {
		return job, err
	}
	var cur []model.ChunkRecord
	size := 0
	flush := func(ctx context.Context) error {
		if len(cur) == 0 {
			return nil
		}
		lastRow := cur[len(cur)-1]
		c := model.Chunk{
			Index: next, JobID: job.ID, TenantID: job.TenantID, Status: model.ChunkPending, Records: cur, Count: len(cur),
			LastModstamp: lastRow.Modstamp, LastID: lastRow.ID, PlannedAt: h.cfg.Now().UTC(),
		}
		ref := h.cfg.Store.ChunkRef(job.ID, next)
		if err := h.cfg.Keys.CommitFenced(ctx, lease, func(b *firestore.WriteBatch) { b.Set(ref, c) }); err != nil {
			return err
		}
		next++
		cur, size = nil, 0
		h.cfg.Probe.At(ctx, StepChunkWritten)
		return nil
	}
	err = h.cfg.Source.Search(ctx, q, func(ctx context.Context, p source.Page) error {
		for _, inv := range p.Invalid {
			if err := h.deadRow(ctx, job, inv.Raw, "invalid_source_row", inv.Reason); err != nil {
				return err
			}
		}
		for _, r := range p.Records {
			row := model.ChunkRecord{ID: r.ID, Modstamp: r.Modstamp.UTC(), Fields: r.Fields}
			n, err := encodedSize(row)
			if err != nil || n > h.cfg.MaxChunkBytes {
				raw, _ := json.Marshal(row)
				if err := h.deadRow(ctx, job, raw, "record_too_large", fmt.Sprintf("row %s: %d bytes encoded (%v)", r.ID, n, err)); err != nil {
					return err
				}
				continue
			}
			if len(cur) == job.ChunkSize || size+n > h.cfg.MaxChunkBytes {
				if err := flush(ctx); err != nil {
					return err
				}
			}
			cur = append(cur, row)
			size += n
		}
		return nil
	})
	if err == nil {
		err = flush(ctx)
	}
	if source.IsPermanent(err) {
		if ferr := h.cfg.Store.FailJob(ctx, job.ID, err.Error()); ferr != nil {
			return job, ferr
		}
		return job, delivery.Poison("source_rejected_search", "expander: job %s: %w", job.ID, err)
	}
	if err != nil {
		return job, err
	}
	chunks, rows, err := h.cfg.Store.PlanTotals(ctx, job.ID)
	if err != nil {
		return job, err
	}
	invalid, err := h.cfg.Store.CountDeadRows(ctx, job.ID)
	if err != nil {
		return job, err
	}
	now := h.cfg.Now().UTC()
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
	jobRef := h.cfg.Store.JobRef(job.ID)
	if err := h.cfg.Keys.CommitFenced(ctx, lease, func(b *firestore.WriteBatch) { b.Update(jobRef, ups) }); err != nil {
		return job, err
	}
	log.Info("chunk plan written", slog.String(logging.Event, "job_planned"), slog.Int("chunks", chunks),
		slog.Int("records", rows), slog.Int("invalid", invalid), slog.String("status", string(job.Status)))
	return job, nil
}

// deadRow records one bad source row; the rest of the Job goes on.
func (h *Handler) deadRow(ctx context.Context, job model.Job, raw []byte, reason, detail string) error {
	now := h.cfg.Now().UTC()
	d := model.DeadLetter{
		ID:   model.DocID("Expander", job.ID, "row", model.Hash(string(raw))[:24]),
		Kind: model.DeadRecord, Function: "Expander", Reason: reason, Error: detail, Data: raw,
		TenantID: job.TenantID, JobID: job.ID, FirstAt: now, LastAt: now, Attempts: 1,
		Attributes: map[string]string{"tenant": job.TenantID, "job": job.ID},
	}
	if err := h.cfg.DeadLetters.DeadLetter(ctx, d); err != nil {
		return err
	}
	logging.From(ctx).Warn("bad source row dead-lettered", slog.String(logging.Event, "row_dead_lettered"),
		slog.String("reason", reason), slog.String("detail", detail))
	return nil
}

// encodedSize estimates a row's size inside a chunk document.
func encodedSize(r model.ChunkRecord) (int, error) {
	b, err := json.Marshal(r.Fields)
	return len(b) + len(r.ID) + 64, err
}
