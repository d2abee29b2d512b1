package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

var _ Publisher = (*bus.PubSub)(nil)

// Replay outcomes.
const (
	Replayed        = "replayed"
	AlreadyReplayed = "already_replayed" // nothing done: replayed before (Force replays again)
	Refused         = "refused"          // nothing done: the replay cannot help; Detail says why
	NotNeeded       = "not_needed"       // nothing done: the work is done already (Force replays anyway)
	WouldReplay     = "would_replay"     // DryRun: what a replay would do
)

// ReplayAttribute is the attribute a replayed message carries: the dead letter's ID, so the
// replay can be followed in the logs.
const ReplayAttribute = "replayOf"

// ReplayOptions tune a replay.
type ReplayOptions struct {
	Topic  string // publish to this topic ID instead of the one the message came from
	Force  bool   // replay again, or although the work looks done or the payload invalid
	DryRun bool   // check and report, change nothing
}

// ReplayResult is what a replay did.
type ReplayResult struct {
	ID          string `json:"id"`
	Outcome     string `json:"outcome"`
	Topic       string `json:"topic,omitempty"`
	MessageID   string `json:"messageId,omitempty"` // of the re-published message
	ReopenedKey string `json:"reopenedKey,omitempty"`
	ReopenedJob string `json:"reopenedJob,omitempty"` // a FAILED Job set back to PENDING
	Replays     int    `json:"replays"`
	Detail      string `json:"detail,omitempty"`
}

// Replayer re-publishes dead-lettered messages.
//
// # Idempotence
//
// A replay marks the dead letter (replayedAt, replays) in a transaction before it publishes, so
// of two replays, even concurrent ones, exactly one publishes; a later replay changes nothing
// unless forced. If the publish fails, the mark is undone.
//
// # Keys
//
// The pipeline abandons (deletes) the idempotency key of a message it dead-letters, so the replay
// claims the work afresh. Deployments before that change completed the key instead, and a plain
// re-publish of their dead letters is acked as a duplicate. So when the work a message asks for is
// still undone — the Job PENDING or PLANNED, the chunk not DONE — and its key is DONE, the replay
// deletes the key in its transaction. It never touches a key whose work is done or in progress;
// the pipeline's own guarantees (the chunk's DONE transition, the plan's resume point) make the
// re-run safe.
//
// # FAILED Jobs
//
// A Job whose search the source refused (a removed field, a revoked permission) is FAILED, and
// the expander acks any expand message of a FAILED Job as a duplicate. Replaying its dead letter
// after the fix sets the Job back to PENDING in the replay's transaction (counting the reopen on
// the Job), so the replayed message expands it: the plan resumes after any chunk written before
// the refusal, and the window is imported. If the source refuses again, the Job fails again with a
// new dead letter. Were the publish to fail, the PENDING Job is the recovery sweep's to re-publish.
type Replayer struct {
	Client    *firestore.Client
	Publisher Publisher
	Now       func() time.Time // default time.Now
}

// work is what a dead-lettered message asks for, as found now.
type work struct {
	done       string                 // non-empty: the work is done; how
	impossible string                 // non-empty: a replay cannot do it; why
	reopen     *firestore.DocumentRef // key to delete so the replay can claim it
	key        string
	reopenJob  *firestore.DocumentRef // FAILED Job to set back to PENDING
}

// Replay replays dead letter id. It returns ErrNotFound when there is no such dead letter; a
// replay that is refused or already done is a result, not an error.
func (r *Replayer) Replay(ctx context.Context, id string, o ReplayOptions) (ReplayResult, error) {
	if r.Client == nil || (r.Publisher == nil && !o.DryRun) {
		return ReplayResult{}, errors.New("audit: replay: missing Firestore client or publisher")
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	ref := r.Client.Collection(model.DeadLetters).Doc(id)
	var (
		res    ReplayResult
		dl     model.DeadLetter
		prevAt time.Time
	)
	err := r.Client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		res = ReplayResult{ID: id}
		snap, err := tx.Get(ref)
		if status.Code(err) == codes.NotFound {
			return fmt.Errorf("audit: dead letter %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if dl, err = decodeDeadLetter(snap); err != nil {
			return err
		}
		res.Replays = dl.Replays
		ok, note := replayable(dl)
		switch {
		case dl.Kind != model.DeadMessage:
			res.Outcome, res.Detail = Refused, "not replayable: "+note
			return nil
		case dl.Replays > 0 && !o.Force:
			res.Outcome = AlreadyReplayed
			res.Detail = fmt.Sprintf("replayed %d times, last at %s: nothing to do (--force replays again)", dl.Replays, ts(dl.ReplayedAt))
			return nil
		case !ok && !o.Force:
			res.Outcome, res.Detail = Refused, "not replayable: "+note
			return nil
		}
		res.Topic = dl.Topic
		if o.Topic != "" {
			res.Topic = o.Topic
		}
		if res.Topic == "" {
			res.Outcome, res.Detail = Refused, "no topic recorded for this message: pass the topic to publish to (--topic)"
			return nil
		}
		w, err := r.work(tx, dl)
		if err != nil {
			return err
		}
		switch {
		case o.Force:
		case w.impossible != "":
			res.Outcome, res.Detail = Refused, w.impossible+" (--force replays anyway)"
			return nil
		case w.done != "":
			res.Outcome, res.Detail = NotNeeded, w.done+": nothing to replay (--force replays anyway)"
			return nil
		}
		res.ReopenedKey = w.key
		if w.reopenJob != nil {
			res.ReopenedJob = w.reopenJob.ID
		}
		if o.DryRun {
			res.Outcome = WouldReplay
			return nil
		}
		if w.reopen != nil {
			if err := tx.Delete(w.reopen); err != nil {
				return err
			}
		}
		if w.reopenJob != nil {
			if err := tx.Update(w.reopenJob, []firestore.Update{
				{Path: "status", Value: model.JobPending},
				{Path: "failure", Value: firestore.Delete},
				{Path: "reopenedAt", Value: now().UTC()},
				{Path: "reopens", Value: firestore.Increment(1)},
			}); err != nil {
				return err
			}
		}
		prevAt = dl.ReplayedAt
		res.Outcome, res.Replays = Replayed, dl.Replays+1
		return tx.Update(ref, []firestore.Update{
			{Path: "replayedAt", Value: now().UTC()},
			{Path: "replays", Value: firestore.Increment(1)},
			{Path: fieldReplayTopic, Value: res.Topic},
			{Path: fieldReopenedKey, Value: w.key},
		})
	})
	if err != nil {
		return ReplayResult{}, fmt.Errorf("audit: replay %s: %w", id, err)
	}
	if res.Outcome != Replayed {
		return res, nil
	}
	attrs := maps.Clone(dl.Attributes)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs[ReplayAttribute] = id
	ids, err := r.Publisher.Publish(ctx, res.Topic, bus.Message{Data: dl.Data, Attributes: attrs})
	if err != nil {
		_, uerr := ref.Update(context.WithoutCancel(ctx), []firestore.Update{
			{Path: "replays", Value: firestore.Increment(-1)},
			{Path: "replayedAt", Value: prevAt},
		})
		if uerr != nil {
			return ReplayResult{}, fmt.Errorf("audit: replay %s: publish to %s: %w; and the dead letter stays marked replayed (%v): replay it with --force", id, res.Topic, err, uerr)
		}
		return ReplayResult{}, fmt.Errorf("audit: replay %s: publish to %s: %w (nothing replayed)", id, res.Topic, err)
	}
	res.MessageID = ids[0]
	if _, err := ref.Update(ctx, []firestore.Update{{Path: fieldReplayMessageID, Value: res.MessageID}}); err != nil {
		res.Detail = fmt.Sprintf("published, but the message ID was not recorded on the dead letter: %v", err)
	}
	return res, nil
}

// work reads the state of what dl's message asks for, inside the replay's transaction.
func (r *Replayer) work(tx *firestore.Transaction, dl model.DeadLetter) (work, error) {
	jobs := r.Client.Collection(model.Jobs)
	keys := r.Client.Collection(model.Keys)
	switch dl.Function {
	case config.Expander:
		var m model.ExpandMessage
		if err := json.Unmarshal(dl.Data, &m); err != nil || m.JobID == "" {
			return work{impossible: "the payload is not an expand message"}, nil
		}
		key := idem.ExpandKey(m.JobID)
		snaps, err := tx.GetAll([]*firestore.DocumentRef{jobs.Doc(m.JobID), keys.Doc(key.DocID())})
		if err != nil {
			return work{}, err
		}
		if !snaps[0].Exists() {
			return work{impossible: fmt.Sprintf("Job %s does not exist", m.JobID)}, nil
		}
		switch st, _ := snaps[0].DataAt("status"); st {
		case string(model.JobCompleted):
			return work{done: fmt.Sprintf("Job %s is COMPLETED", m.JobID)}, nil
		case string(model.JobFailed):
			w := reopen(snaps[1], key)
			w.reopenJob = snaps[0].Ref
			return w, nil
		}
		return reopen(snaps[1], key), nil
	case config.Importer, config.ImporterBulk:
		var m model.ChunkMessage
		if err := json.Unmarshal(dl.Data, &m); err != nil || m.JobID == "" || m.Chunk < 0 {
			return work{impossible: "the payload is not a chunk message"}, nil
		}
		key := chunkKey(m.JobID, m.Chunk)
		snaps, err := tx.GetAll([]*firestore.DocumentRef{
			jobs.Doc(m.JobID), jobs.Doc(m.JobID).Collection(model.Chunks).Doc(model.ChunkID(m.Chunk)), keys.Doc(key.DocID()),
		})
		if err != nil {
			return work{}, err
		}
		switch {
		case !snaps[0].Exists():
			return work{impossible: fmt.Sprintf("Job %s does not exist", m.JobID)}, nil
		case !snaps[1].Exists():
			return work{impossible: fmt.Sprintf("chunk %d of Job %s does not exist", m.Chunk, m.JobID)}, nil
		}
		if st, _ := snaps[1].DataAt("status"); st == string(model.ChunkDone) {
			return work{done: fmt.Sprintf("chunk %d of Job %s is DONE", m.Chunk, m.JobID)}, nil
		}
		return reopen(snaps[2], key), nil
	}
	return work{}, nil
}

// reopen returns the work of a key: deleted if the dead-lettering delivery closed it.
func reopen(snap *firestore.DocumentSnapshot, key idem.Key) work {
	if !snap.Exists() {
		return work{}
	}
	if st, _ := snap.DataAt("state"); st != idem.Done {
		return work{} // in progress, or released: the replay claims or waits for it
	}
	return work{reopen: snap.Ref, key: key.String()}
}
