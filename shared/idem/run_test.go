package idem_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
)

// fakeKeys records the lease lifecycle calls; claimErr and the *Err fields inject failures.
type fakeKeys struct {
	calls                                                     []string
	lease                                                     idem.Lease
	claimErr, completeErr, releaseErr, abandonErr, handOffErr error
}

func (f *fakeKeys) Claim(_ context.Context, k idem.Key, owner string, _ map[string]string) (*idem.Lease, error) {
	f.calls = append(f.calls, "claim")
	if f.claimErr != nil {
		return nil, f.claimErr
	}
	l := f.lease
	l.Key, l.Owner = k, owner
	return &l, nil
}

func (f *fakeKeys) Complete(context.Context, *idem.Lease) error {
	f.calls = append(f.calls, "complete")
	return f.completeErr
}

func (f *fakeKeys) Release(context.Context, *idem.Lease) error {
	f.calls = append(f.calls, "release")
	return f.releaseErr
}

func (f *fakeKeys) Abandon(context.Context, *idem.Lease) error {
	f.calls = append(f.calls, "abandon")
	return f.abandonErr
}

func (f *fakeKeys) HandOff(context.Context, *idem.Lease) error {
	f.calls = append(f.calls, "handoff")
	return f.handOffErr
}

func TestGuardSettlesTheKeyByTheWorksResult(t *testing.T) {
	transient := errors.New("backend unavailable")
	poison := delivery.Poison("unknown_job", "no such job")
	dup := errors.Join(delivery.ErrDuplicate, errors.New("job already COMPLETED"))
	for _, tc := range []struct {
		name      string
		keys      fakeKeys
		work      error
		want      []string
		wantErr   error // errors.Is target; nil: Run returns nil
		noWork    bool
		nextRuns  bool
		permanent bool // Run returns the work's error, which the Gate dead-letters
	}{
		{name: "done", want: []string{"claim", "work", "complete"}},
		{name: "duplicate is completed and acked", work: dup, want: []string{"claim", "work", "complete"}, wantErr: delivery.ErrDuplicate},
		{name: "poison gives the key up", work: poison, want: []string{"claim", "work", "abandon"}, wantErr: delivery.ErrPoison},
		{name: "poison whose key cannot be deleted is released and redelivered", keys: fakeKeys{abandonErr: transient}, work: poison,
			want: []string{"claim", "work", "abandon", "release"}, wantErr: transient},
		{name: "a request the backend rejects is given up too", work: fmt.Errorf("commit: %w", status.Error(codes.InvalidArgument, "too large")),
			want: []string{"claim", "work", "abandon"}, wantErr: nil, permanent: true},
		{name: "transient releases", work: transient, want: []string{"claim", "work", "release"}, wantErr: transient},
		{name: "transient whose release fails is still redelivered", keys: fakeKeys{releaseErr: errors.New("release failed")}, work: transient,
			want: []string{"claim", "work", "release"}, wantErr: transient},
		{name: "lost lease is left alone", work: idem.ErrLeaseLost, want: []string{"claim", "work"}, wantErr: delivery.ErrRetryLater},
		{name: "claim in progress runs nothing", keys: fakeKeys{claimErr: idem.ErrInProgress}, want: []string{"claim"}, wantErr: idem.ErrInProgress, noWork: true},
		{name: "claim done runs nothing", keys: fakeKeys{claimErr: idem.ErrDone}, want: []string{"claim"}, wantErr: delivery.ErrDuplicate, noWork: true},
		{name: "failed complete is redelivered", keys: fakeKeys{completeErr: transient}, want: []string{"claim", "work", "complete"}, wantErr: transient},
		{name: "hand-off releases, then publishes the continuation", work: &idem.HandOff{Reason: "budget"},
			want: []string{"claim", "work", "handoff", "next"}, nextRuns: true},
		{name: "hand-off that cannot release publishes nothing", keys: fakeKeys{handOffErr: transient}, work: &idem.HandOff{Reason: "budget"},
			want: []string{"claim", "work", "handoff"}, wantErr: transient},
		{name: "hand-off without a continuation releases and acks (a budget pause)", work: &idem.HandOff{Reason: "API budget", Next: nil},
			want: []string{"claim", "work", "handoff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := tc.keys
			var next error
			if h, ok := tc.work.(*idem.HandOff); ok && h.Reason == "budget" {
				h.Next = func(context.Context) error { keys.calls = append(keys.calls, "next"); return next }
			}
			err := idem.Guard{Keys: &keys}.Run(t.Context(), idem.ChunkKey("job", 3), "owner-1", nil, func(_ context.Context, l *idem.Lease) error {
				keys.calls = append(keys.calls, "work")
				if l.Owner != "owner-1" || l.Key != idem.ChunkKey("job", 3) {
					t.Errorf("work got lease %+v", l)
				}
				return tc.work
			})
			if !slices.Equal(keys.calls, tc.want) {
				t.Errorf("calls %v, want %v", keys.calls, tc.want)
			}
			if tc.permanent {
				if !delivery.IsPermanent(err) {
					t.Errorf("Run() = %v, want the permanent error back", err)
				}
			} else if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Run() = %v, want %v", err, tc.wantErr)
			}
			if errors.Is(tc.wantErr, transient) && errors.Is(err, delivery.ErrPoison) {
				t.Errorf("Run() = %v: a key that could not be given up must not be dead-lettered", err)
			}
		})
	}
}

func TestKeyConstructors(t *testing.T) {
	for _, tc := range []struct {
		k    idem.Key
		want string
	}{
		{idem.TickKey("t1"), "tick:t1"},
		{idem.ExpandKey("s1-abc"), "expand:s1-abc"},
		{idem.ChunkKey("s1-abc", 12), "chunk:s1-abc~000012"},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("key %q, want %q", got, tc.want)
		}
	}
}
