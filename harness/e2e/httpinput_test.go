package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"

	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

// TestBadInputOverHTTP posts one delivery of every class of bad input to the functions the way
// they are deployed (delivery.Gate's HTTP front, as functions.go registers them) and asserts,
// for each: the HTTP answer, exactly one new dead letter with its reason and topic, and that no
// other document changed. Then the pipeline imports everything.
func TestBadInputOverHTTP(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 40, 20, 21, sim.Options{})
	ctx := t.Context()
	tick(t, w.Env, "t1")
	w.settle(t, sim.Policy{})
	done, err := w.JobsByTarget(ctx)
	if err != nil {
		t.Fatal(err)
	}
	doneJob := done[model.TargetUpsert]
	if doneJob.Status != model.JobCompleted {
		t.Fatalf("first Job %s is %s, want COMPLETED", doneJob.ID, doneJob.Status)
	}
	// A second tick's Jobs stay PENDING: only the scheduler's deliveries (the tick and its parts)
	// are made.
	w.Clock.Advance(time.Hour)
	tick(t, w.Env, "t2")
	if err := w.DeliverTopic(ctx, sim.TopicTicks); err != nil {
		t.Fatal(err)
	}
	var pending, pendingGen model.Job
	jobs, err := w.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		switch {
		case j.Status != model.JobPending:
		case j.SettingID == "acme-"+model.TargetUpsert:
			pending = j
		case j.SettingID == "acme-"+model.TargetGenerated:
			pendingGen = j
		}
	}
	if pending.ID == "" || pendingGen.ID == "" {
		t.Fatalf("want two PENDING Jobs after the second tick: %+v", jobs)
	}
	// Another delivery holds the pending Job's expand key, as a live expansion would.
	held := idem.ExpandKey(pending.ID).WithPayload(model.ExpandMessage{TenantID: "acme", JobID: pending.ID})
	lease, err := w.Comps.Keys.Claim(ctx, held, "Expander/live/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Tenant(ctx, "other")

	servers := map[string]*httptest.Server{}
	for _, fn := range config.EntryPoints {
		h, err := w.Comps.HTTPHandler(fn)
		if err != nil {
			t.Fatal(err)
		}
		servers[fn] = httptest.NewServer(h)
		t.Cleanup(servers[fn].Close)
	}
	expand := func(tenant, job string) []byte { return mustJSON(t, model.ExpandMessage{TenantID: tenant, JobID: job}) }
	chunk := func(tenant, job string, n int) []byte {
		return mustJSON(t, model.ChunkMessage{TenantID: tenant, JobID: job, Chunk: n})
	}
	type input struct {
		name, fn, reason string
		topic            string            // the topic the dead letter must name
		headers          map[string]string // ce- headers changed ("" removes one)
		body             []byte            // the whole body; nil: a push body carrying data
		data             []byte
	}
	big := bytes.Repeat([]byte("x"), delivery.MaxBody+1)
	cases := []input{
		{name: "body not JSON", fn: config.Expander, reason: "malformed_event", body: []byte("not json")},
		{name: "data not JSON", fn: config.Importer, reason: "malformed_message", data: []byte("not json")},
		{name: "missing fields", fn: config.Importer, reason: "missing_field", data: []byte(`{"tenantId":"acme"}`)},
		{name: "wrong types", fn: config.Expander, reason: "malformed_message", data: []byte(`{"tenantId":7,"jobId":["x"]}`)},
		{name: "unknown job", fn: config.Expander, reason: "unknown_job", data: expand("acme", "no-such-job")},
		{name: "unknown chunk", fn: config.Importer, reason: "unknown_chunk", data: chunk("acme", doneJob.ID, 9999)},
		{name: "unknown tenant", fn: config.Importer, reason: "tenant_mismatch", data: chunk("nobody", pending.ID, 0)},
		{name: "wrong tenant, Job pending", fn: config.Expander, reason: "tenant_mismatch", data: expand("other", pendingGen.ID)},
		{name: "wrong tenant, Job done", fn: config.Expander, reason: "payload_mismatch", data: expand("other", doneJob.ID)},
		{name: "payload mismatch, work in progress", fn: config.Expander, reason: "payload_mismatch", data: expand("other", pending.ID)},
		{name: "missing ce-source", fn: config.Expander, reason: delivery.ReasonMalformedCloudEvent, topic: "-", headers: map[string]string{"Ce-Source": ""}, data: expand("acme", pending.ID)},
		{name: "missing ce-specversion", fn: config.Expander, reason: delivery.ReasonMalformedCloudEvent, headers: map[string]string{"Ce-Specversion": ""}, data: expand("acme", pending.ID)},
		{name: "wrong event type", fn: config.Expander, reason: "malformed_event", headers: map[string]string{"Ce-Type": "google.cloud.storage.object.v1.finalized"}, data: expand("acme", pending.ID)},
		{name: "oversized body", fn: config.Importer, reason: delivery.ReasonOversizedBody, body: big},
	}
	for i, c := range cases {
		topic := map[string]string{config.Expander: sim.TopicExpand, config.Importer: sim.TopicChunks}[c.fn]
		id := fmt.Sprintf("bad-%02d", i)
		body := c.body
		if body == nil {
			body = mustJSON(t, map[string]any{"message": map[string]any{"data": c.data, "messageId": id, "publishTime": w.Clock.Now()},
				"subscription": "projects/" + w.Project + "/subscriptions/s"})
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, servers[c.fn].URL, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": id,
			"Ce-Type": "google.cloud.pubsub.topic.v1.messagePublished", "Ce-Source": "//pubsub.googleapis.com/projects/" + w.Project + "/topics/" + topic} {
			req.Header.Set(k, v)
		}
		for k, v := range c.headers {
			if req.Header.Del(k); v != "" {
				req.Header.Set(k, v)
			}
		}
		before := snapshot(t, w.FS)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: answered %d %q, want 200 (acked, dead-lettered)", c.name, resp.StatusCode, answer)
		}
		after := snapshot(t, w.FS)
		changed, added := diffSnapshots(before, after)
		if len(changed) > 0 {
			t.Errorf("%s: changed documents other than its dead letter: %v", c.name, changed)
		}
		if len(added) != 1 || !strings.HasPrefix(added[0], model.DeadLetters+"/") {
			t.Errorf("%s: new documents %v, want exactly one dead letter", c.name, added)
			continue
		}
		snap, err := w.FS.Doc(added[0]).Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var d model.DeadLetter
		if err := snap.DataTo(&d); err != nil {
			t.Fatal(err)
		}
		wantTopic := topic
		if c.topic == "-" {
			wantTopic = "" // no ce-source, and the URL path names none
		}
		if d.Reason != c.reason || d.Function != c.fn || d.Kind != model.DeadMessage || d.Topic != wantTopic || d.MessageID != id {
			t.Errorf("%s: dead letter %s %s/%s/%s topic %q message %q, want %s/%s/%s topic %q message %q",
				c.name, snap.Ref.ID, d.Kind, d.Function, d.Reason, d.Topic, d.MessageID, model.DeadMessage, c.fn, c.reason, wantTopic, id)
		}
	}
	// Each dead letter is on the dead-letter topic too.
	onTopic := 0
	for range 20 {
		ds, err := w.Pull(ctx, sim.TopicDead, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if strings.HasPrefix(d.Message.GetAttributes()["deadLetter"], "Expander~bad-") || strings.HasPrefix(d.Message.GetAttributes()["deadLetter"], "Importer~bad-") {
				onTopic++
			}
			_ = w.Settle(ctx, d, true)
		}
		if onTopic >= len(cases) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if onTopic != len(cases) {
		t.Errorf("%d of %d dead letters on the dead-letter topic", onTopic, len(cases))
	}
	// Nothing else was lost: the held key is released, and the pipeline imports everything.
	if err := w.Comps.Keys.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	w.expect.PoisonMessages = len(cases)
	w.settle(t, sim.Policy{})
}

// snapshot maps every document's path (under the project's database, recursively) to its update
// time.
func snapshot(t *testing.T, fs *firestore.Client) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	var walk func(ctx context.Context, cols *firestore.CollectionIterator)
	walk = func(ctx context.Context, cols *firestore.CollectionIterator) {
		for {
			col, err := cols.Next()
			if err == iterator.Done {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			refs, err := col.DocumentRefs(ctx).GetAll()
			if err != nil {
				t.Fatal(err)
			}
			for _, ref := range refs {
				snap, err := ref.Get(ctx)
				if err == nil {
					out[pathOf(ref)] = snap.UpdateTime
				}
				walk(ctx, ref.Collections(ctx))
			}
		}
	}
	walk(t.Context(), fs.Collections(t.Context()))
	return out
}

func pathOf(ref *firestore.DocumentRef) string {
	p := ref.Path
	return p[strings.Index(p, "/documents/")+len("/documents/"):]
}

// diffSnapshots returns the documents changed or removed, and those added.
func diffSnapshots(before, after map[string]time.Time) (changed, added []string) {
	for p, t0 := range before {
		if t1, ok := after[p]; !ok || !t1.Equal(t0) {
			changed = append(changed, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			added = append(added, p)
		}
	}
	return changed, added
}
