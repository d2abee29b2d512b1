// Package scheduler is the Scheduler function: on each tick it creates one Job per enabled sync
// setting, exactly once per tick, and sweeps for stuck work. A tick fans out, so that any number
// of settings is scheduled in parallel and no delivery comes near the function's timeout:
//
//   - The tick (Cloud Scheduler's message) lists the enabled settings' IDs, a page at a time
//     (keys only), and publishes them as units of UnitSize settings, each its own message on the
//     ticks topic and its own key; it also publishes the first page of the recovery sweep. When its
//     time budget (the expander's rule: a share of the timeout) is spent, it hands the rest of the
//     listing off to a continuation message.
//   - A unit creates its settings' Jobs, Concurrency at a time, and publishes each Job's expand
//     message as soon as the Job exists; a spent budget hands its remaining settings off as a
//     smaller unit.
//   - A sweep page visits SweepLimit unfinished Jobs and publishes the next page: every tick visits
//     every Job that needs it, in creation order, whatever their count.
//
// Every part has its own key (the tick's, and the part's content), so a redelivered or
// duplicated part finds its key DONE. Each Job's ID is derived from the setting and the tick, and
// the Job is created in the same transaction that advances the setting's watermark, so even two
// deliveries racing past a key (or two units that both hold a setting) cannot create two Jobs or
// advance the watermark twice.
//
// A setting whose last Job is paused (the source's budget, its tenant disconnected) gets no new
// Job (store.ErrPaused), and a disconnected tenant's settings none: the watermark stays, so the
// next Job, once the setting can move on, covers the whole gap.
//
// # Recovery sweep
//
// A sweep page re-publishes the work of Jobs still unfinished StuckAfter after their creation: a
// PENDING Job gets its expand message again (a lost or dead-lettered message cannot strand it; the
// expander's key suppresses the copy if the expansion is alive), a PLANNED Job gets the messages
// of its chunks that are not DONE, and a PLANNED Job whose chunks are all DONE is completed. The
// Jobs of a disconnected tenant are skipped until it is connected again.
package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/probe"
	"github.com/oncesync/oncesync/shared/store"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Steps where the probe is called.
const (
	StepClaimed   = "scheduler.claimed"   // the part's key is held
	StepScheduled = "scheduler.scheduled" // a unit's Job created, its expand message not yet published
	StepPublished = "scheduler.published" // the part's messages published, key not yet DONE
)

// Defaults of Config.
const (
	DefaultUnitSize    = 100 // settings per unit
	DefaultConcurrency = 8   // a unit's Jobs created at once
	listPage           = 1000
)

// Store is the data the scheduler reads and writes.
type Store interface {
	EnabledSettingIDs(ctx context.Context, after string, limit int) ([]string, error)
	Settings(ctx context.Context, ids []string) ([]model.SyncSetting, error)
	Tenants(ctx context.Context, ids []string) (map[string]model.Tenant, error)
	CreateJob(ctx context.Context, settingID, tickID string, to time.Time, defaultChunkSize int) (model.Job, bool, error)
	UnfinishedJobs(ctx context.Context, before time.Time, after *model.JobCursor, limit int) ([]model.Job, error)
	CountUnfinished(ctx context.Context, before time.Time) (int, error)
	PendingChunks(ctx context.Context, jobID string) ([]int, error)
	CompleteJob(ctx context.Context, jobID string) (bool, error)
	Slices(ctx context.Context, jobID string) ([]model.Slice, error)
	FinishPlan(ctx context.Context, jobID string) (job model.Job, recorded bool, err error)
}

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

var (
	_ Store     = (*store.Store)(nil)
	_ Publisher = (*bus.PubSub)(nil)
)

// Config holds the scheduler's dependencies and settings.
type Config struct {
	Store       Store
	Guard       idem.Runner // runs the tick under its key
	Publisher   Publisher
	DeadLetters delivery.Sink
	TopicTicks  string // where the tick's parts go (this function's own trigger)
	TopicExpand string
	TopicChunks string // the standard lane's chunk topic
	// TopicChunksBulk is the bulk lane's (empty: one lane): the sweep re-publishes a Job's
	// chunks to its class's lane (bus.Lanes).
	TopicChunksBulk string
	ChunkSize       int           // for settings without one
	WindowLag       time.Duration // a Job's window ends this long before the tick
	StuckAfter      time.Duration // unfinished Jobs older than this are swept
	SweepLimit      int           // Jobs per sweep page
	UnitSize        int           // settings per unit (default DefaultUnitSize)
	Concurrency     int           // a unit's Jobs created at once (default DefaultConcurrency)
	// Budget is how long a part may run before it hands the rest off (the expander's rule: a
	// share of the function's timeout; 0: never), on the Elapsed clock (default time.Now).
	Budget  time.Duration
	Elapsed func() time.Time
	Now     func() time.Time
	Probe   probe.Func
}

// Handler handles ticks.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Guard == nil || cfg.Publisher == nil || cfg.DeadLetters == nil {
		return nil, errors.New("scheduler: missing dependency")
	}
	if cfg.TopicTicks == "" || cfg.TopicExpand == "" || cfg.TopicChunks == "" || cfg.ChunkSize < 1 || cfg.StuckAfter <= 0 || cfg.SweepLimit < 1 {
		return nil, errors.New("scheduler: topics, chunk size, stuck-after and sweep limit are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Elapsed == nil {
		cfg.Elapsed = time.Now
	}
	if cfg.UnitSize <= 0 {
		cfg.UnitSize = DefaultUnitSize
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	return &Handler{cfg: cfg}, nil
}

// decode reads a tick: Cloud Scheduler's body may be empty, and then the message ID and publish
// time stand in for the tick's ID and time. Errors are poison.
func decode(m delivery.Message) (model.TickMessage, error) {
	var tick model.TickMessage
	if len(bytes.TrimSpace(m.Data)) > 0 {
		if err := delivery.DecodeJSON(m, &tick); err != nil {
			return tick, err
		}
	}
	if tick.TickID == "" {
		tick.TickID = m.ID
	}
	if tick.At.IsZero() {
		tick.At = m.PublishTime
	}
	if tick.At.IsZero() {
		return tick, delivery.Poison("malformed_message", "tick %s has no time and no publish time", tick.TickID)
	}
	return tick, nil
}

// Part is what one ticks-topic message asks for.
type Part int

// The parts of a tick.
const (
	PartTick  Part = iota // the tick itself: list the settings, fan out
	PartList              // the listing, resumed after a hand-off
	PartUnit              // a unit of settings: create their Jobs
	PartSweep             // a page of the recovery sweep
)

// PartOf says which part of a tick a message is, and its key: the tick's own, or the tick's and
// the part's content, so that a part handed out twice is one piece of work.
func PartOf(t model.TickMessage) (Part, idem.Key) {
	switch {
	case t.Sweep:
		after := ""
		if t.SweepAfter != nil {
			after = t.SweepAfter.CreatedAt.UTC().Format(time.RFC3339Nano) + "/" + t.SweepAfter.ID
		}
		return PartSweep, idem.TickKey(t.TickID + "~sweep~" + after)
	case len(t.Unit) > 0:
		return PartUnit, idem.TickKey(t.TickID + "~unit~" + model.Hash(strings.Join(t.Unit, "\n")))
	case t.ListAfter != "":
		return PartList, idem.TickKey(t.TickID + "~list~" + t.ListAfter)
	}
	return PartTick, idem.TickKey(t.TickID)
}

// Handle handles one ticks-topic message: a tick, or a part of one.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	tick, err := decode(m)
	if err != nil {
		return err
	}
	part, key := PartOf(tick)
	ctx = logging.With(ctx, slog.String(logging.Key, key.String()))
	return h.cfg.Guard.Run(ctx, key, "Scheduler/"+m.ID+"/"+uuid.NewString(), map[string]string{"messageId": m.ID},
		func(ctx context.Context, _ *idem.Lease) error {
			h.cfg.Probe.At(ctx, StepClaimed)
			started := h.cfg.Elapsed()
			spent := func() bool { return h.cfg.Budget > 0 && h.cfg.Elapsed().Sub(started) >= h.cfg.Budget }
			var err error
			switch part {
			case PartTick, PartList:
				err = h.list(ctx, tick, part == PartTick, spent)
			case PartUnit:
				err = h.unit(ctx, tick, spent)
			case PartSweep:
				err = h.sweep(ctx, tick)
			}
			if err != nil {
				return err
			}
			h.cfg.Probe.At(ctx, StepPublished)
			return nil
		})
}

// part is a message of one part of tick.
func part(tick model.TickMessage, fill func(p *model.TickMessage)) (bus.Message, error) {
	p := model.TickMessage{TickID: tick.TickID, At: tick.At}
	fill(&p)
	return bus.JSON(p, nil)
}

// list publishes the tick's units, a page of setting IDs at a time (each page's units published
// before the next page is read, so the first Jobs are created while the listing goes on), and,
// for the tick itself, the sweep's first page; a spent budget hands the rest of the listing off.
func (h *Handler) list(ctx context.Context, tick model.TickMessage, first bool, spent func() bool) error {
	var msgs []bus.Message
	if first {
		m, err := part(tick, func(p *model.TickMessage) { p.Sweep = true })
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	after, settings, units := tick.ListAfter, 0, 0
	for more := true; more; {
		ids, err := h.cfg.Store.EnabledSettingIDs(ctx, after, listPage)
		if err != nil {
			return err
		}
		for u := range slices.Chunk(ids, h.cfg.UnitSize) {
			m, err := part(tick, func(p *model.TickMessage) { p.Unit = u })
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
			units++
		}
		settings += len(ids)
		more = len(ids) == listPage
		if more {
			after = ids[len(ids)-1]
		}
		if more && spent() {
			m, err := part(tick, func(p *model.TickMessage) { p.ListAfter = after })
			if err != nil {
				return err
			}
			msgs, more = append(msgs, m), false
		}
		if len(msgs) > 0 {
			if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicTicks, msgs...); err != nil {
				return fmt.Errorf("scheduler: publish the tick's parts: %w", err)
			}
			msgs = msgs[:0]
		}
	}
	logging.From(ctx).Info("tick listed", slog.String(logging.Event, "tick_listed"), slog.String("tick", tick.TickID),
		slog.Int("settings", settings), slog.Int("units", units))
	return nil
}

// unit creates its settings' Jobs, Concurrency at a time, each Job's expand message published as
// soon as it exists; a spent budget hands the settings not started off as a smaller unit. The
// Jobs are created in goroutines; the delivery's own goroutine publishes (and meets the probe), so
// that a crash there is the delivery's.
func (h *Handler) unit(ctx context.Context, tick model.TickMessage, spent func() bool) error {
	settings, err := h.cfg.Store.Settings(ctx, tick.Unit)
	if err != nil {
		return err
	}
	owners := make([]string, 0, len(settings))
	for _, st := range settings {
		owners = append(owners, st.TenantID)
	}
	tenants, err := h.cfg.Store.Tenants(ctx, owners)
	if err != nil {
		return err
	}
	type result struct {
		job model.Job
		did outcome
	}
	results := make(chan result)
	var (
		createErr error
		rest      []string // handed off
	)
	stop, cancel := context.WithCancel(ctx)
	create, cctx := errgroup.WithContext(stop)
	create.SetLimit(h.cfg.Concurrency)
	publish, pctx := errgroup.WithContext(ctx)
	publish.SetLimit(h.cfg.Concurrency)
	created := make(chan struct{}) // closed when every creator has returned
	// Nothing of this delivery runs after it returns, whichever way it leaves (a crash too):
	// Cloud Functions does not run it, and a Job created after the answer would be nobody's.
	defer func() {
		cancel()
		<-created
		_ = publish.Wait()
	}()
	go func() {
		defer close(created)
		defer close(results)
		for i, st := range settings {
			if cctx.Err() != nil {
				break
			}
			if i > 0 && spent() { // at least one setting per delivery: the rest is a smaller unit, with a key of its own
				for _, s := range settings[i:] {
					rest = append(rest, s.ID)
				}
				break
			}
			create.Go(func() error {
				job, did, err := h.schedule(cctx, tick, st, tenants)
				if err != nil {
					return err
				}
				select {
				case results <- result{job, did}:
					return nil
				case <-cctx.Done():
					return cctx.Err()
				}
			})
		}
		createErr = create.Wait()
	}()
	did := map[outcome]int{}
	for r := range results {
		did[r.did]++
		if (r.did != outcomeCreated && r.did != outcomeExists) || r.job.Status != model.JobPending {
			continue // nothing to publish: no Job, or one past its expansion (a redelivered unit)
		}
		h.cfg.Probe.At(ctx, StepScheduled)
		publish.Go(func() error {
			if _, err := h.cfg.Publisher.Publish(pctx, h.cfg.TopicExpand, bus.Expand(r.job)); err != nil {
				return fmt.Errorf("scheduler: publish the expand message of %s: %w", r.job.ID, err)
			}
			return nil
		})
	}
	if err := errors.Join(createErr, publish.Wait()); err != nil {
		return err
	}
	if len(rest) > 0 {
		m, err := part(tick, func(p *model.TickMessage) { p.Unit = rest })
		if err != nil {
			return err
		}
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicTicks, m); err != nil {
			return fmt.Errorf("scheduler: hand off %d settings: %w", len(rest), err)
		}
	}
	logging.From(ctx).Info("unit scheduled", slog.String(logging.Event, "tick_scheduled"), slog.String("tick", tick.TickID),
		slog.Int("settings", len(settings)), slog.Int("jobsCreated", did[outcomeCreated]), slog.Int("paused", did[outcomePaused]),
		slog.Int("handedOff", len(rest)))
	return nil
}

// outcome is what schedule did for one setting.
type outcome int

const (
	outcomeNone    outcome = iota // nothing to publish
	outcomeCreated                // the Job was created now
	outcomeExists                 // the Job existed (a redelivery): publish again
	outcomePaused                 // no Job: the setting or its tenant waits
)

// schedule creates the setting's Job for this tick, or dead-letters a setting it cannot
// schedule, or leaves a paused setting or a disconnected tenant's alone.
func (h *Handler) schedule(ctx context.Context, tick model.TickMessage, st model.SyncSetting, tenants map[string]model.Tenant) (model.Job, outcome, error) {
	ctx = logging.With(ctx, slog.String(logging.Tenant, st.TenantID), slog.String("setting", st.ID))
	log := logging.From(ctx)
	if !st.Enabled {
		return model.Job{}, outcomeNone, nil // disabled since the tick listed it
	}
	t, ok := tenants[st.TenantID]
	if reason, err := validate(st, t, ok); err != nil {
		now := h.cfg.Now()
		d := model.DeadLetter{
			// One dead letter per setting: each later tick that skips it counts another attempt.
			ID: model.DocID("Scheduler", "setting", st.ID), Kind: model.DeadSetting, Function: "Scheduler",
			Reason: reason, Error: err.Error(), TenantID: st.TenantID, FirstAt: now, LastAt: now, Attempts: 1,
			Attributes: map[string]string{"setting": st.ID, "tick": tick.TickID},
		}
		if err := h.cfg.DeadLetters.DeadLetter(ctx, d); err != nil {
			return model.Job{}, outcomeNone, err
		}
		log.Error("sync setting skipped", slog.String(logging.Event, "setting_dead_lettered"),
			slog.String("reason", reason), slog.String("error", d.Error))
		return model.Job{}, outcomeNone, nil
	}
	if t.IsDisconnected() {
		log.Info("tenant disconnected: no Job until it is connected again", slog.String(logging.Event, "tenant_disconnected"),
			slog.String("reason", t.Connection.Reason))
		telemetry.MetricsFrom(ctx).Disconnected(ctx) // at every tick while it lasts: the alert stays on
		return model.Job{}, outcomePaused, nil
	}
	job, created, err := h.cfg.Store.CreateJob(ctx, st.ID, tick.TickID, tick.At.Add(-h.cfg.WindowLag), h.cfg.ChunkSize)
	switch {
	case errors.Is(err, store.ErrEmptyWindow):
		log.Info("no window to import for this tick", slog.String(logging.Event, "empty_window"), slog.String("detail", err.Error()))
		return model.Job{}, outcomeNone, nil
	case errors.Is(err, store.ErrPaused):
		log.Info("the setting's last Job is paused: no Job for this tick", slog.String(logging.Event, "setting_paused"), slog.String("detail", err.Error()))
		return model.Job{}, outcomePaused, nil
	case err != nil:
		return model.Job{}, outcomeNone, err
	}
	ev, o := "job_created", outcomeCreated
	if !created {
		ev, o = "job_exists", outcomeExists
	}
	log.Info("job for tick", slog.String(logging.Event, ev), slog.String(logging.Job, job.ID),
		slog.Time("windowFrom", job.WindowFrom), slog.Time("windowTo", job.WindowTo))
	return job, o, nil
}

// validate returns a dead-letter reason and error for a setting that cannot be scheduled.
func validate(st model.SyncSetting, t model.Tenant, found bool) (string, error) {
	switch {
	case !found:
		return "unknown_tenant", fmt.Errorf("scheduler: setting %q: tenant %q: %w", st.ID, st.TenantID, store.ErrNotFound)
	case !t.Enabled:
		return "tenant_disabled", fmt.Errorf("scheduler: setting %q: tenant %q is disabled", st.ID, st.TenantID)
	case st.SourceObject == "":
		return "invalid_setting", fmt.Errorf("scheduler: setting %q has no source object", st.ID)
	case !knownTarget(st.Target):
		return "invalid_setting", fmt.Errorf("scheduler: setting %q: unknown target %q", st.ID, st.Target)
	}
	return "", nil
}

// expandMessages are the expand messages that move a PENDING Job on: the first expansion's when
// it has no slices yet, else those of the slices that may be searched now. When every slice is
// planned but the Job is not (the last slice's expansion stopped before it recorded the plan, and
// its message is gone), the plan is recorded here.
func (h *Handler) expandMessages(ctx context.Context, j model.Job) ([]bus.Message, error) {
	if j.SliceCount == 0 {
		return []bus.Message{bus.Expand(j)}, nil
	}
	slices, err := h.cfg.Store.Slices(ctx, j.ID)
	if err != nil {
		return nil, err
	}
	start := model.StartableSlices(slices, j.SearchSlots)
	if len(start) == 0 {
		job, recorded, err := h.cfg.Store.FinishPlan(ctx, j.ID)
		if err == nil && recorded && job.Status == model.JobCompleted {
			telemetry.MetricsFrom(ctx).JobCompleted(ctx, job.CreatedAt, job.CompletedAt) // nothing to import
		}
		return nil, err
	}
	msgs := make([]bus.Message, len(start))
	for i, s := range start {
		msgs[i] = bus.ExpandSlice(j, s)
	}
	return msgs, nil
}

// sweep visits one page of the Jobs that should have finished by now, re-publishing their work,
// and publishes the next page. The tick's first page records how many Jobs are stuck (one count).
func (h *Handler) sweep(ctx context.Context, tick model.TickMessage) error {
	before := h.cfg.Now().Add(-h.cfg.StuckAfter)
	if tick.SweepAfter == nil {
		n, err := h.cfg.Store.CountUnfinished(ctx, before)
		if err != nil {
			return err
		}
		telemetry.MetricsFrom(ctx).Stuck(ctx, n)
	}
	jobs, err := h.cfg.Store.UnfinishedJobs(ctx, before, tick.SweepAfter, h.cfg.SweepLimit)
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		return nil
	}
	tenants, err := h.cfg.Store.Tenants(ctx, tenantIDs(jobs))
	if err != nil {
		return err
	}
	var expand []bus.Message
	chunks := map[string][]bus.Message{} // by lane
	lanes := bus.Lanes{Standard: h.cfg.TopicChunks, Bulk: h.cfg.TopicChunksBulk}
	completed, skipped := 0, 0
	for _, j := range jobs {
		if t, ok := tenants[j.TenantID]; ok && t.IsDisconnected() {
			skipped++ // resumed by the first sweep after the tenant is connected again
			continue
		}
		switch j.Status {
		case model.JobPending:
			msgs, err := h.expandMessages(ctx, j)
			if err != nil {
				return err
			}
			expand = append(expand, msgs...)
		case model.JobPlanned:
			pending, err := h.cfg.Store.PendingChunks(ctx, j.ID)
			if err != nil {
				return err
			}
			if len(pending) == 0 {
				ok, err := h.cfg.Store.CompleteJob(ctx, j.ID)
				if err != nil {
					return err
				}
				if ok {
					completed++
					telemetry.MetricsFrom(ctx).JobCompleted(ctx, j.CreatedAt, h.cfg.Now())
					logging.From(ctx).Info("job completed by the sweep", slog.String(logging.Event, "job_completed"),
						slog.String(logging.Job, j.ID), slog.String(logging.Tenant, j.TenantID))
				}
			}
			lane := lanes.Topic(j.Class)
			for _, i := range pending {
				chunks[lane] = append(chunks[lane], bus.Chunk(j, i))
			}
		}
	}
	if len(jobs) == h.cfg.SweepLimit {
		last := jobs[len(jobs)-1]
		m, err := part(tick, func(p *model.TickMessage) {
			p.Sweep, p.SweepAfter = true, &model.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		})
		if err != nil {
			return err
		}
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicTicks, m); err != nil {
			return fmt.Errorf("scheduler: sweep: the next page: %w", err)
		}
	}
	if len(expand) > 0 {
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, expand...); err != nil {
			return fmt.Errorf("scheduler: sweep: %w", err)
		}
	}
	republished := 0
	for _, lane := range slices.Sorted(maps.Keys(chunks)) {
		if _, err := h.cfg.Publisher.Publish(ctx, lane, chunks[lane]...); err != nil {
			return fmt.Errorf("scheduler: sweep: %w", err)
		}
		republished += len(chunks[lane])
	}
	logging.From(ctx).Warn("recovery sweep re-published stuck work", slog.String(logging.Event, "sweep"),
		slog.Int("jobs", len(jobs)), slog.Int("expandRepublished", len(expand)), slog.Int("chunksRepublished", republished),
		slog.Int("completed", completed), slog.Int("disconnected", skipped))
	return nil
}

func tenantIDs(jobs []model.Job) []string {
	seen := map[string]bool{}
	var out []string
	for _, j := range jobs {
		if !seen[j.TenantID] {
			seen[j.TenantID] = true
			out = append(out, j.TenantID)
		}
	}
	return out
}

func knownTarget(name string) bool {
	_, ok := model.Kind(name)
	return ok
}
