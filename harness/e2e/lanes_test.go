package e2e

import (
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// Two tenants on one tick, on the real emulators: globex's window counts 300 rows, more than the
// bulk threshold (100), acme's 20. The cut makes globex's Job bulk and acme's standard; every
// chunk message of each is on its class's lane. With those messages lost, the sweep re-publishes
// each Job's chunks to its own lane, and both complete, each through its lane's importer.
func TestEachJobsChunksTravelItsClassLane(t *testing.T) {
	t.Parallel()
	e := sim.New(t, sim.Options{Start: simStart, Config: func(c *config.Config) { c.BulkAfter = 100 }})
	ctx := t.Context()
	e.Tenant(ctx, "acme")
	e.Tenant(ctx, "globex")
	e.Fixture.PutRecords("Contact", fixture.Generate(7, 300, windowStart, simStart.Add(-time.Hour), fixture.GenOptions{})...)
	e.Fixture.PutRecords("Lead", fixture.Generate(8, 20, windowStart, simStart.Add(-time.Hour), fixture.GenOptions{})...)
	for _, st := range []model.SyncSetting{
		{ID: "globex-contacts", TenantID: "globex", SourceObject: "Contact"},
		{ID: "acme-leads", TenantID: "acme", SourceObject: "Lead"},
	} {
		st.Fields, st.Target, st.ChunkSize, st.Enabled, st.Watermark = []string{"Name"}, model.TargetUpsert, 50, true, windowStart
		e.Setting(ctx, st)
	}
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{sim.TopicTicks, sim.TopicExpand} {
		if err := e.DeliverTopic(ctx, topic); err != nil {
			t.Fatal(err)
		}
	}
	bulk, small := model.JobID("globex-contacts", "t1"), model.JobID("acme-leads", "t1")
	jobs, err := e.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]model.Job{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	if byID[bulk].Class != model.ClassBulk || byID[small].Class != model.ClassStandard {
		t.Fatalf("classes: %s %q, %s %q; want bulk and standard", bulk, byID[bulk].Class, small, byID[small].Class)
	}
	// The chunk messages, taken off both lanes (lost).
	lanes := map[string]map[string]int{}
	for _, topic := range []string{sim.TopicChunks, sim.TopicBulk} {
		lanes[topic] = map[string]int{}
		for _, m := range pullAll(t, e, topic) {
			lanes[topic][m.JobID]++
		}
	}
	if lanes[sim.TopicBulk][bulk] != byID[bulk].ChunkCount || lanes[sim.TopicChunks][bulk] != 0 {
		t.Errorf("bulk Job %s: %d chunk messages on the bulk lane, %d on the standard one; want its %d chunks on the bulk lane",
			bulk, lanes[sim.TopicBulk][bulk], lanes[sim.TopicChunks][bulk], byID[bulk].ChunkCount)
	}
	if lanes[sim.TopicChunks][small] != byID[small].ChunkCount || lanes[sim.TopicBulk][small] != 0 {
		t.Errorf("standard Job %s: %d chunk messages on the standard lane, %d on the bulk one; want its %d chunks on the standard lane",
			small, lanes[sim.TopicChunks][small], lanes[sim.TopicBulk][small], byID[small].ChunkCount)
	}

	// The sweep re-publishes each stuck Job's chunks to its own lane.
	e.Clock.Advance(e.Config.StuckAfter + time.Minute)
	if err := e.Tick(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	st, err := e.SettleAll(ctx, sim.Policy{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.Unfinished(ctx); err != nil || n != 0 {
		t.Fatalf("%d Jobs unfinished after the sweep (%v)", n, err)
	}
	if st.ByFunction[config.ImporterBulk] < byID[bulk].ChunkCount || st.ByFunction[config.Importer] < byID[small].ChunkCount {
		t.Errorf("imports after the sweep: %d by ImporterBulk, %d by Importer; want at least %d and %d",
			st.ByFunction[config.ImporterBulk], st.ByFunction[config.Importer], byID[bulk].ChunkCount, byID[small].ChunkCount)
	}
	for tenant, want := range map[string]int{"globex": 300, "acme": 20} {
		docs, err := e.FS.Collection(model.Engagements).Where("tenantId", "==", tenant).Documents(ctx).GetAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != want {
			t.Errorf("tenant %s: %d records imported, want %d", tenant, len(docs), want)
		}
	}
}
