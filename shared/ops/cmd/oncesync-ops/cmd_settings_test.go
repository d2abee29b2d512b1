package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

func tenantsCLI(ctx context.Context, args []string, out, errb *bytes.Buffer) int {
	return runAdmin(ctx, "tenants", args, noEnv, out, errb)
}

func settingsCLI(ctx context.Context, args []string, out, errb *bytes.Buffer) int {
	return runAdmin(ctx, "settings", args, noEnv, out, errb)
}

func noEnv(string) string { return "" }

// The settings a command adds are the ones a tick schedules: the first Job of each imports its
// records.
func TestSettingsCommandsFeedATick(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := sim.New(t, sim.Options{Start: start, PageSize: 50})
	ctx := t.Context()
	p := []string{"--project", e.Project}
	run := func(cli func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, want int, args ...string) string {
		t.Helper()
		code, out, errs := invoke(t, cli, append(args, p...)...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
		}
		return out + errs
	}
	run(tenantsCLI, exitClean, "add", "acme", "--name", "Acme Corp", "--search-concurrency", "2")
	run(settingsCLI, exitClean, "add", "acme-contacts", "--tenant", "acme", "--object", "Contact", "--fields", "Name, Email",
		"--since", "2025-12-31")
	run(settingsCLI, exitClean, "add", "acme-leads", "--tenant", "acme", "--object", "Lead", "--fields", "Name",
		"--target", model.TargetGenerated, "--chunk-size", "40", "--since", "2025-12-31T00:00:00Z", "--disabled")

	// Refusals: exit code 2 (invalid input, as everywhere), the reason on stderr, nothing written.
	for _, tc := range []struct {
		cli  func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int
		args []string
		want string
	}{
		{tenantsCLI, []string{"add", "acme"}, "already exists"},
		{settingsCLI, []string{"add", "acme-contacts", "--tenant", "acme", "--object", "Contact"}, "already exists"},
		{settingsCLI, []string{"add", "x", "--tenant", "globex", "--object", "Contact"}, `tenant "globex": settings: unknown tenant`},
		{settingsCLI, []string{"add", "y", "--tenant", "acme", "--object", "Contact;DELETE"}, "is not a SOQL identifier"},
		{settingsCLI, []string{"add", "y", "--tenant", "acme", "--object", "Contact", "--target", "bigquery"}, `unknown target "bigquery"`},
		{settingsCLI, []string{"add", "y", "--tenant", "acme", "--object", "Contact", "--chunk-size", "9000"}, "chunk size 9000 outside 1..5000"},
		{settingsCLI, []string{"enable", "nope"}, `setting "nope": settings: not found`},
		{tenantsCLI, []string{"disable", "nope"}, `tenant "nope": settings: not found`},
	} {
		if out := run(tc.cli, exitCannot, tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("%v: output lacks %q:\n%s", tc.args, tc.want, out)
		}
	}
	for _, bad := range [][]string{{"add"}, {"add", "y", "--since", "yesterday", "--tenant", "acme", "--object", "Contact"}, {"add", "y", "--object", "Contact"}, {"list", "extra"}} {
		run(settingsCLI, exitCannot, bad...)
	}
	if _, err := e.FS.Collection(model.SyncSettings).Doc("y").Get(ctx); err == nil {
		t.Fatal("a refused setting was written")
	}

	out := run(settingsCLI, exitClean, "list", "--tenant", "acme")
	for _, want := range []string{"acme-contacts", "acme-leads", "disabled", "2025-12-31T00:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("settings list lacks %q:\n%s", want, out)
		}
	}
	var shown model.SyncSetting
	if code, js, errs := invoke(t, settingsCLI, append([]string{"show", "acme-leads", "--json"}, p...)...); code != exitClean {
		t.Fatalf("settings show --json: exit %d: %s", code, errs)
	} else if err := json.Unmarshal([]byte(js), &shown); err != nil {
		t.Fatalf("settings show --json: %v\n%s", err, js)
	}
	if shown.Target != model.TargetGenerated || shown.ChunkSize != 40 || shown.Enabled || len(shown.Fields) != 1 {
		t.Fatalf("settings show --json: %+v", shown)
	}
	run(settingsCLI, exitClean, "enable", "acme-leads")
	if out := run(tenantsCLI, exitClean, "show", "acme"); !strings.Contains(out, "Acme Corp") || !strings.Contains(out, "enabled") {
		t.Fatalf("tenants show:\n%s", out)
	}

	// A tick imports both settings' records.
	windowStart := time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	for i, object := range []string{"Contact", "Lead"} {
		e.Fixture.PutRecords(object, fixture.Generate(int64(30+i), 60, windowStart, start, fixture.GenOptions{})...)
	}
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	jobs := auditJobs(t, e)
	for _, tg := range []string{model.TargetUpsert, model.TargetGenerated} {
		if j := jobs[tg]; j.Status != model.JobCompleted || j.RecordCount != 60 {
			t.Errorf("%s Job: %s with %d records, want COMPLETED with 60", tg, j.Status, j.RecordCount)
		}
	}
	if out := run(settingsCLI, exitClean, "show", "acme-contacts"); !strings.Contains(out, jobs[model.TargetUpsert].ID) {
		t.Errorf("settings show does not name the last Job %s:\n%s", jobs[model.TargetUpsert].ID, out)
	}
}

// A resync imports its window again once per request, restores what the target lost or got wrong,
// and leaves the setting's watermark where it was.
func TestResyncRestoresTheTargetOncePerRequest(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	windowStart := start.Add(-24 * time.Hour)
	e := sim.New(t, sim.Options{Start: start, PageSize: 50})
	ctx := t.Context()
	p := []string{"--project", e.Project}
	run := func(want int, args ...string) string {
		t.Helper()
		code, out, errs := invoke(t, settingsCLI, append(args, p...)...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
		}
		return out + errs
	}
	if code, _, errs := invoke(t, tenantsCLI, append([]string{"add", "acme"}, p...)...); code != exitClean {
		t.Fatal(errs)
	}
	run(exitClean, "add", "acme-contacts", "--tenant", "acme", "--object", "Contact", "--fields", "Name,Email", "--chunk-size", "25",
		"--since", windowStart.Format(time.RFC3339))
	e.Fixture.PutRecords("Contact", fixture.Generate(41, 80, windowStart, start.Add(-time.Minute), fixture.GenOptions{UpdatedInWindow: 0.2})...)
	drain := func() {
		t.Helper()
		if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	drain()
	engagements := func() map[string]model.Engagement {
		t.Helper()
		docs, err := e.FS.Collection(model.Engagements).Documents(ctx).GetAll()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]model.Engagement{}
		for _, d := range docs {
			var en model.Engagement
			if err := d.DataTo(&en); err != nil {
				t.Fatal(err)
			}
			out[d.Ref.ID] = en
		}
		return out
	}
	before := engagements()
	if len(before) != 80 {
		t.Fatalf("the tick imported %d records, want 80", len(before))
	}
	setting, err := settings.Admin{FS: e.FS}.Setting(ctx, "acme-contacts")
	if err != nil {
		t.Fatal(err)
	}

	// The target loses 5 records (a restored backup) and 3 get wrong fields (a bad mapping).
	n := 0
	for id := range before {
		ref := e.FS.Collection(model.Engagements).Doc(id)
		switch {
		case n < 5:
			_, err = ref.Delete(ctx)
		case n < 8:
			_, err = ref.Set(ctx, map[string]any{"fields": map[string]any{"Name": "wrong"}}, firestore.MergeAll)
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}

	// Beyond the watermark: refused, nothing created.
	if out := run(exitCannot, "resync", "acme-contacts", "--from", windowStart.Format(time.RFC3339), "--to", start.Add(time.Hour).Format(time.RFC3339),
		"--topic", sim.TopicExpand); !strings.Contains(out, "after the setting's watermark") {
		t.Fatalf("a window past the watermark: %s", out)
	}
	run(exitCannot, "resync", "acme-contacts", "--topic", sim.TopicExpand) // no window
	run(exitCannot, "resync", "nope", "--full", "--topic", sim.TopicExpand)
	if code, _, errs := invoke(t, tenantsCLI, append([]string{"disable", "acme"}, p...)...); code != exitClean {
		t.Fatal(errs)
	}
	if out := run(exitCannot, "resync", "acme-contacts", "--full", "--topic", sim.TopicExpand); !strings.Contains(out, `tenant "acme" is disabled`) {
		t.Fatalf("resync of a disabled tenant's setting: %s", out)
	}
	if code, _, errs := invoke(t, tenantsCLI, append([]string{"enable", "acme"}, p...)...); code != exitClean {
		t.Fatal(errs)
	}

	// The same request twice (the second while the first is unfinished): one Job.
	for range 2 {
		if out := run(exitClean, "resync", "acme-contacts", "--full", "--topic", sim.TopicExpand); !strings.Contains(out, "resync Job acme-contacts-") {
			t.Fatalf("resync: %s", out)
		}
	}
	drain()
	if got := engagements(); !maps.EqualFunc(got, before, sameRecord) {
		t.Fatalf("after the resync, %d records, want the %d the tick imported, as it imported them", len(got), len(before))
	}
	jobs, err := e.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var resyncs []model.Job
	for _, j := range jobs {
		if j.Resync != "" {
			resyncs = append(resyncs, j)
		}
	}
	if len(jobs) != 2 || len(resyncs) != 1 || resyncs[0].Status != model.JobCompleted || resyncs[0].RecordCount < 80 {
		t.Fatalf("jobs after one resync sent twice: %d in all, resync Jobs %+v", len(jobs), resyncs)
	}
	after, err := settings.Admin{FS: e.FS}.Setting(ctx, "acme-contacts")
	if err != nil {
		t.Fatal(err)
	}
	if !after.Watermark.Equal(setting.Watermark) || after.LastJobID != setting.LastJobID {
		t.Fatalf("the resync moved the setting: watermark %v → %v, last Job %s → %s", setting.Watermark, after.Watermark, setting.LastJobID, after.LastJobID)
	}

	// Sent again after it completed: nothing new; the audit calls it a resync, and finds it clean.
	if out := run(exitClean, "resync", "acme-contacts", "--full", "--topic", sim.TopicExpand); !strings.Contains(out, "is COMPLETED: nothing published") {
		t.Fatalf("resync after completion: %s", out)
	}
	if code, out, errs := invoke(t, auditCLI, "job", resyncs[0].ID, "--project", e.Project); code != exitClean || !strings.Contains(out, "resync") {
		t.Fatalf("audit of the resync Job: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := invoke(t, auditCLI, "tenant", "acme", "--project", e.Project); code != exitClean {
		t.Fatalf("audit of the tenant after a resync: exit %d\n%s\n%s", code, out, errs)
	}
	// A new label is a new request: a second resync Job, which changes nothing.
	run(exitClean, "resync", "acme-contacts", "--full", "--label", "again", "--topic", sim.TopicExpand)
	drain()
	if got := engagements(); !maps.EqualFunc(got, before, sameRecord) {
		t.Fatal("a second resync changed the records")
	}
}

// sameRecord compares what a record holds, not when or by which Job it was written.
func sameRecord(a, b model.Engagement) bool {
	return a.ExternalID == b.ExternalID && a.Version.Equal(b.Version) && reflect.DeepEqual(a.Fields, b.Fields)
}

// reconcile tombstones the records the source no longer holds, searching the tenant's org through
// its connection as the expander does, and a second run changes nothing; the API reserve is a
// setting like the others.
func TestReconcileCommandTombstonesHardDeletes(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	login := fixture.NewLogin(fixture.LoginOptions{})
	e := sim.New(t, sim.Options{Start: start, PageSize: 50, Login: login})
	ls := httptest.NewServer(login)
	t.Cleanup(ls.Close)
	login.SetURL(ls.URL)
	login.AddOrg(sim.OrgID, e.SourceURL)
	login.RegisterApp(fixture.App{ClientID: "app-acme"})
	login.AddUser("int@acme.example", sim.OrgID)
	ctx := t.Context()
	_, keysetJSON, err := connection.NewLocal()
	if err != nil {
		t.Fatal(err)
	}
	keyset := filepath.Join(t.TempDir(), "keyset.json")
	if err := os.WriteFile(keyset, keysetJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	p := []string{"--project", e.Project}
	env := map[string]string{config.EnvKeyset: keyset}
	reconcileCLI := func(ctx context.Context, args []string, out, errb *bytes.Buffer) int {
		return runAdmin(ctx, "settings", args, func(k string) string { return env[k] }, out, errb)
	}
	run := func(cli func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, want int, args ...string) (string, string) {
		t.Helper()
		code, out, errs := invoke(t, cli, append(args, p...)...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
		}
		return out, errs
	}
	run(tenantsCLI, exitClean, "add", "acme")
	run(settingsCLI, exitClean, "add", "acme-contacts", "--tenant", "acme", "--object", "Contact", "--fields", "Name", "--since", "2025-12-31", "--api-reserve", "25")
	if out, _ := run(settingsCLI, exitClean, "show", "acme-contacts"); !strings.Contains(out, "api reserve  25") {
		t.Errorf("settings show lacks the reserve:\n%s", out)
	}
	run(settingsCLI, exitCannot, "add", "neg", "--tenant", "acme", "--object", "Contact", "--api-reserve", "-1")
	rt, err := login.Consent("app-acme", "int@acme.example")
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := connection.LoadKeyset(ctx, keyset, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (settings.Admin{FS: e.FS}).Connect(ctx, sealer, settings.Connect{Tenant: "acme", LoginURL: ls.URL, ClientID: "app-acme",
		RefreshToken: connection.Credential(rt)}); err != nil {
		t.Fatal(err)
	}
	rows := fixture.Generate(77, 120, start.Add(-24*time.Hour), start, fixture.GenOptions{})
	e.Fixture.PutRecords("Contact", rows...)
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	e.Fixture.Purge("Contact", rows[5].ID, rows[50].ID)
	out, progress := run(reconcileCLI, exitClean, "reconcile", "acme-contacts")
	if !strings.Contains(out, "the source holds 118 IDs") || !strings.Contains(out, "120 target records: 2 tombstoned now") ||
		!strings.Contains(out, rows[5].ID) || !strings.Contains(progress, "target: 118 source IDs, 120 target records compared, 2 tombstoned") {
		t.Errorf("reconcile said:\n%s\n%s", out, progress)
	}
	if out, _ := run(reconcileCLI, exitClean, "reconcile", "acme-contacts"); !strings.Contains(out, "0 tombstoned now, 2 already tombstoned") {
		t.Errorf("reconcile run again said:\n%s", out)
	}
	run(reconcileCLI, exitCannot, "reconcile", "nope")
	if _, errs := run(settingsCLI, exitCannot, "reconcile", "acme-contacts"); !strings.Contains(errs, config.EnvKeyset) {
		t.Errorf("reconcile without the keyset: %s", errs)
	}
}
