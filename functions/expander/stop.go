package expander

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/oncesync/oncesync/shared/telemetry"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/source"
)

// errCheckpoint is how a search stops early, at a checkpoint (the chunks cut so far committed).
// Why it stopped is in the facts it set: Spent or Down; the step that follows acts on it.
var errCheckpoint = errors.New("expander: search stopped at a checkpoint")

// Poison reasons of a source that refuses for good.
const (
	reasonRejectedSearch = "source_rejected_search" // the count or the search
	reasonRejectedLimits = "source_rejected_limits" // the request budget (Salesforce's /limits)
)

// forGood reports whether a source error cannot be helped by repeating: a permanent refusal, or a
// connection that cannot authenticate.
func forGood(err error) bool { return source.IsPermanent(err) || source.IsDisconnected(err) }

// refused records the source's permanent refusal (StepReject acts on it), or a connection that
// cannot authenticate (StepDisconnect).
func (x *expansion) refused(reason string, err error) {
	if source.IsDisconnected(err) {
		x.facts.Disconnected, x.disconnectedBy = true, err
		return
	}
	x.facts.Rejected, x.rejectReason, x.reject = true, reason, err
}

// disconnect ends a delivery whose tenant's connection cannot authenticate (StepDisconnect): once
// its chunk messages are out, the tenant is marked disconnected with the reason (unless it was
// read so), the Job records the pause, and the key is handed off with no continuation. Nothing
// fails and nothing is dead-lettered; once the tenant is connected again, the recovery sweep's
// next delivery resumes after the last written chunk.
func (x *expansion) disconnect(ctx context.Context) error {
	if err := x.pub.wait(); err != nil {
		return err
	}
	reason := "connection disconnected: " + x.disconnectedBy.Error()
	if !x.tenant.IsDisconnected() {
		if err := x.h.cfg.Jobs.DisconnectTenant(ctx, x.tenant.ID, x.disconnectedBy.Error()); err != nil {
			return err
		}
		logging.From(ctx).Warn("tenant disconnected: its Jobs pause until it is connected again", slog.String(logging.Event, "tenant_disconnected"),
			slog.String("reason", x.disconnectedBy.Error()))
	}
	if err := x.h.cfg.Jobs.PauseJob(ctx, x.job.ID, reason); err != nil {
		return err
	}
	telemetry.MetricsFrom(ctx).Disconnected(ctx)
	logging.From(ctx).Warn("search paused: the tenant is disconnected", slog.String(logging.Event, "disconnected_paused"),
		slog.Int("slice", x.em.Slice), slog.Int("chunkMessages", x.pub.sent))
	return &idem.HandOff{Reason: reason + "; paused until the tenant is connected again"}
}

// rejected ends a delivery the source refused for good: the Job is FAILED with the source's
// reason and the message dead-lettered, so the operator sees why and the dead-letter alert fires.
// Repeating it could not help, so it is never sent back.
func (x *expansion) rejected(ctx context.Context) error {
	if err := x.h.cfg.Jobs.FailJob(ctx, x.job.ID, x.reject.Error()); err != nil {
		return err
	}
	return delivery.Poison(x.rejectReason, "expander: job %s: %w", x.job.ID, x.reject)
}

// askBudget asks the source how much of its request budget is left (StepAskBudget).
func (x *expansion) askBudget(ctx context.Context) error {
	x.facts.Asked = true
	u, err := x.src.(source.Budgeter).Usage(ctx)
	if forGood(err) {
		x.refused(reasonRejectedLimits, fmt.Errorf("API budget: %w", err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("expander: job %s: API budget: %w", x.job.ID, err)
	}
	x.observe(u)
	return nil
}

// observe notes u, the source's request budget, and reports whether it is down to the Job's
// reserve.
func (x *expansion) observe(u source.Usage) bool {
	if x.job.APIReserve > 0 && u.Known() && u.Left() <= x.job.APIReserve {
		x.facts.Down, x.usage = true, u
	}
	return x.facts.Down
}

// handOff ends a delivery whose time budget is spent (StepHandOff): once its chunk messages are
// out, the key is handed off and a continuation published (idem.Guard does both, in that order).
func (x *expansion) handOff(ctx context.Context) error {
	if err := x.pub.wait(); err != nil {
		return err
	}
	h := x.h
	spent := h.cfg.Elapsed().Sub(x.started).Round(time.Millisecond)
	msg := bus.ExpandSlice(x.job, x.em.Slice)
	msg.Attributes["continuation"] = strconv.Itoa(x.lease.Attempt)
	jobID, slice := x.job.ID, x.em.Slice
	return &idem.HandOff{
		Reason: fmt.Sprintf("time budget %v spent after %v and %d chunk messages; a continuation resumes the search", h.cfg.Budget, spent, x.pub.sent),
		Next: func(ctx context.Context) error {
			if _, err := h.cfg.Publisher.Publish(ctx, h.cfg.TopicExpand, msg); err != nil {
				return fmt.Errorf("expander: publish continuation of job %s slice %d: %w", jobID, slice, err)
			}
			return nil
		},
	}
}

// pause ends a delivery whose source budget is down to the reserve (StepPause): once its chunk
// messages are out, the pause is recorded on the Job and the key handed off with no continuation
// (the recovery sweep resumes the slice on a later tick).
func (x *expansion) pause(ctx context.Context) error {
	if err := x.pub.wait(); err != nil {
		return err
	}
	u, job := x.usage, x.job
	reason := fmt.Sprintf("API budget: %d of %d daily requests used, %d left, reserve %d", u.Used, u.Limit, u.Left(), job.APIReserve)
	if err := x.h.cfg.Jobs.PauseJob(ctx, job.ID, reason); err != nil {
		return err
	}
	logging.From(ctx).Warn("search paused for the source's API budget; the recovery sweep resumes it", slog.String(logging.Event, "budget_paused"),
		slog.Int("apiUsed", u.Used), slog.Int("apiLimit", u.Limit), slog.Int("apiReserve", job.APIReserve), slog.Int("slice", x.em.Slice),
		slog.Int("chunkMessages", x.pub.sent))
	return &idem.HandOff{Reason: reason + "; paused until a recovery sweep finds the budget back"}
}
