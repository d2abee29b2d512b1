package eventarc_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	gocmp "github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/eventarc"
)

// request is one POST as the test server received it.
type request struct {
	Start, End time.Time
	Header     http.Header
	Body       []byte
	Status     int
}

// server is a test endpoint that records every request and answers with respond(n, r), where n
// counts requests from 1 and body is the request body read.
type server struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int, r *http.Request, body []byte) int
	// inFlight and maxInFlight measure concurrency.
	inFlight, maxInFlight int
}

func newServer(t *testing.T, respond func(n int, r *http.Request, body []byte) int) *server {
	t.Helper()
	s := &server{respond: respond}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		n := len(s.reqs) + 1
		s.reqs = append(s.reqs, request{}) // reserve slot n-1
		s.inFlight++
		s.maxInFlight = max(s.maxInFlight, s.inFlight)
		s.mu.Unlock()
		code := http.StatusOK
		if s.respond != nil {
			code = s.respond(n, r, body)
		}
		w.WriteHeader(code)
		s.mu.Lock()
		s.inFlight--
		s.reqs[n-1] = request{Start: start, End: time.Now(), Header: r.Header.Clone(), Body: body, Status: code}
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

// fixture is an Eventarc running on the emulator for one test.
type fixture struct {
	client *pubsub.Client
	ea     *eventarc.Eventarc
	pub    *pubsub.Publisher
}

const topic, subscription = "orders", "orders-eventarc"

// start runs an Eventarc with one route (topic → subscription → url) until the test ends.
func start(t *testing.T, url string, configure func(*eventarc.Config)) *fixture {
	t.Helper()
	emu.Require(t)
	ctx := t.Context()
	c := emu.PubSub(t, emu.ProjectID(t))
	cfg := eventarc.Config{
		Client:     c,
		Routes:     []eventarc.Route{{Topic: topic, Subscription: subscription, URL: url}},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	if configure != nil {
		configure(&cfg)
	}
	ea, err := eventarc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Create the subscription before publishing, so that no message is published before it exists.
	if err := emu.EnsureTopic(ctx, c, topic); err != nil {
		t.Fatal(err)
	}
	if err := emu.EnsureSubscription(ctx, c, subscription, topic, cmp.Or(cfg.AckDeadline, eventarc.DefaultAckDeadline)); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ea.Run(rctx) }()
	t.Cleanup(func() { // runs before emu.PubSub's clean-up deletes the subscription
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return 30s after cancel")
		}
	})
	pub := c.Publisher(topic)
	t.Cleanup(pub.Stop)
	return &fixture{client: c, ea: ea, pub: pub}
}

// publish publishes one message and returns its ID and when the publish began: the subscriber
// may receive the message before the publisher's call returns (under load it often does), so only
// the start of the call is a time nothing about the message can precede.
func (f *fixture) publish(t *testing.T, data string, attrs map[string]string) (id string, publishing time.Time) {
	t.Helper()
	publishing = time.Now()
	id, err := f.pub.Publish(t.Context(), &pubsub.Message{Data: []byte(data), Attributes: attrs}).Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return id, publishing
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits until acks messages were acked and the Eventarc is idle, then a little longer to
// catch unexpected redeliveries, and returns the stats of the topic.
func (f *fixture) settle(t *testing.T, acks int64) eventarc.TopicStats {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d acks", acks), func() bool {
		return f.ea.Stats().Topics[topic].Acks >= acks && f.ea.Idle()
	})
	time.Sleep(500 * time.Millisecond)
	if !f.ea.Idle() {
		t.Errorf("not idle after settling: %+v", f.ea.Stats().Topics[topic])
	}
	return f.ea.Stats().Topics[topic]
}

var traceparentShape = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)

func TestRequestIsAnEventarcCloudEvent(t *testing.T) {
	type decoded struct {
		id, typ, source, specVersion, contentType string
		time                                      time.Time
		data                                      []byte
		err                                       error
	}
	events := make(chan decoded, 10)
	// Decode with the CloudEvents SDK's HTTP binding, as functions-framework-go does.
	srv := newServer(t, func(_ int, r *http.Request, body []byte) int {
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		ev, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r2))
		d := decoded{err: err}
		if err == nil {
			d = decoded{ev.ID(), ev.Type(), ev.Source(), ev.SpecVersion(), ev.DataContentType(), ev.Time(), ev.Data(), ev.Validate()}
		}
		events <- d
		return http.StatusOK
	})
	f := start(t, srv.URL, nil)

	attrs := map[string]string{"job": "j-1", "kind": "chunk"}
	id, _ := f.publish(t, `{"hello":"world"}`, attrs)
	st := f.settle(t, 1)

	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	project := f.client.Project()
	for k, want := range map[string]string{
		"Content-Type":   "application/json",
		"Ce-Specversion": "1.0",
		"Ce-Id":          id,
		"Ce-Type":        "google.cloud.pubsub.topic.v1.messagePublished",
		"Ce-Source":      "//pubsub.googleapis.com/projects/" + project + "/topics/" + topic,
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if tp := r.Header.Get("Traceparent"); !traceparentShape.MatchString(tp) {
		t.Errorf("traceparent = %q, want W3C shape", tp)
	}

	var body struct {
		Message struct {
			Data        string            `json:"data"`
			Attributes  map[string]string `json:"attributes"`
			MessageID   string            `json:"messageId"`
			PublishTime string            `json:"publishTime"`
		} `json:"message"`
		Subscription string `json:"subscription"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	publishTime, err := time.Parse(time.RFC3339Nano, body.Message.PublishTime)
	if err != nil {
		t.Errorf("publishTime %q: %v", body.Message.PublishTime, err)
	}
	if ceTime := r.Header.Get("Ce-Time"); ceTime != body.Message.PublishTime {
		t.Errorf("ce-time = %q, want the publish time %q", ceTime, body.Message.PublishTime)
	}
	if d := time.Since(publishTime); d < 0 || d > time.Minute {
		t.Errorf("publish time %v is %v from now", publishTime, d)
	}
	data, _ := base64.StdEncoding.DecodeString(body.Message.Data)
	if string(data) != `{"hello":"world"}` {
		t.Errorf("data = %q (%s), want the published data", body.Message.Data, data)
	}
	if diff := gocmp.Diff(attrs, body.Message.Attributes); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	if body.Message.MessageID != id || body.Subscription != "projects/"+project+"/subscriptions/"+subscription {
		t.Errorf("messageId, subscription = %q, %q; want %q, projects/%s/subscriptions/%s", body.Message.MessageID, body.Subscription, id, project, subscription)
	}

	ev := <-events
	if ev.err != nil {
		t.Fatalf("CloudEvents SDK rejects the request: %v", ev.err)
	}
	if ev.id != id || ev.typ != eventarc.EventType || ev.source != r.Header.Get("Ce-Source") || ev.specVersion != "1.0" ||
		ev.contentType != "application/json" || !ev.time.Equal(publishTime) || string(ev.data) != string(r.Body) {
		t.Errorf("CloudEvents SDK decodes %+v", ev)
	}

	want := eventarc.TopicStats{Received: 1, Messages: 1, Posts: 1, Succeeded: 1, Acks: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestAcksEvery2xx(t *testing.T) {
	// 202 is a success for real Pub/Sub push and Eventarc, and here; only the emulator's own push
	// treats it as a failure.
	for _, code := range []int{http.StatusOK, http.StatusAccepted, http.StatusNoContent} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv := newServer(t, func(int, *http.Request, []byte) int { return code })
			f := start(t, srv.URL, nil)
			f.publish(t, "x", nil)
			st := f.settle(t, 1)
			want := eventarc.TopicStats{Received: 1, Messages: 1, Posts: 1, Succeeded: 1, Acks: 1}
			if diff := gocmp.Diff(want, st); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestFailuresAreRedelivered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func(n int, r *http.Request, body []byte) int
	}{
		{"500", func(int, *http.Request, []byte) int { return http.StatusInternalServerError }},
		{"429", func(int, *http.Request, []byte) int { return http.StatusTooManyRequests }},
		{"timeout", func(_ int, r *http.Request, _ []byte) int {
			select { // longer than RequestTimeout
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
			return http.StatusOK
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(n int, r *http.Request, body []byte) int {
				if n <= 2 {
					return tc.respond(n, r, body)
				}
				return http.StatusOK
			})
			f := start(t, srv.URL, func(c *eventarc.Config) {
				c.MinBackoff, c.MaxBackoff = 100*time.Millisecond, time.Second
				c.RequestTimeout = 300 * time.Millisecond
			})
			id, _ := f.publish(t, "x", nil)
			st := f.settle(t, 1)

			want := eventarc.TopicStats{Received: 3, Messages: 1, Posts: 3, Succeeded: 1, Failed: 2, Acks: 1, Nacks: 2}
			if diff := gocmp.Diff(want, st); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			reqs := srv.requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3", len(reqs))
			}
			spans := map[string]bool{}
			for i, r := range reqs {
				if got := r.Header.Get("Ce-Id"); got != id {
					t.Errorf("request %d: ce-id %q, want %q", i, got, id)
				}
				spans[r.Header.Get("Traceparent")] = true
			}
			if len(spans) != 3 {
				t.Errorf("traceparents %v, want one span per attempt", spans)
			}
			// Backoff: 100ms after the first failure, 200ms after the second. Measured here, a timeout
			// ends a little after eventarc gave up on it.
			const slack = 10 * time.Millisecond
			for i, min := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
				if gap := reqs[i+1].Start.Sub(reqs[i].End); gap < min-slack {
					t.Errorf("gap between attempts %d and %d is %v, want ≥ %v", i+1, i+2, gap, min)
				}
			}
		})
	}
}

func TestDuplicate(t *testing.T) {
	srv := newServer(t, nil)
	f := start(t, srv.URL, func(c *eventarc.Config) { c.Faults = eventarc.Duplicate(2 * time.Second) })
	id, _ := f.publish(t, "x", nil)
	waitFor(t, 10*time.Second, "first POST", func() bool { return len(srv.requests()) >= 1 })
	waitFor(t, 5*time.Second, "ack", func() bool { return f.ea.Stats().Topics[topic].Acks == 1 })
	if f.ea.Idle() {
		t.Error("Idle() with a copy pending")
	}
	st := f.settle(t, 1)

	reqs := srv.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		if got := r.Header.Get("Ce-Id"); got != id {
			t.Errorf("request %d: ce-id %q, want %q", i, got, id)
		}
	}
	if string(reqs[0].Body) != string(reqs[1].Body) {
		t.Errorf("bodies differ:\n%s\n%s", reqs[0].Body, reqs[1].Body)
	}
	// Eventarc starts the copy 2s after it sends the first POST; measured here, at the receiving
	// end, the gap can be shorter by the difference of the two requests' latencies.
	const latency = 10 * time.Millisecond
	// The upper bound only catches a copy sent at some other, much later time: on a loaded
	// machine a goroutine's timer can fire seconds late.
	if gap := reqs[1].Start.Sub(reqs[0].Start); gap < 2*time.Second-latency || gap > 10*time.Second {
		t.Errorf("copy started %v after the first POST, want 2s", gap)
	}
	want := eventarc.TopicStats{Received: 1, Messages: 1, Posts: 2, Succeeded: 2, Acks: 1, Copies: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestDelayAndCopyAfterDone(t *testing.T) {
	// The first POST and its concurrent copy arrive in either order; each is held until both have
	// arrived, which only concurrent POSTs can do (with no timing assumption: a loaded machine may
	// start one goroutine long after the other).
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	srv := newServer(t, func(n int, _ *http.Request, _ []byte) int {
		if n <= 2 {
			arrived.Done()
			select {
			case <-both:
			case <-time.After(30 * time.Second):
				return http.StatusInternalServerError // never concurrent: the stats below fail
			}
		}
		return http.StatusOK
	})
	f := start(t, srv.URL, func(c *eventarc.Config) {
		c.Faults = eventarc.InjectorFunc(func(m eventarc.Message) eventarc.Plan {
			return eventarc.Plan{Delay: 500 * time.Millisecond, CopyAfterDone: true, Copies: []time.Duration{0}}
		})
	})
	_, published := f.publish(t, "x", nil)
	st := f.settle(t, 1)
	reqs := srv.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	if d := reqs[0].Start.Sub(published); d < 500*time.Millisecond {
		t.Errorf("first POST %v after publishing began, want ≥ 500ms (the delay)", d)
	}
	if !reqs[1].Start.Before(reqs[0].End) || !reqs[0].Start.Before(reqs[1].End) {
		t.Errorf("the copy (%v–%v) and the first POST (%v–%v) were not in flight together", reqs[1].Start, reqs[1].End, reqs[0].Start, reqs[0].End)
	}
	firstEnd := reqs[0].End
	if reqs[1].End.Before(firstEnd) {
		firstEnd = reqs[1].End
	}
	if reqs[2].Start.Before(firstEnd) {
		t.Errorf("after-done copy started at %v, before the first POST ended at %v", reqs[2].Start, firstEnd)
	}
	want := eventarc.TopicStats{Received: 1, Messages: 1, Posts: 3, Succeeded: 3, Acks: 1, Copies: 2, Delayed: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestLoseAckRedelivers(t *testing.T) {
	srv := newServer(t, nil)
	var mu sync.Mutex
	var attempts []int
	f := start(t, srv.URL, func(c *eventarc.Config) {
		c.Faults = eventarc.InjectorFunc(func(m eventarc.Message) eventarc.Plan {
			mu.Lock()
			attempts = append(attempts, m.Attempt)
			mu.Unlock()
			return eventarc.Plan{LoseAck: m.Attempt == 1}
		})
	})
	id, _ := f.publish(t, "x", nil)
	st := f.settle(t, 1)
	want := eventarc.TopicStats{Received: 2, Messages: 1, Posts: 2, Succeeded: 2, Acks: 1, Nacks: 1, LostAcks: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := gocmp.Diff([]int{1, 2}, attempts); diff != "" {
		t.Errorf("attempts seen by the injector (-want +got):\n%s", diff)
	}
	for i, r := range srv.requests() {
		if got := r.Header.Get("Ce-Id"); got != id {
			t.Errorf("request %d: ce-id %q, want %q", i, got, id)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	srv := newServer(t, func(int, *http.Request, []byte) int { return http.StatusInternalServerError })
	f := start(t, srv.URL, func(c *eventarc.Config) {
		c.MaxAttempts, c.DeadLetterTopic = 3, "orders-dead"
	})
	ctx := t.Context()
	// A subscription on the dead-letter topic must exist before anything is published to it.
	if err := emu.EnsureTopic(ctx, f.client, "orders-dead"); err != nil {
		t.Fatal(err)
	}
	if err := emu.EnsureSubscription(ctx, f.client, "orders-dead-sub", "orders-dead", 0); err != nil {
		t.Fatal(err)
	}
	id, _ := f.publish(t, "poison", map[string]string{"job": "j-9"})
	st := f.settle(t, 1)
	want := eventarc.TopicStats{Received: 3, Messages: 1, Posts: 3, Failed: 3, Acks: 1, Nacks: 2, DeadLettered: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got *pubsub.Message
	err := f.client.Subscriber("orders-dead-sub").Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		got = m
		cancel()
	})
	if err != nil || got == nil {
		t.Fatalf("no dead letter received: %v", err)
	}
	wantAttrs := map[string]string{
		"job":                            "j-9",
		eventarc.AttrDeliveryCount:       "3",
		eventarc.AttrSourceSubscription:  subscription,
		eventarc.AttrSourceProject:       f.client.Project(),
		eventarc.AttrSourceTopic:         topic,
		eventarc.AttrSourceMessageID:     id,
		eventarc.AttrLastDeliveryFailure: "HTTP 500 Internal Server Error",
		eventarc.AttrSourcePublishTime:   got.Attributes[eventarc.AttrSourcePublishTime],
	}
	if diff := gocmp.Diff(wantAttrs, got.Attributes); diff != "" || string(got.Data) != "poison" {
		t.Errorf("dead letter %q, attributes (-want +got):\n%s", got.Data, diff)
	}
	if _, err := time.Parse(time.RFC3339Nano, got.Attributes[eventarc.AttrSourcePublishTime]); err != nil {
		t.Errorf("%s: %v", eventarc.AttrSourcePublishTime, err)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	const limit, messages = 3, 12
	srv := newServer(t, func(int, *http.Request, []byte) int {
		time.Sleep(150 * time.Millisecond)
		return http.StatusOK
	})
	f := start(t, srv.URL, func(c *eventarc.Config) { c.Concurrency = limit })
	for i := range messages {
		f.publish(t, strconv.Itoa(i), nil)
	}
	waitFor(t, 30*time.Second, "all acks", func() bool { return f.ea.Stats().Topics[topic].Acks == messages })
	srv.mu.Lock()
	peak := srv.maxInFlight
	srv.mu.Unlock()
	if peak != limit {
		t.Errorf("peak concurrency %d, want %d", peak, limit)
	}
}

func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	const messages = 5000
	srv := newServer(t, func(int, *http.Request, []byte) int { return http.StatusNoContent })
	f := start(t, srv.URL, func(c *eventarc.Config) { c.Concurrency = 16 })
	results := make([]*pubsub.PublishResult, messages)
	for i := range results {
		results[i] = f.pub.Publish(t.Context(), &pubsub.Message{Data: []byte(strconv.Itoa(i))})
	}
	t0 := time.Now()
	for _, r := range results {
		if _, err := r.Get(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "all acks", func() bool { return f.ea.Stats().Topics[topic].Acks >= messages })
	d := time.Since(t0)
	st := f.ea.Stats().Topics[topic]
	t.Logf("%d messages published, POSTed and acked in %v: %.0f POST/s (posts %d, redelivered %d)",
		messages, d.Round(time.Millisecond), float64(st.Posts)/d.Seconds(), st.Posts, st.Received-st.Messages)
	if st.Messages != messages {
		t.Errorf("%d distinct messages delivered, want %d", st.Messages, messages)
	}
}

func TestConfigValidate(t *testing.T) {
	c := &pubsub.Client{}
	ok := eventarc.Config{Client: c, Routes: []eventarc.Route{{Topic: "t1", Subscription: "s1", URL: "http://x"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*eventarc.Config){
		"no client":         func(c *eventarc.Config) { c.Client = nil },
		"no routes":         func(c *eventarc.Config) { c.Routes = nil },
		"route without URL": func(c *eventarc.Config) { c.Routes = []eventarc.Route{{Topic: "t", Subscription: "s"}} },
		"same subscription twice": func(c *eventarc.Config) {
			c.Routes = []eventarc.Route{{Topic: "t", Subscription: "s", URL: "u"}, {Topic: "t2", Subscription: "s", URL: "u"}}
		},
		"ack deadline":           func(c *eventarc.Config) { c.AckDeadline = time.Second },
		"min > max backoff":      func(c *eventarc.Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond },
		"attempts without topic": func(c *eventarc.Config) { c.MaxAttempts = 5 },
		"topic without attempts": func(c *eventarc.Config) { c.DeadLetterTopic = "dead" },
		"negative concurrency":   func(c *eventarc.Config) { c.Concurrency = -1 },
	} {
		cfg := ok
		mutate(&cfg)
		if err := cfg.Validate(); !errors.Is(err, eventarc.ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", name, err)
		}
		if _, err := eventarc.New(cfg); !errors.Is(err, eventarc.ErrConfig) {
			t.Errorf("%s: New() = %v, want ErrConfig", name, err)
		}
	}
}

func TestSlowPostKeepsTheLease(t *testing.T) {
	if testing.Short() {
		t.Skip("takes longer than the minimum ack deadline")
	}
	// A POST longer than the ack deadline must not let Pub/Sub redeliver the message meanwhile:
	// the callback lasts until the POST completes, and the client extends the deadline.
	srv := newServer(t, func(int, *http.Request, []byte) int {
		time.Sleep(13 * time.Second)
		return http.StatusOK
	})
	f := start(t, srv.URL, func(c *eventarc.Config) { c.AckDeadline = 10 * time.Second })
	f.publish(t, "slow", nil)
	st := f.settle(t, 1)
	want := eventarc.TopicStats{Received: 1, Messages: 1, Posts: 1, Succeeded: 1, Acks: 1}
	if diff := gocmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestRunStopsWhenASubscriptionGoes(t *testing.T) {
	emu.Require(t)
	ctx := t.Context()
	c := emu.PubSub(t, emu.ProjectID(t))
	ea, err := eventarc.New(eventarc.Config{Client: c, Routes: []eventarc.Route{
		{Topic: "a-topic", Subscription: "a-sub", URL: "http://127.0.0.1:1/"},
		{Topic: "b-topic", Subscription: "b-sub", URL: "http://127.0.0.1:1/"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ea.Run(ctx) }()
	waitFor(t, 10*time.Second, "subscriptions", func() bool {
		_, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: emu.SubscriptionName(c, "b-sub")})
		return err == nil
	})
	time.Sleep(200 * time.Millisecond)
	if err := c.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: emu.SubscriptionName(c, "a-sub")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "a-sub") {
			t.Errorf("Run() = %v, want an error naming a-sub", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20s after its subscription was deleted")
	}
}
