package chaos

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
)

// ExtraReport is what the chaos checkers add to sim's (package sim checks duplicates, lost and
// stale records, chunk counts against each Job's own record count, Job counters against its
// chunks, search counts, open leases and dead-letter counts).
type ExtraReport struct {
	ChunkRewrites  int // chunk writes beyond a Job's plan: a chunk created twice
	PlanMismatches int // Jobs whose plan is not exactly the rows of their window, each once
	CounterErrors  int // settings whose imported counts are outside what the data allows
	SearchCounter  int // Jobs whose searches counter differs from the searches they ran
	ForeignDead    int // message dead letters that are not poison the generator made
	AuditFindings  int // findings of the operator's audit that the case's injections do not explain
	NeededSweep    int // cases whose Jobs finished only through the recovery sweep, with no message lost
	JobsPerTick    int // settings with more than one Job for one tick
	WindowErrors   int // gaps or overlaps between a setting's tick Jobs
	PausedJobs     int // Jobs created while their setting's last Job was paused
	SweepRevisits  int // Jobs two pages of one tick's sweep visited
	LaneErrors     int // Jobs of the wrong class, or whose chunks went to another class's lane
	ResyncJobs     int // resync Jobs no request made (a request sent twice made two), or requests that made none
	Overdrawn      int // Jobs that searched on past the API reserve: pages at the reserve not followed by a pause
	Paused         int // Jobs that paused for the API budget
	Pauses         int // their pauses
	// ReconcileRepeats counts settings whose second reconcile run tombstoned anything.
	ReconcileRepeats int
	Violations       []string
}

func (r *ExtraReport) violate(format string, args ...any) {
	if len(r.Violations) < 50 {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

type rowKey struct {
	id string
	at int64 // Unix milliseconds
}

// checkMore runs the chaos checkers that need the case's ground truth. With observed, the searches
// the harness saw at the source are compared with the Jobs' searches counters.
func (h *Harness) checkMore(ctx context.Context, c *Case, w *world, st *caseState, observed bool) (ExtraReport, error) {
	var r ExtraReport
	e := h.Env
	jobs, err := e.Jobs(ctx)
	if err != nil {
		return r, err
	}
	st.mu.Lock()
	writes, searches, resyncs := maps.Clone(st.chunkWrites), maps.Clone(st.searches), maps.Clone(st.resyncJobs)
	overdrawn, aborted, late := maps.Clone(st.overdrawn), maps.Clone(st.aborted), maps.Clone(st.lateCopies)
	st.mu.Unlock()
	setting := map[string]int{}
	for i, s := range c.Settings {
		setting[s.ID] = i
	}
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].ID < jobs[b].ID })
	type totals struct {
		imported int // by the ticks' Jobs
		resynced int // by resync Jobs
		end      time.Time
	}
	bySetting := map[int]*totals{}
	// Exactly one Job per setting per tick, however often the tick was delivered (the incident's
	// first suspect: "was the Job record created twice?").
	perTick := map[[2]string][]string{}
	for _, j := range jobs {
		// Exactly one Job per resync request, however often it was sent.
		if j.Resync != "" {
			if _, ok := resyncs[j.ID]; !ok {
				r.ResyncJobs++
				r.violate("resync Job %s (request %q of setting %s) is no request's: a request sent again made another Job", j.ID, j.Resync, j.SettingID)
			}
			delete(resyncs, j.ID)
			continue
		}
		k := [2]string{j.SettingID, j.TickID}
		perTick[k] = append(perTick[k], j.ID)
		if len(perTick[k]) == 2 {
			r.JobsPerTick++
			r.violate("setting %s has more than one Job for tick %s: %v", j.SettingID, j.TickID, perTick[k])
		}
	}
	checkFanOut(c, st, jobs, &r)
	if err := checkLanes(ctx, e, st, jobs, &r); err != nil {
		return r, err
	}
	for id := range resyncs {
		r.ResyncJobs++
		r.violate("resync request of Job %s made no Job", id)
	}
	for _, j := range jobs {
		si, ok := setting[j.SettingID]
		if !ok {
			r.violate("job %s belongs to unknown setting %q", j.ID, j.SettingID)
			continue
		}
		// No chunk written twice: every chunk write the expander reported is one more chunk.
		if n := writes[j.ID]; n > j.ChunkCount {
			r.ChunkRewrites += n - j.ChunkCount
			r.violate("job %s: chunk plan written %d times for %d chunks (a chunk created twice)", j.ID, n, j.ChunkCount)
		}
		// The API budget: a search stops at the first page that leaves no more than the reserve,
		// so each such page is followed by a pause, unless the schedule cut the expansion short
		// there (an injected crash or error, or a duplicate scheduled after the lease ran out,
		// which fences the first owner's writes off).
		if j.Pauses > 0 {
			r.Paused++
			r.Pauses += j.Pauses
		}
		if n := overdrawn[j.ID]; n > j.Pauses+aborted[j.ID]+late[j.ID] {
			r.Overdrawn++
			r.violate("job %s: the source answered %d pages with no more than the reserve %d left, the Job paused %d times (%d expansions cut short by faults, %d late duplicates)",
				j.ID, n, c.Budget.Reserve, j.Pauses, aborted[j.ID], late[j.ID])
		}
		// Counters on Jobs exact: the searches counter counts the searches that ran.
		if observed && j.Searches != searches[j.ID] {
			r.SearchCounter++
			r.violate("job %s: searches counter is %d, the source was searched %d times for it", j.ID, j.Searches, searches[j.ID])
		}
		if j.Status != model.JobCompleted {
			continue // sim's checker reports it
		}
		tot := bySetting[si]
		if tot == nil {
			tot = &totals{end: windowStart}
			bySetting[si] = tot
		}
		if j.Resync != "" {
			tot.resynced += j.Imported
		} else {
			tot.imported += j.Imported
			if j.WindowTo.After(tot.end) {
				tot.end = j.WindowTo
			}
		}
		// The plan is exactly the rows of the window: each version of each record in one chunk.
		want := map[rowKey]int{}
		for _, row := range w.rows[c.Settings[si].Object] {
			at := row.Modstamp.Truncate(time.Millisecond)
			if !at.Before(j.WindowFrom) && at.Before(j.WindowTo) {
				want[rowKey{row.ID, at.UnixMilli()}]++
			}
		}
		nWant := 0
		for _, n := range want {
			nWant += n
		}
		docs, err := e.FS.Collection(model.Jobs).Doc(j.ID).Collection(model.Chunks).Documents(ctx).GetAll()
		if err != nil {
			return r, fmt.Errorf("chaos: chunks of %s: %w", j.ID, err)
		}
		got := map[rowKey]int{}
		for _, d := range docs {
			var ch model.Chunk
			if err := d.DataTo(&ch); err != nil {
				return r, err
			}
			for _, rec := range ch.Records {
				got[rowKey{rec.ID, rec.Modstamp.UnixMilli()}]++
			}
		}
		var missing, extra []string
		for k, n := range want {
			if got[k] < n {
				missing = append(missing, fmt.Sprintf("%s@%d", k.id, k.at))
			}
		}
		for k, n := range got {
			if want[k] < n {
				extra = append(extra, fmt.Sprintf("%s@%d×%d", k.id, k.at, n))
			}
		}
		if j.RecordCount != nWant || len(missing) > 0 || len(extra) > 0 {
			r.PlanMismatches++
			sort.Strings(missing)
			sort.Strings(extra)
			r.violate("job %s: %d rows in its window, plan counts %d; missing from the chunks %v; extra or repeated %v",
				j.ID, nWant, j.RecordCount, first(missing, 5), first(extra, 5))
		}
	}
	// Counters: a record is counted imported at least once (when created) and each version at
	// most once by the ticks' Jobs, so per setting: distinct IDs <= Σ imported <= distinct
	// versions. A resync Job rewrites versions the ticks' Jobs imported, or imports them first
	// (it may run before a tick's Job finishes): it counts towards the lower bound only.
	idx := make([]int, 0, len(bySetting))
	for si := range bySetting {
		idx = append(idx, si)
	}
	sort.Ints(idx)
	for _, si := range idx {
		tot := bySetting[si]
		ids, versions := map[string]bool{}, map[rowKey]bool{}
		for _, row := range w.rows[c.Settings[si].Object] {
			at := row.Modstamp.Truncate(time.Millisecond)
			if !at.Before(windowStart) && at.Before(tot.end) {
				ids[row.ID] = true
				versions[rowKey{row.ID, at.UnixMilli()}] = true
			}
		}
		if tot.imported+tot.resynced < len(ids) || tot.imported > len(versions) {
			r.CounterErrors++
			r.violate("setting %s: the ticks' Jobs count %d records imported, resync Jobs %d; %d distinct records and %d versions were in their windows",
				c.Settings[si].ID, tot.imported, tot.resynced, len(ids), len(versions))
		}
	}
	// Message dead letters: only the poison the generator made.
	dls, err := e.DeadLetters(ctx)
	if err != nil {
		return r, err
	}
	var poison [][]byte
	for _, k := range c.Poison {
		_, data := poisonMessage(k)
		poison = append(poison, data)
	}
	for _, dl := range dls {
		if dl.Kind != model.DeadMessage {
			continue
		}
		found := false
		for i, p := range poison {
			if bytes.Equal(p, dl.Data) {
				poison = append(poison[:i], poison[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			r.ForeignDead++
			r.violate("message %s dead-lettered by %s (%s: %s), but it is not poison", dl.MessageID, dl.Function, dl.Reason, dl.Error)
		}
	}
	return r, nil
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// auditCase runs the operator's audit (oncesync-ops audit job) on every Job of the case: the audit
// is a checker too, and must find nothing but what the schedule injected on purpose — rows made
// bad (rejected_row), poison messages (dead_letter), and keys left IN_PROGRESS because Pub/Sub
// gave up on their message after the maximum attempts (expired_lease: no delivery is left to
// finish them, as the key checker allows too).
func (h *Harness) auditCase(ctx context.Context, c *Case, r *ExtraReport, givenUp []sim.Delivery) error {
	abandoned := map[string]bool{} // keys of the messages Pub/Sub gave up on
	for _, d := range givenUp {
		if k := keyOf(d); k != "" {
			abandoned[k] = true
		}
	}
	e := h.Env
	jobs, err := e.Jobs(ctx)
	if err != nil {
		return err
	}
	bad := map[string]bool{} // settings whose object has bad rows
	for _, st := range c.Settings {
		if c.Objects[st.Object].Bad > 0 {
			bad[st.ID] = true
		}
	}
	a := audit.New(e.FS)
	a.Now = e.Clock.Now
	for _, j := range jobs {
		rep, err := a.Job(ctx, j.ID)
		if err != nil {
			return fmt.Errorf("chaos: audit job %s: %w", j.ID, err)
		}
		for _, f := range rep.Findings {
			switch {
			case f.Kind == audit.RejectedRow && bad[j.SettingID]:
			case f.Kind == audit.DeadLetter && len(c.Poison) > 0:
			case f.Kind == audit.ExpiredLease && abandoned[f.Key]:
			default:
				r.AuditFindings++
				r.violate("audit of job %s: %s: %s", j.ID, f.Kind, f.Detail)
			}
		}
		for kind, n := range rep.Omitted {
			r.AuditFindings += n
			r.violate("audit of job %s: %d more %s findings", j.ID, n, kind)
		}
	}
	return nil
}
