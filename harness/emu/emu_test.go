package emu

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var projectIDShape = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)

func TestProjectID(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"TestX", "TestAVeryLongTestNameThatGoesOnAndOn/With_Sub#01", "Test/--", "TestÄÖÜ"} {
		t.Run(name, func(t *testing.T) {
			for range 50 {
				id := ProjectID(t)
				if !projectIDShape.MatchString(id) || len(id) > 30 || strings.Contains(id, "--") {
					t.Fatalf("ProjectID() = %q, not a valid project ID", id)
				}
				if seen[id] {
					t.Fatalf("ProjectID() = %q twice", id)
				}
				seen[id] = true
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Claim", "claim"},
		{"Claim/races_Two", "claim-races-two"},
		{"--a--b--", "a-b"},
		{"", "x"},
		{"ÄÖ", "x"},
		{"abcdefghij-klmnopqrstuvwxyz", "abcdefghij-klmnopqr"},
		{"abcdefghijklmnopqr-s", "abcdefghijklmnopqr"},
	} {
		if got := sanitize(tc.in, 19); got != tc.want {
			t.Errorf("sanitize(%q, 19) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// fakeTB records Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func TestRequireFailsWithoutEmulators(t *testing.T) {
	t.Setenv(FirestoreEnv, "")
	t.Setenv(pubSubEnv, "127.0.0.1:1")
	f := &fakeTB{TB: t}
	Require(f)
	if !strings.Contains(f.fatal, FirestoreEnv) || strings.Contains(f.fatal, pubSubEnv) || !strings.Contains(f.fatal, "emulators --") {
		t.Errorf("Require with %s unset: Fatalf(%q), want a message naming it and how to run the tests", FirestoreEnv, f.fatal)
	}
	t.Setenv(FirestoreEnv, "127.0.0.1:1")
	f = &fakeTB{TB: t}
	Require(f)
	if f.fatal != "" {
		t.Errorf("Require with both set: Fatalf(%q), want no failure", f.fatal)
	}
}

func TestStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own emulators")
	}
	logs := t.TempDir()
	t0 := time.Now()
	e, err := Start(t.Context(), Options{Firestore: true, PubSub: true, LogDir: logs, FirestoreMaxHeap: "512m"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("both emulators ready in %v", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { e.Stop() })

	want := []string{FirestoreEnv + "=" + e.FirestoreHost, pubSubEnv + "=" + e.PubSubHost}
	if got := e.Env(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Env() = %q, want %q", got, want)
	}
	for _, host := range []string{e.FirestoreHost, e.PubSubHost} {
		if !strings.HasPrefix(host, "127.0.0.1:") {
			t.Errorf("host %q, want 127.0.0.1:PORT", host)
		}
		if !ok(t.Context(), http.DefaultClient, "http://"+host+"/") {
			t.Errorf("GET http://%s/ is not 200 Ok", host)
		}
	}
	pids := make([]int, 0, len(e.procs))
	for _, p := range e.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	if len(pids) != 2 {
		t.Fatalf("%d processes, want 2", len(pids))
	}

	t0 = time.Now()
	if err := e.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	t.Logf("stopped in %v", time.Since(t0).Round(time.Millisecond))
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	for _, name := range []string{"firestore.log", "pubsub.log"} {
		if fi, err := os.Stat(filepath.Join(logs, name)); err != nil || fi.Size() == 0 {
			t.Errorf("log %s: %v, want a non-empty file", name, err)
		}
	}
}

func TestStartNoSDK(t *testing.T) {
	_, err := Start(t.Context(), Options{PubSub: true, SDKRoot: t.TempDir()})
	if !errors.Is(err, ErrNoSDK) {
		t.Errorf("Start with an empty SDK root: %v, want ErrNoSDK", err)
	}
	if _, err := Start(t.Context(), Options{}); err == nil {
		t.Error("Start with no emulator selected succeeded")
	}
}

func TestStartReportsLogTail(t *testing.T) {
	// A fake SDK whose "Pub/Sub emulator" jar is not a jar: java exits at once.
	sdk := t.TempDir()
	dir := filepath.Join(sdk, "platform", "pubsub-emulator", "lib")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cloud-pubsub-emulator-0.0.0-all.jar"), []byte("not a jar"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Options{PubSub: true, SDKRoot: sdk})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "jar") {
		t.Errorf("Start with a broken jar: %v, want an early-exit error with the log tail", err)
	}
}

func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own emulators")
	}
	// The command sees a new PUBSUB_EMULATOR_HOST, not the one these tests may run under.
	code, err := Run(t.Context(), Options{PubSub: true}, []string{"sh", "-c",
		`test -n "$PUBSUB_EMULATOR_HOST" && test "$PUBSUB_EMULATOR_HOST" != "$1" && exit 7`, "sh", os.Getenv(pubSubEnv)})
	if err != nil || code != 7 {
		t.Errorf("Run(exit 7) = %d, %v; want 7, nil", code, err)
	}

	code, err = Run(t.Context(), Options{PubSub: true}, []string{"/nonexistent/command"})
	if err == nil || code != 127 {
		t.Errorf("Run(missing command) = %d, %v; want 127 and an error", code, err)
	}

	// Canceling the context stops the command (SIGTERM: 128+15) and the emulators. The context
	// is canceled once the command is running (it has written its marker), however long the
	// emulators took to start on a loaded machine: no fixed time is assumed.
	marker := filepath.Join(t.TempDir(), "running")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		for ctx.Err() == nil {
			if _, err := os.Stat(marker); err == nil {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	code, err = Run(ctx, Options{PubSub: true}, []string{"sh", "-c", `touch "$1" && exec sleep 600`, "sh", marker})
	<-ran
	if _, serr := os.Stat(marker); serr != nil {
		t.Fatalf("Run(sleep) returned %d, %v before the command ran", code, err)
	}
	if err != nil || code != 128+int(syscall.SIGTERM) {
		t.Errorf("Run(sleep 600) canceled = %d, %v; want %d, nil", code, err, 128+int(syscall.SIGTERM))
	}
}

func TestFirestoreHelper(t *testing.T) {
	Require(t)
	ctx := t.Context()
	a, b := ProjectID(t), ProjectID(t)
	ca, cb := Firestore(t, a), Firestore(t, b)
	if _, err := ca.Doc("things/one").Create(ctx, map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Doc("things/one").Get(ctx); status.Code(err) != codes.NotFound {
		t.Errorf("project %s sees project %s's document: %v", b, a, err)
	}
	if err := resetFirestore(os.Getenv(FirestoreEnv), a); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Doc("things/one").Get(ctx); status.Code(err) != codes.NotFound {
		t.Errorf("document exists after reset: %v", err)
	}
}

func TestPubSubHelpers(t *testing.T) {
	Require(t)
	ctx := t.Context()
	c := PubSub(t, ProjectID(t))
	for range 2 { // idempotent
		if err := EnsureTopic(ctx, c, "things"); err != nil {
			t.Fatal(err)
		}
		if err := EnsureSubscription(ctx, c, "things-sub", "things", 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := EnsureSubscription(ctx, c, "bad", "things", 5*time.Second); err == nil {
		t.Error("EnsureSubscription accepted a 5s ack deadline")
	}
	sub, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: SubscriptionName(c, "things-sub")})
	if err != nil {
		t.Fatal(err)
	}
	if sub.GetAckDeadlineSeconds() != 20 || sub.GetTopic() != topicName(c, "things") || sub.GetPushConfig().GetPushEndpoint() != "" {
		t.Errorf("subscription = %v, want a pull subscription of things with a 20s ack deadline", sub)
	}

	pub := c.Publisher("things")
	defer pub.Stop()
	if _, err := pub.Publish(ctx, &pubsub.Message{Data: []byte("hello")}).Get(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	var got string
	err = c.Subscriber("things-sub").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		got = string(m.Data)
		m.Ack()
		cancel()
	})
	cancel()
	if err != nil || got != "hello" {
		t.Fatalf("Receive: %q, %v; want hello", got, err)
	}

	if err := deletePubSub(ctx, c); err != nil {
		t.Fatal(err)
	}
	it := c.SubscriptionAdminClient.ListSubscriptions(ctx, &pubsubpb.ListSubscriptionsRequest{Project: "projects/" + c.Project()})
	if s, err := it.Next(); !errors.Is(err, iterator.Done) {
		t.Errorf("subscription %v left after deletePubSub (%v)", s.GetName(), err)
	}
	tit := c.TopicAdminClient.ListTopics(ctx, &pubsubpb.ListTopicsRequest{Project: "projects/" + c.Project()})
	if tp, err := tit.Next(); !errors.Is(err, iterator.Done) {
		t.Errorf("topic %v left after deletePubSub (%v)", tp.GetName(), err)
	}
}
