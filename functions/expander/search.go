package expander

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// search is StepSearch (and StepSearchAndDecide, which decides the Job's parallelism on the first
// page): the slice's plan written from its resume point, each chunk's message published once it
// is written, and the slice recorded PLANNED. A search that stops at a checkpoint leaves the
// reason in the facts; one the source refuses for good, the refusal.
func (x *expansion) search(ctx context.Context, decide bool) error {
	err := x.plan(ctx, decide)
	switch {
	case errors.Is(err, errCheckpoint):
		return nil
	case forGood(err):
		x.refused(reasonRejectedSearch, err)
		return nil
	case err != nil:
		return err
	}
	h, sl := x.h, x.slice()
	chunks, rows, err := h.cfg.Plans.PlanTotals(ctx, x.job.ID, sl.Index)
	if err != nil {
		return err
	}
	if err := h.cfg.Plans.FinishSlice(ctx, x.lease, x.job.ID, sl, chunks, rows); err != nil {
		return err
	}
	x.slices[sl.Index].Status = model.SlicePlanned
	x.facts.Searched = true
	x.setJob(x.job)
	logging.From(ctx).Info("slice plan written", slog.String(logging.Event, "slice_planned"), slog.Int("chunks", chunks), slog.Int("records", rows))
	return nil
}

// planner writes one slice's plan as its search streams in.
type planner struct {
	x        *expansion
	chunks   *chunker
	wrote    bool // a plan write was committed in this delivery
	decide   bool // decide the Job's parallelism on the next page
	searched time.Time
}

// plan runs the slice's search from its resume point (after the last chunk a previous owner
// wrote) through the planner, and writes what is left at its end.
func (x *expansion) plan(ctx context.Context, decide bool) (err error) {
	h, sl, job := x.h, x.slice(), x.job
	last, err := h.cfg.Plans.LastChunk(ctx, job.ID, sl.Index)
	if err != nil {
		return err
	}
	q := source.Query{Object: job.SourceObject, Fields: job.Fields, From: sl.From, To: sl.To, Deleted: true}
	p := &planner{x: x, chunks: newChunker(job, sl.Index, h.cfg.MaxChunkBytes, h.cfg.Now), decide: decide}
	if last != nil {
		p.chunks.next = last.Index + 1
		q.After = &source.Key{Modstamp: last.LastModstamp, ID: last.LastID}
		ev, what := "expansion_resumed", "resuming the search after the last written chunk"
		if x.lease.Continued {
			ev, what = "expansion_continued", "continuing the search after the last chunk of the previous delivery"
		}
		logging.From(ctx).Info(what, slog.String(logging.Event, ev), slog.Int("nextChunk", p.chunks.next), slog.String("afterId", last.LastID))
	}
	// Every source query counts, a continuation's too: the counter is exact, and the audit allows
	// one more per takeover of the key (a hand-off's continuation takes it over).
	if err := h.cfg.Jobs.CountSearch(ctx, job.ID, x.lease.Owner); err != nil {
		return err
	}
	p.searched = h.cfg.Elapsed()
	sctx, span := telemetry.Start(ctx, "search", attribute.Int("oncesync.slice", sl.Index), attribute.Bool("oncesync.search.resumed", q.After != nil))
	defer func() {
		if errors.Is(err, errCheckpoint) {
			span.SetAttributes(attribute.String("oncesync.search.stopped", stopReason(x.facts))) // a checkpoint, not a failure
			span.End()
			return
		}
		telemetry.End(span, err)
	}()
	if err := x.src.Search(sctx, q, p.page); err != nil {
		return err
	}
	if err := p.chunks.cut(model.CutEnd); err != nil {
		return err
	}
	return p.write(ctx)
}

func stopReason(f Facts) string {
	if f.Down {
		return "API budget down to the reserve"
	}
	return "time budget spent"
}

// page takes one page of the search: its rows cut into chunks, the cut chunks written after the
// delivery's first page (so imports start at once), whenever enough are ready, when the time
// budget is due and when the source's request budget is down; then, at a checkpoint, the search
// stops.
func (p *planner) page(ctx context.Context, pg source.Page) error {
	x := p.x
	h := x.h
	h.cfg.Probe.At(ctx, StepSearched)
	if p.decide {
		p.decide = false
		if err := x.decide(ctx, h.cfg.Elapsed().Sub(p.searched)); err != nil {
			return err
		}
	}
	for _, inv := range pg.Invalid {
		if err := h.deadRow(ctx, x.job, inv.ID, inv.Raw, "invalid_source_row", inv.Reason); err != nil {
			return err
		}
	}
	for _, r := range pg.Records {
		row := model.ChunkRecord{ID: r.ID, Modstamp: r.Modstamp.UTC(), Fields: r.Fields, Deleted: r.Deleted}
		n, err := model.EncodedSize(row)
		if err != nil || p.chunks.rule.TooLarge(n) {
			raw, _ := json.Marshal(row)
			if err := h.deadRow(ctx, x.job, r.ID, raw, "record_too_large", fmt.Sprintf("row %s: %d bytes encoded (%v)", r.ID, n, err)); err != nil {
				return err
			}
			continue
		}
		full, err := p.chunks.add(row, n)
		if err == nil && full {
			err = p.write(ctx)
		}
		if err != nil {
			return err
		}
	}
	due := h.cfg.Budget > 0 && h.cfg.Elapsed().Sub(x.started) >= h.cfg.Budget
	down := x.observe(pg.Usage)
	if !p.wrote || due || down {
		if err := p.write(ctx); err != nil {
			return err
		}
	}
	switch {
	case down:
		// The chunks cut so far are the checkpoint; the rows of the chunk being cut are searched
		// again on resumption.
		return errCheckpoint
	case due && p.wrote:
		// Handed off only once chunks are committed: that is the checkpoint a continuation
		// resumes from, so each delivery makes progress.
		x.facts.Spent = true
		return errCheckpoint
	}
	return nil
}

// write commits the chunks cut so far in one fenced plan write, then streams their messages.
func (p *planner) write(ctx context.Context) error {
	ready := p.chunks.take()
	if len(ready) == 0 {
		return nil
	}
	x := p.x
	if err := x.h.cfg.Plans.WriteChunks(ctx, x.lease, ready); err != nil {
		return err
	}
	for _, c := range ready {
		x.h.cfg.Probe.At(ctx, StepChunkWritten)
		x.pub.send(c.Index)
	}
	p.wrote = true
	return nil
}

// deadRow records one bad source row; the rest of the Job goes on. One dead letter per row and
// Job: keyed by the row's ID when it has one (a resumed search may read the same bad row with
// other content), else by its content.
func (h *Handler) deadRow(ctx context.Context, job model.Job, id string, raw []byte, reason, detail string) error {
	now := h.cfg.Now().UTC()
	row := "id-" + id
	if id == "" {
		row = model.Hash(string(raw))[:24]
	}
	d := model.DeadLetter{
		ID:   model.DocID("Expander", job.ID, "row", row),
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
