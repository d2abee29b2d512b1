// Package eventarc is a local Eventarc with fault injection: it streaming-pulls subscriptions on the
// Pub/Sub emulator and POSTs each message to a function's URL as the binary-mode CloudEvent that
// Eventarc sends for a Pub/Sub trigger.
//
// # The request
//
//	POST <Route.URL>
//	Content-Type: application/json
//	ce-specversion: 1.0
//	ce-id: <message ID>
//	ce-type: google.cloud.pubsub.topic.v1.messagePublished
//	ce-source: //pubsub.googleapis.com/projects/<project>/topics/<topic>
//	ce-time: <publish time, RFC 3339>
//	traceparent: 00-<trace ID from the message ID>-<span ID per POST>-01
//	ce-traceparent: the same (CloudEvents distributed-tracing extension)
//
//	{"message":{"data":"<base64>","attributes":{…},"messageId":"…","publishTime":"…"},
//	 "subscription":"projects/<project>/subscriptions/<subscription>"}
//
// # Delivery semantics
//
// Any 2xx answer acks the message. Anything else — another status, a transport error, no answer
// within Config.RequestTimeout — is a failed delivery: the message is held for a backoff of
// MinBackoff·2^(attempt−1), capped at MaxBackoff, then nacked, and Pub/Sub redelivers it. Attempts
// are counted by this package per subscription and message ID, starting at 1. With MaxAttempts and
// DeadLetterTopic set, the delivery that fails for the MaxAttempts-th time publishes the message to
// the dead-letter topic (with the attributes named Attr*) and acks it.
//
// Note that 202 Accepted is a success here, as for real Pub/Sub push and Eventarc, while the Pub/Sub
// emulator's own push subscriptions count 202 as a failure and redeliver. That, its missing ce-
// headers and its limit of two pushes in flight per subscription are why this package pulls and
// pushes itself instead of using the emulator's push.
//
// At most Config.Concurrency POSTs per route are in flight; injected copies count too. The Receive
// callback, and so the Pub/Sub client's automatic ack-deadline extension, lasts until the message's
// first POST has completed and it has been acked or nacked.
//
// # Fault injection
//
// An [Injector] plans every delivery of a message from Pub/Sub: delay it, POST extra copies (with
// the same ce-id, delivered by eventarc itself, not Pub/Sub), or lose the ack of a successful POST
// so that Pub/Sub redelivers. Ack or nack always follows the first POST. Deterministic injectors —
// functions of the [Message] and its attempt number, or drawing from an explicit seed — make a
// schedule replayable.
//
// # Quiescence
//
// [Eventarc.Idle] reports that no delivery is in progress and none is scheduled; together with no
// undelivered messages left in Pub/Sub it means the system has settled. [Eventarc.Stats] counts
// what happened per topic.
package eventarc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/oncesync/oncesync/harness/emu"
)

// CloudEvent attributes of a Pub/Sub message-published event.
const (
	EventType   = "google.cloud.pubsub.topic.v1.messagePublished"
	SpecVersion = "1.0"
)

// Attributes added to a message published to Config.DeadLetterTopic, besides the original ones.
// The CloudPubSub* names are those real Pub/Sub dead-lettering uses.
const (
	AttrDeliveryCount       = "CloudPubSubDeadLetterSourceDeliveryCount"
	AttrSourceSubscription  = "CloudPubSubDeadLetterSourceSubscription"
	AttrSourceProject       = "CloudPubSubDeadLetterSourceSubscriptionProject"
	AttrSourcePublishTime   = "CloudPubSubDeadLetterSourceTopicPublishTime"
	AttrSourceTopic         = "EventarcSourceTopic"
	AttrSourceMessageID     = "EventarcSourceMessageId"
	AttrLastDeliveryFailure = "EventarcLastDeliveryFailure"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrency    = 4
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultAckDeadline    = 60 * time.Second
	DefaultRequestTimeout = 10 * time.Minute
)

// ErrConfig is wrapped by the errors New returns for an invalid Config.
var ErrConfig = errors.New("eventarc: invalid config")

// Route delivers one subscription's messages to one URL.
type Route struct {
	// Topic is the topic ID (in Config.Project). Created if absent.
	Topic string
	// Subscription is the subscription ID. Created as a pull subscription of Topic, with
	// Config.AckDeadline, if absent.
	Subscription string
	// URL receives the POSTs.
	URL string
}

// Config configures an Eventarc.
type Config struct {
	// Client is the Pub/Sub client (of the emulator). Required.
	Client *pubsub.Client
	// Project names the topics in ce-source and the subscriptions in the body. Default: Client.Project().
	Project string
	// Routes to deliver. At least one; subscriptions must be distinct.
	Routes []Route
	// Concurrency is the maximum number of POSTs in flight per route, copies included. Default 4.
	Concurrency int
	// MinBackoff and MaxBackoff bound the hold before a failed delivery is nacked. Default 100ms, 10s.
	MinBackoff, MaxBackoff time.Duration
	// AckDeadline of subscriptions created by Run, 10s to 600s. Default 60s.
	AckDeadline time.Duration
	// MaxAttempts and DeadLetterTopic (a topic ID, created if absent): when both are set, a message
	// whose MaxAttempts-th delivery fails is published to DeadLetterTopic and acked.
	MaxAttempts     int
	DeadLetterTopic string
	// HTTPClient sends the POSTs. Default: a client with keep-alive connections for Concurrency.
	HTTPClient *http.Client
	// RequestTimeout bounds each POST. Default 10 minutes.
	RequestTimeout time.Duration
	// Faults plans every delivery. Nil: no faults.
	Faults Injector
	// Logger receives a debug record per POST and warnings for failures. Default: discard.
	Logger *slog.Logger
}

// Validate checks the configuration, ignoring zero fields that have defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("Client is nil"))
	}
	if len(c.Routes) == 0 {
		errs = append(errs, errors.New("no Routes"))
	}
	subs := map[string]bool{}
	for i, r := range c.Routes {
		if r.Topic == "" || r.Subscription == "" || r.URL == "" {
			errs = append(errs, fmt.Errorf("Routes[%d]: Topic, Subscription and URL are required", i))
		}
		if subs[r.Subscription] {
			errs = append(errs, fmt.Errorf("Routes[%d]: subscription %q used twice", i, r.Subscription))
		}
		subs[r.Subscription] = true
	}
	if c.Concurrency < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.RequestTimeout < 0 || c.MaxAttempts < 0 {
		errs = append(errs, errors.New("negative Concurrency, MinBackoff, MaxBackoff, RequestTimeout or MaxAttempts"))
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("MinBackoff %v > MaxBackoff %v", c.MinBackoff, c.MaxBackoff))
	}
	if c.AckDeadline != 0 && (c.AckDeadline < 10*time.Second || c.AckDeadline > 600*time.Second) {
		errs = append(errs, fmt.Errorf("AckDeadline %v not in [10s, 600s]", c.AckDeadline))
	}
	if (c.MaxAttempts > 0) != (c.DeadLetterTopic != "") {
		errs = append(errs, errors.New("MaxAttempts and DeadLetterTopic must be set together"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Message is one delivery of a Pub/Sub message, as an Injector sees it.
type Message struct {
	ID           string
	Topic        string // topic ID
	Subscription string // subscription ID
	Data         []byte
	Attributes   map[string]string
	PublishTime  time.Time
	// Attempt is 1 for the first delivery of the message ID on its subscription, 2 for the first
	// redelivery, and so on. Copies share the attempt of the delivery they copy.
	Attempt int
}

// Injector decides what happens to each delivery. It is called once per delivery from Pub/Sub,
// concurrently. Deterministic implementations make schedules replayable.
type Injector interface {
	Plan(m Message) Plan
}

// InjectorFunc adapts a function to an Injector.
type InjectorFunc func(m Message) Plan

// Plan calls f(m).
func (f InjectorFunc) Plan(m Message) Plan { return f(m) }

// Plan is what happens to one delivery. The zero Plan delivers normally.
type Plan struct {
	// Delay holds the first POST this long.
	Delay time.Duration
	// Copies are extra POSTs of the same message (same ce-id), each started this long after the
	// first POST starts; 0 means concurrently with it. Their answers change neither ack nor nack.
	Copies []time.Duration
	// CopyAfterDone adds one extra POST, started when the first POST has completed.
	CopyAfterDone bool
	// LoseAck makes a successful first POST count as failed: the message is nacked (after the
	// backoff) so that Pub/Sub redelivers it, and it counts towards MaxAttempts.
	LoseAck bool
}

// Duplicate returns an Injector that POSTs every message a second time, after the given time from
// the start of its first POST. Only the first delivery of a message is copied, not redeliveries.
func Duplicate(after time.Duration) Injector {
	return InjectorFunc(func(m Message) Plan {
		if m.Attempt != 1 {
			return Plan{}
		}
		return Plan{Copies: []time.Duration{after}}
	})
}

// TopicStats counts what happened to one topic's messages.
type TopicStats struct {
	Received     int64 // deliveries from Pub/Sub, redeliveries included
	Messages     int64 // distinct messages (first deliveries)
	Posts        int64 // POSTs started, copies included
	Succeeded    int64 // POSTs answered 2xx
	Failed       int64 // POSTs answered otherwise, or with a transport error or timeout
	Acks         int64 // dead-lettered messages included
	Nacks        int64
	LostAcks     int64 // successful deliveries nacked by Plan.LoseAck
	Copies       int64 // extra POSTs injected
	Delayed      int64 // deliveries held by Plan.Delay
	DeadLettered int64
	InFlight     int64 // POSTs in flight now
}

// Stats counts per topic ID.
type Stats struct {
	Topics map[string]TopicStats
}

// Total sums the counts of all topics.
func (s Stats) Total() TopicStats {
	var t TopicStats
	for _, v := range s.Topics {
		t.Received += v.Received
		t.Messages += v.Messages
		t.Posts += v.Posts
		t.Succeeded += v.Succeeded
		t.Failed += v.Failed
		t.Acks += v.Acks
		t.Nacks += v.Nacks
		t.LostAcks += v.LostAcks
		t.Copies += v.Copies
		t.Delayed += v.Delayed
		t.DeadLettered += v.DeadLettered
		t.InFlight += v.InFlight
	}
	return t
}

type counters struct {
	received, messages, posts, succeeded, failed, acks, nacks atomic.Int64
	lostAcks, copies, delayed, deadLettered, inFlight         atomic.Int64
}

func (c *counters) snapshot() TopicStats {
	return TopicStats{
		Received: c.received.Load(), Messages: c.messages.Load(), Posts: c.posts.Load(),
		Succeeded: c.succeeded.Load(), Failed: c.failed.Load(), Acks: c.acks.Load(), Nacks: c.nacks.Load(),
		LostAcks: c.lostAcks.Load(), Copies: c.copies.Load(), Delayed: c.delayed.Load(),
		DeadLettered: c.deadLettered.Load(), InFlight: c.inFlight.Load(),
	}
}

// Eventarc delivers Pub/Sub messages to HTTP endpoints. Create it with New and start it with Run.
type Eventarc struct {
	cfg    Config
	log    *slog.Logger
	http   *http.Client
	routes []*route
	stats  map[string]*counters // by topic ID; read-only after New

	running atomic.Bool
	busy    atomic.Int64 // deliveries in progress plus copies scheduled or in flight

	mu       sync.Mutex
	attempts map[string]int // by subscription ID + "\x00" + message ID
}

type route struct {
	Route
	sem   chan struct{} // POST slots
	stats *counters
}

// New checks cfg, fills in defaults and returns an Eventarc that Run starts.
func New(cfg Config) (*Eventarc, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Project == "" {
		cfg.Project = cfg.Client.Project()
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
		if cfg.MaxBackoff > 0 {
			cfg.MinBackoff = min(cfg.MinBackoff, cfg.MaxBackoff)
		}
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.AckDeadline == 0 {
		cfg.AckDeadline = DefaultAckDeadline
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	e := &Eventarc{cfg: cfg, log: cfg.Logger, http: cfg.HTTPClient, stats: map[string]*counters{}, attempts: map[string]int{}}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 2 * cfg.Concurrency * len(cfg.Routes)
		e.http = &http.Client{Transport: t}
	}
	for _, r := range cfg.Routes {
		st := e.stats[r.Topic]
		if st == nil {
			st = &counters{}
			e.stats[r.Topic] = st
		}
		e.routes = append(e.routes, &route{Route: r, sem: make(chan struct{}, cfg.Concurrency), stats: st})
	}
	return e, nil
}

// Run creates the topics and subscriptions that are missing and delivers messages until ctx is done.
// On the way out it aborts POSTs in flight, nacks their messages and waits for its goroutines. It
// returns nil when ctx ended it, or the first error that stopped a subscription (the others are
// stopped too). An Eventarc runs once at a time.
func (e *Eventarc) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("eventarc: already running")
	}
	defer e.running.Store(false)

	c := e.cfg.Client
	for _, r := range e.routes {
		if err := emu.EnsureTopic(ctx, c, r.Topic); err != nil {
			return fmt.Errorf("eventarc: %w", err)
		}
		if err := emu.EnsureSubscription(ctx, c, r.Subscription, r.Topic, e.cfg.AckDeadline); err != nil {
			return fmt.Errorf("eventarc: %w", err)
		}
	}
	var dlq *pubsub.Publisher
	if e.cfg.DeadLetterTopic != "" {
		if err := emu.EnsureTopic(ctx, c, e.cfg.DeadLetterTopic); err != nil {
			return fmt.Errorf("eventarc: %w", err)
		}
		dlq = c.Publisher(e.cfg.DeadLetterTopic)
		defer dlq.Stop()
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var copies sync.WaitGroup // injected copies outlive the callback that scheduled them
	defer copies.Wait()
	errs := make([]error, len(e.routes))
	var wg sync.WaitGroup
	for i, r := range e.routes {
		sub := c.Subscriber(r.Subscription)
		sub.ReceiveSettings.MaxOutstandingMessages = max(64, 16*e.cfg.Concurrency)
		// One streaming pull from the emulator tops out at ~1,900 msg/s; four reach ~7,700.
		sub.ReceiveSettings.NumGoroutines = 4
		wg.Go(func() {
			err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
				e.deliver(ctx, r, m, dlq, &copies)
			})
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("eventarc: receive %s: %w", r.Subscription, err)
				errs[i] = err
				cancel(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deliver handles one delivery from Pub/Sub; it returns once the message is acked or nacked.
func (e *Eventarc) deliver(ctx context.Context, r *route, pm *pubsub.Message, dlq *pubsub.Publisher, copies *sync.WaitGroup) {
	e.busy.Add(1)
	defer e.busy.Add(-1)
	st := r.stats
	st.received.Add(1)

	e.mu.Lock()
	key := r.Subscription + "\x00" + pm.ID
	e.attempts[key]++
	attempt := e.attempts[key]
	e.mu.Unlock()
	if attempt == 1 {
		st.messages.Add(1)
	}
	m := Message{
		ID: pm.ID, Topic: r.Topic, Subscription: r.Subscription, Data: pm.Data,
		Attributes: maps.Clone(pm.Attributes), PublishTime: pm.PublishTime, Attempt: attempt,
	}
	var plan Plan
	if e.cfg.Faults != nil {
		plan = e.cfg.Faults.Plan(m)
	}
	log := e.log.With("topic", r.Topic, "subscription", r.Subscription, "message_id", m.ID, "attempt", attempt)
	nack := func() {
		st.nacks.Add(1)
		pm.Nack()
	}

	if plan.Delay > 0 {
		st.delayed.Add(1)
		if !sleep(ctx, plan.Delay) {
			nack()
			return
		}
	}
	body, err := e.body(r, m)
	if err != nil { // cannot happen: the body is built from strings and bytes
		log.Error("eventarc: encode body", "error", err)
		nack()
		return
	}
	fail := e.post(ctx, r, m, body, 0, log, func() {
		start := time.Now()
		for i, after := range plan.Copies {
			e.schedule(ctx, r, m, body, copies, start.Add(max(after, 0)), i+1, log)
		}
	})
	if plan.CopyAfterDone {
		e.schedule(ctx, r, m, body, copies, time.Time{}, len(plan.Copies)+1, log)
	}
	if fail != "" && ctx.Err() != nil { // shutting down: let Pub/Sub redeliver to the next run
		nack()
		return
	}
	if fail == "" && plan.LoseAck {
		st.lostAcks.Add(1)
		fail = "ack lost (injected)"
	}
	if fail == "" {
		st.acks.Add(1)
		pm.Ack()
		return
	}
	if dlq != nil && attempt >= e.cfg.MaxAttempts {
		if err := e.deadLetter(ctx, dlq, r, m, fail); err != nil {
			log.Warn("eventarc: dead-letter failed; nacking", "error", err)
			nack()
			return
		}
		log.Info("eventarc: dead-lettered", "dead_letter_topic", e.cfg.DeadLetterTopic, "last_failure", fail)
		st.deadLettered.Add(1)
		st.acks.Add(1)
		pm.Ack()
		return
	}
	sleep(ctx, e.backoff(attempt))
	nack()
}

// schedule starts copy number n of a delivery's POST at time at (zero: now). It counts as busy
// from now until its POST has completed.
func (e *Eventarc) schedule(ctx context.Context, r *route, m Message, body []byte, wg *sync.WaitGroup, at time.Time, n int, log *slog.Logger) {
	r.stats.copies.Add(1)
	e.busy.Add(1)
	wg.Go(func() {
		defer e.busy.Add(-1)
		if !at.IsZero() && !sleep(ctx, time.Until(at)) {
			return
		}
		e.post(ctx, r, m, body, n, log.With("copy", n), nil)
	})
}

// backoff is the hold after the attempt-th failed delivery: MinBackoff·2^(attempt−1), capped.
func (e *Eventarc) backoff(attempt int) time.Duration {
	d := e.cfg.MinBackoff
	for i := 1; i < attempt && d < e.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, e.cfg.MaxBackoff)
}

// post sends one POST (copy 0 is the delivery itself) and returns "" on 2xx, else the reason it
// failed. started, if not nil, is called when the POST has its slot and is about to be sent.
func (e *Eventarc) post(ctx context.Context, r *route, m Message, body []byte, copy int, log *slog.Logger, started func()) (failure string) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return "shutting down"
	}
	defer func() { <-r.sem }()
	if started != nil {
		started()
	}
	st := r.stats
	st.posts.Add(1)
	st.inFlight.Add(1)
	defer st.inFlight.Add(-1)

	rctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		st.failed.Add(1)
		return err.Error()
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", SpecVersion)
	h.Set("ce-id", m.ID)
	h.Set("ce-type", EventType)
	h.Set("ce-source", "//pubsub.googleapis.com/projects/"+e.cfg.Project+"/topics/"+r.Topic)
	h.Set("ce-time", m.PublishTime.UTC().Format(time.RFC3339Nano))
	tp := traceparent(r.Subscription, m.ID, m.Attempt, copy)
	h.Set("traceparent", tp)
	// The distributed-tracing extension, which is how a CloudEvent function (which never sees the
	// HTTP headers) can read the trace: Event.Extensions()["traceparent"].
	h.Set("ce-traceparent", tp)
	t0 := time.Now()
	resp, err := e.http.Do(req)
	if err != nil {
		if ctx.Err() != nil { // aborted by shutdown, not the endpoint's failure
			return "shutting down"
		}
		st.failed.Add(1)
		log.Warn("eventarc: POST failed", "url", r.URL, "error", err, "elapsed", time.Since(t0))
		return err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		st.failed.Add(1)
		log.Warn("eventarc: POST answered with failure", "url", r.URL, "status", resp.StatusCode, "elapsed", time.Since(t0))
		return "HTTP " + resp.Status
	}
	st.succeeded.Add(1)
	log.Debug("eventarc: POST ok", "url", r.URL, "status", resp.StatusCode, "elapsed", time.Since(t0))
	return ""
}

// pushBody is the JSON body of an Eventarc Pub/Sub event (a Pub/Sub push body).
type pushBody struct {
	Message struct {
		Data        []byte            `json:"data"`
		Attributes  map[string]string `json:"attributes,omitempty"`
		MessageID   string            `json:"messageId"`
		PublishTime string            `json:"publishTime"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

func (e *Eventarc) body(r *route, m Message) ([]byte, error) {
	var b pushBody
	b.Message.Data = m.Data
	if b.Message.Data == nil {
		b.Message.Data = []byte{}
	}
	b.Message.Attributes = m.Attributes
	b.Message.MessageID = m.ID
	b.Message.PublishTime = m.PublishTime.UTC().Format(time.RFC3339Nano)
	b.Subscription = "projects/" + e.cfg.Project + "/subscriptions/" + r.Subscription
	return json.Marshal(b)
}

func (e *Eventarc) deadLetter(ctx context.Context, dlq *pubsub.Publisher, r *route, m Message, failure string) error {
	attrs := maps.Clone(m.Attributes)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs[AttrDeliveryCount] = strconv.Itoa(m.Attempt)
	attrs[AttrSourceSubscription] = r.Subscription
	attrs[AttrSourceProject] = e.cfg.Project
	attrs[AttrSourcePublishTime] = m.PublishTime.UTC().Format(time.RFC3339Nano)
	attrs[AttrSourceTopic] = r.Topic
	attrs[AttrSourceMessageID] = m.ID
	attrs[AttrLastDeliveryFailure] = failure
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := dlq.Publish(pctx, &pubsub.Message{Data: m.Data, Attributes: attrs}).Get(pctx)
	if err != nil {
		return fmt.Errorf("eventarc: publish to %s: %w", e.cfg.DeadLetterTopic, err)
	}
	return nil
}

// traceparent returns a W3C traceparent whose trace ID is derived from the message and whose
// span ID is derived from the POST (attempt and copy), so that replays produce the same headers.
func traceparent(sub, id string, attempt, copy int) string {
	tr := sha256.Sum256([]byte("trace\x00" + sub + "\x00" + id))
	var n [16]byte
	binary.BigEndian.PutUint64(n[0:], uint64(attempt))
	binary.BigEndian.PutUint64(n[8:], uint64(copy))
	sp := sha256.Sum256(append(tr[:], n[:]...))
	tr[0] |= 1 // all-zero IDs are invalid
	sp[0] |= 1
	return "00-" + hex.EncodeToString(tr[:16]) + "-" + hex.EncodeToString(sp[:8]) + "-01"
}

// sleep waits d or until ctx is done; it reports whether the full time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Stats returns the counts so far.
func (e *Eventarc) Stats() Stats {
	s := Stats{Topics: make(map[string]TopicStats, len(e.stats))}
	for t, c := range e.stats {
		s.Topics[t] = c.snapshot()
	}
	return s
}

// Idle reports that nothing is in flight and nothing is scheduled: no delivery from Pub/Sub is
// being delayed, POSTed or backed off, and no injected copy is pending or in flight.
func (e *Eventarc) Idle() bool {
	return e.busy.Load() == 0
}
