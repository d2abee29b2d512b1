package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/delivery"
)

// pushBody is a Pub/Sub push body carrying data.
func pushBody(t *testing.T, id string, data []byte) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"message": map[string]any{
		"data": data, "attributes": map[string]string{"tenant": "acme"}, "messageId": id, "publishTime": now,
	}, "subscription": "projects/p/subscriptions/s"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// binary returns an Eventarc-style binary-mode CloudEvent request, minus the headers in drop.
func binary(t *testing.T, id string, body []byte, drop ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/Expander", bytes.NewReader(body))
	for k, v := range map[string]string{
		"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": id,
		"Ce-Type":   "google.cloud.pubsub.topic.v1.messagePublished",
		"Ce-Source": "//pubsub.googleapis.com/projects/p/topics/oncesync-expand",
	} {
		r.Header.Set(k, v)
	}
	for _, k := range drop {
		r.Header.Del(k)
	}
	return r
}

func TestHTTPFront(t *testing.T) {
	ok := pushBody(t, "m1", []byte(`{"jobId":"j1"}`))
	raw := httptest.NewRequest(http.MethodPost, "/projects/p/topics/oncesync-chunks", bytes.NewReader(ok))
	raw.Header.Set("Content-Type", "application/json")
	rawBad := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`not json`))
	rawNoID := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"message":{}}`))
	structured := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"specversion":"1.0","id":"s1"}`))
	structured.Header.Set("Content-Type", "application/cloudevents+json")
	big := binary(t, "big", bytes.Repeat([]byte("x"), delivery.MaxBody+10))
	for _, c := range []struct {
		name      string
		req       *http.Request
		handler   error // what the handler returns, when it is called
		code      int
		called    bool
		reason    string // the dead letter's, "" for none
		id, topic string // the dead letter's or the handled message's
	}{
		{name: "binary CloudEvent", req: binary(t, "m1", ok), code: 200, called: true, id: "m1", topic: "oncesync-expand"},
		{name: "handler fails: redeliver", req: binary(t, "m1", ok), handler: errors.New("unavailable"), code: 500, called: true, id: "m1", topic: "oncesync-expand"},
		{name: "raw Pub/Sub push", req: raw, code: 200, called: true, id: "m1", topic: "oncesync-chunks"},
		{name: "no ce-source", req: binary(t, "m2", ok, "Ce-Source"), code: 200, reason: delivery.ReasonMalformedCloudEvent, id: "Expander~m2"},
		{name: "no ce-specversion", req: binary(t, "m3", ok, "Ce-Specversion"), code: 200, reason: delivery.ReasonMalformedCloudEvent, id: "Expander~m3", topic: "oncesync-expand"},
		{name: "no ce-id", req: binary(t, "", ok, "Ce-Id"), code: 200, reason: delivery.ReasonMalformedCloudEvent, topic: "oncesync-expand"},
		{name: "structured without source", req: structured, code: 200, reason: delivery.ReasonMalformedCloudEvent},
		{name: "wrong event type", req: func() *http.Request {
			r := binary(t, "m4", ok)
			r.Header.Set("Ce-Type", "google.cloud.storage.object.v1.finalized")
			return r
		}(), code: 200, reason: "malformed_event", id: "Expander~m4", topic: "oncesync-expand"},
		{name: "raw body not JSON", req: rawBad, code: 200, reason: delivery.ReasonMalformedPush},
		{name: "raw body without message ID", req: rawNoID, code: 200, reason: delivery.ReasonMalformedPush},
		{name: "oversized body", req: big, code: 200, reason: delivery.ReasonOversizedBody, id: "Expander~big", topic: "oncesync-expand"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log bytes.Buffer
			s := &sink{}
			var got []delivery.Message
			h := gate(s, &log).HTTP(func(_ context.Context, m delivery.Message) error {
				got = append(got, m)
				return c.handler
			})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, c.req)
			if w.Code != c.code {
				t.Errorf("answered %d %q, want %d", w.Code, w.Body.String(), c.code)
			}
			if called := len(got) == 1; called != c.called {
				t.Fatalf("handler called %d times, want called=%v", len(got), c.called)
			}
			if c.called && (got[0].ID != c.id || got[0].Topic != c.topic || got[0].Attributes["tenant"] != "acme") {
				t.Errorf("handled %+v, want ID %s, topic %s, its attributes", got[0], c.id, c.topic)
			}
			if c.reason == "" {
				if len(s.got) != 0 {
					t.Errorf("dead letters %+v, want none", s.got)
				}
				return
			}
			if len(s.got) != 1 {
				t.Fatalf("%d dead letters, want 1 (%s); log:\n%s", len(s.got), c.reason, log.String())
			}
			d := s.got[0]
			if d.Reason != c.reason || (c.id != "" && d.ID != c.id) || d.Topic != c.topic || d.Function != "Expander" || d.Error == "" {
				t.Errorf("dead letter %s/%s topic %q error %q, want %s/%s topic %q", d.ID, d.Reason, d.Topic, d.Error, c.id, c.reason, c.topic)
			}
			if c.id == "" && !strings.HasPrefix(d.ID, "Expander~sha256-") {
				t.Errorf("dead letter ID %q, want one from the body's hash", d.ID)
			}
			if len(d.Data) == 0 || len(d.Data) > delivery.MaxBodyKept {
				t.Errorf("dead letter holds %d bytes of the body, want 1..%d", len(d.Data), delivery.MaxBodyKept)
			}
		})
	}
}

func TestHTTPFrontRedeliversWhenTheDeadLetterCannotBeWritten(t *testing.T) {
	var log bytes.Buffer
	h := gate(&sink{fail: errors.New("firestore down")}, &log).HTTP(func(context.Context, delivery.Message) error {
		t.Fatal("handler called for a malformed event")
		return nil
	})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, binary(t, "m1", []byte(`{}`), "Ce-Source"))
	if w.Code != http.StatusInternalServerError {
		t.Errorf("answered %d, want 500: the message must come back until its dead letter is stored", w.Code)
	}
}

func TestHTTPFrontAnswersOnlyPOST(t *testing.T) {
	var log bytes.Buffer
	s := &sink{}
	w := httptest.NewRecorder()
	gate(s, &log).HTTP(nil).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusMethodNotAllowed || len(s.got) != 0 {
		t.Errorf("GET answered %d with %d dead letters, want 405 and none", w.Code, len(s.got))
	}
}
