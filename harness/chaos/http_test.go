package chaos

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/eventarc"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
)

// TestChaosHTTP runs the pipeline the way it is deployed, in real time: each function behind a
// CloudEvents HTTP handler (what the functions framework serves), and the local Eventarc
// (package eventarc) pulling from Pub/Sub and POSTing binary-mode CloudEvents, with its fault
// injector: the same message POSTed again at 0 s and at 2 s, and acks lost. The same checkers
// run after quiescence. The property tests use the deterministic in-process deliveries of
// package sim instead, for the same kinds of faults.
func TestChaosHTTP(t *testing.T) {
	first := func(p eventarc.Plan) eventarc.Injector {
		return eventarc.InjectorFunc(func(m eventarc.Message) eventarc.Plan {
			if m.Attempt == 1 {
				return p
			}
			return eventarc.Plan{}
		})
	}
	for _, sc := range []struct {
		name string
		inj  eventarc.Injector
		want func(s eventarc.TopicStats) error
	}{
		{"duplicate at 0s", eventarc.Duplicate(0), copies},
		{"duplicate at 2s", eventarc.Duplicate(2 * time.Second), copies},
		{"ack lost", first(eventarc.Plan{LoseAck: true}), lostAcks},
		{"all at once", first(eventarc.Plan{Copies: []time.Duration{0, 2 * time.Second}, CopyAfterDone: true, LoseAck: true}), func(s eventarc.TopicStats) error {
			if err := copies(s); err != nil {
				return err
			}
			return lostAcks(s)
		}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			h := NewHarness(t, Mutation{})
			c := Case{
				PageSize: 25,
				Objects:  []Object{{Name: "Contact", Prefix: "003", Rows: 80, Updated: 10, Seed: 11}, {Name: "Lead", Prefix: "00Q", Rows: 60, Updated: 10, Seed: 12}},
				Settings: []Setting{
					{ID: "http-upsert", Tenant: "acme", Object: 0, Target: model.TargetUpsert, ChunkSize: 15},
					{ID: "http-generated", Tenant: "acme", Object: 1, Target: model.TargetGenerated, ChunkSize: 10},
				},
				Ticks: []Tick{{}},
			}
			res, stats := h.runHTTP(t, c, sc.inj)
			t.Logf("eventarc: %+v\nreport: %s", stats, res.Report)
			if len(res.Violations) > 0 {
				t.Fatalf("violations:\n  %s", strings.Join(res.Violations, "\n  "))
			}
			if err := sc.want(stats); err != nil {
				t.Error(err)
			}
			if res.Report.Jobs != 2 || res.Report.Completed != 2 {
				t.Errorf("jobs %d, completed %d; want 2 and 2", res.Report.Jobs, res.Report.Completed)
			}
			report.pin(fmt.Sprintf("HTTP path (functions behind CloudEvents handlers, local Eventarc), %s: %d POSTs, %d copies, %d lost acks, %d duplicates suppressed; %d violations",
				sc.name, stats.Posts, stats.Copies, stats.LostAcks, res.Suppressed, len(res.Violations)))
		})
	}
}

func copies(s eventarc.TopicStats) error {
	if s.Copies == 0 || s.Copies < s.Messages {
		return fmt.Errorf("%d copies POSTed for %d messages, want one per message at least", s.Copies, s.Messages)
	}
	return nil
}

func lostAcks(s eventarc.TopicStats) error {
	if s.LostAcks == 0 || s.Received < s.Messages+s.LostAcks {
		return fmt.Errorf("%d lost acks, %d deliveries of %d messages: every lost ack must be redelivered", s.LostAcks, s.Received, s.Messages)
	}
	return nil
}

// runHTTP seeds c, serves the functions over HTTP, lets the local Eventarc deliver the first tick
// until everything has settled, and checks.
func (h *Harness) runHTTP(t *testing.T, c Case, inj eventarc.Injector) (*Result, eventarc.TopicStats) {
	t.Helper()
	ctx := t.Context()
	e := h.Env
	st := newCaseState(&c, h.Env.Config.Lease)
	h.cur.Store(st)
	defer h.cur.Store(nil)
	data, err := h.seed(ctx, &c)
	if err != nil {
		t.Fatal(err)
	}
	var routes []eventarc.Route
	for _, topic := range sim.Topics {
		fn := sim.Route(topic)
		p, err := cloudevents.NewHTTP()
		if err != nil {
			t.Fatal(err)
		}
		rh, err := cloudevents.NewHTTPReceiveHandler(ctx, p, func(ctx context.Context, ev cloudevents.Event) error {
			return e.CallEvent(ctx, fn, ev)
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(rh)
		t.Cleanup(srv.Close)
		routes = append(routes, eventarc.Route{Topic: topic, Subscription: "arc-" + topic, URL: srv.URL})
	}
	arc, err := eventarc.New(eventarc.Config{
		Client: e.PS, Project: e.Project, Routes: routes, Concurrency: 4,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, AckDeadline: 60 * time.Second, Faults: inj,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- arc.Run(runCtx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("eventarc: %v", err)
		}
	}
	// The subscriptions must exist before the tick is published.
	deadline := time.Now().Add(30 * time.Second)
	for {
		subs := 0
		for _, r := range routes {
			if _, err := e.PS.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: emu.SubscriptionName(e.PS, r.Subscription)}); err == nil {
				subs++
			}
		}
		if subs == len(routes) {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("eventarc did not create its subscriptions")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Tick(ctx, TickID(0)); err != nil {
		stop()
		t.Fatal(err)
	}
	// Quiescence: every Job finished, nothing in flight, and every lost ack redelivered; held for
	// a second.
	settled := time.Time{}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		n, err := e.Unfinished(ctx)
		jobs, jerr := e.Jobs(ctx)
		tot := arc.Stats().Total()
		quiet := err == nil && jerr == nil && len(jobs) > 0 && n == 0 && arc.Idle() && tot.Received >= tot.Messages+tot.LostAcks
		switch {
		case !quiet:
			settled = time.Time{}
		case settled.IsZero():
			settled = time.Now()
		case time.Since(settled) > time.Second:
			stop()
			res := h.checkHTTP(t, &c, data, st)
			return res, arc.Stats().Total()
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("not settled after 2 minutes: %d unfinished jobs, eventarc %+v", n, tot)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *Harness) checkHTTP(t *testing.T, c *Case, data *world, st *caseState) *Result {
	t.Helper()
	ctx := t.Context()
	var err error
	if err != nil {
		t.Fatal(err)
	}
	x := data.expect(st, sim.Stats{}, false)
	rep, err := h.Env.Check(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := h.checkMore(ctx, c, data, st, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.auditCase(ctx, c, &extra, nil); err != nil {
		t.Fatal(err)
	}
	res := &Result{Report: rep, Extra: extra}
	res.Violations = append(append(res.Violations, rep.Violations...), extra.Violations...)
	if res.Suppressed, err = suppressed(ctx, h.Env); err != nil {
		t.Fatal(err)
	}
	return res
}
