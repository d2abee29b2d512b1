package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// A tick over 130 settings fans out on the real emulators: units of 40 settings (4 deliveries,
// each its own key), exactly one Job per setting, every one COMPLETED; a disconnected tenant's
// settings get no Job and its stuck Jobs are left alone; the next tick's sweep visits every stuck
// Job in pages of 7 (19 pages), not the same 7 again; and the Jobs after the tenant is connected
// again cover the whole gap.
func TestATickFansOutAndItsSweepVisitsEveryStuckJob(t *testing.T) {
	t.Parallel()
	const settings, unit, page = 130, 40, 7
	e := sim.New(t, sim.Options{Start: simStart, Config: func(c *config.Config) { c.TickUnit, c.SweepLimit = unit, page }})
	ctx := t.Context()
	e.Tenant(ctx, "acme")
	e.Tenant(ctx, "globex")
	rows := fixture.Generate(7, 30, windowStart, simStart.Add(2*time.Hour), fixture.GenOptions{})
	e.Fixture.PutRecords("Contact", rows...)
	var ids []string
	for i := range settings {
		tenant := "acme"
		if i%10 == 0 {
			tenant = "globex"
		}
		st := model.SyncSetting{ID: fmt.Sprintf("%s-%03d", tenant, i), TenantID: tenant, SourceObject: "Contact", Fields: []string{"Name"},
			Target: model.TargetUpsert, ChunkSize: 50, Enabled: true, Watermark: windowStart}
		e.Setting(ctx, st)
		ids = append(ids, st.ID)
	}

	// Tick 1: the tick and its parts only.
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := e.DeliverTopic(ctx, sim.TopicTicks); err != nil {
		t.Fatal(err)
	}
	units, err := e.FS.Collection(model.Keys).Where("scope", "==", "tick").Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	// The tick, 4 units, the sweep's first page.
	if len(units) != 1+(settings+unit-1)/unit+1 {
		t.Errorf("%d tick keys, want the tick's, %d units' and one sweep page's", len(units), (settings+unit-1)/unit)
	}
	jobs, err := e.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perSetting := map[string]int{}
	for _, j := range jobs {
		perSetting[j.SettingID]++
	}
	for _, id := range ids {
		if perSetting[id] != 1 {
			t.Errorf("setting %s has %d Jobs for tick t1, want 1", id, perSetting[id])
		}
	}
	expand := pullAll(t, e, sim.TopicExpand)
	if len(expand) != settings {
		t.Errorf("%d expand messages after t1, want one per Job (%d)", len(expand), settings)
	}

	// globex is disconnected; its t1 Jobs are stuck with the others (their messages dropped).
	if _, err := e.FS.Collection(model.Tenants).Doc("globex").Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: model.Disconnected, Reason: "test: consent revoked", ChangedAt: e.Clock.Now()}},
	}); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(e.Config.StuckAfter + time.Minute)
	if err := e.Tick(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	if err := e.DeliverTopic(ctx, sim.TopicTicks); err != nil {
		t.Fatal(err)
	}
	jobs, err = e.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t2 := 0
	for _, j := range jobs {
		if j.TickID == "t2" {
			t2++
			if j.TenantID == "globex" {
				t.Errorf("disconnected globex got Job %s at t2", j.ID)
			}
		}
	}
	if t2 != settings-settings/10 {
		t.Errorf("%d Jobs at t2, want one per setting of the connected tenant (%d)", t2, settings-settings/10)
	}
	// The sweep re-published every stuck Job of the connected tenant, once, beside t2's own.
	again := map[string]int{}
	for _, m := range pullAll(t, e, sim.TopicExpand) {
		again[m.JobID]++
	}
	for _, j := range jobs {
		if j.TickID != "t1" {
			continue
		}
		switch {
		case j.TenantID == "globex" && again[j.ID] != 0:
			t.Errorf("the sweep re-published %s of the disconnected tenant", j.ID)
		case j.TenantID == "acme" && again[j.ID] != 1:
			t.Errorf("the sweep re-published stuck Job %s %d times, want once", j.ID, again[j.ID])
		}
	}

	// Connected again: everything completes, and globex's next Jobs cover t1's window to t3.
	if _, err := e.FS.Collection(model.Tenants).Doc("globex").Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: model.Connected, ChangedAt: e.Clock.Now()}},
	}); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(time.Hour)
	if err := e.Tick(ctx, "t3"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SettleAll(ctx, sim.Policy{}, 3); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Unfinished(ctx); err != nil || n != 0 {
		t.Errorf("%d Jobs unfinished after reconnecting (%v)", n, err)
	}
	// Each setting's windows are contiguous from its first watermark: globex's Job after the
	// pause covers from t1's window end to t3.
	jobs, err = e.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bySetting := map[string][]model.Job{}
	for _, j := range jobs {
		bySetting[j.SettingID] = append(bySetting[j.SettingID], j)
	}
	for _, id := range ids {
		js := bySetting[id]
		sort.Slice(js, func(a, b int) bool { return js[a].WindowFrom.Before(js[b].WindowFrom) })
		from := windowStart
		for _, j := range js {
			if !j.WindowFrom.Equal(from) {
				t.Errorf("setting %s: Job %s starts at %v, the previous window ended at %v", id, j.ID, j.WindowFrom, from)
			}
			from = j.WindowTo
		}
		if !from.After(simStart.Add(time.Hour)) {
			t.Errorf("setting %s: its windows end at %v, before the last tick", id, from)
		}
	}
}

// pullAll pulls and acks every message of a topic, decoded as expand (or chunk) messages.
func pullAll(t *testing.T, e *sim.Env, topic string) []model.ExpandMessage {
	t.Helper()
	var out []model.ExpandMessage
	for idle := 0; idle < 2; {
		ds, err := e.Pull(t.Context(), topic, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			idle++
			continue
		}
		idle = 0
		for _, d := range ds {
			var m model.ExpandMessage
			if err := json.Unmarshal(d.Message.GetData(), &m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
			if err := e.Settle(t.Context(), d, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}
