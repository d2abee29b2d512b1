package target_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/target"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func rec(id string, minute int) model.ChunkRecord {
	return model.ChunkRecord{ID: id, Modstamp: t0.Add(time.Duration(minute) * time.Minute), Fields: map[string]any{"v": int64(minute)}}
}

// plant writes a PLANNED job with the given chunks.
func plant(t *testing.T, fs *firestore.Client, jobID, kind string, chunks ...[]model.ChunkRecord) model.Job {
	t.Helper()
	ctx := t.Context()
	j := model.Job{ID: jobID, TenantID: "acme", SourceObject: "Contact", Target: kind, ChunkSize: 10, Status: model.JobPlanned, ChunkCount: len(chunks)}
	if _, err := fs.Collection(model.Jobs).Doc(jobID).Set(ctx, j); err != nil {
		t.Fatal(err)
	}
	for i, recs := range chunks {
		c := model.Chunk{Index: i, JobID: jobID, TenantID: "acme", Status: model.ChunkPending, Records: recs, Count: len(recs)}
		if _, err := fs.Collection(model.Jobs).Doc(jobID).Collection(model.Chunks).Doc(model.ChunkID(i)).Set(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	return j
}

// kinds is every registered target kind: the tests below are the conformance suite each passes.
func kinds() []string {
	var out []string
	for _, k := range model.TargetKinds {
		out = append(out, k.Name)
	}
	return out
}

func TestEveryKindIsRegistered(t *testing.T) {
	for _, name := range kinds() {
		if tg, err := target.For(nil, name); err != nil || tg == nil {
			t.Errorf("target kind %q declared in model.TargetKinds has no Target: %v", name, err)
		}
	}
	if _, err := target.For(nil, "spreadsheet"); !errors.Is(err, target.ErrUnknownTarget) {
		t.Errorf("an unknown kind: %v, want ErrUnknownTarget", err)
	}
}

// Kept names the record an import wrote and a later import updates in place; a reconcile's
// Tombstone on it deletes it with its version kept; an external ID never imported has no record
// there.
func TestKeptIsTheRecordAnImportWrites(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fs := emu.Firestore(t, emu.ProjectID(t))
			ctx := t.Context()
			c := target.NewCommitter(fs, func() time.Time { return t0 })
			j := plant(t, fs, "job-kept", kind, []model.ChunkRecord{rec("a", 1), rec("b", 1)}, []model.ChunkRecord{rec("a", 2)})
			tg, err := target.For(fs, kind)
			if err != nil {
				t.Fatal(err)
			}
			read := func(id string) (*firestore.DocumentRef, model.Engagement, bool) {
				t.Helper()
				kept, _, err := tg.Kept(ctx, "acme", "Contact", []string{id})
				if err != nil {
					t.Fatal(err)
				}
				ref := kept[id]
				if ref == nil {
					return nil, model.Engagement{}, false
				}
				snap, err := ref.Get(ctx)
				if err != nil {
					return ref, model.Engagement{}, false
				}
				var e model.Engagement
				if err := snap.DataTo(&e); err != nil {
					t.Fatal(err)
				}
				return ref, e, true
			}
			if _, err := c.Commit(ctx, j, 0); err != nil {
				t.Fatal(err)
			}
			first, e, ok := read("a")
			if !ok || e.ExternalID != "a" || !e.Version.Equal(t0.Add(time.Minute)) {
				t.Fatalf("kept record of a: %v %+v", ok, e)
			}
			if _, err := c.Commit(ctx, j, 1); err != nil {
				t.Fatal(err)
			}
			again, e, ok := read("a")
			if !ok || again.Path != first.Path || !e.Version.Equal(t0.Add(2*time.Minute)) {
				t.Errorf("after a newer import, kept %v (was %v), version %v; want the same record, updated", again, first, e.Version)
			}
			if _, err := again.Update(ctx, target.Tombstone(model.DeletedByReconcile, t0.Add(time.Hour))); err != nil {
				t.Fatal(err)
			}
			if _, e, _ := read("a"); !e.Deleted || e.DeletedBy != model.DeletedByReconcile || !e.Version.Equal(t0.Add(2*time.Minute)) {
				t.Errorf("after Tombstone: %+v; want deleted by reconcile, version kept", e)
			}
			if _, _, ok := read("never"); ok {
				t.Error("an external ID never imported has a kept record")
			}
			if n := len(engagements(t, fs, kind)); n != 2 {
				t.Errorf("%d records, want 2 (a and b)", n)
			}
		})
	}
}

type stored struct {
	ExternalID string
	Version    time.Time
	Copies     int
	Tombstone  string // "" for a live record, else who tombstoned it and when
}

func engagements(t *testing.T, fs *firestore.Client, kind string) map[string]stored {
	t.Helper()
	k, _ := model.Kind(kind)
	docs, err := fs.Collection(k.Records).Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]stored{}
	for _, d := range docs {
		var e model.Engagement
		if err := d.DataTo(&e); err != nil {
			t.Fatal(err)
		}
		s := out[e.ExternalID]
		s.ExternalID, s.Version, s.Copies = e.ExternalID, e.Version, s.Copies+1
		if e.Deleted {
			s.Tombstone = fmt.Sprintf("by %s at %s", e.DeletedBy, e.DeletedAt.Format(time.RFC3339))
		}
		out[e.ExternalID] = s
	}
	return out
}

func TestCommitIsOnceAndVersionsOnlyMoveForward(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fs := emu.Firestore(t, emu.ProjectID(t))
			ctx := t.Context()
			c := target.NewCommitter(fs, func() time.Time { return t0 })
			j := plant(t, fs, "job1", kind,
				[]model.ChunkRecord{rec("a", 5), rec("b", 1), rec("a", 3)}, // a twice in one chunk: the newer wins
				[]model.ChunkRecord{rec("b", 2), rec("c", 1)},              // b again, newer
				[]model.ChunkRecord{rec("b", 0)},                           // b again, older: unchanged
			)
			want := []target.Result{
				{Rows: 3, Stats: target.Stats{Imported: 2, Unchanged: 1}},
				{Rows: 2, Stats: target.Stats{Imported: 2}},
				{Rows: 1, Stats: target.Stats{Unchanged: 1}},
			}
			for i := range 3 {
				got, err := c.Commit(ctx, j, i)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want[i], got); diff != "" {
					t.Errorf("chunk %d (-want +got):\n%s", i, diff)
				}
				again, err := c.Commit(ctx, j, i)
				if err != nil || !again.AlreadyDone || again.Imported != 0 {
					t.Errorf("chunk %d again: %+v %v, want AlreadyDone and nothing written", i, again, err)
				}
			}
			wantRecs := map[string]stored{
				"a": {ExternalID: "a", Version: t0.Add(5 * time.Minute), Copies: 1},
				"b": {ExternalID: "b", Version: t0.Add(2 * time.Minute), Copies: 1},
				"c": {ExternalID: "c", Version: t0.Add(1 * time.Minute), Copies: 1},
			}
			if diff := cmp.Diff(wantRecs, engagements(t, fs, kind)); diff != "" {
				t.Errorf("engagements (-want +got):\n%s", diff)
			}
			if _, err := c.Commit(ctx, j, 7); !errors.Is(err, target.ErrNoChunk) {
				t.Errorf("missing chunk: %v, want ErrNoChunk", err)
			}
		})
	}
}

// A resync Job rewrites rows as new as the stored version (in place: no second record on the
// generated target), and still never an older one.
func TestResyncRewritesTheSameVersionOnly(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fs := emu.Firestore(t, emu.ProjectID(t))
			ctx := t.Context()
			c := target.NewCommitter(fs, func() time.Time { return t0 })
			tick := plant(t, fs, "tick", kind, []model.ChunkRecord{rec("a", 5), rec("b", 2)})
			if _, err := c.Commit(ctx, tick, 0); err != nil {
				t.Fatal(err)
			}
			fixed := func(r model.ChunkRecord) model.ChunkRecord { r.Fields = map[string]any{"v": "fixed"}; return r }
			same := plant(t, fs, "same", kind, []model.ChunkRecord{fixed(rec("a", 5)), fixed(rec("b", 1))})
			if got, err := c.Commit(ctx, same, 0); err != nil || got.Imported != 0 || got.Unchanged != 2 {
				t.Fatalf("a tick's Job with the same and an older version: %+v %v, want 2 unchanged", got, err)
			}
			resync := plant(t, fs, "resync", kind, []model.ChunkRecord{fixed(rec("a", 5)), fixed(rec("b", 1))})
			resync.Resync = "window"
			got, err := c.Commit(ctx, resync, 0)
			if err != nil || got.Imported != 1 || got.Unchanged != 1 {
				t.Fatalf("resync: %+v %v, want a rewritten, b (older) unchanged", got, err)
			}
			if diff := cmp.Diff(map[string]stored{"a": {ExternalID: "a", Version: t0.Add(5 * time.Minute), Copies: 1}, "b": {ExternalID: "b", Version: t0.Add(2 * time.Minute), Copies: 1}}, engagements(t, fs, kind)); diff != "" {
				t.Errorf("engagements (-want +got):\n%s", diff)
			}
			coll := map[string]string{model.TargetUpsert: model.Engagements, model.TargetGenerated: model.EngagementsGen}[kind]
			docs, err := fs.Collection(coll).Where("externalId", "==", "a").Documents(ctx).GetAll()
			if err != nil || len(docs) != 1 || docs[0].Data()["fields"].(map[string]any)["v"] != "fixed" || docs[0].Data()["jobId"] != "resync" {
				t.Fatalf("a after the resync: %d documents, %v", len(docs), err)
			}
		})
	}
}

// A deleted row is a version: it tombstones the record (created if never imported), an older
// delete or live row changes nothing, and a newer live row revives it. Both targets.
func TestDeletesAreVersionsBothWays(t *testing.T) {
	t.Parallel()
	del := func(id string, minute int) model.ChunkRecord { r := rec(id, minute); r.Deleted = true; return r }
	for _, kind := range kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fs := emu.Firestore(t, emu.ProjectID(t))
			ctx := t.Context()
			c := target.NewCommitter(fs, func() time.Time { return t0 })
			j := plant(t, fs, "job", kind,
				[]model.ChunkRecord{rec("a", 1), rec("b", 1), rec("c", 1)},
				[]model.ChunkRecord{del("a", 5), del("b", 5), del("d", 5)}, // deleted; d never seen live
				[]model.ChunkRecord{del("a", 3), rec("b", 4), rec("d", 2)}, // older: nothing changes
				[]model.ChunkRecord{rec("b", 9), del("c", 0)},              // b restored; c's delete is older than c
			)
			want := []target.Stats{{Imported: 3}, {Imported: 3, Tombstoned: 3}, {Unchanged: 3}, {Imported: 1, Unchanged: 1}}
			for i := range want {
				got, err := c.Commit(ctx, j, i)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want[i], got.Stats); diff != "" {
					t.Errorf("chunk %d (-want +got):\n%s", i, diff)
				}
			}
			v := func(minute int) time.Time { return t0.Add(time.Duration(minute) * time.Minute) }
			bySource := "by source at " + t0.Format(time.RFC3339)
			wantRecs := map[string]stored{"a": {"a", v(5), 1, bySource}, "b": {"b", v(9), 1, ""}, "c": {"c", v(1), 1, ""}, "d": {"d", v(5), 1, bySource}}
			if diff := cmp.Diff(wantRecs, engagements(t, fs, kind)); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConcurrentCommitsOfOneChunkImportOnce(t *testing.T) {
	t.Parallel()
	fs := emu.Firestore(t, emu.ProjectID(t))
	ctx := t.Context()
	c := target.NewCommitter(fs, nil)
	var recs []model.ChunkRecord
	for i := range 50 {
		recs = append(recs, rec(string(rune('A'+i%26))+string(rune('a'+i/26)), i))
	}
	j := plant(t, fs, "job2", model.TargetGenerated, recs)
	var wg sync.WaitGroup
	results := make([]target.Result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Commit(ctx, j, 0)
			if err != nil {
				t.Errorf("commit %d: %v", i, err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	imported := 0
	for _, r := range results {
		if !r.AlreadyDone {
			imported++
		}
	}
	if imported != 1 {
		t.Errorf("%d of 4 concurrent commits imported, want exactly 1: %+v", imported, results)
	}
	for id, s := range engagements(t, fs, model.TargetGenerated) {
		if s.Copies != 1 {
			t.Errorf("external ID %s stored %d times", id, s.Copies)
		}
	}
}

func TestUnknownTarget(t *testing.T) {
	t.Parallel()
	fs := emu.Firestore(t, emu.ProjectID(t))
	j := plant(t, fs, "job3", "spreadsheet", []model.ChunkRecord{rec("a", 1)})
	if _, err := target.NewCommitter(fs, nil).Commit(t.Context(), j, 0); !errors.Is(err, target.ErrUnknownTarget) {
		t.Errorf("err = %v, want ErrUnknownTarget", err)
	}
}

func TestNewest(t *testing.T) {
	got := target.Newest([]model.ChunkRecord{rec("b", 1), rec("a", 2), rec("b", 3), rec("a", 1)})
	want := []model.ChunkRecord{rec("a", 2), rec("b", 3)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Newest (-want +got):\n%s", diff)
	}
}

// Two chunks of a Job that hold the same external IDs (a record updated during the window is in
// it twice), imported at the same time: no lock is taken, the later commit meets the earlier one's
// writes through its preconditions and is retried, and every record ends once, at its newest
// version.
func TestConcurrentImportsOfChunksSharingRecords(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fs := emu.Firestore(t, emu.ProjectID(t))
			ctx := t.Context()
			c := target.NewCommitter(fs, nil)
			const rounds, shared = 8, 40
			for round := range rounds {
				var older, newer []model.ChunkRecord
				for i := range shared {
					id := fmt.Sprintf("r%d-%02d", round, i)
					older = append(older, rec(id, 1))
					newer = append(newer, rec(id, 2))
				}
				j := plant(t, fs, fmt.Sprintf("job-%d", round), kind, older, newer)
				var wg sync.WaitGroup
				res := make([]target.Result, 2)
				for i := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r, err := c.Commit(ctx, j, i)
						if err != nil {
							t.Errorf("round %d chunk %d: %v", round, i, err)
						}
						res[i] = r
					}()
				}
				wg.Wait()
				// Whichever committed first, the newer version wins and the counts add up.
				if got := res[0].Imported + res[0].Unchanged + res[1].Imported + res[1].Unchanged; got != 2*shared {
					t.Errorf("round %d: results %+v, want %d rows counted", round, res, 2*shared)
				}
			}
			recs := engagements(t, fs, kind)
			if len(recs) != rounds*shared {
				t.Errorf("%d records, want %d", len(recs), rounds*shared)
			}
			for id, s := range recs {
				if s.Copies != 1 || !s.Version.Equal(t0.Add(2*time.Minute)) {
					t.Errorf("record %s: %d copies, version %v; want 1 copy at the newer version", id, s.Copies, s.Version)
				}
			}
		})
	}
}
