package connection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/uuid"

	"github.com/oncesync/oncesync/shared/source"
)

// Keeper keeps one tenant's refresh token: salesforce.RefreshTokens on the connection's
// document, with one refresher at a time under a fenced lease (see the package documentation).
type Keeper struct {
	Store  Store
	Tenant string
	// Lease is how long a refresher may hold the right to exchange (default 1 minute: a token
	// request takes seconds).
	Lease time.Duration
	// Wait waits d or until ctx ends, between tries of a lease held by another refresher;
	// default a real timer.
	Wait func(ctx context.Context, d time.Duration) error
}

// ErrLeaseLost is returned when the lease ran out during an exchange and another refresher took
// it: the rotated token this exchange got is not stored.
var ErrLeaseLost = errors.New("connection: the refresher lease was lost during the exchange")

// Exchange implements salesforce.RefreshTokens.
func (k Keeper) Exchange(ctx context.Context, exchange func(ctx context.Context, refreshToken string) (string, error)) error {
	lease := k.Lease
	if lease <= 0 {
		lease = time.Minute
	}
	owner := uuid.NewString()
	held, interrupted, err := k.claim(ctx, owner, lease)
	if err != nil {
		return err
	}
	cred, err := k.Store.Credential(held)
	if err != nil {
		k.release(ctx, owner, false)
		return err
	}
	rotated, err := exchange(ctx, string(cred.Reveal()))
	if err != nil {
		// A refusal rotated nothing; any other failure may have happened after the provider
		// rotated the token, so the exchange stays marked started.
		k.release(ctx, owner, !source.IsDisconnected(err))
		if source.IsDisconnected(err) && !interrupted.IsZero() {
			return fmt.Errorf("a refresh at %s was interrupted after its exchange and before its new refresh token was stored, so the stored one no longer works; connect the tenant again: %w",
				interrupted.Format(time.RFC3339), err)
		}
		return err
	}
	return k.store(ctx, owner, held, Credential(rotated))
}

// claim takes the refresher lease: free, run out, or not taken. It returns the connection as held
// and, when an earlier exchange was left unfinished, when it started.
func (k Keeper) claim(ctx context.Context, owner string, lease time.Duration) (Connection, time.Time, error) {
	wait := k.Wait
	if wait == nil {
		wait = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	for try := 0; ; try++ {
		var held Connection
		var interrupted time.Time
		busy := false
		err := k.Store.FS.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
			ref := k.Store.ref(k.Tenant)
			snap, err := tx.Get(ref)
			if err != nil {
				return err
			}
			if err := snap.DataTo(&held); err != nil {
				return err
			}
			held.TenantID = k.Tenant
			now := k.Store.now()
			if held.Refresher != "" && now.Before(held.RefreshUntil) {
				busy = true
				return nil
			}
			if !held.ExchangeAt.IsZero() {
				interrupted = held.ExchangeAt // an earlier exchange never stored its result
			}
			held.Refresher, held.RefreshUntil, held.ExchangeAt = owner, now.Add(lease), now
			return tx.Update(ref, []firestore.Update{
				{Path: "refresher", Value: owner}, {Path: "refreshUntil", Value: held.RefreshUntil}, {Path: "exchangeAt", Value: now},
			})
		})
		if err != nil {
			if errors.Is(err, ErrNoConnection) || isNotFound(err) {
				return held, interrupted, fmt.Errorf("connection: tenant %q: %w: %w", k.Tenant, ErrNoConnection, source.ErrDisconnected)
			}
			return held, interrupted, fmt.Errorf("connection: claim the refresher lease of %q: %w", k.Tenant, err)
		}
		if !busy {
			return held, interrupted, nil
		}
		if err := wait(ctx, min(time.Duration(50<<min(try, 5))*time.Millisecond, time.Second)); err != nil {
			return held, interrupted, fmt.Errorf("connection: waiting for another refresher of %q: %w", k.Tenant, err)
		}
	}
}

// store records the exchange's result, conditioned on still holding the lease: the rotated
// refresh token (sealed) when there is one, and the lease released.
func (k Keeper) store(ctx context.Context, owner string, held Connection, rotated Credential) error {
	var sealed []byte
	if !rotated.Empty() {
		var err error
		if sealed, err = k.Store.Sealer.Seal(rotated.Reveal(), associated(k.Tenant)); err != nil {
			return err
		}
	}
	err := k.Store.FS.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		ref := k.Store.ref(k.Tenant)
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		var now Connection
		if err := snap.DataTo(&now); err != nil {
			return err
		}
		if now.Refresher != owner || !now.RefreshUntil.Equal(held.RefreshUntil) {
			return ErrLeaseLost
		}
		up := []firestore.Update{
			{Path: "refresher", Value: ""}, {Path: "refreshUntil", Value: time.Time{}}, {Path: "exchangeAt", Value: time.Time{}},
			{Path: "lastRefresh", Value: k.Store.now()},
		}
		if sealed != nil {
			up = append(up, firestore.Update{Path: "sealed", Value: sealed}, firestore.Update{Path: "version", Value: now.Version + 1})
		}
		return tx.Update(ref, up)
	})
	if err != nil {
		return fmt.Errorf("connection: store the refresh of %q: %w", k.Tenant, err)
	}
	return nil
}

// release gives the lease back after an exchange that stored nothing: best effort, the lease runs
// out anyway. keepExchange leaves the exchange marked started (it may have rotated the token).
func (k Keeper) release(ctx context.Context, owner string, keepExchange bool) {
	_ = k.Store.FS.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		ref := k.Store.ref(k.Tenant)
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		if r, _ := snap.DataAt("refresher"); r != owner {
			return nil
		}
		up := []firestore.Update{{Path: "refresher", Value: ""}, {Path: "refreshUntil", Value: time.Time{}}}
		if !keepExchange {
			up = append(up, firestore.Update{Path: "exchangeAt", Value: time.Time{}})
		}
		return tx.Update(ref, up)
	})
}
