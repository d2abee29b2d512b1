// Package expander is the Expander function: for one Job it runs the source's paged search over
// the Job's fixed window, writes the chunk plan, and publishes one message per chunk — exactly one
// plan per Job, however often and however early the expand message arrives.
//
// # Slices
//
// The first expansion of a Job (the scheduler's message, slice 0) measures the window with the
// source's aggregate query (source.Counter) and, when it holds more than Config.SliceRows rows,
// cuts it by time into slices of about that many rows (halving the fullest slice until there are
// enough, a multiple of the searches allowed at once, at most Config.MaxSlices). The slices are
// written, fenced, before any search, so the same Job has the same slices however often and
// however early its messages arrive; a takeover reads them back. Each slice is its own unit of
// work: its own expand message, key (idem.SliceKey), resume point and chunk indexes
// (model.ChunkIndex). At most SearchSlots slices of a Job are searched at once (the tenant's
// searchConcurrency, or Config.SearchSlots, shared by the Jobs of the tenant's enabled settings):
// the first expansion publishes slices 1..SearchSlots-1
// and searches slice 0 itself, and each slice that finishes publishes the one SearchSlots places
// after it (model.StartableSlices). The Job's plan is complete when every slice is PLANNED: each
// slice's expansion asks store.FinishPlan after recording its own, so the last one does it.
//
// # Once, and never stuck
//
// Each slice's expansion runs under its idempotency key (idem.Guard). While its lease is
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
//
// # API budget
//
// A Job whose setting keeps an API reserve (model.SyncSetting.APIReserve) reads the source's
// request budget before each search (source.Budgeter) and after each page (source.Page.Usage).
// Once no more than the reserve is left, the search pauses: after the chunks already cut are
// committed, the Job records the pause (store PauseJob), the key is handed off like a spent time
// budget but with no continuation, and the delivery is acked: not failed, not dead-lettered. The
// recovery sweep re-publishes the paused slice on a later tick, and that delivery resumes after
// the last written chunk once the budget allows.
//
// # Deleted records
//
// Every search asks for deleted records too (source.Query.Deleted); a deleted row goes into the
// plan like any other, marked deleted, and the importer turns it into a tombstone.
package expander

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/errgroup"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/probe"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/store"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Steps where the probe is called.
const (
	StepClaimed      = "expander.claimed"       // key held, nothing searched
	StepSearched     = "expander.searched"      // a page of the search arrived, none of its rows written yet
	StepChunkWritten = "expander.chunk_written" // one more chunk of the plan written, its message not yet published
	StepPlanned      = "expander.planned"       // the slice's plan recorded (and the Job's, if it was the last), completion not yet checked
	StepPublished    = "expander.published"     // every chunk message published, completion checked, key not yet DONE
)

// Store is the data the expander reads and writes. The plan's writes take the expansion's lease
// as their fence.
type Store interface {
	Job(ctx context.Context, id string) (model.Job, error)
	Tenant(ctx context.Context, id string) (model.Tenant, error)
	EnabledSettingsOf(ctx context.Context, tenantID string) (int, error)
	Slices(ctx context.Context, jobID string) ([]model.Slice, error)
	LastChunk(ctx context.Context, jobID string, slice int) (*model.Chunk, error)
	PendingChunks(ctx context.Context, jobID string) ([]int, error)
	CountSearch(ctx context.Context, jobID, owner string) error
	PlanTotals(ctx context.Context, jobID string, slice int) (chunks, rows int, err error)
	FailJob(ctx context.Context, jobID, reason string) error
	PauseJob(ctx context.Context, jobID, reason string) error
	CompleteIfDone(ctx context.Context, jobID string) (bool, error)
	CutSlices(ctx context.Context, l *idem.Lease, job model.Job, slices []model.Slice, slots int) (model.Job, error)
	DecideSlots(ctx context.Context, l *idem.Lease, job model.Job, slots int) (model.Job, error)
	WriteChunks(ctx context.Context, l *idem.Lease, chunks []model.Chunk) error
	FinishSlice(ctx context.Context, l *idem.Lease, jobID string, sl model.Slice, chunks, rows int) error
	FinishPlan(ctx context.Context, jobID string) (model.Job, error)
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
	SliceRows     int           // a window of more rows is cut into slices of about this many; 0: never
	MaxSlices     int           // most slices per Job (default 1)
	SearchSlots   int           // slices of a Job searched at once, for tenants that set none (default 1)
	// ParallelAfter: a Job's slices are searched in parallel only when its first page took at
	// least this long to arrive (on the Elapsed clock); otherwise one after another. 0: always.
	ParallelAfter time.Duration
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

// A plan write holds at most this many chunks or encoded bytes (Firestore takes 10 MiB a request).
const (
	maxChunksPerWrite = 16
	maxBytesPerWrite  = 4 << 20
)

// errBudget stops the search once the delivery's time budget is spent.
var errBudget = errors.New("expander: time budget spent")

// pauseError stops the search once the source's request budget is down to the Job's reserve.
type pauseError struct{ usage source.Usage }

func (e *pauseError) Error() string { return "expander: source API budget down to the reserve" }

// overBudget returns a pauseError when u leaves no more than job's reserve.
func overBudget(job model.Job, u source.Usage) error {
	if job.APIReserve > 0 && u.Known() && u.Left() <= job.APIReserve {
		return &pauseError{usage: u}
	}
	return nil
}

// budget asks the source, when it can tell, whether job may search now.
func (h *Handler) budget(ctx context.Context, job model.Job) error {
	b, ok := h.cfg.Source.(source.Budgeter)
	if job.APIReserve <= 0 || !ok {
		return nil
	}
	u, err := b.Usage(ctx)
	if err != nil {
		return fmt.Errorf("expander: job %s: API budget: %w", job.ID, err)
	}
	return overBudget(job, u)
}

func (h *Handler) expand(ctx context.Context, lease *idem.Lease, em model.ExpandMessage, started time.Time) error {
	job, tenant, err := h.job(ctx, em)
	if err != nil {
		return err
	}
	if job.Status == model.JobCompleted || job.Status == model.JobFailed {
		return fmt.Errorf("%w: job %s is already %s", delivery.ErrDuplicate, job.ID, job.Status)
	}
	// The budget is asked only before work that spends requests and that the recovery sweep
	// re-publishes if it pauses: the first expansion's count (the Job has no slices yet), and the
	// search of a slice still PENDING. A delivery with nothing left to search (a takeover of a
	// slice already planned) must complete its key, not hand it off with no continuation.
	checked := false
	if job.Status == model.JobPending && job.SliceCount == 0 {
		if err := h.budget(ctx, job); err != nil {
			return h.pauseOr(ctx, job, em.Slice, nil, err)
		}
		checked = true
	}
	all, job, err := h.slices(ctx, lease, job, tenant, em.Slice)
	if err != nil {
		return err
	}
	sl := all[em.Slice]
	pub := h.stream(ctx, job)
	// A crashed owner may have written chunks whose messages it never published; a key that is
	// new while the slice is planned lost its history (expired, or abandoned and replayed).
	if (lease.TakenOver && !lease.Continued) || sl.Status == model.SlicePlanned || job.Status == model.JobPlanned {
		pending, err := h.cfg.Store.PendingChunks(ctx, job.ID)
		if err != nil {
			return err
		}
		for _, i := range pending {
			if model.SliceOf(i) == sl.Index {
				pub.send(i)
			}
		}
	}
	var firstPage func(ctx context.Context, fetch time.Duration) error
	if sl.Index == 0 && job.SearchSlots == 0 {
		// Serial or parallel is decided on slice 0's first page, before any other slice starts.
		firstPage = func(ctx context.Context, fetch time.Duration) error {
			var err error
			job, err = h.decide(ctx, lease, job, tenant, all, fetch)
			return err
		}
	}
	if job.Status == model.JobPending && sl.Status == model.SlicePending {
		if !checked {
			if err := h.budget(ctx, job); err != nil {
				return h.pauseOr(ctx, job, sl.Index, pub, err)
			}
		}
		err := h.plan(ctx, lease, job, sl, pub, started, firstPage)
		if errors.Is(err, errBudget) {
			return h.handOff(ctx, lease, job, sl, pub, started)
		}
		var pe *pauseError
		if errors.As(err, &pe) {
			return h.pause(ctx, job, sl.Index, pub, pe)
		}
		if err != nil {
			return errors.Join(err, pub.wait())
		}
		all[sl.Index].Status = model.SlicePlanned
	}
	if job.Status == model.JobPending {
		// The chain that bounds the searches in flight: this slice's end starts the slice
		// SearchSlots places after it.
		if next := sl.Index + max(job.SearchSlots, 1); next < len(all) && all[next].Status == model.SlicePending {
			if err := h.publishSlices(ctx, job, next); err != nil {
				return errors.Join(err, pub.wait())
			}
		}
		if job, err = h.cfg.Store.FinishPlan(ctx, job.ID); err != nil {
			return errors.Join(err, pub.wait())
		}
		if job.Status != model.JobPending {
			logging.From(ctx).Info("chunk plan complete", slog.String(logging.Event, "job_planned"), slog.Int("chunks", job.ChunkCount),
				slog.Int("records", job.RecordCount), slog.Int("invalid", job.InvalidCount), slog.Int("slices", job.SliceCount), slog.String("status", string(job.Status)))
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

// slices returns the Job's slices, cutting them first when this is the Job's first expansion.
// After a takeover, slice 0's expansion publishes again the messages of the slices searched beside
// it (the crashed owner may not have); the first time, decide does, on slice 0's first page.
func (h *Handler) slices(ctx context.Context, lease *idem.Lease, job model.Job, tenant model.Tenant, s int) ([]model.Slice, model.Job, error) {
	first := job.SliceCount == 0
	var all []model.Slice
	switch {
	case first && (s != 0 || job.Status != model.JobPending):
		return nil, job, delivery.Poison("unknown_slice", "expander: job %s (%s) has no slices, the message names slice %d", job.ID, job.Status, s)
	case first:
		slots, err := h.slots(ctx, tenant)
		if err != nil {
			return nil, job, err
		}
		cut, err := h.cut(ctx, job, slots)
		if err != nil {
			return nil, job, err
		}
		decided := 0 // serial or parallel: decided on slice 0's first page
		if len(cut) == 1 {
			decided = 1
		}
		if job, err = h.cfg.Store.CutSlices(ctx, lease, job, cut, decided); err != nil {
			return nil, job, err
		}
		all = cut
		logging.From(ctx).Info("window cut into slices", slog.String(logging.Event, "job_sliced"), slog.Int("slices", len(all)),
			slog.Int("searchLimit", slots), slog.Int("estimate", total(all)))
	default:
		var err error
		if all, err = h.cfg.Store.Slices(ctx, job.ID); err != nil {
			return nil, job, err
		}
		if s >= len(all) {
			return nil, job, delivery.Poison("unknown_slice", "expander: job %s has %d slices, the message names slice %d", job.ID, len(all), s)
		}
	}
	if s == 0 && job.Status == model.JobPending && job.SearchSlots > 1 && lease.TakenOver && !lease.Continued {
		var start []int
		for _, i := range model.StartableSlices(all, job.SearchSlots) {
			if i > 0 && i < job.SearchSlots {
				start = append(start, i)
			}
		}
		if err := h.publishSlices(ctx, job, start...); err != nil {
			return nil, job, err
		}
	}
	return all, job, nil
}

// decide fixes how many of the Job's slices are searched at once, from how long slice 0's first
// page took to arrive: a source that answers faster than Config.ParallelAfter is searched one slice
// after another (parallel searches would only compete with the imports for the store), a slower
// one with every search the tenant allows. It records the choice (fenced) before it publishes the
// slices searched beside slice 0, so a takeover finds it made or not made, never half.
func (h *Handler) decide(ctx context.Context, lease *idem.Lease, job model.Job, tenant model.Tenant, all []model.Slice, fetch time.Duration) (model.Job, error) {
	slots := 1
	if fetch >= h.cfg.ParallelAfter {
		var err error
		if slots, err = h.slots(ctx, tenant); err != nil {
			return job, err
		}
	}
	job, err := h.cfg.Store.DecideSlots(ctx, lease, job, slots)
	if err != nil {
		return job, err
	}
	var start []int
	for _, i := range model.StartableSlices(all, slots) {
		if i > 0 && i < slots {
			start = append(start, i)
		}
	}
	logging.From(ctx).Info("slices started", slog.String(logging.Event, "slices_started"), slog.Int("searchSlots", slots),
		slog.Duration("firstPage", fetch), slog.Int("slices", len(all)))
	return job, h.publishSlices(ctx, job, start...)
}

// slots is how many slices of one of the tenant's Jobs are searched at once: the tenant's
// concurrent searches (its searchConcurrency, or the deployment's), shared by the Jobs its enabled
// settings make each tick, at least one each.
func (h *Handler) slots(ctx context.Context, t model.Tenant) (int, error) {
	limit := h.cfg.SearchSlots
	if t.SearchConcurrency > 0 {
		limit = t.SearchConcurrency
	}
	n, err := h.cfg.Store.EnabledSettingsOf(ctx, t.ID)
	if err != nil {
		return 0, err
	}
	return max(1, limit/max(n, 1)), nil
}

func total(slices []model.Slice) int {
	n := 0
	for _, sl := range slices {
		n += sl.Estimate
	}
	return n
}

// publishSlices publishes the expand messages of slices of job.
func (h *Handler) publishSlices(ctx context.Context, job model.Job, slices ...int) error {
	if len(slices) == 0 {
		return nil
	}
	msgs := make([]bus.Message, len(slices))
	for i, s := range slices {
		msgs[i] = bus.ExpandSlice(job, s)
	}
	if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, msgs...); err != nil {
		return fmt.Errorf("expander: publish slices %v of job %s: %w", slices, job.ID, err)
	}
	return nil
}

// cut measures the Job's window and cuts it into slices: one when the connector does not count or
// the window holds at most SliceRows rows; otherwise about rows/SliceRows slices, rounded up to a
// multiple of slots and at most MaxSlices, by halving the fullest slice's populated time range
// (one count per halving; a range that cannot be halved, all of one millisecond, stays whole).
// The slices cover the window exactly, in order; their estimates are the counts as measured.
func (h *Handler) cut(ctx context.Context, job model.Job, slots int) ([]model.Slice, error) {
	whole := model.Slice{From: job.WindowFrom, To: job.WindowTo, Status: model.SlicePending}
	c, ok := h.cfg.Source.(source.Counter)
	if !ok || h.cfg.SliceRows == 0 || h.cfg.MaxSlices == 1 {
		return []model.Slice{whole}, nil
	}
	count := func(from, to time.Time) (source.Extent, error) {
		e, err := c.Count(ctx, source.Query{Object: job.SourceObject, From: from, To: to, Deleted: true})
		if source.IsPermanent(err) {
			if ferr := h.cfg.Store.FailJob(ctx, job.ID, err.Error()); ferr != nil {
				return e, ferr
			}
			return e, delivery.Poison("source_rejected_search", "expander: job %s: %w", job.ID, err)
		}
		return e, err
	}
	e, err := count(job.WindowFrom, job.WindowTo)
	if err != nil {
		return nil, err
	}
	whole.Estimate = e.Count
	want := (e.Count + h.cfg.SliceRows - 1) / h.cfg.SliceRows
	if want <= 1 {
		return []model.Slice{whole}, nil
	}
	want = min((want+slots-1)/slots*slots, h.cfg.MaxSlices)
	// part is a slice and the time range [lo, hi) that holds its rows, as counted.
	type part struct {
		sl     model.Slice
		lo, hi time.Time
	}
	parts := []part{{sl: whole, lo: e.First, hi: e.Last.Add(time.Millisecond)}}
	for counts := 0; len(parts) < want && counts < 4*want; counts++ {
		i := -1
		for j, p := range parts {
			if p.sl.Estimate > 1 && p.hi.Sub(p.lo) >= 2*time.Millisecond && (i < 0 || p.sl.Estimate > parts[i].sl.Estimate) {
				i = j
			}
		}
		if i < 0 {
			break
		}
		p := parts[i]
		mid := p.lo.Add(p.hi.Sub(p.lo) / 2).Truncate(time.Millisecond)
		if !mid.After(p.lo) {
			mid = p.lo.Add(time.Millisecond)
		}
		left, err := count(p.lo, mid)
		if err != nil {
			return nil, err
		}
		switch {
		case left.Count == 0:
			parts[i].lo = mid
		case left.Count >= p.sl.Estimate:
			parts[i].hi = left.Last.Add(time.Millisecond)
		default:
			l := part{sl: model.Slice{From: p.sl.From, To: mid, Estimate: left.Count, Status: model.SlicePending}, lo: left.First, hi: left.Last.Add(time.Millisecond)}
			r := part{sl: model.Slice{From: mid, To: p.sl.To, Estimate: p.sl.Estimate - left.Count, Status: model.SlicePending}, lo: mid, hi: p.hi}
			parts = slices.Insert(slices.Delete(parts, i, i+1), i, l, r)
		}
	}
	out := make([]model.Slice, len(parts))
	for i, p := range parts {
		out[i] = p.sl
		out[i].Index = i
	}
	return out, nil
}

// job reads and checks the Job and its tenant.
func (h *Handler) job(ctx context.Context, em model.ExpandMessage) (model.Job, model.Tenant, error) {
	var t model.Tenant
	job, err := h.cfg.Store.Job(ctx, em.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return job, t, delivery.Poison("unknown_job", "expander: %w", err)
	}
	if err != nil {
		return job, t, err
	}
	if job.TenantID != em.TenantID {
		return job, t, delivery.Poison("tenant_mismatch", "expander: job %s belongs to tenant %q, message names %q", job.ID, job.TenantID, em.TenantID)
	}
	t, err = h.cfg.Store.Tenant(ctx, em.TenantID)
	if errors.Is(err, store.ErrNotFound) {
		return job, t, delivery.Poison("unknown_tenant", "expander: %w", err)
	}
	if err != nil {
		return job, t, err
	}
	if !t.Enabled {
		return job, t, delivery.Poison("tenant_disabled", "expander: tenant %q is disabled", t.ID)
	}
	return job, t, nil
}

// handOff ends a delivery whose budget is spent: once its chunk messages are out, the key is
// handed off and a continuation published (idem.Guard does both, in that order).
func (h *Handler) handOff(ctx context.Context, lease *idem.Lease, job model.Job, sl model.Slice, pub *stream, started time.Time) error {
	if err := pub.wait(); err != nil {
		return err
	}
	spent := h.cfg.Elapsed().Sub(started).Round(time.Millisecond)
	msg := bus.ExpandSlice(job, sl.Index)
	msg.Attributes["continuation"] = strconv.Itoa(lease.Attempt)
	return &idem.HandOff{
		Reason: fmt.Sprintf("time budget %v spent after %v and %d chunk messages; a continuation resumes the search", h.cfg.Budget, spent, pub.sent),
		Next: func(ctx context.Context) error {
			if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, msg); err != nil {
				return fmt.Errorf("expander: publish continuation of job %s slice %d: %w", job.ID, sl.Index, err)
			}
			return nil
		},
	}
}

// pauseOr pauses for a budget error, and returns any other error (after pub's publishes).
func (h *Handler) pauseOr(ctx context.Context, job model.Job, slice int, pub *stream, err error) error {
	var pe *pauseError
	if errors.As(err, &pe) {
		return h.pause(ctx, job, slice, pub, pe)
	}
	if pub != nil {
		return errors.Join(err, pub.wait())
	}
	return err
}

// pause ends a delivery whose source budget is down to the reserve: once its chunk messages are
// out, the pause is recorded on the Job and the key handed off with no continuation (the recovery
// sweep resumes the slice on a later tick). pub is nil when nothing was searched.
func (h *Handler) pause(ctx context.Context, job model.Job, slice int, pub *stream, pe *pauseError) error {
	sent := 0
	if pub != nil {
		if err := pub.wait(); err != nil {
			return err
		}
		sent = pub.sent
	}
	u := pe.usage
	reason := fmt.Sprintf("API budget: %d of %d daily requests used, %d left, reserve %d", u.Used, u.Limit, u.Left(), job.APIReserve)
	if err := h.cfg.Store.PauseJob(ctx, job.ID, reason); err != nil {
		return err
	}
	logging.From(ctx).Warn("search paused for the source's API budget; the recovery sweep resumes it", slog.String(logging.Event, "budget_paused"),
		slog.Int("apiUsed", u.Used), slog.Int("apiLimit", u.Limit), slog.Int("apiReserve", job.APIReserve), slog.Int("slice", slice),
		slog.Int("chunkMessages", sent))
	return &idem.HandOff{Reason: reason + "; paused until a recovery sweep finds the budget back"}
}

// plan writes the chunk plan of one slice, resuming after the last chunk a previous owner wrote
// and publishing each chunk's message once it is written, and records the slice PLANNED. It
// returns errBudget when the budget ran out first.
// firstPage, when not nil, is called with how long the first page took to arrive, before its rows
// are cut.
func (h *Handler) plan(ctx context.Context, lease *idem.Lease, job model.Job, sl model.Slice, pub *stream, started time.Time,
	firstPage func(ctx context.Context, fetch time.Duration) error) error {
	log := logging.From(ctx)
	last, err := h.cfg.Store.LastChunk(ctx, job.ID, sl.Index)
	if err != nil {
		return err
	}
	q := source.Query{Object: job.SourceObject, Fields: job.Fields, From: sl.From, To: sl.To, Deleted: true}
	next := model.ChunkIndex(sl.Index, 0)
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
		return err
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
	end := model.ChunkIndex(sl.Index+1, 0)
	cut := func(by string) error {
		if len(cur) == 0 {
			return nil
		}
		if next >= end {
			return fmt.Errorf("expander: slice %d of job %s needs more than %d chunks: lower ONCESYNC_SLICE_ROWS", sl.Index, job.ID, model.SliceStride)
		}
		lastRow := cur[len(cur)-1]
		ready = append(ready, model.Chunk{
			Index: next, JobID: job.ID, TenantID: job.TenantID, Status: model.ChunkPending, Records: cur, Count: len(cur), CutBy: by,
			LastModstamp: lastRow.Modstamp, LastID: lastRow.ID, PlannedAt: h.cfg.Now().UTC(),
		})
		next++
		readyBytes += size
		cur, size = nil, 0
		return nil
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
	searched := h.cfg.Elapsed()
	sctx, span := telemetry.Start(ctx, "search", attribute.Int("oncesync.slice", sl.Index), attribute.Bool("oncesync.search.resumed", q.After != nil))
	err = h.cfg.Source.Search(sctx, q, func(ctx context.Context, p source.Page) error {
		h.cfg.Probe.At(ctx, StepSearched)
		if firstPage != nil {
			if err := firstPage(ctx, h.cfg.Elapsed().Sub(searched)); err != nil {
				return err
			}
			firstPage = nil
		}
		for _, inv := range p.Invalid {
			if err := h.deadRow(ctx, job, inv.Raw, "invalid_source_row", inv.Reason); err != nil {
				return err
			}
		}
		for _, r := range p.Records {
			row := model.ChunkRecord{ID: r.ID, Modstamp: r.Modstamp.UTC(), Fields: r.Fields, Deleted: r.Deleted}
			n, err := model.EncodedSize(row)
			if err != nil || rule.TooLarge(n) {
				raw, _ := json.Marshal(row)
				if err := h.deadRow(ctx, job, raw, "record_too_large", fmt.Sprintf("row %s: %d bytes encoded (%v)", r.ID, n, err)); err != nil {
					return err
				}
				continue
			}
			if by, ok := rule.CutBefore(len(cur), size, n); ok {
				if err := cut(by); err != nil {
					return err
				}
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
		over := overBudget(job, p.Usage)
		if !wrote || due || over != nil {
			if err := write(ctx); err != nil {
				return err
			}
		}
		if over != nil {
			// The chunks cut so far are the checkpoint; the rows of the chunk being cut are
			// searched again on resumption.
			return over
		}
		// Handed off only once chunks are committed: that is the checkpoint a continuation
		// resumes from, so each delivery makes progress.
		if due && wrote {
			return errBudget
		}
		return nil
	})
	if err == nil {
		if err = cut(model.CutEnd); err == nil {
			err = write(ctx)
		}
	}
	if errors.Is(err, errBudget) || errors.As(err, new(*pauseError)) {
		span.SetAttributes(attribute.String("oncesync.search.stopped", err.Error())) // a checkpoint, not a failure
		err2 := err
		span.End()
		return err2
	}
	telemetry.End(span, err)
	if errors.Is(err, errBudget) || errors.As(err, new(*pauseError)) {
		return err
	}
	if source.IsPermanent(err) {
		if ferr := h.cfg.Store.FailJob(ctx, job.ID, err.Error()); ferr != nil {
			return ferr
		}
		return delivery.Poison("source_rejected_search", "expander: job %s: %w", job.ID, err)
	}
	if err != nil {
		return err
	}
	chunks, rows, err := h.cfg.Store.PlanTotals(ctx, job.ID, sl.Index)
	if err != nil {
		return err
	}
	if err := h.cfg.Store.FinishSlice(ctx, lease, job.ID, sl, chunks, rows); err != nil {
		return err
	}
	log.Info("slice plan written", slog.String(logging.Event, "slice_planned"), slog.Int("chunks", chunks), slog.Int("records", rows))
	return nil
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
