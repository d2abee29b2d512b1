package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/model"
)

// DeadLetterSummary is one dead letter as a person reads it.
type DeadLetterSummary struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"` // message, record, setting
	Function  string    `json:"function"`
	Reason    string    `json:"reason"`
	Error     string    `json:"error"`
	Tenant    string    `json:"tenant,omitempty"`
	Job       string    `json:"job,omitempty"`
	MessageID string    `json:"messageId,omitempty"`
	Topic     string    `json:"topic,omitempty"`
	FirstAt   time.Time `json:"firstAt"`
	LastAt    time.Time `json:"lastAt"`
	Attempts  int       `json:"attempts"`
	Payload   string    `json:"payload"` // one-line summary of the data
	// Replayable is false for bad source rows and skipped settings (nothing to re-publish) and
	// for payloads that cannot be valid; Note says why, or what replay will do.
	Replayable      bool      `json:"replayable"`
	Note            string    `json:"note,omitempty"`
	Replays         int       `json:"replays"`
	ReplayedAt      time.Time `json:"replayedAt,omitzero"`
	ReplayMessageID string    `json:"replayMessageId,omitempty"`
	// Resolved: an audit found the work done since (its Job COMPLETED) without a replay of it.
	Resolved bool `json:"resolved,omitempty"`
}

// DeadLetterFilter selects dead letters; empty fields match everything.
type DeadLetterFilter struct {
	Tenant, Job, Kind, Function, Reason string
	Unreplayed                          bool      // only those never replayed
	Since                               time.Time // last attempt at or after
	Until                               time.Time // first attempt before
	Limit                               int       // keep the latest Limit (by first attempt); 0: all
}

// Fields the replay writes on a dead letter besides model.DeadLetter's replayedAt and replays.
const (
	fieldReplayMessageID = "replayMessageId" // Pub/Sub message ID of the last replay
	fieldReplayTopic     = "replayTopic"     // topic it was published to
	fieldReopenedKey     = "replayReopenedKey"
)

// DeadLetters lists dead letters in the order of their first attempt, message dead letters whose
// Job has COMPLETED since marked Resolved. Every equality filter is applied by Firestore
// (single-field indexes); the time range and Unreplayed are applied here, so the cost is one read
// per dead letter matching the equality filters, plus one per Job of a message dead letter.
func (a *Auditor) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetterSummary, error) {
	var rd reads
	dls, err := a.deadLetters(ctx, &rd, f)
	if err != nil {
		return nil, err
	}
	if err := a.resolveAll(ctx, &rd, dls, map[string]model.JobStatus{}); err != nil {
		return nil, err
	}
	return dls, nil
}

func (a *Auditor) deadLetters(ctx context.Context, rd *reads, f DeadLetterFilter) ([]DeadLetterSummary, error) {
	q := a.fs.Collection(model.DeadLetters).Query
	for _, c := range []struct{ field, value string }{
		{"tenantId", f.Tenant}, {"jobId", f.Job}, {"kind", f.Kind}, {"function", f.Function}, {"reason", f.Reason},
	} {
		if c.value != "" {
			q = q.Where(c.field, "==", c.value)
		}
	}
	docs, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("audit: dead letters: %w", err))
	}
	rd.query(len(docs))
	out := []DeadLetterSummary{}
	for _, d := range docs {
		s, err := summarize(d)
		if err != nil {
			return nil, err
		}
		if f.Unreplayed && s.Replays > 0 ||
			!f.Since.IsZero() && s.LastAt.Before(f.Since) ||
			!f.Until.IsZero() && !s.FirstAt.Before(f.Until) {
			continue
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].FirstAt.Equal(out[j].FirstAt) {
			return out[i].FirstAt.Before(out[j].FirstAt)
		}
		return out[i].ID < out[j].ID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

func decodeDeadLetter(snap *firestore.DocumentSnapshot) (model.DeadLetter, error) {
	var d model.DeadLetter
	if err := snap.DataTo(&d); err != nil {
		return d, fmt.Errorf("audit: decode %s: %w", snap.Ref.Path, err)
	}
	d.ID = snap.Ref.ID
	return d, nil
}

func summarize(snap *firestore.DocumentSnapshot) (DeadLetterSummary, error) {
	d, err := decodeDeadLetter(snap)
	if err != nil {
		return DeadLetterSummary{}, err
	}
	s := DeadLetterSummary{
		ID: d.ID, Kind: d.Kind, Function: d.Function, Reason: d.Reason, Error: d.Error, Tenant: d.TenantID, Job: d.JobID,
		MessageID: d.MessageID, Topic: d.Topic, FirstAt: d.FirstAt, LastAt: d.LastAt, Attempts: d.Attempts,
		Payload: payloadSummary(d.Data), Replays: d.Replays, ReplayedAt: d.ReplayedAt,
	}
	if v, err := snap.DataAt(fieldReplayMessageID); err == nil {
		s.ReplayMessageID, _ = v.(string)
	}
	s.Replayable, s.Note = replayable(d)
	return s, nil
}

// invalidPayload are reasons that say the message itself can never be processed.
var invalidPayload = []string{"malformed_event", "malformed_message", "missing_field"}

// replayable says whether replaying d can help, and why not.
func replayable(d model.DeadLetter) (bool, string) {
	switch {
	case d.Kind == model.DeadRecord:
		return false, "a bad source row, not a message: fix the row in the source; its next change (a new SystemModstamp) is imported by the next Job"
	case d.Kind == model.DeadSetting:
		return false, "a sync setting the scheduler skipped: fix the setting or its tenant; every tick checks it again"
	case d.Kind != model.DeadMessage:
		return false, fmt.Sprintf("unknown kind %q", d.Kind)
	case slices.Contains(invalidPayload, d.Reason):
		return false, "the payload itself is invalid: a replay would be dead-lettered again (--force to try anyway)"
	case d.Topic == "":
		return true, "no topic recorded: replay needs --topic"
	}
	return true, ""
}

// NeedsAction reports whether the dead letter still needs a person: a bad row or a skipped
// setting always does; a message until it is replayed or its work got done otherwise.
func (d DeadLetterSummary) NeedsAction() bool {
	return d.Kind != model.DeadMessage || (d.Replays == 0 && !d.Resolved)
}

// resolveAll resolves the message dead letters whose Job has COMPLETED (see resolve), reading
// each Job not in known once.
func (a *Auditor) resolveAll(ctx context.Context, rd *reads, dls []DeadLetterSummary, known map[string]model.JobStatus) error {
	for i, d := range dls {
		if d.Job == "" || d.Kind != model.DeadMessage || d.Replays > 0 {
			continue
		}
		st, ok := known[d.Job]
		if !ok {
			j, err := a.readJob(ctx, rd, d.Job)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			st, known[d.Job] = j.Status, j.Status
		}
		resolve(dls[i:i+1], st)
	}
	return nil
}

// resolve notes on message dead letters of a COMPLETED Job that their work got done since (by
// a replay of another copy, or the recovery sweep's re-publish): they need nothing more.
func resolve(dls []DeadLetterSummary, status model.JobStatus) {
	if status != model.JobCompleted {
		return
	}
	for i := range dls {
		if dls[i].Kind == model.DeadMessage && dls[i].Replays == 0 {
			dls[i].Resolved = true
			dls[i].Note = "the Job completed since: nothing to replay"
		}
	}
}

// deadLetterFinding is the finding for a dead letter, or nil when it needs nothing more.
func deadLetterFinding(d DeadLetterSummary) *Finding {
	f := &Finding{Severity: Warning, Job: d.Job, DeadLetter: d.ID, Docs: []string{model.DeadLetters + "/" + d.ID}}
	switch d.Kind {
	case model.DeadRecord:
		f.Kind = RejectedRow
		f.Detail = fmt.Sprintf("source row %s rejected by the %s (%s: %s): not imported", d.Payload, d.Function, d.Reason, d.Error)
	case model.DeadSetting:
		f.Kind = SettingSkipped
		f.Detail = fmt.Sprintf("sync setting skipped by the %s (%s: %s), %d times from %s to %s", d.Function, d.Reason, d.Error, d.Attempts, ts(d.FirstAt), ts(d.LastAt))
	default:
		if !d.NeedsAction() {
			return nil
		}
		f.Kind = DeadLetter
		f.Detail = fmt.Sprintf("message %s to the %s dead-lettered (%s: %s), %d attempts from %s to %s; after the fix: oncesync-ops deadletters replay %s",
			d.MessageID, d.Function, d.Reason, d.Error, d.Attempts, ts(d.FirstAt), ts(d.LastAt), d.ID)
	}
	return f
}

// payloadKeys are the fields a payload summary shows first, when present.
var payloadKeys = []string{"Id", "id", "tenantId", "jobId", "chunk", "tickId", "at", "SystemModstamp", "modstamp", "reason"}

// payloadSummary is a one-line summary of a dead letter's data.
func payloadSummary(data []byte) string {
	const maxLen = 120
	if len(data) == 0 {
		return "(empty)"
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err == nil {
		var parts []string
		for _, k := range payloadKeys {
			if v, ok := m[k]; ok {
				parts = append(parts, k+"="+scalar(v))
			}
		}
		others := make([]string, 0, len(m))
		for k := range m {
			if !slices.Contains(payloadKeys, k) && k != "attributes" {
				others = append(others, k)
			}
		}
		sort.Strings(others)
		for _, k := range others[:min(3, len(others))] {
			parts = append(parts, k+"="+scalar(m[k]))
		}
		if rest := len(others) - min(3, len(others)); rest > 0 {
			parts = append(parts, fmt.Sprintf("+%d fields", rest))
		}
		return cut(strings.Join(parts, " "), maxLen)
	}
	if utf8.Valid(data) && strings.IndexFunc(string(data), func(r rune) bool { return !unicode.IsPrint(r) && !unicode.IsSpace(r) }) < 0 {
		return cut(fmt.Sprintf("%q", string(data)), maxLen)
	}
	return fmt.Sprintf("%d bytes of binary data", len(data))
}

func scalar(v any) string {
	switch x := v.(type) {
	case string:
		if x == "" || strings.ContainsAny(x, " \t\n") {
			return fmt.Sprintf("%q", x)
		}
		return x
	case float64, bool, nil:
		return fmt.Sprint(x)
	}
	b, _ := json.Marshal(v)
	return cut(string(b), 40)
}

func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
