package deadletter_test

import (
	"context"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/deadletter"
	"github.com/oncesync/oncesync/shared/model"
)

type recorder struct{ topics []string }

func (r *recorder) Publish(_ context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	for range msgs {
		r.topics = append(r.topics, topic)
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
	snap, err := fs.Collection(model.DeadLetters).Doc(d.ID).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got model.DeadLetter
	if err := snap.DataTo(&got); err != nil {
		t.Fatal(err)
	}
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
