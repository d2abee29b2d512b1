package emu

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cleanupTimeout bounds each clean-up step; t.Context is already canceled when clean-ups run.
const cleanupTimeout = 30 * time.Second

// Require fails the test at once when FIRESTORE_EMULATOR_HOST or PUBSUB_EMULATOR_HOST is unset.
// It never skips: an emulator test that silently does not run is a test that silently passes.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	for _, k := range []string{FirestoreEnv, pubSubEnv} {
		if os.Getenv(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("emu: %s not set: this test needs the Firestore and Pub/Sub emulators; run it as\n"+
			"\tgo run ./harness/cmd/oncesync emulators -- go test ./...\n(or make test)",
			strings.Join(missing, " and "))
	}
}

var projectSeq atomic.Uint64

// ProjectID returns a new project ID for the test, such as "t-claimrace-1a2b3c4d": "t-", up to 19
// characters of the lower-cased test name (without its "Test" prefix), "-" and 8 hex digits of a
// hash of the name, process ID, time and a counter. It is unique across tests, calls and concurrently
// running test binaries, and a valid GCP project ID (6–30 characters of [a-z0-9-], starting with a
// letter). Each call returns a different ID.
func ProjectID(t testing.TB) string {
	t.Helper()
	name := sanitize(strings.TrimPrefix(t.Name(), "Test"), 19)
	var seed [24]byte
	binary.LittleEndian.PutUint64(seed[0:], uint64(os.Getpid()))
	binary.LittleEndian.PutUint64(seed[8:], uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint64(seed[16:], projectSeq.Add(1))
	h := sha256.Sum256(append(seed[:], t.Name()...))
	return "t-" + name + "-" + hex.EncodeToString(h[:4])
}

// sanitize lower-cases s, turns every run of other characters than [a-z0-9] into one '-', and cuts
// the result to max characters without a leading or trailing '-'.
func sanitize(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := b.String()
	if len(out) > max {
		out = out[:max]
	}
	out = strings.Trim(out, "-")
	if out == "" {
		out = "x"
	}
	return out
}

// Firestore returns a Firestore client for project on the emulator. In t.Cleanup the client is
// closed and all of the project's documents are deleted.
func Firestore(t testing.TB, project string) *firestore.Client {
	t.Helper()
	Require(t)
	c, err := firestore.NewClient(context.Background(), project)
	if err != nil {
		t.Fatalf("emu: firestore client for %q: %v", project, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("emu: close firestore client: %v", err)
		}
		if err := resetFirestore(os.Getenv(FirestoreEnv), project); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c
}

// resetFirestore deletes every document of project's default database on the emulator at host.
func resetFirestore(host, project string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	url := "http://" + host + "/emulator/v1/projects/" + project + "/databases/(default)/documents"
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return fmt.Errorf("emu: reset firestore %q: %w", project, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("emu: reset firestore %q: %w", project, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emu: reset firestore %q: %s: %s", project, resp.Status, body)
	}
	return nil
}

// PubSub returns a Pub/Sub client for project on the emulator. In t.Cleanup every subscription
// and topic of the project is deleted — so the emulator stops pushing to the test's dead endpoints
// and forgets its messages — and the client is closed. Stop anything receiving with the client
// (cancel its context) before the test returns.
func PubSub(t testing.TB, project string) *pubsub.Client {
	t.Helper()
	Require(t)
	c, err := pubsub.NewClient(context.Background(), project)
	if err != nil {
		t.Fatalf("emu: pubsub client for %q: %v", project, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := deletePubSub(ctx, c); err != nil {
			t.Errorf("emu: clean up pubsub project %q: %v", project, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("emu: close pubsub client: %v", err)
		}
	})
	return c
}

// deletePubSub deletes every subscription, then every topic, of the client's project.
func deletePubSub(ctx context.Context, c *pubsub.Client) error {
	var errs []error
	project := "projects/" + c.Project()
	subs := c.SubscriptionAdminClient.ListSubscriptions(ctx, &pubsubpb.ListSubscriptionsRequest{Project: project})
	for {
		s, err := subs.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list subscriptions: %w", err))
			break
		}
		err = c.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: s.GetName()})
		if err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("delete %s: %w", s.GetName(), err))
		}
	}
	topics := c.TopicAdminClient.ListTopics(ctx, &pubsubpb.ListTopicsRequest{Project: project})
	for {
		tp, err := topics.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list topics: %w", err))
			break
		}
		err = c.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: tp.GetName()})
		if err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("delete %s: %w", tp.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// topicName returns the full resource name of a topic of the client's project; a name that is
// already full ("projects/…") is returned unchanged.
func topicName(c *pubsub.Client, topic string) string {
	if strings.HasPrefix(topic, "projects/") {
		return topic
	}
	return "projects/" + c.Project() + "/topics/" + topic
}

// SubscriptionName is topicName for subscriptions.
func SubscriptionName(c *pubsub.Client, sub string) string {
	if strings.HasPrefix(sub, "projects/") {
		return sub
	}
	return "projects/" + c.Project() + "/subscriptions/" + sub
}

// EnsureTopic creates the topic (an ID of the client's project, or a full name) unless it exists.
func EnsureTopic(ctx context.Context, c *pubsub.Client, topicID string) error {
	_, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName(c, topicID)})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("emu: create topic %q: %w", topicID, err)
	}
	return nil
}

// EnsureSubscription creates a pull subscription to topicID unless subID exists. Both are IDs of
// the client's project or full names. ackDeadline is rounded down to whole seconds and must be 0
// (the service default, 10 s) or 10 s to 600 s. An existing subscription is left as it is, even if
// it differs.
func EnsureSubscription(ctx context.Context, c *pubsub.Client, subID, topicID string, ackDeadline time.Duration) error {
	secs := int32(ackDeadline / time.Second)
	if secs != 0 && (secs < 10 || secs > 600) {
		return fmt.Errorf("emu: subscription %q: ack deadline %v not in [10s, 600s]", subID, ackDeadline)
	}
	_, err := c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:               SubscriptionName(c, subID),
		Topic:              topicName(c, topicID),
		AckDeadlineSeconds: secs,
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("emu: create subscription %q on %q: %w", subID, topicID, err)
	}
	return nil
}
