package idem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Keys is what Run needs of a key store; *Store implements it.
type Keys interface {
	Claim(ctx context.Context, k Key, owner string, labels map[string]string) (*Lease, error)
	Complete(ctx context.Context, l *Lease) error
	Release(ctx context.Context, l *Lease) error
	HandOff(ctx context.Context, l *Lease) error
	Abandon(ctx context.Context, l *Lease) error
}

var _ Keys = (*Store)(nil)

// Work is one unit of work done under a held key. Its error decides how the key is settled (see
// Run).
type Work func(ctx context.Context, l *Lease) error

// Guard runs units of work under idempotency keys: the one place that owns the lease lifecycle
// (claim, work, complete, release, give up). Handlers depend on the Runner interface, so a test
// can run their work without Firestore.
type Guard struct{ Keys Keys }

// Runner runs a unit of work under a key.
type Runner interface {
	Run(ctx context.Context, k Key, owner string, labels map[string]string, work Work) error
}

var _ Runner = Guard{}

// Run claims k for owner and, if it gets the key, runs work under the lease and settles the key
// by work's result:
//
//	nil                      → Complete; ack
//	wraps delivery.ErrDuplicate → Complete; the error is returned (ack, logged as a duplicate)
//	delivery.IsPermanent     → GiveUp: the key is deleted, then the error is returned (dead letter)
//	a HandOff                → HandOff (a release), then the hand-off's Next runs (a continuation, if any); ack
//	wraps ErrLeaseLost       → returned as is: another owner holds the key (redeliver)
//	anything else            → Release (best effort), the error is returned (redeliver)
//
// A claim that fails (ErrDone, ErrInProgress, a backend error) is returned without running work.
// A failed Complete is returned (redeliver): the redelivery finds the work done by its durable
// state and completes the key then.
func (g Guard) Run(ctx context.Context, k Key, owner string, labels map[string]string, work Work) error {
	// The claim is timed by a span of its own, but made in the delivery's context: the key
	// remembers the delivery's span, which a duplicate's span links to.
	_, span := telemetry.Start(ctx, "claim "+k.Scope, telemetry.AttrKey.String(k.String()))
	lease, err := g.Keys.Claim(ctx, k, owner, labels)
	switch {
	case lease != nil:
		span.SetAttributes(attribute.Int("oncesync.lease.attempt", lease.Attempt), attribute.Bool("oncesync.lease.taken_over", lease.TakenOver))
		span.End()
	case errors.Is(err, ErrDone), errors.Is(err, ErrInProgress):
		span.SetAttributes(attribute.String("oncesync.claim", err.Error())) // a duplicate, not a failed claim
		span.End()
	default:
		telemetry.End(span, err)
	}
	if err != nil {
		return err
	}
	ctx = logging.With(ctx, slog.Int(logging.LeaseAttempt, lease.Attempt))
	if lease.TakenOver && !lease.Continued {
		telemetry.MetricsFrom(ctx).TakenOver(ctx, k.Scope)
	}
	if lease.TakenOver {
		logging.From(ctx).Warn("expired or released lease taken over; resuming the work",
			slog.String(logging.Event, "lease_taken_over"))
	}
	err = work(ctx, lease)
	var hand *HandOff
	switch {
	case err == nil, errors.Is(err, delivery.ErrDuplicate):
		if cerr := g.Keys.Complete(ctx, lease); cerr != nil {
			return cerr
		}
		return err
	case delivery.IsPermanent(err):
		return GiveUp(ctx, g.Keys, lease, err)
	case errors.Is(err, ErrLeaseLost):
		telemetry.MetricsFrom(ctx).Fenced(ctx, k.Scope)
		return err
	case errors.As(err, &hand):
		// Released before the continuation is published: a continuation that arrived first
		// would otherwise find the lease alive and wait it out.
		if rerr := g.Keys.HandOff(ctx, lease); rerr != nil {
			return fmt.Errorf("idem: hand %s off: %w", k, rerr)
		}
		if hand.Next != nil {
			if nerr := hand.Next(ctx); nerr != nil {
				return fmt.Errorf("idem: hand %s off: %w", k, nerr)
			}
		}
		logging.From(ctx).Info("work handed off at a checkpoint", slog.String(logging.Event, "handed_off"),
			slog.Bool("continuation", hand.Next != nil), slog.String("detail", hand.Reason))
		return nil
	default:
		if rerr := g.Keys.Release(ctx, lease); rerr != nil {
			logging.From(ctx).Warn("could not release the key after a transient failure", slog.String("error", rerr.Error()))
		}
		return err
	}
}

// HandOff is returned by a unit of work that checkpointed and stops before it is finished (its
// time budget is spent). Run releases the key, so that the continuation takes it over at once,
// then calls Next, which publishes the continuation; the delivery is acked. Without Next the work
// waits for a later delivery (the expander's budget pause: the recovery sweep resumes it).
type HandOff struct {
	Reason string                          // logged
	Next   func(ctx context.Context) error // publishes the continuation; nil: none
}

func (h *HandOff) Error() string { return "idem: handed off: " + h.Reason }
