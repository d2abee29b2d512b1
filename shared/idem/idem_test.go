package idem_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(t *testing.T) (*idem.Store, *clock, *firestore.Client) {
	t.Helper()
	fs := emu.Firestore(t, emu.ProjectID(t))
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := idem.New(idem.Config{Client: fs, Lease: 15 * time.Minute, Retention: 192 * time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, fs
}

var key = idem.Key{Scope: "expand", ID: "job/1"}

func TestClaimLifecycle(t *testing.T) {
	t.Parallel()
	s, c, fs := newStore(t)
	ctx := t.Context()
	l, err := s.Claim(ctx, key, "a", map[string]string{"job": "job/1"})
	if err != nil || l.Attempt != 1 || l.TakenOver {
		t.Fatalf("first claim: lease %+v, err %v", l, err)
	}
	if _, err := s.Claim(ctx, key, "b", nil); !errors.Is(err, idem.ErrInProgress) || !errors.Is(err, delivery.ErrRetryLater) {
		t.Fatalf("claim while held: err %v, want ErrInProgress (retry later)", err)
	}
	if err := s.Complete(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, key, "c", nil); !errors.Is(err, idem.ErrDone) || !errors.Is(err, delivery.ErrDuplicate) {
		t.Fatalf("claim after done: err %v, want ErrDone (duplicate)", err)
	}
	d, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != idem.Done || d.Owner != "a" || d.Attempts != 1 || !d.ExpireAt.Equal(c.Now().Add(192*time.Hour)) {
		t.Errorf("key %+v: want DONE by a, 1 attempt, expireAt now+retention", d)
	}
	snap, err := fs.Collection(model.Deliveries).Doc(key.DocID()).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var del idem.Deliveries
	if err := snap.DataTo(&del); err != nil {
		t.Fatal(err)
	}
	if del.Duplicates != 2 || del.WhileInProgress != 1 {
		t.Errorf("deliveries %+v: want 2 duplicates, 1 while in progress", del)
	}
}

func TestExpiredLeaseIsTakenOverAndFencesTheOldOwner(t *testing.T) {
	t.Parallel()
	s, c, fs := newStore(t)
	ctx := t.Context()
	old, err := s.Claim(ctx, key, "old", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(14 * time.Minute)
	if _, err := s.Claim(ctx, key, "early", nil); !errors.Is(err, idem.ErrInProgress) {
		t.Fatalf("claim before expiry: %v", err)
	}
	c.Advance(2 * time.Minute)
	neu, err := s.Claim(ctx, key, "new", nil)
	if err != nil || !neu.TakenOver || neu.Attempt != 2 {
		t.Fatalf("takeover: %+v %v", neu, err)
	}
	probe := fs.Collection("probe").Doc("x")
	err = s.CommitFenced(ctx, old, func(b *firestore.WriteBatch) { b.Set(probe, map[string]any{"by": "old"}) })
	if !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("zombie fenced commit: %v, want ErrLeaseLost", err)
	}
	if _, err := probe.Get(ctx); err == nil {
		t.Fatal("the zombie's write landed")
	}
	if err := s.CommitFenced(ctx, neu, func(b *firestore.WriteBatch) { b.Set(probe, map[string]any{"by": "new"}) }); err != nil {
		t.Fatal(err)
	}
	// The heartbeat extended the lease from now.
	c.Advance(14 * time.Minute)
	if _, err := s.Claim(ctx, key, "third", nil); !errors.Is(err, idem.ErrInProgress) {
		t.Fatalf("claim after heartbeat: %v, want in progress", err)
	}
	if err := s.Complete(ctx, old); !errors.Is(err, idem.ErrLeaseLost) {
		t.Fatalf("zombie complete: %v, want ErrLeaseLost", err)
	}
	d, _ := s.Get(ctx, key)
	if d.Takeovers != 1 || d.Attempts != 2 || d.Owner != "new" {
		t.Errorf("key %+v", d)
	}
}

func TestReleaseLetsTheRetryTakeOverAtOnce(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := t.Context()
	l, err := s.Claim(ctx, key, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if l2, err := s.Claim(ctx, key, "b", nil); err != nil || !l2.TakenOver {
		t.Fatalf("claim after release: %+v %v", l2, err)
	}
}

func TestHandOffMarksTheNextOwnerAsAContinuation(t *testing.T) {
	t.Parallel()
	s, c, _ := newStore(t)
	ctx := t.Context()
	a, err := s.Claim(ctx, key, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.HandOff(ctx, a); err != nil {
		t.Fatal(err)
	}
	b, err := s.Claim(ctx, key, "b", nil)
	if err != nil || !b.TakenOver || !b.Continued || b.Attempt != 2 {
		t.Fatalf("claim after hand-off: %+v %v; want a continued takeover, attempt 2", b, err)
	}
	// b crashes: whoever takes over after its lease expires resumes a crash, not a checkpoint.
	c.Advance(16 * time.Minute)
	d, err := s.Claim(ctx, key, "d", nil)
	if err != nil || !d.TakenOver || d.Continued {
		t.Fatalf("claim after the continuation's lease expired: %+v %v; want a takeover that is not a continuation", d, err)
	}
	if err := s.HandOff(ctx, b); !errors.Is(err, idem.ErrLeaseLost) {
		t.Errorf("hand-off by the old owner: %v, want ErrLeaseLost", err)
	}
	doc, err := s.Get(ctx, key)
	if err != nil || doc.HandOffs != 1 || doc.HandedOff || doc.Takeovers != 2 {
		t.Errorf("key %+v %v; want 1 hand-off, not pending, 2 takeovers", doc, err)
	}
}

func TestRacingClaimsHaveExactlyOneWinner(t *testing.T) {
	t.Parallel()
	s, c, _ := newStore(t)
	ctx := t.Context()
	for round := range 3 {
		k := idem.Key{Scope: "chunk", ID: fmt.Sprint("race-", round)}
		if round == 2 { // racing takeovers of an expired lease
			if _, err := s.Claim(ctx, k, "crashed", nil); err != nil {
				t.Fatal(err)
			}
			c.Advance(time.Hour)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, refused := 0, 0
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Claim(ctx, k, fmt.Sprint("owner-", i), nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case errors.Is(err, idem.ErrInProgress):
					refused++
				default:
					t.Errorf("claim: %v", err)
				}
			}()
		}
		wg.Wait()
		if won != 1 || refused != 19 {
			t.Errorf("round %d: %d won, %d refused; want 1 and 19", round, won, refused)
		}
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := idem.New(idem.Config{}); err == nil {
		t.Error("nil client accepted")
	}
	fs := emu.Firestore(t, emu.ProjectID(t))
	if _, err := idem.New(idem.Config{Client: fs, Lease: time.Hour, Retention: time.Minute}); err == nil {
		t.Error("retention shorter than the lease accepted")
	}
}

func TestAbandonLetsAReplayClaimAgain(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := t.Context()
	l, err := s.Claim(ctx, key, "poisoned", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Abandon(ctx, l); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Get(ctx, key); err != nil || d != nil {
		t.Fatalf("key after abandon: %+v %v, want none", d, err)
	}
	l2, err := s.Claim(ctx, key, "replay", nil)
	if err != nil || l2.TakenOver || l2.Attempt != 1 {
		t.Fatalf("replay claim: %+v %v", l2, err)
	}
	if err := s.Abandon(ctx, l); !errors.Is(err, idem.ErrLeaseLost) {
		t.Errorf("stale abandon: %v, want ErrLeaseLost", err)
	}
}

// failingAbandon is a Keys whose delete fails (the Firestore write that cannot be made) and
// whose release goes to the real store.
type failingAbandon struct {
	*idem.Store
	err error
}

func (f failingAbandon) Abandon(context.Context, *idem.Lease) error { return f.err }

func TestGiveUpDeadLettersOnlyOnceTheKeyIsGone(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := t.Context()
	poison := delivery.Poison("unknown_job", "job %s not found", "j1")

	l, err := s.Claim(ctx, key, "poisoned", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := idem.GiveUp(ctx, s, l, poison); err != poison {
		t.Fatalf("give up with the key deleted: %v, want the poison itself", err)
	}
	if d, err := s.Get(ctx, key); err != nil || d != nil {
		t.Fatalf("key after giving up: %+v %v, want none", d, err)
	}
	// A stale lease: the key is someone else's (here: gone), so the poison stands.
	if err := idem.GiveUp(ctx, s, l, poison); err != poison {
		t.Fatalf("give up with a lost lease: %v, want the poison itself", err)
	}

	unavailable := fmt.Errorf("idem: abandon %s: %w", key, status.Error(codes.Unavailable, "backend down"))
	l, err = s.Claim(ctx, key, "poisoned-again", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = idem.GiveUp(ctx, failingAbandon{Store: s, err: unavailable}, l, poison)
	if errors.Is(err, delivery.ErrPoison) || !errors.Is(err, unavailable) {
		t.Fatalf("give up when the key cannot be deleted: %v, want the transient error and no poison", err)
	}
	// The key could not be deleted, but it was released: the redelivery takes it over at once.
	if next, err := s.Claim(ctx, key, "redelivery", nil); err != nil || !next.TakenOver {
		t.Fatalf("redelivery after a failed give-up: %+v %v, want an immediate takeover", next, err)
	}
}

// A claim whose write is applied but answered with an error is still the caller's: it returns the
// lease (fenced on the key as written) instead of waiting out its own lease. Both writes of a
// claim are covered: the create of a new key and the takeover of an expired one.
func TestClaimRecognizesItsOwnAmbiguousWrite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := sim.NewBackend()
	fs, err := sim.FirestoreClient(ctx, emu.ProjectID(t), b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := idem.New(idem.Config{Client: fs, Lease: 15 * time.Minute, Retention: 192 * time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []codes.Code{codes.Unavailable, codes.Aborted, codes.DeadlineExceeded} {
		k := idem.Key{Scope: "chunk", ID: "ambiguous-" + code.String()}
		b.Inject(sim.Fault{Method: "Commit", Nth: b.Calls("Commit") + 1, Code: code, After: true})
		l, err := s.Claim(ctx, k, "first", nil)
		b.Clear()
		if err != nil || l.Attempt != 1 || l.TakenOver {
			t.Fatalf("%v: create applied, answer lost: lease %+v, err %v; want the caller's lease", code, l, err)
		}
		if _, err := s.Claim(ctx, k, "other", nil); !errors.Is(err, idem.ErrInProgress) {
			t.Fatalf("%v: another owner's claim: %v, want ErrInProgress", code, err)
		}

		c.Advance(16 * time.Minute) // "first" crashed: its lease expires
		b.Inject(sim.Fault{Method: "Commit", Nth: b.Calls("Commit") + 1, Code: code, After: true})
		l2, err := s.Claim(ctx, k, "second", nil)
		b.Clear()
		if err != nil || l2.Attempt != 2 || !l2.TakenOver {
			t.Fatalf("%v: takeover applied, answer lost: lease %+v, err %v; want the caller's lease, attempt 2", code, l2, err)
		}
		// The lease is fenced on the key as the lost write left it: it commits and completes.
		if err := s.CommitFenced(ctx, l2, func(*firestore.WriteBatch) {}); err != nil {
			t.Fatalf("%v: fenced commit with the recovered lease: %v", code, err)
		}
		if err := s.Complete(ctx, l2); err != nil {
			t.Fatalf("%v: complete with the recovered lease: %v", code, err)
		}
		if err := s.Complete(ctx, l); !errors.Is(err, idem.ErrLeaseLost) {
			t.Errorf("%v: the superseded owner's complete: %v, want ErrLeaseLost", code, err)
		}
	}
}

// A key remembers the payload that claimed it: another payload under the same key is a permanent
// failure, whether the work is in progress or done; the same payload is the ordinary duplicate.
func TestPayloadMismatchIsPermanent(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t)
	ctx := t.Context()
	k := idem.ExpandKey("job-7")
	right := k.WithPayload(model.ExpandMessage{TenantID: "acme", JobID: "job-7"})
	wrong := k.WithPayload(model.ExpandMessage{TenantID: "globex", JobID: "job-7"})
	l, err := s.Claim(ctx, right, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{"in progress", "done"} {
		if state == "done" {
			if err := s.Complete(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.Claim(ctx, wrong, "b", nil)
		var pe *delivery.PoisonError
		if !errors.Is(err, idem.ErrPayloadMismatch) || !errors.As(err, &pe) || pe.Reason != "payload_mismatch" {
			t.Errorf("%s: claim with another payload: %v, want payload_mismatch", state, err)
		}
		_, err = s.Claim(ctx, right, "c", nil)
		if want := map[string]error{"in progress": idem.ErrInProgress, "done": idem.ErrDone}[state]; !errors.Is(err, want) {
			t.Errorf("%s: claim with the same payload: %v, want %v", state, err, want)
		}
	}
	// A key without a payload (or a claim without one) is not checked.
	if _, err := s.Claim(ctx, k, "d", nil); !errors.Is(err, idem.ErrDone) {
		t.Errorf("claim without a payload: %v, want ErrDone", err)
	}
}
