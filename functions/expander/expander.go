// Package expander is the Expander function: for one Job it runs the source's paged search over
// the Job's fixed window, writes the chunk plan, and publishes one message per chunk — exactly one
// plan per Job, however often and however early the expand message arrives.
//
// # Decide, then act
//
// Whether a delivery cuts the window, asks the source's budget, searches, resumes, pauses, hands
// off or finishes depends on the Job's status, the slice's, the lease and what the delivery has
// done so far. Next is that decision as a pure function of Facts, with a table test listing every
// combination; Handle reads the facts, carries out the step Next returns, and asks again until a
// step ends the delivery (step.go). A new state is a new row there.
//
// # Slices
//
// The first expansion of a Job (the scheduler's message, slice 0) measures the window with the
// source's aggregate query (source.Counter) and, when it holds more than Config.SliceRows rows,
// cuts it by time into slices of about that many rows (slice.go). The slices are written, fenced,
// before any search, so the same Job has the same slices however often and however early its
// messages arrive; a takeover reads them back. Each slice is its own unit of work: its own expand
// message, key (idem.SliceKey), resume point and chunk indexes (model.ChunkIndex). At most
// SearchSlots slices of a Job are searched at once (the tenant's searchConcurrency, or
// Config.SearchSlots, shared by the Jobs of the tenant's enabled settings): the first expansion
// publishes slices 1..SearchSlots-1 and searches slice 0 itself, and each slice that finishes
// publishes the one SearchSlots places after it (model.StartableSlices). The Job's plan is complete
// when every slice is PLANNED: each slice's expansion asks store.FinishPlan after recording its
// own, so the last one does it.
//
// # Once, and never stuck
//
// Each slice's expansion runs under its idempotency key (idem.Guard). While its lease is alive, a
// duplicate is sent back for redelivery, not acked: it may be the crashed owner's own redelivery.
// Once the key is DONE, a duplicate is acked without a search.
//
// The plan is written in (SystemModstamp, Id) order, each chunk with a deterministic ID and the
// search position after its last row, the chunks of each source page in one batch fenced by the
// lease (search.go, chunker.go). An owner that takes an expired lease over reads the last written
// chunk and resumes the search strictly after it, so a crash after partial writes resumes to the
// same plan; it also re-publishes the messages of the chunks written before the crash that are
// not DONE, since the crashed owner may not have published them. Memory is bounded by one page
// plus one chunk.
//
// # Streaming
//
// Each chunk's message is published as soon as its chunk is committed, so imports overlap the
// search (stream.go). Only when the plan is complete does the Job get its chunk count (status
// PLANNED). The Job completes when its plan is complete and every chunk is DONE, whichever happens
// last: the expander asks store.CompleteIfDone after the plan is recorded, the importer after each
// chunk.
//
// # Stopping early
//
// A delivery stops searching at a checkpoint (stop.go) for one of two reasons, after the chunk it
// just committed and once its chunk messages are out:
//   - its time budget (Config.Budget, a share of the function's timeout) is spent: it hands the
//     key off and publishes a continuation, which resumes the search after the last chunk at once,
//     so a Job of any size completes without any delivery meeting the function timeout;
//   - the source's request budget is down to the Job's API reserve (model.SyncSetting.APIReserve,
//     read before each search through source.Budgeter and after each page from source.Page.Usage):
//     the Job records the pause and the key is handed off with no continuation. The delivery is
//     acked: not failed, not dead-lettered. The recovery sweep re-publishes the paused slice on a
//     later tick, and that delivery resumes after the last written chunk once the budget allows.
//
// A source that refuses for good — the count, the search or the budget read (a removed field, a
// missing permission such as Salesforce's "View Setup and Configuration" for /limits) — fails the
// Job with the source's reason and dead-letters the message: it never loops.
//
// # Deleted records
//
// Every search asks for deleted records too (source.Query.Deleted); a deleted row goes into the
// plan like any other, marked deleted, and the importer turns it into a tombstone.
package expander

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

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
	StepSearched     = "expander.searched"      // a page of the search arrived, none of its rows written yet
	StepChunkWritten = "expander.chunk_written" // one more chunk of the plan written, its message not yet published
	StepPlanned      = "expander.planned"       // the slice's plan recorded (and the Job's, if it was the last), completion not yet checked
	StepPublished    = "expander.published"     // every chunk message published, completion checked, key not yet DONE
)

// Jobs is what the expander reads and records of Jobs and their tenants.
type Jobs interface {
	Job(ctx context.Context, id string) (model.Job, error)
	Tenant(ctx context.Context, id string) (model.Tenant, error)
	EnabledSettingsOf(ctx context.Context, tenantID string) (int, error)
	CountSearch(ctx context.Context, jobID, owner string) error
	FailJob(ctx context.Context, jobID, reason string) error
	PauseJob(ctx context.Context, jobID, reason string) error
	DisconnectTenant(ctx context.Context, tenantID, reason string) error
	CompleteIfDone(ctx context.Context, jobID string) (bool, error)
}

// Plans is the Job's plan: its slices and chunks. The writes take the expansion's lease as their
// fence.
type Plans interface {
	Slices(ctx context.Context, jobID string) ([]model.Slice, error)
	LastChunk(ctx context.Context, jobID string, slice int) (*model.Chunk, error)
	PendingChunks(ctx context.Context, jobID string) ([]int, error)
	PlanTotals(ctx context.Context, jobID string, slice int) (chunks, rows int, err error)
	CutSlices(ctx context.Context, l *idem.Lease, job model.Job, slices []model.Slice, slots int) (model.Job, error)
	DecideSlots(ctx context.Context, l *idem.Lease, job model.Job, slots int) (model.Job, error)
	WriteChunks(ctx context.Context, l *idem.Lease, chunks []model.Chunk) error
	FinishSlice(ctx context.Context, l *idem.Lease, jobID string, sl model.Slice, chunks, rows int) error
	FinishPlan(ctx context.Context, jobID string) (job model.Job, recorded bool, err error)
}

// Store is both, as the production store and the harness's wrappers provide them.
type Store interface {
	Jobs
	Plans
}

// Source runs a paged search: any connector (see package source).
type Source = source.Source

// Sources opens a tenant's source: the connector, org and credentials of the tenant's own
// connection. An error wrapping source.ErrDisconnected (no connection, a credential that cannot
// be read) pauses the tenant's Jobs; any other is transient.
type Sources interface {
	Open(ctx context.Context, tenant model.Tenant) (Source, error)
}

// One is the Sources of a world with one source for every tenant: the harness's one-org fixture
// and the unit tests. Deployed, each tenant has its own connection (connectors.Pool).
type One struct{ Source Source }

// Open implements Sources.
func (o One) Open(context.Context, model.Tenant) (Source, error) { return o.Source, nil }

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
	Jobs        Jobs
	Plans       Plans
	Guard       idem.Runner // runs the expansion under the slice's key
	Sources     Sources
	Publisher   Publisher
	DeadLetters delivery.Sink
	TopicExpand string // where continuations go
	TopicChunks string // the standard lane's chunk topic
	// TopicChunksBulk is the bulk lane's (empty: one lane), for Jobs whose window counts more than
	// BulkAfter rows (model.ClassOf; 0: no bulk class).
	TopicChunksBulk string
	BulkAfter       int
	MaxChunkBytes   int           // a chunk is cut early rather than grow past this many encoded bytes
	Budget          time.Duration // a delivery hands off after the first chunk written past this; 0: never
	SliceRows       int           // a window of more rows is cut into slices of about this many; 0: never
	MaxSlices       int           // most slices per Job (default 1)
	SearchSlots     int           // slices of a Job searched at once, for tenants that set none (default 1)
	// ParallelAfter: a Job's slices are searched in parallel only when its first page took at
	// least this long to arrive (on the Elapsed clock); otherwise one after another. 0: always.
	ParallelAfter time.Duration
	Now           func() time.Time
	Elapsed       func() time.Time // the budget's clock (real time even where Now is simulated); default time.Now
	Probe         probe.Func
}

// Handler handles expand messages.
type Handler struct{ cfg Config }

func (h *Handler) lanes() bus.Lanes {
	return bus.Lanes{Standard: h.cfg.TopicChunks, Bulk: h.cfg.TopicChunksBulk}
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Jobs == nil || cfg.Plans == nil || cfg.Guard == nil || cfg.Sources == nil || cfg.Publisher == nil || cfg.DeadLetters == nil {
		return nil, errors.New("expander: missing dependency")
	}
	if cfg.TopicChunks == "" || cfg.TopicExpand == "" || cfg.MaxChunkBytes < 1 || cfg.Budget < 0 || cfg.BulkAfter < 0 {
		return nil, errors.New("expander: expand and chunk topics, max chunk bytes and a budget >= 0 are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Elapsed == nil {
		cfg.Elapsed = time.Now
	}
	if cfg.SliceRows < 0 || cfg.MaxSlices < 0 || cfg.SearchSlots < 0 || cfg.ParallelAfter < 0 {
		return nil, errors.New("expander: slice rows, max slices, search slots and parallel-after must not be negative")
	}
	cfg.MaxSlices, cfg.SearchSlots = max(cfg.MaxSlices, 1), max(cfg.SearchSlots, 1)
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
	if em.Slice < 0 || em.Slice >= model.SliceStride {
		return em, delivery.Poison("unknown_slice", "expand message %s names slice %d", m.ID, em.Slice)
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
	key := idem.SliceKey(em.JobID, em.Slice).WithPayload(em)
	ctx = logging.With(ctx, slog.String(logging.Tenant, em.TenantID), slog.String(logging.Job, em.JobID), slog.String(logging.Key, key.String()),
		slog.Int("slice", em.Slice))
	labels := map[string]string{"tenant": em.TenantID, "job": em.JobID, "messageId": m.ID, "slice": strconv.Itoa(em.Slice)}
	return h.cfg.Guard.Run(ctx, key, "Expander/"+m.ID+"/"+uuid.NewString(), labels, func(ctx context.Context, l *idem.Lease) error {
		h.cfg.Probe.At(ctx, StepClaimed)
		return h.expand(ctx, l, em, started)
	})
}

// expansion is one delivery's state: what was read at its start, and what its steps did since.
type expansion struct {
	h       *Handler
	lease   *idem.Lease
	em      model.ExpandMessage
	started time.Time
	job     model.Job
	tenant  model.Tenant
	src     Source        // the tenant's, opened through its connection
	slices  []model.Slice // nil until the window is cut
	pub     *stream
	slots   int // the tenant's share of concurrent searches; 0 until counted
	facts   Facts
	usage   source.Usage // the budget as last read, when Facts.Down
	reject  error        // the source's permanent refusal, when Facts.Rejected
	// rejectReason is the poison reason of reject.
	rejectReason string
	// disconnectedBy is why the connection is disconnected, when Facts.Disconnected.
	disconnectedBy error
}

// expand runs the steps Next chooses until one ends the delivery. Whatever ends it, the chunk
// messages already streamed are waited for first: nothing a delivery started outlives it.
func (h *Handler) expand(ctx context.Context, lease *idem.Lease, em model.ExpandMessage, started time.Time) (err error) {
	x := &expansion{h: h, lease: lease, em: em, started: started}
	if err := x.load(ctx); err != nil {
		return err
	}
	x.pub = h.stream(ctx, x.job)
	defer func() {
		if werr := x.pub.wait(); werr != nil && !errors.Is(err, werr) {
			err = errors.Join(err, werr)
		}
	}()
	for {
		step := Next(x.facts)
		if err := x.do(ctx, step); err != nil || step.Final() {
			return err
		}
	}
}

// do carries out one step.
func (x *expansion) do(ctx context.Context, step Step) error {
	switch step {
	case StepIgnore:
		return fmt.Errorf("%w: job %s is already %s", delivery.ErrDuplicate, x.job.ID, x.job.Status)
	case StepRefuse:
		if x.slices == nil {
			return delivery.Poison("unknown_slice", "expander: job %s (%s) has no slices, the message names slice %d", x.job.ID, x.job.Status, x.em.Slice)
		}
		return delivery.Poison("unknown_slice", "expander: job %s has %d slices, the message names slice %d", x.job.ID, len(x.slices), x.em.Slice)
	case StepReject:
		return x.rejected(ctx)
	case StepHandOff:
		return x.handOff(ctx)
	case StepPause:
		return x.pause(ctx)
	case StepDisconnect:
		return x.disconnect(ctx)
	case StepAskBudget:
		return x.askBudget(ctx)
	case StepCut:
		return x.cut(ctx)
	case StepRestart:
		return x.restart(ctx)
	case StepRepublish:
		return x.republish(ctx)
	case StepSearch, StepSearchAndDecide:
		return x.search(ctx, step == StepSearchAndDecide)
	case StepFinish:
		return x.finish(ctx)
	case StepComplete:
		return x.complete(ctx)
	}
	return fmt.Errorf("expander: no action for step %v", step)
}

// load reads and checks the Job, its tenant and its slices, and sets the facts they give.
func (x *expansion) load(ctx context.Context) error {
	jobs, em := x.h.cfg.Jobs, x.em
	job, err := jobs.Job(ctx, em.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return delivery.Poison("unknown_job", "expander: %w", err)
	}
	if err != nil {
		return err
	}
	if job.TenantID != em.TenantID {
		return delivery.Poison("tenant_mismatch", "expander: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, em.TenantID)
	}
	t, err := jobs.Tenant(ctx, em.TenantID)
	if errors.Is(err, store.ErrNotFound) {
		return delivery.Poison("unknown_tenant", "expander: %w", err)
	}
	if err != nil {
		return err
	}
	if !t.Enabled {
		return delivery.Poison("tenant_disabled", "expander: tenant %q is disabled", t.ID)
	}
	x.job, x.tenant = job, t
	if job.SliceCount > 0 && (job.Status == model.JobPending || job.Status == model.JobPlanned) {
		if x.slices, err = x.h.cfg.Plans.Slices(ctx, job.ID); err != nil {
			return err
		}
	}
	x.facts = Facts{First: em.Slice == 0, Lease: LeaseNew}
	switch {
	case t.IsDisconnected():
		x.facts.Disconnected, x.disconnectedBy = true, errors.New(t.Connection.Reason)
	case job.Status == model.JobPending:
		src, err := x.h.cfg.Sources.Open(ctx, t)
		if source.IsDisconnected(err) {
			x.facts.Disconnected, x.disconnectedBy = true, err
			break
		}
		if err != nil {
			return fmt.Errorf("expander: open the source of tenant %q: %w", t.ID, err)
		}
		x.src = src
		_, budgets := src.(source.Budgeter)
		x.facts.Reserve = job.APIReserve > 0 && budgets
	}
	switch {
	case x.lease.Continued:
		x.facts.Lease = LeaseContinued
	case x.lease.TakenOver:
		x.facts.Lease = LeaseTakenOver
	}
	x.setJob(job)
	return nil
}

// setJob records the Job as last read or written, and the facts it gives.
func (x *expansion) setJob(job model.Job) {
	x.job = job
	f := &x.facts
	f.Job, f.Decided, f.Parallel = job.Status, job.SearchSlots > 0, job.SearchSlots > 1
	switch {
	case x.slices == nil:
		f.Slice = SliceUncut
	case x.em.Slice >= len(x.slices):
		f.Slice = SliceMissing
	case x.slices[x.em.Slice].Status == model.SlicePlanned:
		f.Slice = SlicePlanned
	default:
		f.Slice = SlicePending
	}
}

// slice is the slice the message names.
func (x *expansion) slice() model.Slice { return x.slices[x.em.Slice] }

// complete ends a delivery whose slice is planned: once its chunk messages are out, the Job is
// completed if every chunk is DONE already.
func (x *expansion) complete(ctx context.Context) error {
	h := x.h
	h.cfg.Probe.At(ctx, StepPlanned)
	if err := x.pub.wait(); err != nil {
		return err
	}
	if ok, err := h.cfg.Jobs.CompleteIfDone(ctx, x.job.ID); err != nil {
		return err
	} else if ok {
		logging.From(ctx).Info("job completed", slog.String(logging.Event, "job_completed"))
	}
	logging.From(ctx).Info("chunk messages published", slog.String(logging.Event, "chunks_published"), slog.Int("chunks", x.pub.sent))
	h.cfg.Probe.At(ctx, StepPublished)
	return nil
}
