package delivery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
)

// MaxBody is the largest request body HTTP reads. Pub/Sub's largest message (10 MB) is about
// 13.4 MB once base64-encoded in a push body; a body over MaxBody cannot be a Pub/Sub delivery
// and is dead-lettered as "oversized_body" with its first MaxBodyKept bytes.
const (
	MaxBody     = 16 << 20
	MaxBodyKept = 256 << 10
)

// Reasons of the deliveries that HTTP dead-letters before any CloudEvent exists. The functions
// framework would answer these with 400 or 415 before our code ran: nothing recorded, and Pub/Sub
// redelivering until Eventarc drops the message.
const (
	ReasonMalformedCloudEvent = "malformed_cloudevent" // ce- headers that are not a valid CloudEvent (no ce-source, no ce-specversion, ...)
	ReasonMalformedPush       = "malformed_push"       // no ce- headers, and the body is not a Pub/Sub push body
	ReasonOversizedBody       = "oversized_body"       // a body over MaxBody
)

// HTTP returns h behind the whole HTTP front of a delivery, for functions.HTTP: it reads the
// request as a binary or structured CloudEvent (what Eventarc sends, decoded with the CloudEvents
// SDK), or as a raw Pub/Sub push body (a push subscription pointed at the function, as the
// framework's own conversion accepts), and answers 200 for an ack and 500 for a redelivery, as
// the framework does for a CloudEvent function. What the framework would reject with a 4xx before
// our code ran is dead-lettered here instead (see the Reason constants) and acked, so that no
// delivery can end in an endless retry or be dropped without a trace.
func (g *Gate) HTTP(h Handler) http.Handler {
	ce := g.CloudEvent(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "deliveries are POSTed", http.StatusMethodNotAllowed)
			return
		}
		body, size, err := readBody(r.Body)
		if err != nil {
			// The connection broke mid-body: the sender retries.
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		var ev event.Event
		if size > MaxBody {
			err = Poison(ReasonOversizedBody, "request body of %d bytes is over the %d-byte limit (no Pub/Sub message is this large)", size, MaxBody)
		} else if isCloudEvent(r.Header) {
			ev, err = readCloudEvent(r, body)
		} else {
			ev, err = readPush(r, body)
		}
		if err == nil {
			err = ce(r.Context(), ev)
		} else {
			err = g.rejected(r, body, err)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// readBody reads up to MaxBody+1 bytes and counts the rest.
func readBody(rc io.Reader) ([]byte, int64, error) {
	body, err := io.ReadAll(io.LimitReader(rc, MaxBody+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) <= MaxBody {
		return body, int64(len(body)), nil
	}
	rest, err := io.Copy(io.Discard, rc)
	if err != nil {
		return nil, 0, err
	}
	return body[:MaxBodyKept], int64(len(body)) + rest, nil
}

// isCloudEvent reports whether the request claims to be a CloudEvent: any ce- header (binary
// mode) or a CloudEvents content type (structured mode).
func isCloudEvent(hdr http.Header) bool {
	for k := range hdr {
		if strings.HasPrefix(strings.ToLower(k), "ce-") {
			return true
		}
	}
	return strings.HasPrefix(hdr.Get("Content-Type"), "application/cloudevents")
}

func readCloudEvent(r *http.Request, body []byte) (event.Event, error) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err == nil {
		err = e.Validate()
	}
	if err != nil {
		return event.Event{}, Poison(ReasonMalformedCloudEvent, "not a valid CloudEvent: %w", err)
	}
	return *e, nil
}

// readPush turns a raw Pub/Sub push body into the messagePublished CloudEvent Eventarc would
// have sent; the topic comes from the URL path when it names one, as the framework does it.
func readPush(r *http.Request, body []byte) (event.Event, error) {
	var b pushBody
	if err := json.Unmarshal(body, &b); err != nil {
		return event.Event{}, Poison(ReasonMalformedPush, "no ce- headers, and the body is not a Pub/Sub push body: %w", err)
	}
	if b.Message.MessageID == "" {
		return event.Event{}, Poison(ReasonMalformedPush, "no ce- headers, and the body is not a Pub/Sub push body: no message.messageId")
	}
	e := event.New()
	e.SetID(b.Message.MessageID)
	e.SetType(messagePublished)
	e.SetSource("//pubsub.googleapis.com/" + strings.TrimPrefix(r.URL.Path, "/"))
	if !strings.Contains(r.URL.Path, "/topics/") {
		e.SetSource("//pubsub.googleapis.com/" + b.Subscription)
	}
	if !b.Message.PublishTime.IsZero() {
		e.SetTime(b.Message.PublishTime)
	}
	if err := e.SetData(event.ApplicationJSON, json.RawMessage(body)); err != nil {
		return event.Event{}, Poison(ReasonMalformedPush, "push body: %w", err)
	}
	return e, nil
}

// rejected dead-letters a request that is not a delivery HTTP can decode. Its ID is the function
// and the ce-id header, or the body's hash when there is none, so a redelivered one counts
// another attempt of the same dead letter.
func (g *Gate) rejected(r *http.Request, body []byte, cause error) error {
	id := r.Header.Get("Ce-Id")
	if id == "" {
		id = "sha256-" + model.Hash(string(body))[:32]
	}
	attrs := map[string]string{}
	for _, k := range []string{"Ce-Id", "Ce-Source", "Ce-Specversion", "Ce-Type", "Content-Type"} {
		if v := r.Header.Get(k); v != "" {
			attrs[strings.ToLower(k)] = v
		}
	}
	m := Message{ID: id, Topic: topicOf(r.Header.Get("Ce-Source")), Data: body, Attributes: attrs}
	if m.Topic == "" {
		m.Topic = topicOf(r.URL.Path)
	}
	ctx := logging.With(g.logContext(r.Context()), slog.String(logging.MessageID, id))
	if err := g.decide(ctx, m, cause); err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	return nil
}

// topicOf returns the topic a CloudEvent source or URL path names ("…/topics/T"), or "".
func topicOf(s string) string {
	i := strings.LastIndex(s, "/topics/")
	if i < 0 {
		return ""
	}
	return s[i+len("/topics/"):]
}
