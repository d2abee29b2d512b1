package sim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/harness/emu"
)

// ResetOptions shape the world Reset leaves behind.
type ResetOptions struct {
	PageSize int // the new fixture server's page size (default 2000)
	APILimit int // the new fixture server's daily API requests (fixture.Options.APILimit)
}

// Reset empties the Env for the next case of a property test, without the cost of a new Env: it
// deletes every document of the project, recreates the pull subscriptions (dropping whatever
// messages they held), installs an empty fixture server, clears and zeroes the Backend, forgets
// delivery attempts and sets the clock back to the start. Call it only when no delivery is in
// progress.
func (e *Env) Reset(ctx context.Context, opts ResetOptions) error {
	if err := wipeFirestore(ctx, e.Project); err != nil {
		return err
	}
	for _, topic := range append(Topics, TopicDead) {
		sub := emu.SubscriptionName(e.PS, "sim-"+topic)
		err := e.PS.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: sub})
		if err != nil && status.Code(err) != codes.NotFound {
			return fmt.Errorf("sim: reset %s: %w", sub, err)
		}
		if err := emu.EnsureSubscription(ctx, e.PS, "sim-"+topic, topic, 60*time.Second); err != nil {
			return fmt.Errorf("sim: reset: %w", err)
		}
	}
	f := e.newFixture(opts.PageSize, opts.APILimit)
	e.fixture.Store(f)
	e.Fixture = f
	e.Backend.Reset()
	e.Afterlife.reset()
	e.Clock.Set(e.start)
	e.mu.Lock()
	e.attempts = map[string]int{}
	e.mu.Unlock()
	return nil
}

// Reset removes every fault rule and zeroes the call, operation and fault counts, so that a
// Fault's Nth counts from here.
func (b *Backend) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = nil
	b.calls = map[string]int{}
	b.ops = Ops{}
	b.injected = map[string]int{}
}

// wipeFirestore deletes every document of project on the emulator.
func wipeFirestore(ctx context.Context, project string) error {
	url := "http://" + os.Getenv("FIRESTORE_EMULATOR_HOST") + "/emulator/v1/projects/" + project + "/databases/(default)/documents"
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return fmt.Errorf("sim: wipe firestore: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sim: wipe firestore: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sim: wipe firestore %s: %s: %s", project, resp.Status, body)
	}
	return nil
}
