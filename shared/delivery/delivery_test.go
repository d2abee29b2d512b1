package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
)

var now = time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)

type sink struct {
	got  []model.DeadLetter
	fail error
}

func (s *sink) DeadLetter(_ context.Context, d model.DeadLetter) error {
	if s.fail != nil {
		return s.fail
	}
	s.got = append(s.got, d)
	return nil
}

func pubsubEvent(t *testing.T, id string, data []byte, published time.Time) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(id)
	e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	e.SetSource("//pubsub.googleapis.com/projects/p/topics/oncesync-expand")
	e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	body, _ := json.Marshal(map[string]any{"message": map[string]any{
		"data": data, "attributes": map[string]string{"job": "j1"}, "messageId": id, "publishTime": published,
	}, "subscription": "projects/p/subscriptions/s"})
	if err := e.SetData("application/json", body); err != nil {
		t.Fatal(err)
	}
	return e
}

func gate(s *sink, log *bytes.Buffer) *delivery.Gate {
	return &delivery.Gate{Function: "Expander", Project: "p", Logger: logging.New(log, slog.LevelDebug), Sink: s,
		MaxAge: 23 * time.Hour, Now: func() time.Time { return now }}
}

func TestDecode(t *testing.T) {
	m, err := delivery.Decode(pubsubEvent(t, "42", []byte(`{"a":1}`), now))
	if err != nil {
		t.Fatal(err)
	}
	want := delivery.Message{ID: "42", Topic: "oncesync-expand", Subscription: "projects/p/subscriptions/s", Data: []byte(`{"a":1}`),
		Attributes: map[string]string{"job": "j1"}, PublishTime: now, TraceID: "0af7651916cd43dd8448eb211c80319c", SpanID: "b7ad6b7169203331", Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
	bad := event.New()
	bad.SetID("x")
	bad.SetType("google.cloud.storage.object.v1.finalized")
	if _, err := delivery.Decode(bad); !errors.Is(err, delivery.ErrPoison) {
		t.Errorf("wrong type: %v, want poison", err)
	}
	bad.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	_ = bad.SetData("application/json", []byte(`[1,2]`))
	if _, err := delivery.Decode(bad); !errors.Is(err, delivery.ErrPoison) {
		t.Errorf("bad body: %v, want poison", err)
	}
}

// TestAckOrRedeliver is the decision table of the package doc.
func TestAckOrRedeliver(t *testing.T) {
	cases := []struct {
		name      string
		published time.Time
		result    error
		sinkFail  error
		wantErr   bool
		wantDead  string // reason, "" for none
		wantEvent string
	}{
		{"success", now, nil, nil, false, "", ""},
		{"duplicate", now, fmt.Errorf("x: %w", delivery.ErrDuplicate), nil, false, "", "duplicate_suppressed"},
		{"in progress", now, fmt.Errorf("x: %w", delivery.ErrRetryLater), nil, true, "", "duplicate_in_progress"},
		{"poison", now, delivery.Poison("unknown_tenant", "tenant %q", "t"), nil, false, "unknown_tenant", "dead_lettered"},
		{"poison, sink down", now, delivery.Poison("unknown_tenant", "t"), errors.New("firestore down"), true, "", "dead_letter_failed"},
		{"transient", now, errors.New("unavailable"), nil, true, "", "retry"},
		{"a closed transaction is not the request's fault", now, fmt.Errorf("store: create job: %w", status.Error(codes.InvalidArgument, "Transaction is invalid or closed.")), nil, true, "", "retry"},
		{"backend rejects the request itself", now, fmt.Errorf("commit: %w", status.Error(codes.InvalidArgument, "document too large")), nil, false, "backend_rejected", "dead_lettered"},
		{"transient, too old", now.Add(-24 * time.Hour), errors.New("unavailable"), nil, false, "retries_exhausted", "dead_lettered"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log bytes.Buffer
			s := &sink{fail: c.sinkFail}
			calls := 0
			h := gate(s, &log).CloudEvent(func(ctx context.Context, m delivery.Message) error {
				calls++
				return c.result
			})
			err := h(t.Context(), pubsubEvent(t, "7", []byte(`{}`), c.published))
			if (err != nil) != c.wantErr {
				t.Errorf("err = %v, want error: %v", err, c.wantErr)
			}
			var reasons []string
			for _, d := range s.got {
				reasons = append(reasons, d.Reason)
				if d.ID != model.DocID("Expander", "7") || d.MessageID != "7" || d.JobID != "j1" || d.Topic != "oncesync-expand" {
					t.Errorf("dead letter %+v", d)
				}
			}
			if c.wantDead == "" && len(reasons) > 0 || c.wantDead != "" && !cmp.Equal(reasons, []string{c.wantDead}) {
				t.Errorf("dead letters %v, want %q", reasons, c.wantDead)
			}
			if c.wantEvent != "" && !strings.Contains(log.String(), `"event":"`+c.wantEvent+`"`) {
				t.Errorf("log lacks event %q:\n%s", c.wantEvent, log.String())
			}
			if c.name == "transient, too old" && calls != 0 {
				t.Errorf("the handler ran %d times on a message past the cutoff", calls)
			}
			for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
				if line == "" {
					continue
				}
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line is not JSON: %s", line)
				}
				for _, k := range []string{"severity", "message", "function", "messageId", "logging.googleapis.com/trace"} {
					if _, ok := m[k]; !ok {
						t.Errorf("log line lacks %q: %s", k, line)
					}
				}
				if m["logging.googleapis.com/trace"] != "projects/p/traces/0af7651916cd43dd8448eb211c80319c" {
					t.Errorf("trace = %v", m["logging.googleapis.com/trace"])
				}
			}
		})
	}
}

func TestMalformedEventIsDeadLetteredNotRetried(t *testing.T) {
	var log bytes.Buffer
	s := &sink{}
	e := event.New()
	e.SetID("9")
	e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	_ = e.SetData("application/json", []byte(`not json`))
	err := gate(s, &log).CloudEvent(func(context.Context, delivery.Message) error {
		t.Fatal("handler called for a malformed event")
		return nil
	})(t.Context(), e)
	if err != nil || len(s.got) != 1 || s.got[0].Reason != "malformed_event" || string(s.got[0].Data) != "not json" {
		t.Errorf("err %v, dead letters %+v", err, s.got)
	}
}
