// Package reconcile finds the records of a sync setting that the source no longer has at all (a
// hard delete: emptied from the recycle bin, or never kept there) and tombstones them in the
// target. Deletes the source still reports arrive with the Jobs (a deleted row is a version); only
// a comparison of IDs can find the others.
//
// # What it does
//
// Run reads every ID the source holds for the setting's object (one search over all time,
// deleted records included, no fields), then streams the setting's target records in ID order and
// tombstones each live one whose ID the source did not return and whose version is older than the
// moment the search started, less the window lag (a late commit; model.DeletedByReconcile; the version stays the last one seen, so a
// restored record's next version revives it). Each tombstone is conditioned on the record as read:
// a record an import changed in between is left for the next run. A second run changes nothing.
//
// # Cost
//
// The source's IDs are held in memory: about 60 bytes an ID, so 60 MB for a million records. The
// search is one query of the source's API (plus a request per page of 2,000 IDs). Progress is
// reported every Config.Every source IDs and target records.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oncesync/oncesync/shared/target"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
)

// Config holds what Run needs.
type Config struct {
	FS     *firestore.Client
	Source source.Source
	Now    func() time.Time // default time.Now
	// Lag is the deployment's window lag (ONCESYNC_WINDOW_LAG): a record stamped within it of
	// the search may commit after the search, so it is never tombstoned.
	Lag time.Duration
	// Every is how many source IDs or target records go between two Progress reports (default
	// 10,000); Progress may be nil.
	Every    int
	Progress func(Progress)
}

// Progress is how far a run is.
type Progress struct {
	Phase      string // "source" (reading IDs) or "target" (comparing records)
	SourceIDs  int    // distinct IDs the source returned so far
	Records    int    // target records compared so far
	Tombstoned int
}

// Result is what a run did.
type Result struct {
	Setting      model.SyncSetting
	Since        time.Time // the source's IDs are those it held at this moment
	SourceIDs    int       // distinct IDs the source holds, deleted or live
	Records      int       // the setting's target records
	AlreadyGone  int       // records already tombstoned
	Tombstoned   int       // records this run tombstoned
	Changed      int       // records an import changed while the run compared them: left for the next run
	TombstonedID []string  // the first few tombstoned external IDs, for the report
}

// ErrNotFound is returned for an unknown setting.
var ErrNotFound = errors.New("reconcile: setting not found")

// maxListed bounds Result.TombstonedID.
const maxListed = 20

// Run reconciles the setting's target with its source (see the package documentation).
func Run(ctx context.Context, cfg Config, settingID string) (Result, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Every <= 0 {
		cfg.Every = 10_000
	}
	report := func(p Progress) {
		if cfg.Progress != nil {
			cfg.Progress(p)
		}
	}
	var res Result
	snap, err := cfg.FS.Collection(model.SyncSettings).Doc(settingID).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return res, fmt.Errorf("reconcile: %q: %w", settingID, ErrNotFound)
	}
	if err != nil {
		return res, fmt.Errorf("reconcile: setting %q: %w", settingID, err)
	}
	if err := snap.DataTo(&res.Setting); err != nil {
		return res, fmt.Errorf("reconcile: setting %q: decode: %w", settingID, err)
	}
	st := &res.Setting
	st.ID = settingID
	kind, ok := model.Kind(st.Target)
	if !ok {
		return res, fmt.Errorf("reconcile: setting %q: unknown target %q", settingID, st.Target)
	}

	// Every ID the source holds now, deleted or live (a record stamped later than the search
	// cannot be missing from it: it is newer than Since).
	res.Since = cfg.Now().UTC().Truncate(time.Millisecond)
	ids := map[string]struct{}{}
	q := source.Query{Object: st.SourceObject, To: res.Since.Add(24 * time.Hour), Deleted: true}
	err = cfg.Source.Search(ctx, q, func(_ context.Context, p source.Page) error {
		for _, r := range p.Records {
			before := len(ids)
			ids[r.ID] = struct{}{}
			if len(ids) > before && len(ids)%cfg.Every == 0 {
				report(Progress{Phase: "source", SourceIDs: len(ids)})
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("reconcile: setting %q: search the source: %w", settingID, err)
	}
	res.SourceIDs = len(ids)
	report(Progress{Phase: "source", SourceIDs: len(ids)})

	// The target's records, in ID order; tombstones go through a BulkWriter, each conditioned on
	// its record as read.
	bw := cfg.FS.BulkWriter(ctx)
	type pending struct {
		id  string
		job *firestore.BulkWriterJob
	}
	var jobs []pending
	it := cfg.FS.Collection(kind.Records).Where("tenantId", "==", st.TenantID).Where("sourceObject", "==", st.SourceObject).
		OrderBy("externalId", firestore.Asc).Documents(ctx)
	defer it.Stop()
	now := cfg.Now().UTC()
	for {
		d, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			bw.End()
			return res, fmt.Errorf("reconcile: setting %q: read %s: %w", settingID, kind.Records, err)
		}
		res.Records++
		if res.Records%cfg.Every == 0 {
			report(Progress{Phase: "target", SourceIDs: res.SourceIDs, Records: res.Records, Tombstoned: len(jobs)})
		}
		var e model.Engagement
		if err := d.DataTo(&e); err != nil {
			bw.End()
			return res, fmt.Errorf("reconcile: setting %q: record %s: %w", settingID, d.Ref.ID, err)
		}
		if _, ok := ids[e.ExternalID]; ok {
			continue
		}
		if e.Deleted {
			res.AlreadyGone++
			continue
		}
		if !e.Version.Before(res.Since.Add(-cfg.Lag)) {
			continue // stamped too close to the search: it may have committed after it
		}
		j, err := bw.Update(d.Ref, target.Tombstone(model.DeletedByReconcile, now), firestore.LastUpdateTime(d.UpdateTime))
		if err != nil {
			bw.End()
			return res, fmt.Errorf("reconcile: setting %q: tombstone %s: %w", settingID, d.Ref.ID, err)
		}
		jobs = append(jobs, pending{e.ExternalID, j})
	}
	bw.End()
	var errs []error
	for _, p := range jobs {
		_, err := p.job.Results()
		switch {
		case err == nil:
			res.Tombstoned++
			if len(res.TombstonedID) < maxListed {
				res.TombstonedID = append(res.TombstonedID, p.id)
			}
		case status.Code(err) == codes.FailedPrecondition:
			res.Changed++
		default:
			errs = append(errs, fmt.Errorf("tombstone %s: %w", p.id, err))
		}
	}
	report(Progress{Phase: "target", SourceIDs: res.SourceIDs, Records: res.Records, Tombstoned: res.Tombstoned})
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("reconcile: setting %q: %d of %d tombstones failed (run it again): %w", settingID, len(errs), len(jobs), err)
	}
	return res, nil
}
