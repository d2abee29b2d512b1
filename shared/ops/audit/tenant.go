package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

// TenantReport is the audit of a tenant's Jobs created in [Since, Until), of its unfinished Jobs
// of any age, its open idempotency keys and its dead letters.
type TenantReport struct {
	Findings    []Finding           `json:"findings"`
	Omitted     map[string]int      `json:"omitted,omitempty"`
	Tenant      TenantInfo          `json:"tenant"`
	Since       time.Time           `json:"since,omitzero"`
	Until       time.Time           `json:"until,omitzero"`
	Totals      Totals              `json:"totals"`
	Jobs        []JobSummary        `json:"jobs"`
	OpenKeys    []KeyReport         `json:"openKeys"` // IN_PROGRESS keys of the tenant
	DeadLetters []DeadLetterSummary `json:"deadLetters"`
	Scan        *ScanReport         `json:"scan,omitempty"`
	AuditedAt   time.Time           `json:"auditedAt"`
	Reads       int64               `json:"reads"`
}

// Clean reports whether the audit found nothing.
func (r TenantReport) Clean() bool { return len(r.Findings) == 0 && len(r.Omitted) == 0 }

// TenantInfo is the tenant document.
type TenantInfo struct {
	ID      string `json:"id"`
	Found   bool   `json:"found"`
	Name    string `json:"name,omitempty"`
	Enabled bool   `json:"enabled"`
	// Connection is the state of its source connection: disconnected, with why and since when,
	// when its Jobs are paused for it.
	Connection *model.ConnectionState `json:"connection,omitempty"`
}

// JobSummary is one line per Job of a tenant audit.
type JobSummary struct {
	ID           string          `json:"id"`
	Setting      string          `json:"setting"`
	SourceObject string          `json:"sourceObject"`
	Target       string          `json:"target"`
	Status       model.JobStatus `json:"status"`
	CreatedAt    time.Time       `json:"createdAt"`
	WindowFrom   time.Time       `json:"windowFrom"`
	WindowTo     time.Time       `json:"windowTo"`
	InRange      bool            `json:"inRange"` // created in [since, until); else audited as unfinished
	Chunks       int             `json:"chunks"`
	Records      int             `json:"records"`
	Imported     int             `json:"imported"`
	Unchanged    int             `json:"unchanged"`
	Searches     int             `json:"searches"`
	Deliveries   int             `json:"deliveries"`
	Suppressed   int             `json:"suppressed"`
	Takeovers    int             `json:"takeovers"`
	DeadLetters  int             `json:"deadLetters"`
	Duplicated   int             `json:"duplicated"`
	Missing      int             `json:"missing"`
	Findings     int             `json:"findings"`
}

// Totals sums a tenant's Jobs.
type Totals struct {
	Jobs        int `json:"jobs"`
	Completed   int `json:"completed"`
	Unfinished  int `json:"unfinished"`
	Failed      int `json:"failed"`
	Records     int `json:"records"`
	Imported    int `json:"imported"`
	Unchanged   int `json:"unchanged"`
	Deliveries  int `json:"deliveries"`
	Suppressed  int `json:"suppressed"`
	Takeovers   int `json:"takeovers"`
	Duplicated  int `json:"duplicated"`
	Missing     int `json:"missing"`
	DeadLetters int `json:"deadLetters"`
	Expired     int `json:"expiredLeases"`
}

// ScanReport is what ScanTargets read.
type ScanReport struct {
	Collections []string `json:"collections"`
	Records     int      `json:"records"`     // target records of the tenant
	ExternalIDs int      `json:"externalIds"` // distinct source object + external ID
	Duplicated  int      `json:"duplicated"`  // external IDs with more than one record
	Extra       int      `json:"extra"`       // records beyond one per external ID
}

// Tenant audits tenant id's Jobs created in [since, until) (a zero time leaves that end open),
// plus its unfinished Jobs of any age, open keys and dead letters.
func (a *Auditor) Tenant(ctx context.Context, id string, since, until time.Time) (TenantReport, error) {
	var rd reads
	all := newFindings(a.MaxFindings)
	rep := TenantReport{Tenant: TenantInfo{ID: id}, Since: since, Until: until, AuditedAt: a.now(),
		Jobs: []JobSummary{}, OpenKeys: []KeyReport{}}
	snap, err := a.fs.Collection(model.Tenants).Doc(id).Get(ctx)
	rd.docs(1)
	switch {
	case status.Code(err) == codes.NotFound:
	case err != nil:
		return rep, ctxErr(ctx, fmt.Errorf("audit: tenant %q: %w", id, err))
	default:
		var t model.Tenant
		if err := snap.DataTo(&t); err != nil {
			return rep, fmt.Errorf("audit: tenant %q: decode: %w", id, err)
		}
		rep.Tenant = TenantInfo{ID: id, Found: true, Name: t.Name, Enabled: t.Enabled, Connection: t.Connection}
	}

	ids, inRange, err := a.tenantJobs(ctx, &rd, id, since, until)
	if err != nil {
		return rep, err
	}
	if !rep.Tenant.Found && len(ids) == 0 {
		return rep, fmt.Errorf("audit: tenant %q: %w: no tenant document and no Jobs", id, ErrNotFound)
	}
	leases := map[string]bool{}           // expired keys already reported by a Job audit
	dls := map[string]bool{}              // dead letters already judged by a Job audit
	dupIDs := map[string]bool{}           // sourceObject|externalId reported duplicated
	known := map[string]model.JobStatus{} // status of every Job audited
	for _, jid := range ids {
		jf := newFindings(a.MaxFindings)
		jr, err := a.job(ctx, jid, &rd, jf)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the query
		}
		if err != nil {
			return rep, err
		}
		list, omitted := jf.sorted()
		all.addAll(list, omitted)
		for _, f := range list {
			switch f.Kind {
			case ExpiredLease:
				leases[f.Key] = true
			case DuplicateRecord:
				dupIDs[jr.Job.SourceObject+"|"+f.ExternalID] = true
			}
		}
		for _, d := range jr.DeadLetters {
			dls[d.ID] = true
		}
		known[jid] = jr.Job.Status
		rep.Jobs = append(rep.Jobs, summarizeJob(jr, inRange[jid], len(list)+sum(omitted)))
	}

	open, err := a.openKeys(ctx, &rd, id)
	if err != nil {
		return rep, err
	}
	rep.OpenKeys = open
	for _, k := range open {
		if f := leaseFinding(k, k.Job); f != nil && !leases[k.Key] {
			all.add(*f)
		}
	}
	tdl, err := a.deadLetters(ctx, &rd, DeadLetterFilter{Tenant: id, Since: since, Until: until})
	if err != nil {
		return rep, err
	}
	if err := a.resolveAll(ctx, &rd, tdl, known); err != nil {
		return rep, err
	}
	for _, d := range tdl {
		if f := deadLetterFinding(d); f != nil && !dls[d.ID] {
			all.add(*f)
		}
	}
	rep.DeadLetters = tdl
	if a.ScanTargets {
		sr, err := a.scan(ctx, &rd, all, id, dupIDs)
		if err != nil {
			return rep, err
		}
		rep.Scan = &sr
	}
	rep.Totals = totals(rep)
	rep.Findings, rep.Omitted = all.sorted()
	rep.Reads = rd.n.Load()
	return rep, nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// tenantJobs returns the IDs of the tenant's Jobs created in [since, until) in creation order,
// then those of its unfinished Jobs created outside it.
func (a *Auditor) tenantJobs(ctx context.Context, rd *reads, tenant string, since, until time.Time) ([]string, map[string]bool, error) {
	q := a.fs.Collection(model.Jobs).Where("tenantId", "==", tenant)
	if !since.IsZero() {
		q = q.Where("createdAt", ">=", since)
	}
	if !until.IsZero() {
		q = q.Where("createdAt", "<", until)
	}
	docs, err := q.OrderBy("createdAt", firestore.Asc).Select().Documents(ctx).GetAll()
	if err != nil {
		return nil, nil, ctxErr(ctx, fmt.Errorf("audit: jobs of tenant %q: %w", tenant, err))
	}
	rd.query(len(docs))
	var ids []string
	in := map[string]bool{}
	for _, d := range docs {
		ids = append(ids, d.Ref.ID)
		in[d.Ref.ID] = true
	}
	for _, st := range []model.JobStatus{model.JobPending, model.JobPlanned} {
		docs, err := a.fs.Collection(model.Jobs).Where("tenantId", "==", tenant).Where("status", "==", st).Select().Documents(ctx).GetAll()
		if err != nil {
			return nil, nil, ctxErr(ctx, fmt.Errorf("audit: %s jobs of tenant %q: %w", st, tenant, err))
		}
		rd.query(len(docs))
		for _, d := range docs {
			if !in[d.Ref.ID] {
				ids = append(ids, d.Ref.ID)
				in[d.Ref.ID] = false
			}
		}
	}
	return ids, in, nil
}

// openKeys returns the tenant's IN_PROGRESS keys (expand and chunk keys carry the tenant label).
func (a *Auditor) openKeys(ctx context.Context, rd *reads, tenant string) ([]KeyReport, error) {
	docs, err := a.fs.Collection(model.Keys).Where("labels.tenant", "==", tenant).Where("state", "==", idem.InProgress).Documents(ctx).GetAll()
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("audit: open keys of tenant %q: %w", tenant, err))
	}
	rd.query(len(docs))
	now := a.now()
	out := []KeyReport{}
	for _, d := range docs {
		var k idem.Doc
		if err := d.DataTo(&k); err != nil {
			return nil, fmt.Errorf("audit: decode %s: %w", d.Ref.Path, err)
		}
		kr := KeyReport{Key: k.Key, Step: k.Scope}
		kr.fromKey(k, now)
		if c, ok := k.Labels["chunk"]; ok {
			var i int
			if _, err := fmt.Sscan(c, &i); err == nil {
				kr.Chunk = intp(i)
			}
		}
		out = append(out, kr)
	}
	return out, nil
}

// scan streams every target record of the tenant in (source object, external ID) order and
// reports each external ID stored more than once.
func (a *Auditor) scan(ctx context.Context, rd *reads, fs *findings, tenant string, reported map[string]bool) (ScanReport, error) {
	sr := ScanReport{}
	for _, k := range model.TargetKinds {
		sr.Collections = append(sr.Collections, k.Records)
	}
	for _, name := range sr.Collections {
		coll := a.fs.Collection(name)
		q := coll.Where("tenantId", "==", tenant).OrderBy("sourceObject", firestore.Asc).OrderBy("externalId", firestore.Asc).
			Select(append([]string{"sourceObject"}, targetFields...)...).Limit(scanPage)
		var group []targetDoc
		object := ""
		flush := func() {
			if len(group) == 0 {
				return
			}
			sr.ExternalIDs++
			if len(group) > 1 {
				sr.Duplicated++
				sr.Extra += len(group) - 1
				if id := object + "|" + group[0].ExternalID; !reported[id] {
					reported[id] = true
					fs.add(scanFinding(name, tenant, object, group))
				}
			}
			group = group[:0]
		}
		n := 0
		var last *firestore.DocumentSnapshot
		for {
			pq := q
			if last != nil {
				pq = q.StartAfter(last)
			}
			docs, err := pq.Documents(ctx).GetAll()
			if err != nil {
				return sr, ctxErr(ctx, fmt.Errorf("audit: scan %s of tenant %q: %w", name, tenant, err))
			}
			rd.query(len(docs))
			for _, d := range docs {
				var t targetDoc
				if err := d.DataTo(&t); err != nil {
					return sr, fmt.Errorf("audit: decode %s: %w", d.Ref.Path, err)
				}
				obj, _ := d.DataAt("sourceObject")
				o, _ := obj.(string)
				t.path, t.id = name+"/"+d.Ref.ID, d.Ref.ID
				if len(group) > 0 && (o != object || t.ExternalID != group[0].ExternalID) {
					flush()
				}
				object = o
				group = append(group, t)
			}
			n += len(docs)
			if len(docs) < scanPage {
				break
			}
			last = docs[len(docs)-1]
		}
		flush()
		sr.Records += n
	}
	return sr, nil
}

// scanPage is how many target records a page of the scan reads.
const scanPage = 5000

func scanFinding(coll, tenant, object string, group []targetDoc) Finding {
	parts := make([]string, len(group))
	paths := make([]string, len(group))
	for i, d := range group {
		parts[i] = fmt.Sprintf("%s (job %s chunk %d, imported %s)", d.path, d.JobID, d.Chunk, ts(d.ImportedAt))
		paths[i] = d.path
	}
	return Finding{Severity: Error, Kind: DuplicateRecord, Job: group[0].JobID, ExternalID: group[0].ExternalID, Docs: paths,
		Detail: fmt.Sprintf("%s %s of tenant %s has %d records in %s: %s", object, group[0].ExternalID, tenant, len(group), coll, strings.Join(parts, "; "))}
}

func summarizeJob(r JobReport, inRange bool, findings int) JobSummary {
	j := r.Job
	s := JobSummary{
		ID: j.ID, Setting: j.SettingID, SourceObject: j.SourceObject, Target: j.Target, Status: j.Status,
		CreatedAt: j.CreatedAt, WindowFrom: j.WindowFrom, WindowTo: j.WindowTo, InRange: inRange,
		Chunks: j.ChunkCount, Records: j.RecordCount, Imported: j.Imported, Unchanged: j.Unchanged, Searches: j.Searches,
		DeadLetters: len(r.DeadLetters), Duplicated: r.Target.Duplicated, Missing: r.Target.Missing, Findings: findings,
	}
	for _, st := range r.Deliveries {
		if st.Step == StepTick {
			continue // shared by every Job of the tick
		}
		s.Deliveries += st.Deliveries
		s.Suppressed += st.Suppressed
		s.Takeovers += st.Takeovers
	}
	return s
}

func totals(r TenantReport) Totals {
	var t Totals
	for _, j := range r.Jobs {
		t.Jobs++
		switch j.Status {
		case model.JobCompleted:
			t.Completed++
		case model.JobFailed:
			t.Failed++
		default:
			t.Unfinished++
		}
		t.Records += j.Records
		t.Imported += j.Imported
		t.Unchanged += j.Unchanged
		t.Deliveries += j.Deliveries
		t.Suppressed += j.Suppressed
		t.Takeovers += j.Takeovers
		t.Duplicated += j.Duplicated
		t.Missing += j.Missing
	}
	t.DeadLetters = len(r.DeadLetters)
	for _, k := range r.OpenKeys {
		if k.Expired {
			t.Expired++
		}
	}
	return t
}
