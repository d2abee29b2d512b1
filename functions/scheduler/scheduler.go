// Package scheduler is the Scheduler function: on each tick it creates one Job per enabled sync
// setting, exactly once per tick, and sweeps for stuck work.
//
// A tick is identified by its tickId field, or else by its Pub/Sub message ID, so a redelivered
// tick finds its key DONE and creates nothing. Each Job's ID is derived from the setting and the
// tick, and the Job is created in the same transaction that advances the setting's watermark, so
// even two deliveries of the same tick racing past the key cannot create two Jobs or advance the
// watermark twice.
//
// # Recovery sweep
//
// Every tick also visits Jobs that are still unfinished StuckAfter after their creation: a PENDING
// Job gets its expand message again (a lost or dead-lettered message cannot strand it; the
// expander's key suppresses the copy if the expansion is alive), a PLANNED Job gets the messages
// of its chunks that are not DONE, and a PLANNED Job whose chunks are all DONE is completed.
package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

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
	StepClaimed   = "scheduler.claimed"   // the tick's key is held
	StepScheduled = "scheduler.scheduled" // Jobs created, expand messages not yet published
	StepPublished = "scheduler.published" // messages published, key not yet DONE
)

// Store is the data the scheduler reads and writes.
type Store interface {
	EnabledSettings(ctx context.Context) ([]model.SyncSetting, error)
	Tenant(ctx context.Context, id string) (model.Tenant, error)
	CreateJob(ctx context.Context, settingID, tickID string, to time.Time, defaultChunkSize int) (model.Job, bool, error)
	UnfinishedJobs(ctx context.Context, before time.Time, limit int) ([]model.Job, error)
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
	TopicExpand string
	TopicChunks string
	ChunkSize   int           // for settings without one
	WindowLag   time.Duration // a Job's window ends this long before the tick
	StuckAfter  time.Duration // unfinished Jobs older than this are swept
	SweepLimit  int
	Now         func() time.Time
	Probe       probe.Func
}

// Handler handles ticks.
type Handler struct{ cfg Config }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Guard == nil || cfg.Publisher == nil || cfg.DeadLetters == nil {
		return nil, errors.New("scheduler: missing dependency")
	}
	if cfg.TopicExpand == "" || cfg.TopicChunks == "" || cfg.ChunkSize < 1 || cfg.StuckAfter <= 0 || cfg.SweepLimit < 1 {
		return nil, errors.New("scheduler: topics, chunk size, stuck-after and sweep limit are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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

// Handle handles one tick message.
func (h *Handler) Handle(ctx context.Context, m delivery.Message) error {
	tick, err := decode(m)
	if err != nil {
		return err
	}
	key := idem.TickKey(tick.TickID)
	ctx = logging.With(ctx, slog.String(logging.Key, key.String()))
	return h.cfg.Guard.Run(ctx, key, "Scheduler/"+m.ID+"/"+uuid.NewString(), map[string]string{"messageId": m.ID},
		func(ctx context.Context, _ *idem.Lease) error {
			h.cfg.Probe.At(ctx, StepClaimed)
			if err := h.run(ctx, tick); err != nil {
				return err
			}
			h.cfg.Probe.At(ctx, StepPublished)
			return nil
		})
}

func (h *Handler) run(ctx context.Context, tick model.TickMessage) error {
	log := logging.From(ctx)
	settings, err := h.cfg.Store.EnabledSettings(ctx)
	if err != nil {
		return err
	}
	var msgs []bus.Message
	created := 0
	for _, st := range settings {
		job, ok, err := h.schedule(ctx, tick, st)
		if err != nil {
			return err
		}
		if ok {
			created++
		}
		if job.Status == model.JobPending {
			msgs = append(msgs, bus.Expand(job))
		}
	}
	h.cfg.Probe.At(ctx, StepScheduled)
	if len(msgs) > 0 {
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, msgs...); err != nil {
			return fmt.Errorf("scheduler: publish expand messages: %w", err)
		}
	}
	log.Info("tick scheduled", slog.String(logging.Event, "tick_scheduled"), slog.String("tick", tick.TickID),
		slog.Int("settings", len(settings)), slog.Int("jobsCreated", created), slog.Int("expandPublished", len(msgs)))
	return h.sweep(ctx)
}

// schedule creates the setting's Job for this tick, or dead-letters a setting it cannot schedule.
// A zero Job means nothing to publish.
func (h *Handler) schedule(ctx context.Context, tick model.TickMessage, st model.SyncSetting) (model.Job, bool, error) {
	ctx = logging.With(ctx, slog.String(logging.Tenant, st.TenantID), slog.String("setting", st.ID))
	if reason, err := h.validate(ctx, st); err != nil {
		if reason == "" {
			return model.Job{}, false, err
		}
		now := h.cfg.Now()
		d := model.DeadLetter{
			// One dead letter per setting: each later tick that skips it counts another attempt.
			ID: model.DocID("Scheduler", "setting", st.ID), Kind: model.DeadSetting, Function: "Scheduler",
			Reason: reason, Error: err.Error(), TenantID: st.TenantID, FirstAt: now, LastAt: now, Attempts: 1,
			Attributes: map[string]string{"setting": st.ID, "tick": tick.TickID},
		}
		if err := h.cfg.DeadLetters.DeadLetter(ctx, d); err != nil {
			return model.Job{}, false, err
		}
		logging.From(ctx).Error("sync setting skipped", slog.String(logging.Event, "setting_dead_lettered"),
			slog.String("reason", reason), slog.String("error", d.Error))
		return model.Job{}, false, nil
	}
	job, created, err := h.cfg.Store.CreateJob(ctx, st.ID, tick.TickID, tick.At.Add(-h.cfg.WindowLag), h.cfg.ChunkSize)
	if errors.Is(err, store.ErrEmptyWindow) {
		logging.From(ctx).Info("no window to import for this tick", slog.String(logging.Event, "empty_window"), slog.String("detail", err.Error()))
		return model.Job{}, false, nil
	}
	if err != nil {
		return model.Job{}, false, err
	}
	ev := "job_created"
	if !created {
		ev = "job_exists"
	}
	logging.From(ctx).Info("job for tick", slog.String(logging.Event, ev), slog.String(logging.Job, job.ID),
		slog.Time("windowFrom", job.WindowFrom), slog.Time("windowTo", job.WindowTo))
	return job, created, nil
}

// validate returns a dead-letter reason and error for a setting that cannot be scheduled, or an
// empty reason with a transient error.
func (h *Handler) validate(ctx context.Context, st model.SyncSetting) (string, error) {
	t, err := h.cfg.Store.Tenant(ctx, st.TenantID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "unknown_tenant", fmt.Errorf("scheduler: setting %q: %w", st.ID, err)
	case err != nil:
		return "", err
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

// sweep re-publishes the messages of work that should have finished by now.
func (h *Handler) sweep(ctx context.Context) error {
	jobs, err := h.cfg.Store.UnfinishedJobs(ctx, h.cfg.Now().Add(-h.cfg.StuckAfter), h.cfg.SweepLimit)
	if err != nil {
		return err
	}
	telemetry.MetricsFrom(ctx).Stuck(ctx, len(jobs))
	var expand, chunks []bus.Message
	completed := 0
	for _, j := range jobs {
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
			for _, i := range pending {
				chunks = append(chunks, bus.Chunk(j, i))
			}
		}
	}
	if len(expand) > 0 {
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, expand...); err != nil {
			return fmt.Errorf("scheduler: sweep: %w", err)
		}
	}
	if len(chunks) > 0 {
		if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicChunks, chunks...); err != nil {
			return fmt.Errorf("scheduler: sweep: %w", err)
		}
	}
	if len(jobs) > 0 {
		logging.From(ctx).Warn("recovery sweep re-published stuck work", slog.String(logging.Event, "sweep"),
			slog.Int("jobs", len(jobs)), slog.Int("expandRepublished", len(expand)),
			slog.Int("chunksRepublished", len(chunks)), slog.Int("completed", completed))
	}
	return nil
}

func knownTarget(name string) bool {
	_, ok := model.Kind(name)
	return ok
}
