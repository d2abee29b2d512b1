// Package sourcetest is the conformance suite every connector of package source passes (the way
// go-cloud's drivertest and watermill's universal pub/sub tests hold their drivers to one
// contract). A connector's test calls Run with a Harness that stores records in a fresh backend
// (a fixture server of that service) and opens the connector on it.
package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/source"
)

// Harness is one backend of the connector under test.
type Harness interface {
	// Put stores records of object, as the service would hold them (stamps to its precision); a
	// Record with Deleted set is stored as deleted at its stamp.
	Put(object string, recs ...source.Record)
	// PutBad stores one row of object that is bad source data (it has no ID).
	PutBad(object string, stamp time.Time)
	// Open returns the connector, searching this backend, with pages of at most pageSize rows.
	Open(t *testing.T, pageSize int) source.Source
	// PageSize is the smallest page size the connector accepts.
	PageSize() int
}

// Run runs the suite; newHarness returns a fresh, empty backend for each subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("WindowOrderAndFields", func(t *testing.T) { t.Parallel(); windowOrderAndFields(t, newHarness(t)) })
	t.Run("ResumeAfterEveryKey", func(t *testing.T) { t.Parallel(); resume(t, newHarness(t)) })
	t.Run("EmptyWindowIsOneEmptyPage", func(t *testing.T) { t.Parallel(); empty(t, newHarness(t)) })
	t.Run("BadRowsAreInvalidNotFatal", func(t *testing.T) { t.Parallel(); badRows(t, newHarness(t)) })
	t.Run("CallbackErrorStopsTheSearch", func(t *testing.T) { t.Parallel(); callbackError(t, newHarness(t)) })
	t.Run("CanceledContext", func(t *testing.T) { t.Parallel(); canceled(t, newHarness(t)) })
	t.Run("InvalidQueryIsPermanent", func(t *testing.T) { t.Parallel(); invalidQuery(t, newHarness(t)) })
	t.Run("CountIsTheSearchsLength", func(t *testing.T) { t.Parallel(); count(t, newHarness(t)) })
	t.Run("DeletedRecordsOnlyWhenAsked", func(t *testing.T) { t.Parallel(); deleted(t, newHarness(t)) })
}

func deleted(t *testing.T, h Harness) {
	all := records(6)
	for _, i := range []int{1, 4} {
		all[i].Deleted = true
	}
	h.Put("Contact", all...)
	s := h.Open(t, h.PageSize())
	q := source.Query{Object: "Contact", Fields: []string{"Name"}, From: base, To: base.Add(time.Hour)}
	var live []source.Record
	for _, r := range sorted(all) {
		if !r.Deleted {
			live = append(live, r)
		}
	}
	got, _ := flatten(search(t, s, q))
	sameRecords(t, "without Deleted", got, live)
	q.Deleted = true
	got, _ = flatten(search(t, s, q))
	sameRecords(t, "with Deleted", got, sorted(all))
	for i, r := range sorted(all) {
		if got[i].Deleted != r.Deleted {
			t.Fatalf("with Deleted: record %s Deleted = %v, want %v", r.ID, got[i].Deleted, r.Deleted)
		}
	}
	if c, ok := s.(source.Counter); ok {
		e, err := c.Count(t.Context(), q)
		if err != nil || e.Count != len(all) {
			t.Fatalf("count with Deleted = %d, %v; want %d", e.Count, err, len(all))
		}
	}
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// records returns n records, two of each stamp (ties broken by ID), a millisecond apart.
func records(n int) []source.Record {
	out := make([]source.Record, n)
	for i := range out {
		out[i] = source.Record{
			ID:       fmt.Sprintf("003%012d", n-i), // IDs against stamp order, to show the ID breaks ties only
			Modstamp: base.Add(time.Duration(i/2) * time.Millisecond),
			Fields:   map[string]any{"Name": fmt.Sprintf("name %d", i)},
		}
	}
	return out
}

func sorted(recs []source.Record) []source.Record {
	out := slices.Clone(recs)
	slices.SortFunc(out, func(a, b source.Record) int { return a.Key().Compare(b.Key()) })
	return out
}

// search runs q and returns every page.
func search(t *testing.T, s source.Source, q source.Query) []source.Page {
	t.Helper()
	var pages []source.Page
	if err := s.Search(t.Context(), q, func(_ context.Context, p source.Page) error {
		pages = append(pages, p)
		return nil
	}); err != nil {
		t.Fatalf("Search(%+v): %v", q, err)
	}
	return pages
}

func flatten(pages []source.Page) (recs []source.Record, bad []source.Invalid) {
	for _, p := range pages {
		recs = append(recs, p.Records...)
		bad = append(bad, p.Invalid...)
	}
	return recs, bad
}

func sameRecords(t *testing.T, what string, got, want []source.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || !g.Modstamp.Equal(w.Modstamp) || g.Modstamp.Location() != time.UTC || fmt.Sprint(g.Fields) != fmt.Sprint(w.Fields) {
			t.Fatalf("%s: record %d = %+v, want %+v", what, i, g, w)
		}
	}
}

func windowOrderAndFields(t *testing.T, h Harness) {
	all := records(60)
	h.Put("Contact", all...)
	h.Put("Lead", source.Record{ID: "00Q1", Modstamp: base.Add(5 * time.Millisecond), Fields: map[string]any{"Name": "other object"}})
	from, to := all[10].Modstamp, all[50].Modstamp // [from, to): records 10..49
	pages := search(t, h.Open(t, h.PageSize()), source.Query{Object: "Contact", Fields: []string{"Name"}, From: from, To: to})
	got, bad := flatten(pages)
	if len(bad) != 0 {
		t.Errorf("invalid rows %v in clean data", bad)
	}
	sameRecords(t, "window", got, sorted(all[10:50]))
	for i, p := range pages {
		if p.Number != i+1 {
			t.Errorf("page %d numbered %d", i+1, p.Number)
		}
	}
	// A field not asked for is not returned; a field asked for and absent is absent.
	got, _ = flatten(search(t, h.Open(t, h.PageSize()), source.Query{Object: "Contact", Fields: []string{"Email"}, From: from, To: to}))
	for _, r := range got {
		if _, ok := r.Fields["Name"]; ok || len(r.Fields) != 0 {
			t.Fatalf("record %s has fields %v, want none (Email is absent, Name not asked for)", r.ID, r.Fields)
		}
	}
}

func resume(t *testing.T, h Harness) {
	all := sorted(records(25))
	h.Put("Contact", all...)
	s := h.Open(t, h.PageSize())
	q := source.Query{Object: "Contact", Fields: []string{"Name"}, From: base, To: base.Add(time.Hour)}
	for i, r := range all {
		k := r.Key()
		q.After = &k
		got, _ := flatten(search(t, s, q))
		sameRecords(t, fmt.Sprintf("after record %d %v", i, k), got, all[i+1:])
	}
}

func empty(t *testing.T, h Harness) {
	h.Put("Contact", records(4)...)
	pages := search(t, h.Open(t, h.PageSize()), source.Query{Object: "Contact", From: base.Add(time.Hour), To: base.Add(2 * time.Hour)})
	if len(pages) != 1 || len(pages[0].Records)+len(pages[0].Invalid) != 0 || pages[0].Number != 1 {
		t.Errorf("empty window: pages %+v, want one empty page", pages)
	}
}

func badRows(t *testing.T, h Harness) {
	all := records(6)
	h.Put("Contact", all...)
	h.PutBad("Contact", base.Add(time.Millisecond))
	got, bad := flatten(search(t, h.Open(t, h.PageSize()), source.Query{Object: "Contact", Fields: []string{"Name"}, From: base, To: base.Add(time.Hour)}))
	sameRecords(t, "around a bad row", got, sorted(all))
	if len(bad) != 1 || bad[0].Reason == "" || len(bad[0].Raw) == 0 {
		t.Errorf("invalid rows %+v, want the one bad row with its raw form and a reason", bad)
	}
}

func callbackError(t *testing.T, h Harness) {
	h.Put("Contact", records(3*h.PageSize())...)
	stop := errors.New("stop here")
	calls := 0
	err := h.Open(t, h.PageSize()).Search(t.Context(), source.Query{Object: "Contact", From: base, To: base.Add(time.Hour)},
		func(context.Context, source.Page) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Search = %v after %d pages, want the callback's error after 1", err, calls)
	}
}

func canceled(t *testing.T, h Harness) {
	h.Put("Contact", records(3*h.PageSize())...)
	ctx, cancel := context.WithCancel(t.Context())
	err := h.Open(t, h.PageSize()).Search(ctx, source.Query{Object: "Contact", From: base, To: base.Add(time.Hour)},
		func(context.Context, source.Page) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Search after cancel = %v, want context.Canceled", err)
	}
}

func invalidQuery(t *testing.T, h Harness) {
	s := h.Open(t, h.PageSize())
	for _, q := range []source.Query{
		{Object: "Contact; DROP", From: base, To: base.Add(time.Hour)},
		{Object: "Contact", Fields: []string{"Name FROM User"}, From: base, To: base.Add(time.Hour)},
		{Object: "Contact", From: base.Add(time.Hour), To: base},
	} {
		called := false
		err := s.Search(t.Context(), q, func(context.Context, source.Page) error { called = true; return nil })
		if !source.IsPermanent(err) || called {
			t.Errorf("Search(%+v) = %v (callback called: %v), want a permanent error before any page", q, err, called)
		}
	}
}

// count: a connector that counts (source.Counter) counts exactly the rows a Search of the same
// window returns, and their first and last stamps, for any sub-window; a bad query is a
// permanent error.
func count(t *testing.T, h Harness) {
	all := sorted(records(40))
	h.Put("Contact", all...)
	h.Put("Lead", source.Record{ID: "00Q1", Modstamp: base.Add(5 * time.Millisecond)})
	s := h.Open(t, h.PageSize())
	c, ok := s.(source.Counter)
	if !ok {
		t.Skip("the connector does not implement source.Counter: its Jobs are searched as one slice")
	}
	for _, w := range [][2]int{{0, len(all)}, {0, 1}, {3, 17}, {17, 40}, {39, 40}, {5, 5}} {
		q := source.Query{Object: "Contact", From: all[0].Modstamp, To: all[len(all)-1].Modstamp.Add(time.Millisecond)}
		if w[0] > 0 {
			q.From = all[w[0]].Modstamp
		}
		if w[1] < len(all) {
			q.To = all[w[1]].Modstamp
		}
		e, err := c.Count(t.Context(), q)
		if err != nil {
			t.Fatalf("count [%v, %v): %v", q.From, q.To, err)
		}
		recs, bad := flatten(search(t, s, q))
		if e.Count != len(recs)+len(bad) {
			t.Fatalf("count [%v, %v) = %d, the search returned %d rows", q.From, q.To, e.Count, len(recs)+len(bad))
		}
		var first, last time.Time
		if len(recs) > 0 {
			first, last = recs[0].Modstamp, recs[len(recs)-1].Modstamp
		}
		if !e.First.Equal(first) || !e.Last.Equal(last) {
			t.Fatalf("count [%v, %v): stamps %v..%v, the search's run %v..%v", q.From, q.To, e.First, e.Last, first, last)
		}
	}
	if _, err := c.Count(t.Context(), source.Query{Object: "Contact; DROP", From: base, To: base.Add(time.Hour)}); !source.IsPermanent(err) {
		t.Fatalf("count with a bad object: %v, want a permanent error", err)
	}
}
