package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/store"
)

// The tick's fan-out, the sweep's pages and pauses across ticks (issue #24): what the harness
// watches of the scheduler, the checkers, and the mutants they catch.

// schedulerWatch is the scheduler's store as the harness watches it: a Job created while its
// setting's last Job is paused, and a Job that two pages of one tick's sweep both visit, are
// recorded for the checkers.
type schedulerWatch struct {
	scheduler.Store
	h *Harness
}

func (w schedulerWatch) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	e := w.h.Env
	look := sim.Unobserved(context.WithoutCancel(ctx))
	last := func() (model.Job, bool) {
		snap, err := e.FS.Collection(model.SyncSettings).Doc(settingID).Get(look)
		if err != nil {
			return model.Job{}, false
		}
		var st model.SyncSetting
		if snap.DataTo(&st) != nil || st.LastJobID == "" {
			return model.Job{}, false
		}
		j, err := e.Comps.Store.Job(look, st.LastJobID)
		return j, err == nil
	}
	before, ok := last()
	job, created, err := w.Store.CreateJob(ctx, settingID, tickID, to, size)
	if !created || !ok || !store.Paused(before) {
		return job, created, err
	}
	// Paused before the Job's transaction and still paused after it: paused at it (a Job leaves
	// PENDING once, and its pauses only grow).
	if now, err := e.Comps.Store.Job(look, before.ID); err == nil && store.Paused(now) {
		if st := w.h.cur.Load(); st != nil {
			st.mu.Lock()
			st.pausedJobs = append(st.pausedJobs, fmt.Sprintf("setting %s got Job %s (tick %s) while its Job %s was paused (%s)", settingID, job.ID, tickID, before.ID, before.Pause))
			st.mu.Unlock()
		}
	}
	return job, created, err
}

func (w schedulerWatch) UnfinishedJobs(ctx context.Context, before time.Time, after *model.JobCursor, limit int) ([]model.Job, error) {
	jobs, err := w.Store.UnfinishedJobs(ctx, before, after, limit)
	st := w.h.cur.Load()
	d, ok := sim.DeliveryOf(ctx)
	if err != nil || st == nil || !ok {
		return jobs, err
	}
	var m model.TickMessage
	if json.Unmarshal(d.Message.GetData(), &m) != nil {
		return jobs, err
	}
	page := "first page"
	if after != nil {
		page = "page after " + after.ID
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, j := range jobs {
		k := m.TickID + "/" + j.ID
		if first, seen := st.sweepPages[k]; seen && first != page {
			st.revisits = append(st.revisits, fmt.Sprintf("tick %s: Job %s visited by the sweep's %s and again by its %s", m.TickID, j.ID, first, page))
			continue
		}
		st.sweepPages[k] = page
	}
	return jobs, err
}

// checkFanOut holds what the tick's fan-out and the pauses promise, for every setting: its tick
// Jobs' windows are contiguous from its first watermark (no gap, no overlap, across any pause);
// no Job was created while its setting's last Job was paused; no page of a tick's sweep visited a
// Job another page of it had visited (the pages move on).
func checkFanOut(c *Case, st *caseState, jobs []model.Job, r *ExtraReport) {
	bySetting := map[string][]model.Job{}
	for _, j := range jobs {
		if j.Resync == "" {
			bySetting[j.SettingID] = append(bySetting[j.SettingID], j)
		}
	}
	for _, s := range c.Settings {
		js := bySetting[s.ID]
		sort.Slice(js, func(a, b int) bool { return js[a].WindowFrom.Before(js[b].WindowFrom) })
		from := windowStart
		for _, j := range js {
			if !j.WindowFrom.Equal(from) {
				r.WindowErrors++
				what := "a gap"
				if j.WindowFrom.Before(from) {
					what = "an overlap"
				}
				r.violate("setting %s: %s before Job %s: its window starts at %v, the previous one ended at %v", s.ID, what, j.ID, j.WindowFrom, from)
			}
			from = j.WindowTo
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, v := range st.pausedJobs {
		r.PausedJobs++
		r.violate("%s", v)
	}
	for _, v := range st.revisits {
		r.SweepRevisits++
		r.violate("%s", v)
	}
}

// The fan-out's mutants.
var (
	// MutantPausedJobPerTick is "a paused setting gets a Job per tick": the scheduler does not
	// consult the setting's last Job, so every tick of a pause adds a Job that pauses too.
	MutantPausedJobPerTick = Mutation{
		Name:           "a paused setting gets a Job per tick",
		SchedulerStore: func(h *Harness, s scheduler.Store) scheduler.Store { return pauseBlind{Store: s, h: h} },
	}
	// MutantWindowGap is "a window gap after a pause": the first Job after a pause starts where
	// the tick before it would have started, not at the watermark.
	MutantWindowGap = Mutation{
		Name:           "a window gap after a pause",
		SchedulerStore: func(h *Harness, s scheduler.Store) scheduler.Store { return gapAfterPause{Store: s, h: h} },
	}
	// MutantSweepOldestOnly is "a sweep that visits only the oldest Jobs": every page of the sweep
	// starts from the oldest unfinished Job, so the Jobs past the first page wait for ever.
	MutantSweepOldestOnly = Mutation{
		Name:           "a sweep that visits only the oldest Jobs",
		SchedulerStore: func(_ *Harness, s scheduler.Store) scheduler.Store { return oldestOnly{s} },
	}
	// MutantUnitTwice is "a unit of settings scheduled twice": every unit is handed out again with
	// its settings in another order (another key), and the scheduler does not recognize a Job the
	// first one created.
	MutantUnitTwice = Mutation{
		Name:           "a unit of settings scheduled twice",
		Publisher:      func(_ *Harness, p app.Publisher) app.Publisher { return unitsTwice{p} },
		SchedulerStore: func(h *Harness, s scheduler.Store) scheduler.Store { return secondJob{Store: s, h: h} },
	}
)

// pauseBlind is MutantPausedJobPerTick's store: a refusal for a paused last Job is overridden by
// forgetting which Job was the last.
type pauseBlind struct {
	scheduler.Store
	h *Harness
}

func (p pauseBlind) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	job, created, err := p.Store.CreateJob(ctx, settingID, tickID, to, size)
	if !errors.Is(err, store.ErrPaused) {
		return job, created, err
	}
	if _, err := p.h.Env.FS.Collection(model.SyncSettings).Doc(settingID).Update(ctx, []firestore.Update{{Path: "lastJobId", Value: ""}}); err != nil {
		return job, created, err
	}
	return p.Store.CreateJob(ctx, settingID, tickID, to, size)
}

// gapAfterPause is MutantWindowGap's store: before the Job that follows a paused one, the
// watermark moves a minute on.
type gapAfterPause struct {
	scheduler.Store
	h *Harness
}

func (g gapAfterPause) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, size int) (model.Job, bool, error) {
	ref := g.h.Env.FS.Collection(model.SyncSettings).Doc(settingID)
	if snap, err := ref.Get(ctx); err == nil {
		var st model.SyncSetting
		if snap.DataTo(&st) == nil && st.LastJobID != "" {
			if last, err := g.h.Env.Comps.Store.Job(ctx, st.LastJobID); err == nil && last.Pauses > 0 && !store.Paused(last) &&
				last.WindowTo.Equal(st.Watermark) && to.After(st.Watermark.Add(time.Minute)) {
				if _, err := ref.Update(ctx, []firestore.Update{{Path: "watermark", Value: st.Watermark.Add(time.Minute)}}); err != nil {
					return model.Job{}, false, err
				}
			}
		}
	}
	return g.Store.CreateJob(ctx, settingID, tickID, to, size)
}

// oldestOnly is MutantSweepOldestOnly's store.
type oldestOnly struct{ scheduler.Store }

func (o oldestOnly) UnfinishedJobs(ctx context.Context, before time.Time, _ *model.JobCursor, limit int) ([]model.Job, error) {
	return o.Store.UnfinishedJobs(ctx, before, nil, limit)
}

// unitsTwice is MutantUnitTwice's publisher: each unit of a tick is published twice, the second
// time with its settings reversed.
type unitsTwice struct{ app.Publisher }

func (u unitsTwice) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if topic != sim.TopicTicks {
		return u.Publisher.Publish(ctx, topic, msgs...)
	}
	out := msgs
	for _, m := range msgs {
		var t model.TickMessage
		if json.Unmarshal(m.Data, &t) != nil || len(t.Unit) == 0 {
			continue
		}
		rev := make([]string, len(t.Unit))
		for i, id := range t.Unit {
			rev[len(rev)-1-i] = id
		}
		t.Unit = append(rev, t.Unit[0]) // another key, even for a unit of one
		again, err := bus.JSON(t, m.Attributes)
		if err != nil {
			return nil, err
		}
		out = append(out, again)
	}
	ids, err := u.Publisher.Publish(ctx, topic, out...)
	if err != nil {
		return nil, err
	}
	return ids[:len(msgs)], nil
}
