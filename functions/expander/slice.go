package expander

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/oncesync/oncesync/shared/telemetry"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
)

// cut is the first expansion's StepCut: the window measured and cut into slices, recorded
// (fenced) before any search.
func (x *expansion) cut(ctx context.Context) error {
	// The tenant's share of searches is counted only for a window cut into several slices: a
	// query over the tenant's settings that most Jobs, small ones, need not make.
	cut, err := x.h.measure(ctx, x.src, x.job, x.searchSlots)
	if forGood(err) {
		x.refused(reasonRejectedSearch, err)
		return nil
	}
	if err != nil {
		return err
	}
	decided := 0 // serial or parallel: decided on slice 0's first page
	if len(cut) == 1 {
		decided = 1
	}
	job := x.job
	job.Class = model.ClassOf(total(cut), x.h.cfg.BulkAfter)
	job, err = x.h.cfg.Plans.CutSlices(ctx, x.lease, job, cut, decided)
	if err != nil {
		return err
	}
	x.slices = cut
	x.setJob(job)
	x.pub.classify(job)
	logging.From(ctx).Info("window cut into slices", slog.String(logging.Event, "job_sliced"), slog.Int("slices", len(cut)),
		slog.Int("searchLimit", x.slots), slog.Int("estimate", total(cut)), slog.String("class", cmp.Or(string(job.Class), "standard")))
	return nil
}

// restart is StepRestart: slice 0's expansion, after a takeover, publishes again the messages of
// the slices searched beside it (the crashed owner may not have); the first time, decide does.
func (x *expansion) restart(ctx context.Context) error {
	x.facts.Restarted = true
	return x.h.publishSlices(ctx, x.job, besideFirst(x.slices, x.job.SearchSlots)...)
}

// besideFirst returns the slices searched at once beside slice 0, with slots searches of the Job
// allowed, that are not PLANNED.
func besideFirst(all []model.Slice, slots int) []int {
	var out []int
	for _, i := range model.StartableSlices(all, slots) {
		if i > 0 && i < slots {
			out = append(out, i)
		}
	}
	return out
}

// republish is StepRepublish: the messages of the slice's chunks that are not DONE, published
// again. A crashed owner may have written chunks whose messages it never published; a key that is
// new while the slice is planned lost its history (expired, or abandoned and replayed).
func (x *expansion) republish(ctx context.Context) error {
	x.facts.Republished = true
	pending, err := x.h.cfg.Plans.PendingChunks(ctx, x.job.ID)
	if err != nil {
		return err
	}
	for _, i := range pending {
		if model.SliceOf(i) == x.em.Slice {
			x.pub.send(i)
		}
	}
	return nil
}

// decide fixes how many of the Job's slices are searched at once, from how long slice 0's first
// page took to arrive: a source that answers faster than Config.ParallelAfter is searched one slice
// after another (parallel searches would only compete with the imports for the store), a slower
// one with every search the tenant allows. It records the choice (fenced) before it publishes the
// slices searched beside slice 0, so a takeover finds it made or not made, never half.
func (x *expansion) decide(ctx context.Context, fetch time.Duration) error {
	slots := 1
	if fetch >= x.h.cfg.ParallelAfter {
		var err error
		if slots, err = x.searchSlots(ctx); err != nil {
			return err
		}
	}
	job, err := x.h.cfg.Plans.DecideSlots(ctx, x.lease, x.job, slots)
	if err != nil {
		return err
	}
	x.setJob(job)
	logging.From(ctx).Info("slices started", slog.String(logging.Event, "slices_started"), slog.Int("searchSlots", slots),
		slog.Duration("firstPage", fetch), slog.Int("slices", len(x.slices)))
	return x.h.publishSlices(ctx, job, besideFirst(x.slices, slots)...)
}

// finish is StepFinish, once the slice is planned: the slice SearchSlots places after it starts
// (the chain that bounds the searches in flight), and the plan is recorded on the Job if this was
// the last slice.
func (x *expansion) finish(ctx context.Context) error {
	x.facts.Finished = true
	all, job := x.slices, x.job
	if next := x.em.Slice + max(job.SearchSlots, 1); next < len(all) && all[next].Status == model.SlicePending {
		if err := x.h.publishSlices(ctx, job, next); err != nil {
			return err
		}
	}
	job, recorded, err := x.h.cfg.Plans.FinishPlan(ctx, job.ID)
	if err != nil {
		return err
	}
	x.job = job // the facts stay as read: a plan recorded here is not a Job finished before
	if recorded && job.Status == model.JobCompleted {
		telemetry.MetricsFrom(ctx).JobCompleted(ctx, job.CreatedAt, job.CompletedAt) // nothing to import: completed with its plan
	}
	if recorded {
		logging.From(ctx).Info("chunk plan complete", slog.String(logging.Event, "job_planned"), slog.Int("chunks", job.ChunkCount),
			slog.Int("records", job.RecordCount), slog.Int("invalid", job.InvalidCount), slog.Int("slices", job.SliceCount), slog.String("status", string(job.Status)))
	}
	return nil
}

// searchSlots is how many slices of one of the tenant's Jobs are searched at once: the tenant's
// concurrent searches (its searchConcurrency, or the deployment's), shared by the Jobs its enabled
// settings make each tick, at least one each. Counted once per delivery.
func (x *expansion) searchSlots(ctx context.Context) (int, error) {
	if x.slots > 0 {
		return x.slots, nil
	}
	limit := x.h.cfg.SearchSlots
	if x.tenant.SearchConcurrency > 0 {
		limit = x.tenant.SearchConcurrency
	}
	n, err := x.h.cfg.Jobs.EnabledSettingsOf(ctx, x.tenant.ID)
	if err != nil {
		return 0, err
	}
	x.slots = max(1, limit/max(n, 1))
	return x.slots, nil
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

// measure counts the Job's window and cuts it into slices (searchSlots: the tenant's share of
// concurrent searches, asked only when there is more than one): one when the connector does not count
// (estimate 0), when slicing is off (counted only for the class, when BulkAfter is set) or the
// window holds at most SliceRows rows; otherwise about rows/SliceRows slices, rounded up to
// a multiple of slots and at most MaxSlices, by halving the fullest slice's populated time range
// (one count per halving; a range that cannot be halved, all of one millisecond, stays whole).
// The slices cover the window exactly, in order; their estimates are the counts as measured. A
// count the source refuses for good is returned as is (source.IsPermanent).
func (h *Handler) measure(ctx context.Context, src Source, job model.Job, searchSlots func(context.Context) (int, error)) ([]model.Slice, error) {
	whole := model.Slice{From: job.WindowFrom, To: job.WindowTo, Status: model.SlicePending}
	c, ok := src.(source.Counter)
	slicing := h.cfg.SliceRows > 0 && h.cfg.MaxSlices != 1
	if !ok || !slicing && h.cfg.BulkAfter == 0 {
		return []model.Slice{whole}, nil
	}
	count := func(from, to time.Time) (source.Extent, error) {
		return c.Count(ctx, source.Query{Object: job.SourceObject, From: from, To: to, Deleted: true})
	}
	e, err := count(job.WindowFrom, job.WindowTo)
	if err != nil {
		return nil, err
	}
	whole.Estimate = e.Count
	if !slicing {
		return []model.Slice{whole}, nil
	}
	want := (e.Count + h.cfg.SliceRows - 1) / h.cfg.SliceRows
	if want <= 1 {
		return []model.Slice{whole}, nil
	}
	slots, err := searchSlots(ctx)
	if err != nil {
		return nil, err
	}
	want = min((want+slots-1)/slots*slots, h.cfg.MaxSlices)
	parts := []part{{sl: whole, lo: e.First, hi: e.Last.Add(time.Millisecond)}}
	for counts := 0; len(parts) < want && counts < 4*want; counts++ {
		i := fullest(parts)
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
		parts = p.split(parts, i, mid, left)
	}
	out := make([]model.Slice, len(parts))
	for i, p := range parts {
		out[i] = p.sl
		out[i].Index = i
	}
	return out, nil
}

// part is a slice being cut and the time range [lo, hi) that holds its rows, as counted.
type part struct {
	sl     model.Slice
	lo, hi time.Time
}

// fullest returns the index of the part with the most rows that can still be halved, or -1.
func fullest(parts []part) int {
	i := -1
	for j, p := range parts {
		if p.sl.Estimate > 1 && p.hi.Sub(p.lo) >= 2*time.Millisecond && (i < 0 || p.sl.Estimate > parts[i].sl.Estimate) {
			i = j
		}
	}
	return i
}

// split applies the count of [p.lo, mid), left, to parts[i] (which is p): all the rows on one side
// narrow its range; otherwise it becomes two slices at mid.
func (p part) split(parts []part, i int, mid time.Time, left source.Extent) []part {
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
	return parts
}
