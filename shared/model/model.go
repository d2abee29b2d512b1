// Package model defines oncesync's Firestore documents, Pub/Sub messages and the deterministic IDs
// that tie them together.
//
// # Data model
//
//	tenants/{tenantId}                     Tenant
//	syncSettings/{settingId}               SyncSetting (tenant, source object, target, chunk size, watermark)
//	jobs/{jobId}                           Job: one per setting per tick, window [windowFrom, windowTo)
//	jobs/{jobId}/slices/{000}              Slice: one part of the Job's window, searched on its own
//	jobs/{jobId}/chunks/{000000}           Chunk: the records of one piece of a slice's search
//	engagements/{tenant~object~externalId} Engagement, upsert target (deterministic IDs)
//	engagementsGen/{auto-id}               Engagement, generated-ID target
//	engagementIndex/{tenant~object~externalId} -> engagementsGen doc ID (the unique constraint)
//	idempotencyKeys/{scope~id}             Key: create-if-absent claims with leases and expireAt (TTL)
//	deliveries/{scope~id}                  duplicate deliveries suppressed for that key (expireAt, TTL)
//	deadLetters/{function~messageId[~n]}   DeadLetter: permanent failures, kept for inspection and replay
//
// All IDs are derived from their inputs, never random (except the generated-ID target's records,
// which are the point of that target): a redelivered message always addresses the same documents.
package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Collection names and fields that infrastructure refers to.
const (
	Tenants         = "tenants"
	SyncSettings    = "syncSettings"
	Jobs            = "jobs"
	Chunks          = "chunks" // subcollection of jobs
	Slices          = "slices" // subcollection of jobs
	Engagements     = "engagements"
	EngagementsGen  = "engagementsGen"
	EngagementIndex = "engagementIndex"
	Keys            = "idempotencyKeys"
	Deliveries      = "deliveries" // duplicate counters, one per idempotency key
	DeadLetters     = "deadLetters"
	Connections     = "connections" // one per tenant: its source connection, credentials sealed

	// ExpireAtField is the idempotency keys' (and dead letters') TTL field.
	ExpireAtField = "expireAt"
)

// TTLCollections are the collection groups with a TTL policy on ExpireAtField.
var TTLCollections = []string{Keys, Deliveries}

// Index is a composite index a query needs.
type Index struct {
	Collection string
	Fields     []string // all ascending
}

// CompositeIndexes lists every composite index oncesync's queries need; terraform declares each.
var CompositeIndexes = append([]Index{
	{Collection: Jobs, Fields: []string{"status", "createdAt"}},   // recovery sweep
	{Collection: Jobs, Fields: []string{"tenantId", "createdAt"}}, // audit tenant
}, targetIndexes()...)

// targetIndexes: the audit's --scan-targets reads every target kind's records by tenant, source
// object and external ID.
func targetIndexes() []Index {
	var out []Index
	for _, k := range TargetKinds {
		out = append(out, Index{Collection: k.Records, Fields: []string{"tenantId", "sourceObject", "externalId"}})
	}
	return out
}

// Target kinds.
const (
	TargetUpsert    = "upsert"    // engagements/{deterministic id}
	TargetGenerated = "generated" // engagementsGen/{auto id} + engagementIndex
)

// TargetKind is where one target kind stores its records: the one place that says so. The
// importer's writers (package target), the scheduler's setting check, the audit, the simulator's
// checkers and the benchmark read it.
type TargetKind struct {
	Name    string
	Records string // collection of the target records
	// Index is the unique-constraint collection that maps an external ID (EngagementKey) to its
	// record's generated document ID; "" when the record's own ID is the EngagementKey.
	Index string
}

// TargetKinds lists every target kind.
var TargetKinds = []TargetKind{
	{Name: TargetUpsert, Records: Engagements},
	{Name: TargetGenerated, Records: EngagementsGen, Index: EngagementIndex},
}

// Kind returns the target kind called name.
func Kind(name string) (TargetKind, bool) {
	for _, k := range TargetKinds {
		if k.Name == name {
			return k, true
		}
	}
	return TargetKind{}, false
}

// Tenant is a customer of the product.
type Tenant struct {
	ID      string `firestore:"-" json:"id"`
	Name    string `firestore:"name" json:"name"`
	Enabled bool   `firestore:"enabled" json:"enabled"`
	// SearchConcurrency is how many searches of one Job may run at once against the tenant's
	// source (Salesforce limits concurrent queries per org); 0: the deployment default.
	SearchConcurrency int `firestore:"searchConcurrency,omitempty" json:"searchConcurrency,omitempty"`
	// Connection is the state of the tenant's source connection (nil: never disconnected).
	Connection *ConnectionState `firestore:"connection,omitempty" json:"connection,omitempty"`
}

// Connection states.
const (
	Connected    = "connected"
	Disconnected = "disconnected"
)

// ConnectionState says whether a tenant's source connection can be used: disconnected, with the
// reason and the time, when no token can be had (a refresh refused, a credential missing), the
// source refused a session right after a fresh token, or the connection lacks a permission a
// setting needs. The tenant's Jobs pause until it is connected again; none fails.
type ConnectionState struct {
	State     string    `firestore:"state" json:"state"`
	Reason    string    `firestore:"reason,omitempty" json:"reason,omitempty"`
	ChangedAt time.Time `firestore:"changedAt" json:"changedAt"`
}

// IsDisconnected reports whether the tenant's connection is disconnected.
func (t Tenant) IsDisconnected() bool {
	return t.Connection != nil && t.Connection.State == Disconnected
}

// SyncSetting says what to import for a tenant, where to, and up to when it has been imported.
type SyncSetting struct {
	ID           string    `firestore:"-" json:"id"`
	TenantID     string    `firestore:"tenantId" json:"tenantId"`
	SourceObject string    `firestore:"sourceObject" json:"sourceObject"` // e.g. "Contact"
	Fields       []string  `firestore:"fields" json:"fields"`             // source fields besides Id and SystemModstamp
	Target       string    `firestore:"target" json:"target"`             // TargetUpsert or TargetGenerated
	ChunkSize    int       `firestore:"chunkSize" json:"chunkSize"`       // 0: the deployment default
	Enabled      bool      `firestore:"enabled" json:"enabled"`
	Watermark    time.Time `firestore:"watermark" json:"watermark"` // end of the last Job's window
	LastJobID    string    `firestore:"lastJobId" json:"lastJobId"`
	// APIReserve is how many of the org's daily API requests this setting's Jobs leave to the
	// customer's other integrations: a search that finds no more than this left pauses (see
	// Job.Pauses) until the budget recovers. 0: no reserve, the budget is not read.
	APIReserve int `firestore:"apiReserve,omitempty" json:"apiReserve,omitempty"`
}

// JobStatus is a Job's place in its life cycle: PENDING → PLANNED → COMPLETED.
type JobStatus string

// Job statuses.
const (
	JobPending   JobStatus = "PENDING"   // created by the scheduler, not yet expanded
	JobPlanned   JobStatus = "PLANNED"   // chunk plan written, chunks importing
	JobCompleted JobStatus = "COMPLETED" // every chunk imported
	JobFailed    JobStatus = "FAILED"    // the source refused the search permanently; see deadLetters
)

// Class is a Job's size class. Each class has its own lane: a chunk topic and an importer
// function with instances of its own, so a small Job's chunks never queue behind a bulk Job's
// backlog (docs/design.md, Fair import across tenants).
type Class string

// Size classes.
const (
	ClassStandard Class = ""     // at most the bulk threshold's records, or not counted
	ClassBulk     Class = "bulk" // more records than the bulk threshold, as the window's count said
)

// ClassOf is the class of a Job whose window counted estimate records; bulkAfter 0: one class.
func ClassOf(estimate, bulkAfter int) Class {
	if bulkAfter > 0 && estimate > bulkAfter {
		return ClassBulk
	}
	return ClassStandard
}

// Job is one import of one sync setting's window.
type Job struct {
	ID        string `firestore:"-" json:"id"`
	TenantID  string `firestore:"tenantId" json:"tenantId"`
	SettingID string `firestore:"settingId" json:"settingId"`
	TickID    string `firestore:"tickId" json:"tickId"` // the tick that made it; empty for a resync
	// Resync is the request a resync Job was made for (oncesync-ops settings resync): the setting's
	// window [WindowFrom, WindowTo) imported again, rows as new as the target's rewritten, the
	// watermark untouched. Empty for a tick's Job.
	Resync       string    `firestore:"resync,omitempty" json:"resync,omitempty"`
	SourceObject string    `firestore:"sourceObject" json:"sourceObject"`
	Fields       []string  `firestore:"fields" json:"fields"`
	Target       string    `firestore:"target" json:"target"`
	ChunkSize    int       `firestore:"chunkSize" json:"chunkSize"`
	WindowFrom   time.Time `firestore:"windowFrom" json:"windowFrom"`
	WindowTo     time.Time `firestore:"windowTo" json:"windowTo"`
	Status       JobStatus `firestore:"status" json:"status"`
	CreatedAt    time.Time `firestore:"createdAt" json:"createdAt"`

	// Trace is the trace ID of the delivery that created the Job (the tick's trace; empty for a
	// resync made by command): the audit links the Job's timeline to it.
	Trace string `firestore:"trace,omitempty" json:"trace,omitempty"`
	// APIReserve is the setting's, when the Job was made.
	APIReserve int `firestore:"apiReserve,omitempty" json:"apiReserve,omitempty"`
	// Budget pauses: a search stopped (or did not start) because the source's request budget was
	// down to the reserve; the key was handed off at the last written chunk, and the recovery
	// sweep resumes the Job once the budget allows.
	Pauses   int       `firestore:"pauses,omitempty" json:"pauses,omitempty"`
	PausedAt time.Time `firestore:"pausedAt,omitempty" json:"pausedAt,omitzero"`
	Pause    string    `firestore:"pause,omitempty" json:"pause,omitempty"` // the last pause's reason

	Searches   int      `firestore:"searches" json:"searches"`               // source searches started for this Job
	SearchedBy []string `firestore:"searchedBy" json:"searchedBy,omitempty"` // lease owners that searched (keeps Searches exact)
	Failure    string   `firestore:"failure,omitempty" json:"failure,omitempty"`
	// A FAILED Job set back to PENDING by a replay of its dead letter (each reopen may search again).
	Reopens    int       `firestore:"reopens,omitempty" json:"reopens,omitempty"`
	ReopenedAt time.Time `firestore:"reopenedAt,omitempty" json:"reopenedAt,omitzero"`

	// Set once, by the first expansion, before any search: the window's slices (see Slice) and
	// how many of them are searched at once.
	SliceCount  int `firestore:"sliceCount" json:"sliceCount"`
	SearchSlots int `firestore:"searchSlots" json:"searchSlots"`
	// Class is the Job's size class, decided with the slices from the window's count: the lane
	// (chunk topic and importer) its chunks go to, for every delivery of the Job.
	Class Class `firestore:"class,omitempty" json:"class,omitempty"`

	// Set once, when the plan is complete (every slice PLANNED).
	ChunkCount   int       `firestore:"chunkCount" json:"chunkCount"`
	RecordCount  int       `firestore:"recordCount" json:"recordCount"`   // valid rows the search returned
	InvalidCount int       `firestore:"invalidCount" json:"invalidCount"` // rows dead-lettered as bad source data
	PlannedAt    time.Time `firestore:"plannedAt" json:"plannedAt"`

	// Set once, at completion, from the chunks.
	Imported    int       `firestore:"imported" json:"imported"`   // target records created or updated
	Unchanged   int       `firestore:"unchanged" json:"unchanged"` // rows whose target already had this or a newer version
	CompletedAt time.Time `firestore:"completedAt" json:"completedAt"`
}

// Slice statuses.
const (
	SlicePending = "PENDING" // not yet searched to its end
	SlicePlanned = "PLANNED" // every chunk of the slice written
)

// Slice is one part [From, To) of a Job's window, searched as its own unit of work: its own
// idempotency key (idem.SliceKey), resume point and chunk indexes (ChunkIndex). The slices of a
// Job are cut once, from the source's counts, and written before any search, so the same Job has
// the same slices and chunks however often and however early its messages arrive.
type Slice struct {
	Index     int       `firestore:"index" json:"index"`
	From      time.Time `firestore:"from" json:"from"`
	To        time.Time `firestore:"to" json:"to"`
	Estimate  int       `firestore:"estimate" json:"estimate"` // rows the source counted when the slice was cut
	Status    string    `firestore:"status" json:"status"`
	Chunks    int       `firestore:"chunks" json:"chunks"` // set when PLANNED
	Rows      int       `firestore:"rows" json:"rows"`
	PlannedAt time.Time `firestore:"plannedAt" json:"plannedAt"`
}

// SliceStride separates the chunk indexes of slices: chunk n of slice s has index
// s*SliceStride + n, so indexes are deterministic per slice and never meet.
const SliceStride = 1_000_000

// ChunkIndex is the index of chunk n of slice s.
func ChunkIndex(slice, n int) int { return slice*SliceStride + n }

// SliceOf is the slice a chunk index belongs to.
func SliceOf(index int) int { return index / SliceStride }

// SliceID is a slice's document ID.
func SliceID(index int) string { return fmt.Sprintf("%03d", index) }

// StartableSlices returns the slices not yet PLANNED that may be searched with at most limit
// searches of the Job in flight: slices 0..limit-1 at once, then slice s once slice s-limit is
// PLANNED (each slice that finishes starts the one limit places after it). slices is indexed by
// Slice.Index.
func StartableSlices(slices []Slice, limit int) []int {
	limit = max(limit, 1)
	var out []int
	for _, sl := range slices {
		if sl.Status == SlicePlanned {
			continue
		}
		if sl.Index < limit || slices[sl.Index-limit].Status == SlicePlanned {
			out = append(out, sl.Index)
		}
	}
	return out
}

// PlanIndexes returns the chunk indexes of a complete plan, in order: for each slice s, chunks
// ChunkIndex(s, 0) .. ChunkIndex(s, Chunks-1); without slices, 0 .. job.ChunkCount-1.
func PlanIndexes(job Job, slices []Slice) []int {
	if len(slices) == 0 {
		out := make([]int, job.ChunkCount)
		for i := range out {
			out[i] = i
		}
		return out
	}
	var out []int
	for _, sl := range slices {
		for n := range sl.Chunks {
			out = append(out, ChunkIndex(sl.Index, n))
		}
	}
	return out
}

// ChunkStatus is a chunk's state: PENDING until its import commits, then DONE.
type ChunkStatus string

// Chunk statuses.
const (
	ChunkPending ChunkStatus = "PENDING"
	ChunkDone    ChunkStatus = "DONE"
)

// Chunk is one slice of a Job's search result, imported as one unit.
type Chunk struct {
	Index        int           `firestore:"index" json:"index"`
	JobID        string        `firestore:"jobId" json:"jobId"`
	TenantID     string        `firestore:"tenantId" json:"tenantId"`
	Status       ChunkStatus   `firestore:"status" json:"status"`
	Records      []ChunkRecord `firestore:"records" json:"records,omitempty"`
	Count        int           `firestore:"count" json:"count"`
	CutBy        string        `firestore:"cutBy" json:"cutBy,omitempty"`     // CutRows, CutBytes or CutEnd (see ChunkRule)
	LastModstamp time.Time     `firestore:"lastModstamp" json:"lastModstamp"` // resume point of the search
	LastID       string        `firestore:"lastId" json:"lastId"`
	PlannedAt    time.Time     `firestore:"plannedAt" json:"plannedAt"`
	DoneAt       time.Time     `firestore:"doneAt" json:"doneAt"`
	Imported     int           `firestore:"imported" json:"imported"`
	Unchanged    int           `firestore:"unchanged" json:"unchanged"`
	Tombstoned   int           `firestore:"tombstoned" json:"tombstoned,omitempty"` // of Imported, written as deleted
}

// ChunkRecord is one source record inside a chunk.
type ChunkRecord struct {
	ID       string         `firestore:"id" json:"id"`
	Modstamp time.Time      `firestore:"modstamp" json:"modstamp"`
	Fields   map[string]any `firestore:"fields" json:"fields,omitempty"`
	Deleted  bool           `firestore:"deleted,omitempty" json:"deleted,omitempty"` // deleted in the source at Modstamp
}

// Engagement is the target record: one per tenant + source object + external ID.
//
// A record deleted in the source is kept as a tombstone: Deleted set, DeletedAt when oncesync
// recorded it, DeletedBy what told it (DeletedBySource: a deleted row, whose stamp is the
// Version; DeletedByReconcile: the ID was missing from the source, and Version is the last
// version seen). Versions stay monotonic both ways: a row older than the stored version, deleted
// or not, changes nothing, and a newer live row (the record restored) revives it.
type Engagement struct {
	TenantID     string         `firestore:"tenantId" json:"tenantId"`
	SourceObject string         `firestore:"sourceObject" json:"sourceObject"`
	ExternalID   string         `firestore:"externalId" json:"externalId"`
	Version      time.Time      `firestore:"version" json:"version"` // the source's SystemModstamp
	Fields       map[string]any `firestore:"fields" json:"fields,omitempty"`
	JobID        string         `firestore:"jobId" json:"jobId"`
	Chunk        int            `firestore:"chunk" json:"chunk"`
	ImportedAt   time.Time      `firestore:"importedAt" json:"importedAt"`
	Deleted      bool           `firestore:"deleted" json:"deleted,omitempty"`
	DeletedAt    time.Time      `firestore:"deletedAt" json:"deletedAt,omitzero"`
	DeletedBy    string         `firestore:"deletedBy" json:"deletedBy,omitempty"`
}

// Who tombstoned a target record (Engagement.DeletedBy).
const (
	DeletedBySource    = "source"    // a deleted row of a search
	DeletedByReconcile = "reconcile" // oncesync-ops settings reconcile: the ID is gone from the source
)

// TickMessage is published by Cloud Scheduler. Every field is optional: the tick's identity
// defaults to the Pub/Sub message ID and its time to the publish time.
type TickMessage struct {
	TickID string    `json:"tickId,omitempty"`
	At     time.Time `json:"at,omitempty"`
	// A part of the tick's work (none set: the tick itself, which lists the enabled settings and
	// fans out into these parts; see package scheduler).
	Unit       []string   `json:"unit,omitempty"`       // a unit: create these settings' Jobs
	ListAfter  string     `json:"listAfter,omitempty"`  // the listing, resumed after this setting ID
	Sweep      bool       `json:"sweep,omitempty"`      // a page of the recovery sweep
	SweepAfter *JobCursor `json:"sweepAfter,omitempty"` // with Sweep: the page starts after this Job
}

// JobCursor is a position in the Jobs' creation order: the recovery sweep's pages.
type JobCursor struct {
	CreatedAt time.Time `json:"createdAt"`
	ID        string    `json:"id"`
}

// ExpandMessage asks the expander to plan one slice of a Job. Slice 0's message (the scheduler's)
// also cuts the Job's slices.
type ExpandMessage struct {
	TenantID string `json:"tenantId"`
	JobID    string `json:"jobId"`
	Slice    int    `json:"slice,omitempty"`
}

// ChunkMessage asks the importer to import one chunk.
type ChunkMessage struct {
	TenantID string `json:"tenantId"`
	JobID    string `json:"jobId"`
	Chunk    int    `json:"chunk"`
}

// JobID is the deterministic ID of the Job a tick creates for a setting.
func JobID(settingID, tickID string) string {
	return settingID + "-" + Hash(tickID)[:16]
}

// ResyncJobID is the ID of the Job of a resync request: the same request, the same Job.
func ResyncJobID(settingID, request string) string { return JobID(settingID, "resync:"+request) }

// ChunkID is a chunk's document ID: its index, zero-padded (slice 0's IDs sort in plan order;
// order a sliced plan by the index field).
func ChunkID(index int) string { return fmt.Sprintf("%06d", index) }

// EngagementKey is the document ID of the upsert target record (and of the generated-ID
// target's index entry) for one tenant + source object + external ID.
func EngagementKey(tenant, object, externalID string) string {
	return DocID(tenant, object, externalID)
}

// DocID joins parts into a valid, readable Firestore document ID. Each part is path-escaped, so
// no part can contain the separator or a slash; overlong IDs are shortened with a hash.
func DocID(parts ...string) string {
	esc := make([]string, len(parts))
	for i, p := range parts {
		esc[i] = strings.ReplaceAll(url.PathEscape(p), "~", "%7E")
	}
	id := strings.Join(esc, "~")
	if len(id) > 1000 {
		id = id[:900] + "~" + Hash(id)
	}
	return id
}

// Hash is the hex SHA-256 of s.
func Hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Dead letter kinds.
const (
	DeadMessage = "message" // a Pub/Sub message that cannot be processed
	DeadRecord  = "record"  // one bad row of source data; the rest of its Job imports
	DeadSetting = "setting" // a sync setting the scheduler could not schedule (e.g. unknown tenant)
)

// DeadLetter records a permanent failure, for inspection and replay.
type DeadLetter struct {
	ID        string `firestore:"-" json:"id"`
	Kind      string `firestore:"kind" json:"kind"`
	Function  string `firestore:"function" json:"function"`
	Reason    string `firestore:"reason" json:"reason"`
	Error     string `firestore:"error" json:"error"`
	MessageID string `firestore:"messageId" json:"messageId,omitempty"`
	Topic     string `firestore:"topic" json:"topic,omitempty"`
	Data      []byte `firestore:"data" json:"data,omitempty"`
	// A payload too large to store whole (a document holds 1 MiB) is stored cut to its first
	// bytes, with the whole payload's size and SHA-256; the dead-letter topic gets it whole.
	DataTruncated bool              `firestore:"dataTruncated,omitempty" json:"dataTruncated,omitempty"`
	DataSize      int               `firestore:"dataSize,omitempty" json:"dataSize,omitempty"`
	DataSHA256    string            `firestore:"dataSha256,omitempty" json:"dataSha256,omitempty"`
	Attributes    map[string]string `firestore:"attributes" json:"attributes,omitempty"`
	PublishTime   time.Time         `firestore:"publishTime" json:"publishTime"`
	TenantID      string            `firestore:"tenantId" json:"tenantId,omitempty"`
	JobID         string            `firestore:"jobId" json:"jobId,omitempty"`
	FirstAt       time.Time         `firestore:"firstAt" json:"firstAt"`
	LastAt        time.Time         `firestore:"lastAt" json:"lastAt"`
	Attempts      int               `firestore:"attempts" json:"attempts"`
	// Published is set once the dead letter is on the dead-letter topic; one whose publication
	// failed is published again when the same failure is recorded again (its redelivery).
	Published  bool      `firestore:"published" json:"published,omitempty"`
	ReplayedAt time.Time `firestore:"replayedAt" json:"replayedAt"`
	Replays    int       `firestore:"replays" json:"replays"`
}
