// Package bus publishes oncesync's messages to Pub/Sub.
//
// Messages are JSON; their routing fields (tenant, job, chunk) are also set as attributes so that
// logs, dead letters and filters can see them without decoding the body. Publishing is
// at-least-once: a publish that fails after the server stored the message is retried by the caller,
// and the consumer's idempotency makes the copy harmless. Every message carries the publishing
// span's W3C traceparent as an attribute (telemetry.Inject), so the consumer's delivery span joins
// the publisher's trace.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"cloud.google.com/go/pubsub/v2"
	"go.opentelemetry.io/otel/attribute"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Message is one message to publish.
type Message struct {
	Data       []byte
	Attributes map[string]string
}

// JSON returns a Message with v encoded as JSON.
func JSON(v any, attrs map[string]string) (Message, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Message{}, fmt.Errorf("bus: encode %T: %w", v, err)
	}
	return Message{Data: b, Attributes: attrs}, nil
}

// PubSub publishes with the Pub/Sub client, one batching publisher per topic.
type PubSub struct {
	client *pubsub.Client
	mu     sync.Mutex
	pubs   map[string]*pubsub.Publisher
}

// New returns a PubSub publisher. Close stops its publishers; the caller closes client.
func New(client *pubsub.Client) *PubSub {
	return &PubSub{client: client, pubs: map[string]*pubsub.Publisher{}}
}

func (p *PubSub) publisher(topic string) *pubsub.Publisher {
	p.mu.Lock()
	defer p.mu.Unlock()
	pub, ok := p.pubs[topic]
	if !ok {
		pub = p.client.Publisher(topic)
		p.pubs[topic] = pub
	}
	return pub
}

// Publish publishes msgs to topic and waits until every one is stored. It returns the message IDs
// in order, or the first error (messages that did succeed stay published).
func (p *PubSub) Publish(ctx context.Context, topic string, msgs ...Message) ([]string, error) {
	if topic == "" {
		return nil, errors.New("bus: publish: empty topic")
	}
	pub := p.publisher(topic)
	ctx, span := telemetry.Start(ctx, "publish "+topic, attribute.String("messaging.system", "gcp_pubsub"),
		attribute.String("messaging.destination.name", topic), attribute.Int("messaging.batch.message_count", len(msgs)))
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: telemetry.Inject(ctx, m.Attributes)})
	}
	ids := make([]string, len(msgs))
	var errs []error
	for i, r := range results {
		id, err := r.Get(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids[i] = id
	}
	telemetry.End(span, errors.Join(errs...))
	if len(errs) > 0 {
		return ids, fmt.Errorf("bus: publish %d of %d messages to %s failed: %w", len(errs), len(msgs), topic, errs[0])
	}
	return ids, nil
}

// Close flushes and stops every publisher.
func (p *PubSub) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pub := range p.pubs {
		pub.Stop()
	}
	p.pubs = map[string]*pubsub.Publisher{}
}

// Expand returns the message that asks the expander to plan job.
func Expand(job model.Job) Message { return ExpandSlice(job, 0) }

// ExpandSlice returns the message that asks the expander to plan slice s of job.
func ExpandSlice(job model.Job, s int) Message {
	attrs := map[string]string{"tenant": job.TenantID, "job": job.ID}
	if s > 0 {
		attrs["slice"] = strconv.Itoa(s)
	}
	m, _ := JSON(model.ExpandMessage{TenantID: job.TenantID, JobID: job.ID, Slice: s}, attrs)
	return m
}

// Lanes are the chunk topics of the size classes (model.Class): each is served by its own
// importer function. With no Bulk topic, every class shares Standard.
type Lanes struct {
	Standard string
	Bulk     string
}

// Topic is the chunk topic of class c.
func (l Lanes) Topic(c model.Class) string {
	if c == model.ClassBulk && l.Bulk != "" {
		return l.Bulk
	}
	return l.Standard
}

// Chunk returns the message that asks the importer to import chunk i of job.
func Chunk(job model.Job, i int) Message {
	m, _ := JSON(model.ChunkMessage{TenantID: job.TenantID, JobID: job.ID, Chunk: i}, map[string]string{
		"tenant": job.TenantID, "job": job.ID, "chunk": strconv.Itoa(i),
	})
	return m
}
