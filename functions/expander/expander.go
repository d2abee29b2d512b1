// Package expander is the Expander function: for one Job it runs the source's paged search over
// the Job's fixed window, writes the chunk plan, and publishes one message per chunk — exactly one
// plan per Job, however often and however early the expand message arrives.
//
// # Once, and never stuck
//
// The expansion runs under the idempotency key expand:{jobId} (idem.Guard). While its lease is
// alive, a duplicate is sent back for redelivery, not acked: it may be the crashed owner's own
// redelivery. Once the key is DONE, a duplicate is acked without a search.
//
// The plan is written in (SystemModstamp, Id) order, each chunk with a deterministic ID and the
// search position after its last row, the chunks of each source page in one batch fenced by the
// lease. An owner that takes an expired lease over reads the last written chunk and resumes the
// search strictly after it, so a crash after partial writes resumes to the same plan; it also
// re-publishes the messages of the chunks written before the crash that are not DONE, since the
// crashed owner may not have published them. Memory is bounded by one page plus one chunk.
//
// # Streaming
//
// Each chunk's message is published as soon as its chunk is committed, so imports overlap the
// search. Only when the plan is complete does the Job get its chunk count (status PLANNED). The
// Job completes when its plan is complete and every chunk is DONE, whichever happens last: the
// expander asks store.CompleteIfDone after the plan is recorded, the importer after each chunk.
//
// # Time budget
//
// A delivery stops searching once it has run for Config.Budget (a share of the function's
// timeout): after the chunk it just committed, it waits for its chunk messages, hands the key off
// (a release marked as a checkpoint) and publishes a continuation, a copy of the expand message,
// which resumes the search after the last chunk at once. So a Job of any size completes without
// any delivery meeting the function timeout or waiting out a lease.
package expander

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

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
	StepChunkWritten = "expander.chunk_written" // one more chunk of the plan written, its message not yet published
	StepPlanned      = "expander.planned"       // plan complete (Job PLANNED), completion not yet checked
	StepPublished    = "expander.published"     // every chunk message published, completion checked, key not yet DONE
)

// Store is the data the expander reads and writes. The plan's writes take the expansion's lease
// as their fence.
type Store interface {
	Job(ctx context.Context, id string) (model.Job, error)
	Tenant(ctx context.Context, id string) (model.Tenant, error)
	LastChunk(ctx context.Context, jobID string) (*model.Chunk, error)
	PendingChunks(ctx context.Context, jobID string) ([]int, error)
	CountSearch(ctx context.Context, jobID, owner string) error
	CountDeadRows(ctx context.Context, jobID string) (int, error)
	PlanTotals(ctx context.Context, jobID string) (chunks, rows int, err error)
	FailJob(ctx context.Context, jobID, reason string) error
	CompleteIfDone(ctx context.Context, jobID string) (bool, error)
	WriteChunks(ctx context.Context, l *idem.Lease, chunks []model.Chunk) error
	FinishPlan(ctx context.Context, l *idem.Lease, job model.Job, chunks, rows, invalid int) (model.Job, error)
}

// Source runs a paged search: any connector (see package source).
type Source = source.Source

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

var (
	_ Store     = store.Planner{}
	_ Publisher = (*bus.PubSub)(nil)
)

// Config holds the expander's dependencies and settings.
type Config struct {
	Store         Store
	Guard         idem.Runner // runs the expansion under the Job's key
	Source        Source
	Publisher     Publisher
	DeadLetters   delivery.Sink
	TopicExpand   string // where continuations go
	TopicChunks   string
	MaxChunkBytes int           // a chunk is cut early rather than grow past this many encoded bytes
	Budget        time.Duration // a delivery hands off after the first chunk written past this; 0: never
	Now           func() time.Time
	Elapsed       func() time.Time // the budget's clock (real time even where Now is simulated); default time.Now
	Probe         probe.Func
}

// Handler handles expand messages.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Guard == nil || cfg.Source == nil || cfg.Publisher == nil || cfg.DeadLetters == nil {
		return nil, errors.New("expander: missing dependency")
	}
	if cfg.TopicChunks == "" || cfg.TopicExpand == "" || cfg.MaxChunkBytes < 1 || cfg.Budget < 0 {
		return nil, errors.New("expander: expand and chunk topics, max chunk bytes and a budget >= 0 are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Elapsed == nil {
		cfg.Elapsed = time.Now
	}
	return &Handler{cfg: cfg}, nil
}

// decode reads an expand message. Errors are poison.
func decode(m delivery.Message) (model.ExpandMessage, error) {
	var em model.ExpandMessage
	if err := delivery.DecodeJSON(m, &em); err != nil {
		return em, err
	}
	if em.JobID == "" || em.TenantID == "" {
		return em, delivery.Poison("missing_field", "expand message %s needs jobId and tenantId", m.ID)
	}
	return em, nil
}

// Handle handles one expand message.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	started := h.cfg.Elapsed()
	em, err := decode(m)
	if err != nil {
		return err
	}
	key := idem.ExpandKey(em.JobID).WithPayload(em)
	ctx = logging.With(ctx, slog.String(logging.Tenant, em.TenantID), slog.String(logging.Job, em.JobID), slog.String(logging.Key, key.String()))
	labels := map[string]string{"tenant": em.TenantID, "job": em.JobID, "messageId": m.ID}
	return h.cfg.Guard.Run(ctx, key, "Expander/"+m.ID+"/"+uuid.NewString(), labels, func(ctx context.Context, l *idem.Lease) error {
		h.cfg.Probe.At(ctx, StepClaimed)
		return h.expand(ctx, l, em, started)
	})
}

// A plan write holds at most this many chunks or encoded bytes (Firestore takes 10 MiB a request).
const (
	maxChunksPerWrite = 16
	maxBytesPerWrite  = 4 << 20
)

// errBudget stops the search once the delivery's time budget is spent.
var errBudget = errors.New("expander: time budget spent")

func (h *Handler) expand(ctx context.Context, lease *idem.Lease, em model.ExpandMessage, started time.Time) error {
	job, err := h.job(ctx, em)
	if err != nil {
		return err
	}
	if job.Status == model.JobCompleted || job.Status == model.JobFailed {
		return fmt.Errorf("%w: job %s is already %s", delivery.ErrDuplicate, job.ID, job.Status)
	}
	pub := h.stream(ctx, job)
	// A crashed owner may have written chunks whose messages it never published; a key that is
	// new while the plan is complete lost its history (expired, or abandoned and replayed).
	if (lease.TakenOver && !lease.Continued) || job.Status == model.JobPlanned {
		pending, err := h.cfg.Store.PendingChunks(ctx, job.ID)
		if err != nil {
			return err
		}
		for _, i := range pending {
			pub.send(i)
		}
	}
	if job.Status == model.JobPending {
		job, err = h.plan(ctx, lease, job, pub, started)
		if errors.Is(err, errBudget) {
			return h.handOff(ctx, lease, job, pub, started)
		}
		if err != nil {
			return errors.Join(err, pub.wait())
		}
	}
	h.cfg.Probe.At(ctx, StepPlanned)
	if err := pub.wait(); err != nil {
		return err
	}
	if ok, err := h.cfg.Store.CompleteIfDone(ctx, job.ID); err != nil {
		return err
	} else if ok {
		logging.From(ctx).Info("job completed", slog.String(logging.Event, "job_completed"))
	}
	logging.From(ctx).Info("chunk messages published", slog.String(logging.Event, "chunks_published"), slog.Int("chunks", pub.sent))
	h.cfg.Probe.At(ctx, StepPublished)
	return nil
}

// job reads and checks the Job and its tenant.
func (h *Handler) job(ctx context.Context, em model.ExpandMessage) (model.Job, error) {
	job, err := h.cfg.Store.Job(ctx, em.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return job, delivery.Poison("unknown_job", "expander: %w", err)
	}
	if err != nil {
		return job, err
	}
	if job.TenantID != em.TenantID {
		return job, delivery.Poison("tenant_mismatch", "expander: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, em.TenantID)
	}
	t, err := h.cfg.Store.Tenant(ctx, em.TenantID)
	if errors.Is(err, store.ErrNotFound) {
		return job, delivery.Poison("unknown_tenant", "expander: %w", err)
	}
	if err != nil {
		return job, err
	}
	if !t.Enabled {
		return job, delivery.Poison("tenant_disabled", "expander: tenant %q is disabled", t.ID)
	}
	return job, nil
}

// handOff ends a delivery whose budget is spent: once its chunk messages are out, the key is
// handed off and a continuation published (idem.Guard does both, in that order).
func (h *Handler) handOff(ctx context.Context, lease *idem.Lease, job model.Job, pub *stream, started time.Time) error {
	if err := pub.wait(); err != nil {
		return err
	}
	spent := h.cfg.Elapsed().Sub(started).Round(time.Millisecond)
	msg := bus.Expand(job)
	msg.Attributes["continuation"] = strconv.Itoa(lease.Attempt)
	return &idem.HandOff{
		Reason: fmt.Sprintf("time budget %v spent after %v and %d chunk messages; a continuation resumes the search", h.cfg.Budget, spent, pub.sent),
		Next: func(ctx context.Context) error {
			if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, msg); err != nil {
				return fmt.Errorf("expander: publish continuation of job %s: %w", job.ID, err)
			}
			return nil
		},
	}
}

// plan writes the Job's chunk plan, resuming after the last chunk a previous owner wrote and
// publishing each chunk's message once it is written, and returns the Job as PLANNED (or
// COMPLETED when the window is empty). It returns errBudget when the budget ran out first.
func (h *Handler) plan(ctx context.Context, lease *idem.Lease, job model.Job, pub *stream, started time.Time) (model.Job, error) {
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
		ev, what := "expansion_resumed", "resuming the search after the last written chunk"
		if lease.Continued {
			ev, what = "expansion_continued", "continuing the search after the last chunk of the previous delivery"
		}
		log.Info(what, slog.String(logging.Event, ev), slog.Int("nextChunk", next), slog.String("afterId", last.LastID))
	}
	// Every source query counts, a continuation's too: the counter is exact, and the audit allows
	// one more per takeover of the key (a hand-off's continuation takes it over).
	if err := h.cfg.Store.CountSearch(ctx, job.ID, lease.Owner); err != nil {
		return job, err
	}
	// Rows fill the chunk being cut (cur); cut chunks wait in ready, and go in one fenced commit
	// after the delivery's first page (so imports start at once), then whenever ready is full
	// (maxChunksPerWrite chunks or maxBytesPerWrite bytes), when the budget is due, and at the
	// end: a few large plan writes instead of one per chunk — on a store that serializes commits
	// (the emulator), each plan write waits behind the imports in flight. Each chunk's message is
	// published right after its write.
	var (
		cur        []model.ChunkRecord
		size       int
		ready      []model.Chunk
		readyBytes int
		wrote      bool
	)
	rule := model.ChunkRule{Size: job.ChunkSize, MaxBytes: h.cfg.MaxChunkBytes}
	cut := func(by string) {
		if len(cur) == 0 {
			return
		}
		lastRow := cur[len(cur)-1]
		ready = append(ready, model.Chunk{
			Index: next, JobID: job.ID, TenantID: job.TenantID, Status: model.ChunkPending, Records: cur, Count: len(cur), CutBy: by,
			LastModstamp: lastRow.Modstamp, LastID: lastRow.ID, PlannedAt: h.cfg.Now().UTC(),
		})
		next++
		readyBytes += size
		cur, size = nil, 0
	}
	write := func(ctx context.Context) error {
		if len(ready) == 0 {
			return nil
		}
		if err := h.cfg.Store.WriteChunks(ctx, lease, ready); err != nil {
			return err
		}
		for _, c := range ready {
			h.cfg.Probe.At(ctx, StepChunkWritten)
			pub.send(c.Index)
		}
		ready, readyBytes, wrote = nil, 0, true
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
			n, err := model.EncodedSize(row)
			if err != nil || rule.TooLarge(n) {
				raw, _ := json.Marshal(row)
				if err := h.deadRow(ctx, job, raw, "record_too_large", fmt.Sprintf("row %s: %d bytes encoded (%v)", r.ID, n, err)); err != nil {
					return err
				}
				continue
			}
			if by, ok := rule.CutBefore(len(cur), size, n); ok {
				cut(by)
				if len(ready) >= maxChunksPerWrite || readyBytes >= maxBytesPerWrite {
					if err := write(ctx); err != nil {
						return err
					}
				}
			}
			cur = append(cur, row)
			size += n
		}
		due := h.cfg.Budget > 0 && h.cfg.Elapsed().Sub(started) >= h.cfg.Budget
		if !wrote || due {
			if err := write(ctx); err != nil {
				return err
			}
		}
		// Handed off only once chunks are committed: that is the checkpoint a continuation
		// resumes from, so each delivery makes progress.
		if due && wrote {
			return errBudget
		}
		return nil
	})
	if err == nil {
		cut(model.CutEnd)
		err = write(ctx)
	}
	if errors.Is(err, errBudget) {
		return job, err
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
	if job, err = h.cfg.Store.FinishPlan(ctx, lease, job, chunks, rows, invalid); err != nil {
		return job, err
	}
	log.Info("chunk plan written", slog.String(logging.Event, "job_planned"), slog.Int("chunks", chunks),
		slog.Int("records", rows), slog.Int("invalid", invalid), slog.String("status", string(job.Status)))
	return job, nil
}

// stream publishes chunk messages in the background while the plan goes on; wait returns the
// first failure. A failed publish fails the delivery, whose retry re-publishes what is not DONE.
type stream struct {
	h    *Handler
	job  model.Job
	g    *errgroup.Group
	ctx  context.Context
	sent int
}

// streamDepth is how many chunk publishes may be in flight at once.
const streamDepth = 16

func (h *Handler) stream(ctx context.Context, job model.Job) *stream {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(streamDepth)
	return &stream{h: h, job: job, g: g, ctx: gctx}
}

func (s *stream) send(i int) {
	s.sent++
	s.g.Go(func() error {
		if _, err := s.h.cfg.Publisher.Publish(s.ctx, s.h.cfg.TopicChunks, bus.Chunk(s.job, i)); err != nil {
			return fmt.Errorf("expander: publish chunk %d of job %s: %w", i, s.job.ID, err)
		}
		return nil
	})
}

func (s *stream) wait() error { return s.g.Wait() }

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
