// Package idem implements idempotency keys: Firestore documents created only if absent, that
// give one delivery of a message the right to do its work, with a lease that outlives the
// function timeout, a completion state and a TTL.
//
// # Claims
//
// Claim creates idempotencyKeys/{scope~id} with DocumentRef.Create. If the create succeeds, the
// caller holds the key. If the document exists:
//
//   - DONE: the work is finished; Claim returns ErrDone and the caller acks the duplicate.
//   - IN_PROGRESS with a lease in the future: someone is working on it (maybe a crashed
//     instance whose lease has not run out); Claim returns ErrInProgress and the caller has the
//     delivery retried later. It must not ack: that delivery may be the crashed owner's own
//     redelivery, the one that will finish the work.
//   - IN_PROGRESS with an expired (or released) lease: the owner crashed. Claim takes the key
//     over with an update conditioned on the document's last update time, so of two racing
//     takers exactly one wins.
//
// A claim whose write was applied but whose answer was lost (an ambiguous Unavailable,
// DeadlineExceeded or Aborted, or the client's retry of it failing on the first attempt's own
// write) reads the key back: owners are unique per delivery, so a key IN_PROGRESS under the
// caller's owner is the caller's, and Claim returns its lease instead of making the delivery wait
// out its own lease.
//
// # Fencing
//
// A gen2 function that times out keeps running, so a lease can expire under a live owner. Every
// write a holder makes through CommitFenced is committed in one batch with an update of the key
// conditioned on the update time the holder last saw: once the key has been taken over, the old
// owner's writes fail with ErrLeaseLost and change nothing. Each fenced commit also extends the
// lease (a heartbeat).
//
// # Counters
//
// Duplicate deliveries are counted in a sibling document, deliveries/{scope~id}, so counting them
// never disturbs the holder's fence. A duplicate costs three operations: the failed create, the
// read of the key, and the counter increment.
//
// # Errors
//
// ErrDone, ErrInProgress and ErrLeaseLost are returned as is (check with errors.Is); everything
// else is a transient backend error, wrapped with the key.
package idem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Sentinel errors.
//
// ErrDone wraps delivery.ErrDuplicate (ack the delivery) and ErrInProgress and ErrLeaseLost wrap
// delivery.ErrRetryLater (have it redelivered), so a handler can return them as they are.
var (
	ErrDone       = fmt.Errorf("idem: already done: %w", delivery.ErrDuplicate)
	ErrInProgress = fmt.Errorf("idem: in progress under another owner: %w", delivery.ErrRetryLater)
	ErrLeaseLost  = fmt.Errorf("idem: lease lost to another owner: %w", delivery.ErrRetryLater)
	// ErrPayloadMismatch is a permanent failure (dead letter "payload_mismatch"): the key was
	// claimed by a message that asked for the same work with a different payload.
	ErrPayloadMismatch = delivery.Poison("payload_mismatch", "idem: the key was claimed by a message with another payload")
)

// States of a key.
const (
	InProgress = "IN_PROGRESS"
	Done       = "DONE"
)

// Key names one unit of work.
type Key struct {
	Scope string // "tick", "expand", "chunk"
	ID    string
	// Payload is the hash of the payload that asks for the work (WithPayload), stored by the
	// claim that creates the key; a later claim with another payload fails with
	// ErrPayloadMismatch, whether the work is in progress or done. "": not checked.
	Payload string
}

// WithPayload returns k carrying the SHA-256 of v's JSON encoding: the decoded message, so that
// two encodings of the same message (field order, spacing) are the same payload.
func (k Key) WithPayload(v any) Key {
	b, err := json.Marshal(v)
	if err != nil {
		return k
	}
	k.Payload = model.Hash(string(b))
	return k
}

func (k Key) String() string { return k.Scope + ":" + k.ID }

// DocID is the key's Firestore document ID.
func (k Key) DocID() string { return model.DocID(k.Scope, k.ID) }

// Duplicate is the error of a claim that finds the key DONE or held: Err is ErrDone or
// ErrInProgress (check with errors.Is), and Holder the traceparent of the delivery that claimed
// it, which the duplicate's span links to (delivery.Linked).
type Duplicate struct {
	Err    error
	Holder string
}

func (d *Duplicate) Error() string { return d.Err.Error() }

// Unwrap returns Err.
func (d *Duplicate) Unwrap() error { return d.Err }

// LinkedTraceparent implements delivery.Linked.
func (d *Duplicate) LinkedTraceparent() string { return d.Holder }

var _ delivery.Linked = (*Duplicate)(nil)

// Doc is the stored form of a key.
type Doc struct {
	Key        string            `firestore:"key"`
	Scope      string            `firestore:"scope"`
	State      string            `firestore:"state"`
	Owner      string            `firestore:"owner"`
	LeaseUntil time.Time         `firestore:"leaseUntil"`
	Attempts   int               `firestore:"attempts"`  // claims that won the key: 1 + takeovers
	Takeovers  int               `firestore:"takeovers"` // claims that took an expired lease over
	HandOffs   int               `firestore:"handOffs"`  // times an owner checkpointed and handed the work on
	HandedOff  bool              `firestore:"handedOff"` // released by a hand-off, not yet taken over
	Labels     map[string]string `firestore:"labels"`    // tenant, job, chunk, messageId
	// PayloadHash is Key.Payload of the claim that created the key.
	PayloadHash string `firestore:"payloadHash,omitempty"`
	// Trace is the W3C traceparent of the delivery that holds the key (set by its claim): a
	// duplicate's span links to it, and the audit names its trace.
	Trace     string    `firestore:"trace,omitempty"`
	CreatedAt time.Time `firestore:"createdAt"`
	UpdatedAt time.Time `firestore:"updatedAt"`
	DoneAt    time.Time `firestore:"doneAt"`
	ExpireAt  time.Time `firestore:"expireAt"`
}

// Deliveries is the stored duplicate counter of a key.
type Deliveries struct {
	Key             string            `firestore:"key"`
	Duplicates      int               `firestore:"duplicates"`          // deliveries suppressed in total
	WhileInProgress int               `firestore:"whileInProgress"`     // of those, sent back for redelivery
	LastDuplicateAt time.Time         `firestore:"lastDuplicateAt"`     //
	LastTrace       string            `firestore:"lastTrace,omitempty"` // the last duplicate's traceparent
	ExpireAt        time.Time         `firestore:"expireAt"`            //
	Labels          map[string]string `firestore:"labels"`              //
}

// Lease is a held key.
type Lease struct {
	Key       Key
	Owner     string
	Attempt   int       // 1 for the first owner, +1 per takeover
	TakenOver bool      // the previous owner's lease had expired (or was released)
	Continued bool      // the previous owner handed the work off at a checkpoint (HandOff), it did not crash
	Until     time.Time // lease expiry as last written
	seen      time.Time // the key's update time as last written by this owner
}

// Config configures a Store.
type Config struct {
	Client    *firestore.Client
	Lease     time.Duration    // how long a claim holds without a heartbeat; must exceed the function timeout
	Retention time.Duration    // expireAt = last write + Retention (Firestore TTL deletes the key after)
	Now       func() time.Time // injectable clock; default time.Now
}

// Store claims and completes keys in Firestore.
type Store struct {
	cfg Config
}

// New returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("idem: nil Firestore client")
	}
	if cfg.Lease <= 0 || cfg.Retention < cfg.Lease {
		return nil, fmt.Errorf("idem: lease %v and retention %v: need 0 < lease <= retention", cfg.Lease, cfg.Retention)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg}, nil
}

func (s *Store) ref(k Key) *firestore.DocumentRef {
	return s.cfg.Client.Collection(model.Keys).Doc(k.DocID())
}

func (s *Store) deliveriesRef(k Key) *firestore.DocumentRef {
	return s.cfg.Client.Collection(model.Deliveries).Doc(k.DocID())
}

// Claim tries to take key k for owner. See the package documentation for the outcomes.
func (s *Store) Claim(ctx context.Context, k Key, owner string, labels map[string]string) (*Lease, error) {
	now := s.cfg.Now()
	doc := Doc{
		Key: k.String(), Scope: k.Scope, State: InProgress, Owner: owner,
		LeaseUntil: now.Add(s.cfg.Lease), Attempts: 1, Labels: labels, PayloadHash: k.Payload, Trace: telemetry.Traceparent(ctx),
		CreatedAt: now, UpdatedAt: now, ExpireAt: now.Add(s.cfg.Retention),
	}
	for range 2 {
		wr, err := s.ref(k).Create(ctx, doc)
		if err == nil {
			return &Lease{Key: k, Owner: owner, Attempt: 1, Until: doc.LeaseUntil, seen: wr.UpdateTime}, nil
		}
		if status.Code(err) != codes.AlreadyExists {
			if l := s.ours(ctx, k, owner); l != nil {
				return l, nil
			}
			return nil, fmt.Errorf("idem: claim %s: %w", k, err)
		}
		snap, err := s.ref(k).Get(ctx)
		if status.Code(err) == codes.NotFound {
			continue // deleted (TTL) between our create and get: try the create again
		}
		if err != nil {
			return nil, fmt.Errorf("idem: claim %s: read: %w", k, err)
		}
		var cur Doc
		if err := snap.DataTo(&cur); err != nil {
			return nil, fmt.Errorf("idem: claim %s: decode: %w", k, err)
		}
		if k.Payload != "" && cur.PayloadHash != "" && k.Payload != cur.PayloadHash {
			return nil, fmt.Errorf("idem: claim %s: payload %.12s, the key's %.12s: %w", k, k.Payload, cur.PayloadHash, ErrPayloadMismatch)
		}
		switch {
		case cur.State == InProgress && cur.Owner == owner:
			return ownLease(k, cur, snap.UpdateTime), nil // our create, applied by an attempt whose answer was lost
		case cur.State == Done:
			return nil, s.countDuplicate(ctx, k, labels, false, &Duplicate{Err: ErrDone, Holder: cur.Trace})
		case cur.LeaseUntil.After(now):
			return nil, s.countDuplicate(ctx, k, labels, true, &Duplicate{Err: ErrInProgress, Holder: cur.Trace})
		}
		until := now.Add(s.cfg.Lease)
		wr, err = s.ref(k).Update(ctx, []firestore.Update{
			{Path: "owner", Value: owner},
			{Path: "leaseUntil", Value: until},
			{Path: "attempts", Value: firestore.Increment(1)},
			{Path: "takeovers", Value: firestore.Increment(1)},
			{Path: "handedOff", Value: false},
			{Path: "trace", Value: telemetry.Traceparent(ctx)},
			{Path: "updatedAt", Value: now},
			{Path: model.ExpireAtField, Value: now.Add(s.cfg.Retention)},
		}, firestore.LastUpdateTime(snap.UpdateTime))
		if err != nil {
			if l := s.ours(ctx, k, owner); l != nil {
				return l, nil // our update, applied by an attempt whose answer was lost
			}
		}
		if code := status.Code(err); code == codes.FailedPrecondition || code == codes.NotFound {
			return nil, s.countDuplicate(ctx, k, labels, true, ErrInProgress) // another taker won
		}
		if err != nil {
			return nil, fmt.Errorf("idem: take over %s: %w", k, err)
		}
		return &Lease{Key: k, Owner: owner, Attempt: cur.Attempts + 1, TakenOver: true, Continued: cur.HandedOff, Until: until, seen: wr.UpdateTime}, nil
	}
	return nil, fmt.Errorf("idem: claim %s: key vanished twice during the claim", k)
}

// ours returns the lease of owner on k if the stored key is IN_PROGRESS under owner, else nil.
// A write whose answer was lost (an ambiguous Unavailable, DeadlineExceeded or Aborted, or a
// retry by the client that then failed its own precondition) may still have been applied: owners
// are unique per delivery, so a key that names owner was claimed by this very call.
func (s *Store) ours(ctx context.Context, k Key, owner string) *Lease {
	snap, err := s.ref(k).Get(ctx)
	if err != nil {
		return nil
	}
	var cur Doc
	if err := snap.DataTo(&cur); err != nil || cur.State != InProgress || cur.Owner != owner {
		return nil
	}
	return ownLease(k, cur, snap.UpdateTime)
}

func ownLease(k Key, cur Doc, seen time.Time) *Lease {
	return &Lease{Key: k, Owner: cur.Owner, Attempt: cur.Attempts, TakenOver: cur.Attempts > 1, Until: cur.LeaseUntil, seen: seen}
}

func (s *Store) countDuplicate(ctx context.Context, k Key, labels map[string]string, inProgress bool, result error) error {
	now := s.cfg.Now()
	fields := map[string]any{
		"key":               k.String(),
		"duplicates":        firestore.Increment(1),
		"lastDuplicateAt":   now,
		"labels":            labels,
		model.ExpireAtField: now.Add(s.cfg.Retention),
	}
	if inProgress {
		fields["whileInProgress"] = firestore.Increment(1)
	}
	if tp := telemetry.Traceparent(ctx); tp != "" {
		fields["lastTrace"] = tp
	}
	if _, err := s.deliveriesRef(k).Set(ctx, fields, firestore.MergeAll); err != nil {
		return fmt.Errorf("idem: count duplicate of %s: %w", k, err)
	}
	return result
}

// CommitFenced commits stage's writes in one batch with a heartbeat of l, conditioned on l still
// being held. It returns ErrLeaseLost, and writes nothing, once another owner has taken the key.
func (s *Store) CommitFenced(ctx context.Context, l *Lease, stage func(b *firestore.WriteBatch)) error {
	now := s.cfg.Now()
	until := now.Add(s.cfg.Lease)
	b := s.cfg.Client.Batch()
	b.Update(s.ref(l.Key), []firestore.Update{
		{Path: "leaseUntil", Value: until},
		{Path: "updatedAt", Value: now},
	}, firestore.LastUpdateTime(l.seen))
	stage(b)
	res, err := b.Commit(ctx)
	if code := status.Code(err); code == codes.FailedPrecondition || code == codes.NotFound {
		return fmt.Errorf("idem: fenced commit %s: %w", l.Key, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("idem: fenced commit %s: %w", l.Key, err)
	}
	l.seen, l.Until = res[0].UpdateTime, until
	return nil
}

// Complete marks the key DONE. Later claims return ErrDone until the key expires.
func (s *Store) Complete(ctx context.Context, l *Lease) error {
	now := s.cfg.Now()
	return s.update(ctx, l, "complete", []firestore.Update{
		{Path: "state", Value: Done},
		{Path: "doneAt", Value: now},
		{Path: "updatedAt", Value: now},
		{Path: model.ExpireAtField, Value: now.Add(s.cfg.Retention)},
	})
}

// Release gives the key up early after a transient failure, so that the retried delivery can
// take it over at once instead of waiting for the lease to expire.
func (s *Store) Release(ctx context.Context, l *Lease) error {
	now := s.cfg.Now()
	return s.update(ctx, l, "release", []firestore.Update{
		{Path: "leaseUntil", Value: now},
		{Path: "updatedAt", Value: now},
	})
}

// HandOff releases the key like Release, marking that the owner checkpointed its work and handed
// the rest on to a continuation: the owner that takes the key over next gets a Lease with
// Continued set, and knows it resumes a checkpoint rather than a crash.
func (s *Store) HandOff(ctx context.Context, l *Lease) error {
	now := s.cfg.Now()
	return s.update(ctx, l, "hand off", []firestore.Update{
		{Path: "leaseUntil", Value: now},
		{Path: "handedOff", Value: true},
		{Path: "handOffs", Value: firestore.Increment(1)},
		{Path: "updatedAt", Value: now},
	})
}

func (s *Store) update(ctx context.Context, l *Lease, op string, ups []firestore.Update) error {
	wr, err := s.ref(l.Key).Update(ctx, ups, firestore.LastUpdateTime(l.seen))
	if code := status.Code(err); code == codes.FailedPrecondition || code == codes.NotFound {
		return fmt.Errorf("idem: %s %s: %w", op, l.Key, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("idem: %s %s: %w", op, l.Key, err)
	}
	l.seen = wr.UpdateTime
	return nil
}

// Abandon deletes the key after a permanent failure: the message is dead-lettered, and a replay
// of it after a fix must be able to claim the work again rather than find it DONE.
func (s *Store) Abandon(ctx context.Context, l *Lease) error {
	_, err := s.ref(l.Key).Delete(ctx, firestore.LastUpdateTime(l.seen))
	if code := status.Code(err); code == codes.FailedPrecondition || code == codes.NotFound {
		return fmt.Errorf("idem: abandon %s: %w", l.Key, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("idem: abandon %s: %w", l.Key, err)
	}
	return nil
}

// GiveUp abandons l after the permanent failure cause (which wraps delivery.ErrPoison) and returns
// cause, to be dead-lettered and acked. When the key cannot be deleted, GiveUp returns a transient
// error instead, which does not wrap cause: dead-lettering the message then would leave the key
// IN_PROGRESS with no message left to finish or delete it. It releases the key first (best
// effort), so that the redelivery takes it over at once, meets the same permanent failure and
// tries again — instead of waiting out the lease, which, with a dead-letter policy of few
// attempts, would let Pub/Sub dead-letter the message first, with no record of ours.
// A lost lease counts as given up: the key is another owner's now.
func GiveUp(ctx context.Context, k Keys, l *Lease, cause error) error {
	err := k.Abandon(ctx, l)
	if err == nil || errors.Is(err, ErrLeaseLost) {
		return cause
	}
	released := "released for the retry"
	if rerr := k.Release(ctx, l); rerr != nil {
		released = "not released either: " + rerr.Error()
	}
	return fmt.Errorf("%w (key %s); not dead-lettered yet, for the permanent failure (%v) must not leave the key held", err, released, cause)
}

// Get returns the stored key, or nil when there is none.
func (s *Store) Get(ctx context.Context, k Key) (*Doc, error) {
	snap, err := s.ref(k).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("idem: get %s: %w", k, err)
	}
	var d Doc
	if err := snap.DataTo(&d); err != nil {
		return nil, fmt.Errorf("idem: decode %s: %w", k, err)
	}
	return &d, nil
}

// Scopes of the pipeline's keys.
const (
	ScopeTick   = "tick"
	ScopeExpand = "expand"
	ScopeChunk  = "chunk"
)

// TickKey is the key of one scheduler tick.
func TickKey(tickID string) Key { return Key{Scope: ScopeTick, ID: tickID} }

// ExpandKey is the key of one Job's expansion.
func ExpandKey(jobID string) Key { return Key{Scope: ScopeExpand, ID: jobID} }

// SliceKey is the key of the expansion of slice s of a Job; slice 0's is the Job's ExpandKey (it
// also cuts the slices).
func SliceKey(jobID string, s int) Key {
	if s == 0 {
		return ExpandKey(jobID)
	}
	return Key{Scope: ScopeExpand, ID: model.DocID(jobID, model.SliceID(s))}
}

// ChunkKey is the key of one chunk's import.
func ChunkKey(jobID string, index int) Key {
	return Key{Scope: ScopeChunk, ID: model.DocID(jobID, model.ChunkID(index))}
}
