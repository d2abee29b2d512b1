package reconcile_test

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/reconcile"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// state reads every record of a target kind: external ID → "live", or who tombstoned it.
func state(t *testing.T, fs *firestore.Client, kind model.TargetKind) map[string]string {
	t.Helper()
	docs, err := fs.Collection(kind.Records).Documents(t.Context()).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range docs {
		var e model.Engagement
		if err := d.DataTo(&e); err != nil {
			t.Fatal(err)
		}
		s := "live"
		if e.Deleted {
			s = "deleted by " + e.DeletedBy
		}
		out[e.TenantID+"/"+e.ExternalID] = s
	}
	return out
}

// Records the source no longer holds are tombstoned, once, on both targets; nothing else moves.
func TestReconcileTombstonesWhatTheSourceNoLongerHolds(t *testing.T) {
	t.Parallel()
	for _, kind := range model.TargetKinds {
		t.Run(kind.Name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			fs := emu.Firestore(t, emu.ProjectID(t))
			src := fixture.New(fixture.Options{Token: "tok", PageSize: 200})
			old := now.Add(-48 * time.Hour)
			// The source: a live record, one in its recycle bin, and 450 more (three pages).
			rows := []fixture.Row{{ID: "003live", Modstamp: old}, {ID: "003binned", Modstamp: old.Add(time.Hour), Deleted: true}}
			for i := range 450 {
				rows = append(rows, fixture.Row{ID: fmt.Sprintf("003many%04d", i), Modstamp: old.Add(time.Duration(i) * time.Second)})
			}
			src.PutRecords("Contact", rows...)
			ts := httptest.NewServer(src)
			t.Cleanup(ts.Close)
			sf, err := salesforce.New(salesforce.Config{BaseURL: ts.URL, Token: "tok", PageSize: 200})
			if err != nil {
				t.Fatal(err)
			}
			setting := model.SyncSetting{TenantID: "acme", SourceObject: "Contact", Target: kind.Name, Enabled: true}
			if _, err := fs.Collection(model.SyncSettings).Doc("acme-contacts").Set(ctx, setting); err != nil {
				t.Fatal(err)
			}
			// The target: what the Jobs imported, and one record of another tenant.
			put := func(tenant, id string, version time.Time, deleted bool) {
				e := model.Engagement{TenantID: tenant, SourceObject: "Contact", ExternalID: id, Version: version, Deleted: deleted}
				if deleted {
					e.DeletedBy = model.DeletedBySource
				}
				ref := fs.Collection(kind.Records).NewDoc()
				if kind.Index == "" {
					ref = fs.Collection(kind.Records).Doc(model.EngagementKey(tenant, "Contact", id))
				}
				if _, err := ref.Set(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			put("acme", "003live", old, false)
			put("acme", "003binned", old.Add(time.Hour), true)
			put("acme", "003many0449", old, false)
			put("acme", "003purged", old, false)                     // hard-deleted: gone from the source
			put("acme", "003purged2", old.Add(time.Minute), false)   // likewise
			put("acme", "003gone", old, true)                        // already a tombstone
			put("acme", "003fresh", now.Add(-30*time.Second), false) // stamped within the lag: may commit late
			put("other", "003purged", old, false)                    // another tenant's
			var progress []reconcile.Progress
			cfg := reconcile.Config{FS: fs, Source: sf, Now: func() time.Time { return now }, Lag: time.Minute, Every: 100,
				Progress: func(p reconcile.Progress) { progress = append(progress, p) }}

			res, err := reconcile.Run(ctx, cfg, "acme-contacts")
			if err != nil {
				t.Fatal(err)
			}
			if res.SourceIDs != 452 || res.Records != 7 || res.Tombstoned != 2 || res.AlreadyGone != 1 || res.Changed != 0 ||
				!slices.Equal(res.TombstonedID, []string{"003purged", "003purged2"}) {
				t.Errorf("result %+v", res)
			}
			want := map[string]string{
				"acme/003live": "live", "acme/003binned": "deleted by source", "acme/003many0449": "live",
				"acme/003purged": "deleted by reconcile", "acme/003purged2": "deleted by reconcile", "acme/003gone": "deleted by source",
				"acme/003fresh": "live", "other/003purged": "live",
			}
			if diff := cmp.Diff(want, state(t, fs, kind)); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if len(progress) < 5 || progress[len(progress)-1].Phase != "target" || progress[len(progress)-1].Tombstoned != 2 {
				t.Errorf("progress %+v, want reports every 100 source IDs and a last one for the target", progress)
			}

			again, err := reconcile.Run(ctx, cfg, "acme-contacts")
			if err != nil || again.Tombstoned != 0 || again.AlreadyGone != 3 {
				t.Errorf("second run: %+v, %v; want nothing tombstoned, 3 already", again, err)
			}
			if diff := cmp.Diff(want, state(t, fs, kind)); diff != "" {
				t.Errorf("records after the second run (-want +got):\n%s", diff)
			}
			if _, err := reconcile.Run(ctx, cfg, "nope"); err == nil {
				t.Error("an unknown setting reconciled")
			}
		})
	}
}
