// Package source is the contract between oncesync and the external service it imports from: the
// neutral types of a search and the Source interface a connector implements. The expander, the
// audit and the harness use only this package; a connector (package salesforce below it, or a
// later one) is chosen in one place from configuration (connectors.New), and every connector
// passes the conformance suite in package sourcetest.
//
// # The contract
//
// A Search is one query over a fixed window [From, To) of the records' modification stamps,
// delivered page by page in (Modstamp, ID) order, each page handed to the callback before the
// next is fetched (memory is bounded by one page), and the callback called at least once (an
// empty window is one empty page). A search resumes strictly after any Key with Query.After
// (keyset paging): resuming after the last record of a page returns what the rest of the original
// search would have returned, give or take records changed in between.
//
// Each row is checked before it becomes a Record: a row with no ID, no parsable stamp, a stamp
// outside the window (or not after After), or a key not after the previous valid row's is bad
// source data, reported in Page.Invalid with its raw form and a reason, and never stops the
// search. The same ID may appear twice with different stamps (a record updated while the search
// was paging); both are kept.
//
// Record.Fields holds the requested fields under the names the Query spelled them, decoded as
// encoding/json decodes into any. A field missing from a row is missing from Fields.
//
// # Deleted records
//
// With Query.Deleted, a search also returns the records deleted in the window, as long as the
// source still keeps them (Salesforce: the recycle bin, 15 days), each with Record.Deleted set
// and its stamp at the deletion; a record restored after that comes back live with a later
// stamp. A record the source no longer keeps (a hard delete) is not returned at all: only a
// comparison of IDs finds it (oncesync-ops settings reconcile). Count measures the same rows
// Search returns.
//
// # API budget
//
// A connector whose source rations requests (Salesforce: the org's daily API requests) reports
// what it learned of the budget with each page (Page.Usage) and answers Budgeter.Usage before a
// search; a zero Usage means unknown.
//
// # Errors
//
// Search returns ErrPermanent (check with IsPermanent) when repeating the search cannot help (an
// invalid Query, a rejected token, a refused query); a transient error otherwise, once the
// connector's own retries are spent; ctx's error, wrapped, when ctx ends; the callback's error as
// is.
package source

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Source runs searches. A connector implements it.
type Source interface {
	Search(ctx context.Context, q Query, fn func(ctx context.Context, p Page) error) error
}

// Budgeter is implemented by a connector that can tell how much of its source's request budget
// is spent without spending any (Salesforce: /limits, which does not count against the daily
// requests). The expander asks it before a search of a setting that keeps a reserve.
type Budgeter interface {
	Usage(ctx context.Context) (Usage, error)
}

// Limits are what a connector's source allows, declared by the connector: the page sizes it
// serves and the searches one org (one tenant's connection) runs at once. The operator's checks
// and the terraform drift test read them.
type Limits struct {
	MinPageSize, MaxPageSize int
	MaxConcurrentSearches    int
}

// Usage is how much of a source's request budget is spent: Used of Limit requests (Salesforce:
// DailyApiRequests, a rolling 24 hours). The zero Usage means unknown.
type Usage struct {
	Used, Limit int
}

// Known reports whether u says anything.
func (u Usage) Known() bool { return u.Limit > 0 }

// Left is how many requests remain (never negative).
func (u Usage) Left() int { return max(u.Limit-u.Used, 0) }

// Counter is implemented by a connector that can measure a window without reading its records
// (Salesforce answers an aggregate query: COUNT(Id), MIN and MAX of SystemModstamp). The expander
// cuts a Job's window into slices with it; a Job whose connector does not count is searched as
// one slice. Query.Fields and Query.After are ignored. Errors are as Search's.
type Counter interface {
	Count(ctx context.Context, q Query) (Extent, error)
}

// Extent is what a Counter measured of a window: how many rows it holds (valid or not) and the
// first and last stamps among them (zero when Count is 0).
type Extent struct {
	Count       int
	First, Last time.Time
}

// Query is one search: the records of Object whose stamp is in [From, To), in (Modstamp, ID)
// order, optionally resumed strictly after a Key.
type Query struct {
	Object string   // the source's object name, e.g. Salesforce's "Contact" or "Engagement__c"
	Fields []string // fields to read besides the ID and the stamp (always read)
	From   time.Time
	To     time.Time
	After  *Key // resume strictly after this key (keyset paging); nil starts at From
	// Deleted also returns the records deleted in the window, with Record.Deleted set (see the
	// package documentation).
	Deleted bool
}

// Key is a position in (Modstamp, ID) order, the order Search returns records in.
type Key struct {
	Modstamp time.Time
	ID       string
}

// Compare returns -1, 0 or +1 as k sorts before, at or after o: by Modstamp, then by ID compared
// byte by byte.
func (k Key) Compare(o Key) int {
	if c := k.Modstamp.Compare(o.Modstamp); c != 0 {
		return c
	}
	return strings.Compare(k.ID, o.ID)
}

// String formats k as "(2024-01-01T00:00:00.000Z, 003…)".
func (k Key) String() string {
	return "(" + k.Modstamp.UTC().Format("2006-01-02T15:04:05.000Z07:00") + ", " + k.ID + ")"
}

// Record is one valid row of a search.
type Record struct {
	ID       string         // the source's record ID
	Modstamp time.Time      // its modification stamp (UTC)
	Fields   map[string]any // the requested fields besides the ID and stamp, as decoded JSON
	Deleted  bool           // the record was deleted at Modstamp (only with Query.Deleted)
}

// Key returns r's position in (Modstamp, ID) order.
func (r Record) Key() Key { return Key{Modstamp: r.Modstamp, ID: r.ID} }

// Invalid is a row that is bad source data.
type Invalid struct {
	Raw    json.RawMessage // the row as received
	Reason string          // why it is not a Record
	// ID is the row's ID when the connector could read one: its dead letter is then one per row
	// and Job, however the rest of the row changes between two searches of it (a field the
	// source recomputes without a new stamp). Empty: the row is known by its content.
	ID string
}

// Page is one page of a search, in the order the source returned it.
type Page struct {
	Records []Record
	Invalid []Invalid
	Number  int   // 1-based
	Usage   Usage // the source's request budget after this page, when the connector knows it
}

// ErrPermanent marks failures that repeating the search cannot fix: a rejected query or token, a
// missing resource, a response that is not a search result. Check with errors.Is or IsPermanent.
var ErrPermanent = errors.New("source: permanent failure")

// ErrDisconnected marks failures of the connection, not of the search: no access token can be
// had (the token endpoint refused the refresh: consent revoked, user deactivated, app removed; a
// credential is missing), the source refused a session right after a fresh token, or the
// connection lacks a permission a setting needs. Repeating cannot help until the tenant is
// reconnected, and nothing is wrong with its Jobs: they pause, they do not fail.
var ErrDisconnected = errors.New("source: the connection cannot authenticate")

// IsDisconnected reports whether err is (or wraps) ErrDisconnected.
func IsDisconnected(err error) bool { return errors.Is(err, ErrDisconnected) }

// IsPermanent reports whether err is (or wraps) a permanent failure.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }
