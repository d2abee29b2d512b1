// Package deadletter stores permanent failures in Firestore (deadLetters/{id}) and, when a topic
// is configured, also publishes them to the dead-letter topic, whose subscription retains them for
// alerting and inspection.
//
// Dead letters have deterministic IDs (function + message ID, or job + row for bad source rows),
// so recording the same failure again only counts another attempt: a poison message redelivered
// a hundred times is one dead letter with attempts = 100.
package deadletter

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/model"
)

// Publisher publishes messages to a topic.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

// Store records dead letters.
type Store struct {
	Client    *firestore.Client
	Publisher Publisher // optional
	Topic     string    // optional: publish new dead letters here too
}

var _ delivery.Sink = (*Store)(nil)

// Largest payload and error text stored in a dead-letter document; a longer one is cut (see
// model.DeadLetter.DataTruncated). A document holds 1 MiB, and a payload that cannot be stored
// must still end as a dead letter, not as an endless retry.
const (
	MaxStoredData  = 256 << 10
	MaxStoredError = 16 << 10
)

// DeadLetter records d: created on the first call, attempts and lastAt updated on later ones.
// The dead-letter topic gets the whole payload even when the document holds it cut.
func (s *Store) DeadLetter(ctx context.Context, d model.DeadLetter) error {
	if d.ID == "" {
		return errors.New("deadletter: empty ID")
	}
	full := d.Data
	d = fitted(d)
	d.Published = false
	ref := s.Client.Collection(model.DeadLetters).Doc(d.ID)
	_, err := ref.Create(ctx, d)
	if status.Code(err) == codes.AlreadyExists {
		_, err = ref.Update(ctx, []firestore.Update{
			{Path: "attempts", Value: firestore.Increment(1)},
			{Path: "lastAt", Value: d.LastAt},
			{Path: "error", Value: d.Error},
		})
		if err != nil {
			return fmt.Errorf("deadletter: update %s: %w", d.ID, err)
		}
		if s.Publisher == nil || s.Topic == "" {
			return nil
		}
		// Published already, unless the first recording failed to publish (and so was redelivered).
		snap, err := ref.Get(ctx)
		if err != nil {
			return fmt.Errorf("deadletter: read %s: %w", d.ID, err)
		}
		if published, _ := snap.DataAt("published"); published == true {
			return nil
		}
	} else if err != nil {
		return fmt.Errorf("deadletter: create %s: %w", d.ID, err)
	}
	return s.publish(ctx, ref, d, full)
}

// publish puts d on the dead-letter topic, then marks it published. A failure returns an error,
// so the delivery is retried and the next recording of the same failure publishes it: the topic
// gets every dead letter at least once.
func (s *Store) publish(ctx context.Context, ref *firestore.DocumentRef, d model.DeadLetter, full []byte) error {
	if s.Publisher == nil || s.Topic == "" {
		return nil
	}
	attrs := map[string]string{"deadLetter": d.ID, "kind": d.Kind, "function": d.Function, "reason": d.Reason}
	for k, v := range d.Attributes {
		if _, taken := attrs[k]; !taken {
			attrs[k] = v
		}
	}
	data := full
	if d.Kind != model.DeadMessage {
		m, err := bus.JSON(d, nil)
		if err != nil {
			return err
		}
		data = m.Data
	}
	if _, err := s.Publisher.Publish(ctx, s.Topic, bus.Message{Data: data, Attributes: attrs}); err != nil {
		return fmt.Errorf("deadletter: publish %s: %w", d.ID, err)
	}
	if _, err := ref.Update(ctx, []firestore.Update{{Path: "published", Value: true}}); err != nil {
		return fmt.Errorf("deadletter: mark %s published: %w", d.ID, err)
	}
	return nil
}

// fitted returns d cut to what a document holds: the payload to MaxStoredData bytes (with its
// whole size and hash), the error text to MaxStoredError.
func fitted(d model.DeadLetter) model.DeadLetter {
	if len(d.Data) > MaxStoredData {
		d.DataTruncated, d.DataSize, d.DataSHA256 = true, len(d.Data), model.Hash(string(d.Data))
		d.Data = d.Data[:MaxStoredData]
	}
	if len(d.Error) > MaxStoredError {
		d.Error = d.Error[:MaxStoredError] + fmt.Sprintf("… (%d bytes in all)", len(d.Error))
	}
	return d
}
