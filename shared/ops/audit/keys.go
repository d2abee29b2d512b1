package audit

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Steps of the pipeline, as the idempotency keys name them.
const (
	StepTick   = idem.ScopeTick
	StepExpand = idem.ScopeExpand
	StepChunk  = idem.ScopeChunk
)

// KeyReport is one idempotency key and its duplicate counter: the deliveries one unit of work saw.
type KeyReport struct {
	Key   string `json:"key"` // "expand:{jobId}", "chunk:{jobId~000003}", "tick:{tickId}"
	Step  string `json:"step"`
	Chunk *int   `json:"chunk,omitempty"`
	// Found is false when the key does not exist: never claimed, or deleted by its TTL.
	Found      bool      `json:"found"`
	State      string    `json:"state,omitempty"`
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	Expired    bool      `json:"expired,omitempty"` // IN_PROGRESS with its lease run out
	// Deliveries = Claims + Duplicates.
	Deliveries      int       `json:"deliveries"`
	Claims          int       `json:"claims"`          // deliveries that won the key: 1 + takeovers
	Takeovers       int       `json:"takeovers"`       // claims that took an expired lease over
	Duplicates      int       `json:"duplicates"`      // deliveries suppressed
	WhileInProgress int       `json:"whileInProgress"` // of those, sent back for redelivery
	MessageID       string    `json:"messageId,omitempty"`
	LastDupMessage  string    `json:"lastDuplicateMessageId,omitempty"`
	CreatedAt       time.Time `json:"createdAt,omitzero"`
	UpdatedAt       time.Time `json:"updatedAt,omitzero"`
	DoneAt          time.Time `json:"doneAt,omitzero"`
	LastDuplicateAt time.Time `json:"lastDuplicateAt,omitzero"`
	// Trace is the trace of the delivery that holds (or finished) the key; DuplicateTrace the
	// last duplicate's (the same trace for a copy of the same message; another for a sweep's).
	Trace          string `json:"trace,omitempty"`
	DuplicateTrace string `json:"duplicateTrace,omitempty"`
	Tenant         string `json:"tenant,omitempty"`
	Job            string `json:"job,omitempty"`
}

// StepReport sums the keys of one step.
type StepReport struct {
	Step            string `json:"step"`
	Keys            int    `json:"keys"`    // keys expected
	Found           int    `json:"found"`   // keys that exist
	Missing         int    `json:"missing"` // expected, not found (TTL, or never claimed)
	Deliveries      int    `json:"deliveries"`
	Claims          int    `json:"claims"`
	Takeovers       int    `json:"takeovers"`
	Suppressed      int    `json:"suppressed"`
	WhileInProgress int    `json:"whileInProgress"`
	Open            int    `json:"open"`    // IN_PROGRESS
	Expired         int    `json:"expired"` // IN_PROGRESS with the lease run out
}

func (s *StepReport) add(k KeyReport) {
	s.Keys++
	if !k.Found && k.Duplicates == 0 {
		s.Missing++
		return
	}
	s.Found++
	s.Deliveries += k.Deliveries
	s.Claims += k.Claims
	s.Takeovers += k.Takeovers
	s.Suppressed += k.Duplicates
	s.WhileInProgress += k.WhileInProgress
	if k.State == idem.InProgress {
		s.Open++
	}
	if k.Expired {
		s.Expired++
	}
}

// chunkKey is the idempotency key of chunk i of a Job, as the importer claims it.
func chunkKey(jobID string, i int) idem.Key {
	return idem.ChunkKey(jobID, i)
}

// getAll reads refs in batches, counting the reads.
func (a *Auditor) getAll(ctx context.Context, r *reads, refs []*firestore.DocumentRef) ([]*firestore.DocumentSnapshot, error) {
	const batch = 300
	out := make([]*firestore.DocumentSnapshot, 0, len(refs))
	for i := 0; i < len(refs); i += batch {
		part := refs[i:min(i+batch, len(refs))]
		snaps, err := a.fs.GetAll(ctx, part)
		if err != nil {
			return nil, err
		}
		r.docs(len(part))
		out = append(out, snaps...)
	}
	return out, nil
}

// keys reads keys and their duplicate counters, in the order given.
func (a *Auditor) keys(ctx context.Context, r *reads, keys []idem.Key) ([]KeyReport, error) {
	refs := make([]*firestore.DocumentRef, 0, 2*len(keys))
	for _, k := range keys {
		refs = append(refs, a.fs.Collection(model.Keys).Doc(k.DocID()))
	}
	for _, k := range keys {
		refs = append(refs, a.fs.Collection(model.Deliveries).Doc(k.DocID()))
	}
	snaps, err := a.getAll(ctx, r, refs)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("audit: read idempotency keys: %w", err))
	}
	now := a.now()
	out := make([]KeyReport, len(keys))
	for i, k := range keys {
		kr := KeyReport{Key: k.String(), Step: k.Scope}
		if ks := snaps[i]; ks.Exists() {
			var d idem.Doc
			if err := ks.DataTo(&d); err != nil {
				return nil, fmt.Errorf("audit: decode %s: %w", ks.Ref.Path, err)
			}
			kr.fromKey(d, now)
		}
		if ds := snaps[len(keys)+i]; ds.Exists() {
			var d idem.Deliveries
			if err := ds.DataTo(&d); err != nil {
				return nil, fmt.Errorf("audit: decode %s: %w", ds.Ref.Path, err)
			}
			kr.fromDeliveries(d)
		}
		out[i] = kr
	}
	return out, nil
}

func (kr *KeyReport) fromKey(d idem.Doc, now time.Time) {
	kr.Found = true
	kr.State, kr.Owner, kr.LeaseUntil = d.State, d.Owner, d.LeaseUntil
	kr.Claims, kr.Takeovers = d.Attempts, d.Takeovers
	kr.MessageID = d.Labels["messageId"]
	kr.Tenant, kr.Job = d.Labels["tenant"], d.Labels["job"]
	kr.CreatedAt, kr.UpdatedAt, kr.DoneAt = d.CreatedAt, d.UpdatedAt, d.DoneAt
	kr.Trace = telemetry.TraceID(d.Trace)
	kr.Expired = d.State == idem.InProgress && !d.LeaseUntil.After(now)
	kr.Deliveries = kr.Claims + kr.Duplicates
	if d.Scope != "" {
		kr.Step = d.Scope
	}
	if d.Key != "" {
		kr.Key = d.Key
	}
}

func (kr *KeyReport) fromDeliveries(d idem.Deliveries) {
	kr.Duplicates, kr.WhileInProgress, kr.LastDuplicateAt = d.Duplicates, d.WhileInProgress, d.LastDuplicateAt
	kr.LastDupMessage = d.Labels["messageId"]
	kr.DuplicateTrace = telemetry.TraceID(d.LastTrace)
	kr.Deliveries = kr.Claims + kr.Duplicates
}

// leaseFinding is the finding for an expired lease, or nil.
func leaseFinding(k KeyReport, job string) *Finding {
	if !k.Expired {
		return nil
	}
	return &Finding{
		Severity: Warning, Kind: ExpiredLease, Job: job, Chunk: k.Chunk, Key: k.Key,
		Docs:   []string{model.Keys + "/" + keyDocID(k.Key)},
		Detail: fmt.Sprintf("key %s is IN_PROGRESS but its lease ran out at %s (owner %s, %d claims): nobody is working on it; the next redelivery or the recovery sweep's re-publish takes it over", k.Key, ts(k.LeaseUntil), k.Owner, k.Claims),
	}
}

// keyDocID returns the document ID of a key written as "scope:id".
func keyDocID(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == ':' {
			return idem.Key{Scope: key[:i], ID: key[i+1:]}.DocID()
		}
	}
	return key
}
