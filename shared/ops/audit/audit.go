// Package audit answers "was anything imported twice, or lost, and why" for one Job or for one
// tenant, from what the pipeline records in Firestore, and lists and replays dead letters. It
// reads production (Application Default Credentials) and the emulators alike, and never writes,
// except for a dead-letter replay.
//
// # What a Job audit reads
//
//	jobs/{id}                      window, status, timeline, counters, source searches
//	jobs/{id}/chunks/*             in plan order, a page at a time; records only with CheckRecords
//	engagements / engagementsGen   where jobId = id (the records it wrote), and by document ID
//	engagementIndex/{key}          by document ID: which generated-ID record is the one kept
//	idempotencyKeys/{scope~id}     tick:{tickId}, expand:{jobId}, chunk:{jobId~000000}…, by document ID
//	deliveries/{scope~id}          the duplicate counters of the same keys, by document ID
//	deadLetters where jobId = id
//
// Deliveries seen for one unit of work are the key's claims (1 + takeovers) plus its suppressed
// duplicates; a key or counter missing after ONCESYNC_KEY_RETENTION was deleted by its TTL.
//
// # Cost
//
// A Job of n records in c chunks costs about n + 3c + 6 documents read with CheckRecords (2n +
// 3c + 6 on the generated-ID target, which also reads its index): each record the Job wrote once,
// each record a later Job rewrote once more, each chunk once, in full, and two per chunk for its
// key and counter (missing documents are billed too). A 20,000-record Job in 40 chunks reads about
// 20,130 documents (40,130 generated-ID), a few cents; without CheckRecords 3c + 6, about 130.
// Every lookup is by document ID or by equality, so it is fast on the emulator too (which scans a
// whole collection per query, and once per value of an "in" filter): 22,000 records in 1.3 s.
//
// Memory: the records a Job of up to 100,000 rows wrote are read with one query and held (about
// 250 bytes each); a bigger Job's are read chunk by chunk. Chunks are read a page at a time, at
// most 2 × Parallel of them (each at most ~1 MiB) in memory.
//
// A tenant audit is the sum of the audits of its Jobs created in [since, until) — so bound it
// with since on a tenant with millions of records — plus one query each for its unfinished Jobs,
// open idempotency keys and dead letters. ScanTargets adds one paged read of every target
// record of the tenant (ordered by the composite index tenantId, sourceObject, externalId), which
// finds a duplicate however old it is, in bounded memory: about one document read per record.
//
// # Findings
//
// Anything that needs a person is a Finding; a report without findings is clean. Severity Error
// means the data is wrong (a record imported twice, a record lost, a plan that does not add up);
// Warning means work needs attention (stuck, failed, expired lease, dead-lettered). Facts that
// show the pipeline doing its job — duplicate deliveries suppressed, leases taken over after a
// crash, a second search after such a takeover — are reported, not flagged.
package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/config"
)

// ErrNotFound is returned when the audited Job or the dead letter to replay does not exist.
var ErrNotFound = errors.New("audit: not found")

// Severity ranks a finding.
type Severity string

// Severities.
const (
	Error   Severity = "error"   // the data is wrong
	Warning Severity = "warning" // work needs attention
)

// Finding kinds.
const (
	DuplicateRecord = "duplicate_record" // an external ID has more than one target record
	MissingRecord   = "missing_record"   // a row of a DONE chunk has no target record
	StaleRecord     = "stale_record"     // its target record is older than the row
	ExtraChunk      = "extra_chunk"      // a chunk document outside the plan
	MissingChunk    = "missing_chunk"    // a planned chunk without a document
	ChunkNotDone    = "chunk_not_done"   // a COMPLETED Job with a chunk that is not DONE
	PlanMismatch    = "plan_mismatch"    // chunk count or rows disagree with the plan
	CounterMismatch = "counter_mismatch" // the Job's counters disagree with its chunks
	ExtraSearch     = "extra_search"     // more source searches than expansions that needed one
	JobStuck        = "job_stuck"        // not finished StuckAfter after its creation
	JobFailed       = "job_failed"       // the source refused the search
	ExpiredLease    = "expired_lease"    // an IN_PROGRESS key whose lease ran out: nobody is working on it
	DeadLetter      = "dead_letter"      // a message dead-lettered and not replayed
	RejectedRow     = "rejected_row"     // a source row dead-lettered as bad data: it was not imported
	SettingSkipped  = "setting_skipped"  // a sync setting the scheduler could not schedule
)

var kindOrder = []string{
	DuplicateRecord, MissingRecord, StaleRecord, ExtraChunk, MissingChunk, ChunkNotDone, PlanMismatch,
	CounterMismatch, ExtraSearch, JobFailed, JobStuck, ExpiredLease, DeadLetter, RejectedRow, SettingSkipped,
}

// Finding is one thing a person should look at.
type Finding struct {
	Severity   Severity `json:"severity"`
	Kind       string   `json:"kind"`
	Job        string   `json:"job,omitempty"`
	Chunk      *int     `json:"chunk,omitempty"`
	ExternalID string   `json:"externalId,omitempty"`
	Key        string   `json:"key,omitempty"`
	DeadLetter string   `json:"deadLetter,omitempty"`
	Docs       []string `json:"docs,omitempty"` // paths of the documents involved
	Detail     string   `json:"detail"`
}

// Where says where a finding was made, for the text report.
func (f Finding) Where() string {
	switch {
	case f.ExternalID != "" && f.Chunk != nil:
		return fmt.Sprintf("chunk %d, id %s", *f.Chunk, f.ExternalID)
	case f.ExternalID != "":
		return "id " + f.ExternalID
	case f.Chunk != nil:
		return fmt.Sprintf("chunk %d", *f.Chunk)
	case f.Key != "":
		return f.Key
	case f.DeadLetter != "":
		return "deadLetters/" + f.DeadLetter
	}
	return "job"
}

func intp(i int) *int { return &i }

// Auditor reads what the pipeline recorded. Set its fields after New, before the first call.
type Auditor struct {
	// Now is the time leases and stuck Jobs are judged against (default time.Now).
	Now func() time.Time
	// StuckAfter is how long after its creation an unfinished Job counts as stuck (default: the
	// scheduler's recovery-sweep bound, 20 m).
	StuckAfter time.Duration
	// CheckRecords looks up the target record of every row of every DONE chunk (default true):
	// the duplicate and missing-record checks. Without it an audit reads metadata only.
	CheckRecords bool
	// ScanTargets makes Tenant also stream every target record of the tenant (see Cost).
	ScanTargets bool
	// Parallel is the number of chunks checked at once (default 8).
	Parallel int
	// MaxFindings caps the findings listed per kind (default 100); the rest are counted.
	MaxFindings int

	fs      *firestore.Client
	preload int // tests: preloadRows instead of the constant
}

// New returns an Auditor reading fs with the defaults.
func New(fs *firestore.Client) *Auditor {
	return &Auditor{
		Now: time.Now, StuckAfter: config.Default().StuckAfter, CheckRecords: true,
		Parallel: 8, MaxFindings: 100, fs: fs,
	}
}

func (a *Auditor) now() time.Time {
	if a.Now == nil {
		return time.Now().UTC()
	}
	return a.Now().UTC()
}

func (a *Auditor) stuckAfter() time.Duration {
	if a.StuckAfter <= 0 {
		return config.Default().StuckAfter
	}
	return a.StuckAfter
}

func (a *Auditor) parallel() int { return max(1, a.Parallel) }

// findings collects findings from concurrent checks, listing up to max per kind.
type findings struct {
	mu      sync.Mutex
	max     int
	list    []Finding
	perKind map[string]int
	omitted map[string]int
}

func newFindings(max int) *findings {
	if max <= 0 {
		max = 100
	}
	return &findings{max: max, perKind: map[string]int{}, omitted: map[string]int{}}
}

func (fs *findings) add(f Finding) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.perKind[f.Kind] >= fs.max {
		fs.omitted[f.Kind]++
		return
	}
	fs.perKind[f.Kind]++
	fs.list = append(fs.list, f)
}

func (fs *findings) addAll(list []Finding, omitted map[string]int) {
	for _, f := range list {
		fs.add(f)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for k, n := range omitted {
		fs.omitted[k] += n
	}
}

// sorted returns the findings errors first, then in kind order, job, chunk and external ID.
func (fs *findings) sorted() ([]Finding, map[string]int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := slices.Clone(fs.list)
	rank := func(k string) int {
		if i := slices.Index(kindOrder, k); i >= 0 {
			return i
		}
		return len(kindOrder)
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Severity != b.Severity {
			if a.Severity == Error {
				return -1
			}
			return 1
		}
		ca, cb := -1, -1
		if a.Chunk != nil {
			ca = *a.Chunk
		}
		if b.Chunk != nil {
			cb = *b.Chunk
		}
		return cmp.Or(cmp.Compare(rank(a.Kind), rank(b.Kind)), cmp.Compare(a.Job, b.Job), cmp.Compare(ca, cb),
			cmp.Compare(a.ExternalID, b.ExternalID), cmp.Compare(a.Key, b.Key), cmp.Compare(a.DeadLetter, b.DeadLetter))
	})
	if out == nil {
		out = []Finding{}
	}
	var omitted map[string]int
	for k, n := range fs.omitted {
		if omitted == nil {
			omitted = map[string]int{}
		}
		omitted[k] = n
	}
	return out, omitted
}

// reads counts the documents an audit reads (what Firestore bills, approximately: a query that
// returns nothing is billed one read).
type reads struct{ n atomic.Int64 }

func (r *reads) query(docs int) { r.n.Add(int64(max(1, docs))) }
func (r *reads) docs(n int)     { r.n.Add(int64(n)) }

// ctxErr prefers the context's error: a canceled audit says so rather than naming the query.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}
