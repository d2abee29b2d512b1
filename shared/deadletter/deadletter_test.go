package deadletter_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/deadletter"
	"github.com/oncesync/oncesync/shared/model"
)

type recorder struct {
	topics []string
	data   [][]byte
}

func (r *recorder) Publish(_ context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	for _, m := range msgs {
		r.topics = append(r.topics, topic)
		r.data = append(r.data, m.Data)
	}
	return make([]string, len(msgs)), nil
}

func TestRecordingTheSameFailureTwiceCountsAttempts(t *testing.T) {
	t.Parallel()
	fs := emu.Firestore(t, emu.ProjectID(t))
	pub := &recorder{}
	s := &deadletter.Store{Client: fs, Publisher: pub, Topic: "dead"}
	ctx := t.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := model.DeadLetter{ID: model.DocID("Expander", "m1"), Kind: model.DeadMessage, Function: "Expander", Reason: "unknown_job",
		Error: "first", MessageID: "m1", Data: []byte(`{}`), FirstAt: t0, LastAt: t0, Attempts: 1}
	if err := s.DeadLetter(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Error, d.LastAt = "second", t0.Add(time.Minute)
	if err := s.DeadLetter(ctx, d); err != nil {
		t.Fatal(err)
	}
	got := stored(t, fs, d.ID)
	if got.Attempts != 2 || got.Error != "second" || !got.FirstAt.Equal(t0) || !got.LastAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("dead letter %+v", got)
	}
	if len(pub.topics) != 1 || pub.topics[0] != "dead" {
		t.Errorf("published to %v, want once to the dead-letter topic", pub.topics)
	}
	if err := s.DeadLetter(ctx, model.DeadLetter{}); err == nil {
		t.Error("dead letter without ID accepted")
	}
}

// A payload larger than a document can hold still ends as a dead letter: stored cut, with its
// size and hash, and published whole.
func TestOversizedPayloadIsStoredCutAndPublishedWhole(t *testing.T) {
	t.Parallel()
	fs := emu.Firestore(t, emu.ProjectID(t))
	pub := &recorder{}
	s := &deadletter.Store{Client: fs, Publisher: pub, Topic: "dead"}
	ctx := t.Context()
	big := bytes.Repeat([]byte("x"), 5<<20)
	d := model.DeadLetter{ID: model.DocID("Importer", "huge"), Kind: model.DeadMessage, Function: "Importer", Reason: "malformed_message",
		Error: strings.Repeat("e", 100_000), MessageID: "huge", Data: big, Attempts: 1}
	if err := s.DeadLetter(ctx, d); err != nil {
		t.Fatalf("DeadLetter(5 MB): %v", err)
	}
	got := stored(t, fs, d.ID)
	if !got.DataTruncated || got.DataSize != len(big) || got.DataSHA256 != model.Hash(string(big)) ||
		len(got.Data) != deadletter.MaxStoredData || len(got.Error) > deadletter.MaxStoredError+100 {
		t.Errorf("stored: truncated %v, size %d, hash %q, %d data bytes, %d error bytes", got.DataTruncated, got.DataSize,
			got.DataSHA256, len(got.Data), len(got.Error))
	}
	if len(pub.data) != 1 || len(pub.data[0]) != len(big) {
		t.Errorf("published %d messages; want the whole %d-byte payload once", len(pub.data), len(big))
	}
}

// stored reads dead letter id back.
func stored(t *testing.T, fs *firestore.Client, id string) model.DeadLetter {
	t.Helper()
	snap, err := fs.Collection(model.DeadLetters).Doc(id).Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got model.DeadLetter
	if err := snap.DataTo(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// failing fails its first n publishes.
type failing struct {
	recorder
	n int
}

func (f *failing) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if f.n > 0 {
		f.n--
		return nil, errors.New("pubsub unavailable")
	}
	return f.recorder.Publish(ctx, topic, msgs...)
}

// A dead letter whose publication fails is published when the same failure is recorded again
// (the delivery failed, so it comes back), and only then: the topic gets every dead letter.
func TestDeadLetterUnpublishedIsPublishedOnTheNextRecording(t *testing.T) {
	t.Parallel()
	fs := emu.Firestore(t, emu.ProjectID(t))
	pub := &failing{n: 1}
	s := &deadletter.Store{Client: fs, Publisher: pub, Topic: "dead"}
	ctx := t.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := model.DeadLetter{ID: model.DocID("Importer", "m9"), Kind: model.DeadMessage, Function: "Importer", Reason: "unknown_job",
		Error: "e", MessageID: "m9", Data: []byte(`{"x":1}`), FirstAt: t0, LastAt: t0, Attempts: 1}
	if err := s.DeadLetter(ctx, d); err == nil {
		t.Fatal("a failed publication reported success: the delivery would be acked with nothing on the topic")
	}
	if got := stored(t, fs, d.ID); got.Published {
		t.Fatalf("marked published after a failed publication: %+v", got)
	}
	for range 2 {
		if err := s.DeadLetter(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got := stored(t, fs, d.ID)
	if !got.Published || got.Attempts != 3 || len(pub.data) != 1 || string(pub.data[0]) != `{"x":1}` {
		t.Errorf("published=%v attempts=%d, on the topic %d times (%q); want published once, 3 attempts", got.Published, got.Attempts, len(pub.data), pub.data)
	}
}
