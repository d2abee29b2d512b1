// Package sim runs the pipeline in-process against the real Firestore and Pub/Sub emulators,
// with simulated time, deterministic delivery and fault injection. It is the engine of the
// end-to-end tests and the chaos harness.
//
// An Env is one isolated world: its own emulator project, topics and pull subscriptions, source
// fixture server and clock. The functions are built by the production wiring (app.Components)
// and called with the CloudEvents Eventarc would send; messages they publish go to the real
// Pub/Sub emulator and are pulled back, one synchronous pull at a time, so a test decides exactly
// which delivery runs when — including a duplicate delivered at a chosen step of the first, or a
// crash at one.
package sim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Topic IDs in every Env.
const (
	TopicTicks  = "ticks"
	TopicExpand = "expand"
	TopicChunks = "chunks"
	TopicBulk   = "chunks-bulk"
	TopicDead   = "deadletters"
)

// Token is the fixture server's bearer token.
const Token = "sim-token"

// OrgID is the fixture org's ID, as its Login knows it (Options.Login).
const OrgID = "00Dsim000000001"

// routes maps each trigger topic to its entry point.
var routes = map[string]string{TopicTicks: config.Scheduler, TopicExpand: config.Expander, TopicChunks: config.Importer, TopicBulk: config.ImporterBulk}

// Topics lists the trigger topics in pipeline order.
var Topics = []string{TopicTicks, TopicExpand, TopicChunks, TopicBulk}

// Options tailor an Env. Every field is optional.
type Options struct {
	// Sources, when set, opens each tenant's source (per-tenant connections, connectors.Pool)
	// instead of the Env's one fixture org for every tenant (expander.One: the properties that
	// are not about connections).
	Sources   func(fs *firestore.Client, cfg config.Config) expander.Sources
	Start     time.Time            // simulated start time (default 2026-01-01T00:00:00Z)
	Config    func(*config.Config) // adjust the configuration
	Publisher func(app.Publisher) app.Publisher
	Keys      func(app.Keys) app.Keys
	Committer func(importer.Committer) importer.Committer
	// SchedulerStore, ExpanderStore and ImporterStore wrap the functions' stores (app.Components).
	SchedulerStore func(scheduler.Store) scheduler.Store
	ExpanderStore  func(expander.Store) expander.Store
	ImporterStore  func(importer.Store) importer.Store
	Source         func(expander.Source) expander.Source // wraps the fixture org's client
	// Login, when set, is the fixture org's login host too: the org (OrgID) accepts the sessions
	// it issues besides Token, so that a tenant can be connected to it (oncesync-ops).
	Login    *fixture.Login
	OnStep   func(ctx context.Context, step string) // called at every probe step
	Log      io.Writer                              // function logs (default: discarded unless ONCESYNC_SIM_LOG=1)
	PageSize int                                    // fixture server page size (default 2000)
	APILimit int                                    // fixture server's daily API requests (fixture.Options.APILimit)
	Traces   *telemetry.Traces                      // where the functions' spans go (default: not recorded)
	Metrics  *telemetry.Metrics                     // what the functions count (default: nothing)
	// Observe is called at every probe step before the delivery's Plan acts there (before a
	// duplicate runs or the instance crashes), so it sees the step as the delivery reached it.
	Observe func(ctx context.Context, step string)
	// SourceTimeout is the deadline of one source request (default 10s): a fixture delay longer
	// than it is a timeout.
	SourceTimeout time.Duration
}

// Env is one isolated simulated deployment.
type Env struct {
	T       testing.TB
	Project string
	Clock   *Clock
	Budget  *Clock // the expander's time-budget clock: frozen, moved only by Plan.BudgetAt
	Backend *Backend
	FS      *firestore.Client
	PS      *pubsub.Client
	Pub     *bus.PubSub
	Fixture *fixture.Server
	// SourceURL is the fixture org's URL; its bearer token is Token.
	SourceURL string
	Config    config.Config
	Comps     app.Components
	// Afterlife records publishes and writes made after their delivery returned (each refused).
	Afterlife *Afterlife
	handlers  map[string]app.CloudEventFunc
	onStep    func(ctx context.Context, step string)
	observe   func(ctx context.Context, step string)
	start     time.Time
	fixture   atomic.Pointer[fixture.Server] // what the source server serves; Reset replaces it
	login     *fixture.Login

	mu       sync.Mutex
	attempts map[string]int // message ID → deliveries so far
}

// New builds an Env on the emulators (FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST must be
// set); everything is torn down in t.Cleanup.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	emu.Require(t)
	ctx := context.Background()
	if opts.Start.IsZero() {
		opts.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	e := &Env{T: t, Project: emu.ProjectID(t), Clock: NewClock(opts.Start), Budget: NewClock(opts.Start), Backend: NewBackend(), onStep: opts.OnStep,
		observe: opts.Observe, start: opts.Start, attempts: map[string]int{}}
	// Our own Firestore client, so that the Backend interceptor sees every call.
	fs, err := FirestoreClient(ctx, e.Project, e.Backend)
	if err != nil {
		t.Fatalf("sim: %v", err)
	}
	// emu.Firestore's cleanup deletes the project's documents; close ours first.
	_ = emu.Firestore(t, e.Project)
	t.Cleanup(func() { fs.Close() })
	e.FS = fs
	e.PS = emu.PubSub(t, e.Project)
	e.Pub = bus.New(e.PS)
	t.Cleanup(e.Pub.Close)
	for _, topic := range append(Topics, TopicDead) {
		if err := emu.EnsureTopic(ctx, e.PS, topic); err != nil {
			t.Fatal(err)
		}
		if err := emu.EnsureSubscription(ctx, e.PS, "sim-"+topic, topic, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// Rows that commit late (fixture.Row.VisibleAt) become visible on the simulated clock.
	e.login = opts.Login
	e.Fixture = e.newFixture(opts.PageSize, opts.APILimit)
	e.fixture.Store(e.Fixture)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.fixture.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	cfg := config.Default()
	cfg.Project, cfg.TopicTicks, cfg.TopicExpand, cfg.TopicChunks, cfg.TopicChunksBulk, cfg.TopicDead = e.Project, TopicTicks, TopicExpand, TopicChunks, TopicBulk, TopicDead
	e.SourceURL = srv.URL
	cfg.WindowLag = 0
	if opts.SourceTimeout <= 0 {
		opts.SourceTimeout = 10 * time.Second
	}
	cfg.SourceTimeout = opts.SourceTimeout
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("sim: config: %v", err)
	}
	e.Config = cfg
	src, err := connectors.Direct(cfg, connectors.Endpoint{URL: srv.URL, Token: Token}, connectors.Tuning{MaxAttempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatalf("sim: source client: %v", err)
	}
	e.Afterlife = &Afterlife{}
	e.Backend.afterlife = e.Afterlife
	var pub app.Publisher = lateGuard{next: e.Pub, a: e.Afterlife}
	if opts.Publisher != nil {
		pub = opts.Publisher(pub)
	}
	s := src
	if opts.Source != nil {
		s = opts.Source(src)
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
		if os.Getenv("ONCESYNC_SIM_LOG") == "1" {
			logw = os.Stderr
		}
	}
	comps, err := app.Defaults(cfg, fs, pub, e.Clock.Now, logging.New(logw, slog.LevelDebug))
	if err != nil {
		t.Fatalf("sim: components: %v", err)
	}
	if opts.Keys != nil {
		comps.Keys = opts.Keys(comps.Keys)
	}
	if opts.Committer != nil {
		comps.Committer = opts.Committer(comps.Committer)
	}
	comps.SchedulerStore, comps.ExpanderStore, comps.ImporterStore = opts.SchedulerStore, opts.ExpanderStore, opts.ImporterStore
	comps.Sources = expander.One{Source: s}
	if opts.Sources != nil {
		comps.Sources = opts.Sources(fs, cfg)
	}
	comps.Probe = e.probe
	comps.Traces, comps.Metrics = opts.Traces, opts.Metrics
	comps.Elapsed = e.Budget.Now
	e.Comps = comps
	e.handlers = map[string]app.CloudEventFunc{}
	for _, fn := range config.EntryPoints {
		h, err := comps.Handler(fn)
		if err != nil {
			t.Fatalf("sim: handler %s: %v", fn, err)
		}
		e.handlers[fn] = h
	}
	return e
}

// newFixture is an empty fixture org.
func (e *Env) newFixture(pageSize, apiLimit int) *fixture.Server {
	o := fixture.Options{Token: Token, PageSize: pageSize, APILimit: apiLimit, Visible: e.Clock.Now}
	if e.login != nil {
		o.Sessions, o.OrgID = e.login, OrgID
	}
	return fixture.New(o)
}

// Tenant creates an enabled tenant.
func (e *Env) Tenant(ctx context.Context, id string) {
	e.T.Helper()
	if _, err := e.FS.Collection(model.Tenants).Doc(id).Set(ctx, model.Tenant{Name: id, Enabled: true}); err != nil {
		e.T.Fatalf("sim: tenant %s: %v", id, err)
	}
}

// Setting creates a sync setting; its watermark is where the first Job's window starts.
func (e *Env) Setting(ctx context.Context, s model.SyncSetting) {
	e.T.Helper()
	if _, err := e.FS.Collection(model.SyncSettings).Doc(s.ID).Set(ctx, s); err != nil {
		e.T.Fatalf("sim: setting %s: %v", s.ID, err)
	}
}

// Tick publishes a tick message with an explicit tick ID at the current simulated time.
func (e *Env) Tick(ctx context.Context, tickID string) error {
	m, err := bus.JSON(model.TickMessage{TickID: tickID, At: e.Clock.Now()}, nil)
	if err != nil {
		return err
	}
	_, err = e.Pub.Publish(ctx, TopicTicks, m)
	return err
}

// Publish publishes raw data to a topic (for malformed-input tests).
func (e *Env) Publish(ctx context.Context, topic string, data []byte, attrs map[string]string) error {
	_, err := e.Pub.Publish(ctx, topic, bus.Message{Data: data, Attributes: attrs})
	return err
}

// Delivery is one delivery of one pulled message.
type Delivery struct {
	Topic   string
	AckID   string
	Message *pubsubpb.PubsubMessage
	Attempt int // deliveries of this message ID so far, this one included
	Copy    int // 0 for the delivery Pub/Sub made, 1.. for injected duplicates
}

// Function is the entry point the delivery goes to.
func (d Delivery) Function() string { return routes[d.Topic] }

// Route returns the entry point a trigger topic feeds ("" for none).
func Route(topic string) string { return routes[topic] }

// Unit reports whether d is a unit of a tick: the scheduler's delivery that creates Jobs
// (scheduler.PartOf).
func (d Delivery) Unit() bool {
	var m model.TickMessage
	if d.Topic != TopicTicks || json.Unmarshal(d.Message.GetData(), &m) != nil {
		return false
	}
	part, _ := scheduler.PartOf(m)
	return part == scheduler.PartUnit
}

func (d Delivery) String() string {
	s := fmt.Sprintf("%s#%s(attempt %d)", d.Function(), d.Message.GetMessageId(), d.Attempt)
	if d.Copy > 0 {
		s += fmt.Sprintf("+copy%d", d.Copy)
	}
	return s
}

// Pull pulls up to max messages of a topic's subscription without waiting.
func (e *Env) Pull(ctx context.Context, topic string, max int) ([]Delivery, error) {
	//lint:ignore SA1019 ReturnImmediately is what makes quiescence detectable on the emulator.
	resp, err := e.PS.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
		Subscription: emu.SubscriptionName(e.PS, "sim-"+topic), MaxMessages: int32(max), ReturnImmediately: true,
	})
	if err != nil {
		return nil, fmt.Errorf("sim: pull %s: %w", topic, err)
	}
	out := make([]Delivery, 0, len(resp.ReceivedMessages))
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rm := range resp.ReceivedMessages {
		id := rm.GetMessage().GetMessageId()
		e.attempts[id]++
		out = append(out, Delivery{Topic: topic, AckID: rm.GetAckId(), Message: rm.GetMessage(), Attempt: e.attempts[id]})
	}
	return out, nil
}

// DeliverTopic delivers every message of one topic, and those its deliveries publish there,
// until it is empty: a tick and its parts (units, sweep pages) with nothing else delivered. A
// failed delivery is an error.
func (e *Env) DeliverTopic(ctx context.Context, topic string) error {
	for idle := 0; idle < 2; {
		ds, err := e.Pull(ctx, topic, 50)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			idle++ // twice, as Drain: an empty answer right after a publish is not proof
			continue
		}
		idle = 0
		for _, d := range ds {
			if err, _ := e.Call(ctx, d); err != nil {
				return fmt.Errorf("sim: %s: %w", topic, err)
			}
			if err := e.Settle(ctx, d, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// Settle acks (ok) or nacks (makes it available again at once) a delivery.
func (e *Env) Settle(ctx context.Context, d Delivery, ok bool) error {
	sub := emu.SubscriptionName(e.PS, "sim-"+d.Topic)
	var err error
	if ok {
		err = e.PS.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: []string{d.AckID}})
	} else {
		err = e.PS.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: []string{d.AckID}, AckDeadlineSeconds: 0})
	}
	if err != nil {
		return fmt.Errorf("sim: settle %s: %w", d, err)
	}
	return nil
}

// Event returns the binary-mode CloudEvent Eventarc would send for d.
func (e *Env) Event(d Delivery) event.Event {
	ev := event.New()
	ev.SetID(d.Message.GetMessageId())
	ev.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	ev.SetSource("//pubsub.googleapis.com/projects/" + e.Project + "/topics/" + d.Topic)
	ev.SetTime(d.Message.GetPublishTime().AsTime())
	body := map[string]any{
		"message": map[string]any{
			"data":        base64.StdEncoding.EncodeToString(d.Message.GetData()),
			"attributes":  d.Message.GetAttributes(),
			"messageId":   d.Message.GetMessageId(),
			"publishTime": d.Message.GetPublishTime().AsTime().Format(time.RFC3339Nano),
		},
		"subscription": "projects/" + e.Project + "/subscriptions/sim-" + d.Topic,
	}
	b, _ := json.Marshal(body)
	_ = ev.SetData("application/json", b)
	return ev
}

// Crash is the panic value that simulates an instance killed at a step: nothing after it runs,
// and the leases it held stay until they expire.
type Crash struct{ Step string }

func (c Crash) String() string { return "simulated crash at " + c.Step }

type deliveryKey struct{}

// DeliveryFrom returns the delivery a handler's context belongs to.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

func (e *Env) probe(ctx context.Context, step string) {
	if e.observe != nil {
		e.observe(ctx, step)
	}
	e.stepHook(ctx, step)
	if e.onStep != nil {
		e.onStep(ctx, step)
	}
}

// Call delivers d to its function, as Eventarc would, and returns the function's result. A
// simulated crash is recovered and reported as crashed.
func (e *Env) Call(ctx context.Context, d Delivery) (err error, crashed bool) {
	h, ok := e.handlers[d.Function()]
	if !ok {
		return fmt.Errorf("sim: no function for topic %s", d.Topic), false
	}
	ctx = context.WithValue(ctx, deliveryKey{}, d)
	// The delivery ends when the handler returns or crashes: its context is canceled then, and
	// what it still tries to publish or write is refused and recorded (see Afterlife).
	ctx, cancel := context.WithCancel(ctx)
	l := &life{d: d, done: make(chan struct{})}
	ctx = context.WithValue(ctx, lifeKey{}, l)
	defer func() {
		if r := recover(); r != nil {
			c, isCrash := r.(Crash)
			if !isCrash {
				panic(r)
			}
			err, crashed = errors.New(c.String()), true
		}
		if g := e.Backend.currentGate(); g != nil {
			g.Done(ctx)
		}
		l.ended.Store(true)
		close(l.done)
		cancel()
	}()
	return h(ctx, e.Event(d)), false
}

// JobsByTarget returns every Job keyed by its target kind (Envs with one setting per target).
func (e *Env) JobsByTarget(ctx context.Context) (map[string]model.Job, error) {
	js, err := e.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]model.Job{}
	for _, j := range js {
		out[j.Target] = j
	}
	return out, nil
}

// Jobs returns every Job.
func (e *Env) Jobs(ctx context.Context) ([]model.Job, error) {
	docs, err := e.FS.Collection(model.Jobs).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("sim: jobs: %w", err)
	}
	out := make([]model.Job, 0, len(docs))
	for _, d := range docs {
		var j model.Job
		if err := d.DataTo(&j); err != nil {
			return nil, err
		}
		j.ID = d.Ref.ID
		out = append(out, j)
	}
	return out, nil
}

// CallEvent sends an arbitrary CloudEvent to entry point fn, as a malformed or hand-made
// delivery would arrive.
func (e *Env) CallEvent(ctx context.Context, fn string, ev event.Event) error {
	h, ok := e.handlers[fn]
	if !ok {
		return fmt.Errorf("sim: no entry point %q", fn)
	}
	return h(ctx, ev)
}

// DeadLetters returns every dead letter.
func (e *Env) DeadLetters(ctx context.Context) ([]model.DeadLetter, error) {
	docs, err := e.FS.Collection(model.DeadLetters).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("sim: dead letters: %w", err)
	}
	out := make([]model.DeadLetter, 0, len(docs))
	for _, d := range docs {
		var dl model.DeadLetter
		if err := d.DataTo(&dl); err != nil {
			return nil, err
		}
		dl.ID = d.Ref.ID
		out = append(out, dl)
	}
	return out, nil
}
