package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source/connectors"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Two tenants on two orgs, imported side by side, each through its own connection: acme with the
// JWT bearer flow, globex with a refresh token that rotates. Access tokens end every 2 simulated
// minutes (the orgs' session timeout), so the imports refresh them; each tenant's records come
// from its own org only, and a revoked tenant pauses and resumes on reconnect with nothing lost.
func TestTwoTenantsOnTwoOrgsEachThroughItsConnection(t *testing.T) {
	t.Parallel()
	twoOrgs(t)
}

// twoOrgs is the scenario (its mutants are the chaos suite's: harness/chaos/connection_test.go).
func twoOrgs(t testing.TB) {
	keys, _, err := connection.NewLocal()
	if err != nil {
		t.Fatal(err)
	}
	var pool *connectors.Pool
	var logs sim.LockedBuffer
	login := fixture.NewLogin(fixture.LoginOptions{SessionTimeout: 2 * time.Minute, Rotate: true})
	spans := tracetest.NewSpanRecorder()
	w := &world{Env: sim.New(t, sim.Options{Start: simStart, PageSize: 50, Log: &logs,
		Traces: telemetry.FromSDK(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))), Sources: func(fs *firestore.Client, cfg config.Config) expander.Sources {
			pool = &connectors.Pool{Connections: connection.Store{FS: fs, Sealer: keys}, Config: cfg}
			return pool
		}})}
	ctx := t.Context()
	login.SetNow(w.Clock.Now)
	ls := httptest.NewServer(login)
	t.Cleanup(ls.Close)
	login.SetURL(ls.URL)
	pool.Connections.Now = w.Clock.Now

	type tenant struct{ id, org, user, client, object string }
	var acmeKey []byte
	tenants := []tenant{
		{"acme", "00DA", "int@acme.example", "app-acme", "Contact"},
		{"globex", "00DB", "int@globex.example", "app-globex", "Contact"},
	}
	orgs := map[string]*fixture.Server{}
	for i, tn := range tenants {
		// Each org has its own daily API budget: acme's setting keeps a reserve of it.
		org := fixture.New(fixture.Options{Sessions: login, OrgID: tn.org, PageSize: 50, Now: w.Clock.Now, LocatorTTL: 24 * time.Hour, APILimit: 10_000})
		orgs[tn.id] = org
		// Each request to the org takes a simulated minute, so sessions end mid-search.
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w.Clock.Advance(time.Minute)
			org.ServeHTTP(rw, r)
		}))
		t.Cleanup(srv.Close)
		login.AddOrg(tn.org, srv.URL)
		rows := fixture.Generate(int64(40+i), 180, windowStart, simStart, fixture.GenOptions{})
		for j := range rows {
			rows[j].ID = tn.id + "-" + rows[j].ID // whose org a record came from shows in its ID
		}
		org.PutRecords(tn.object, rows...)
		w.Tenant(ctx, tn.id)
		st := model.SyncSetting{ID: tn.id + "-contacts", TenantID: tn.id, SourceObject: tn.object, Fields: []string{"Name", "Email"},
			Target: model.TargetUpsert, ChunkSize: 40, Enabled: true, Watermark: windowStart, APIReserve: 500}
		w.Setting(ctx, st)
		w.expect.Datasets = append(w.expect.Datasets, sim.Dataset{Setting: st, Rows: rows})

		c := connection.Connection{TenantID: tn.id, Connector: "salesforce", LoginURL: ls.URL, InstanceURL: srv.URL, ClientID: tn.client}
		var cred connection.Credential
		if tn.id == "acme" {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			der, _ := x509.MarshalPKCS8PrivateKey(key)
			login.RegisterApp(fixture.App{ClientID: tn.client, Key: &key.PublicKey})
			login.AddUser(tn.user, tn.org, tn.client)
			acmeKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			c.Method, c.Username, cred = connection.MethodJWT, tn.user, acmeKey
		} else {
			login.RegisterApp(fixture.App{ClientID: tn.client})
			login.AddUser(tn.user, tn.org)
			rt, err := login.Consent(tn.client, tn.user)
			if err != nil {
				t.Fatal(err)
			}
			c.Method, cred = connection.MethodRefresh, connection.Credential(rt)
		}
		if err := pool.Connections.Connect(ctx, c, cred); err != nil {
			t.Fatal(err)
		}
	}
	policy := sim.Policy{}
	tick(t, w.Env, "t1")
	_, rep := w.settle(t, policy)
	if rep.Completed != rep.Jobs || rep.Jobs != 2 {
		t.Fatalf("two tenants: %s", rep)
	}
	for _, tn := range tenants {
		docs, err := w.FS.Collection(model.Engagements).Where("tenantId", "==", tn.id).Documents(ctx).GetAll()
		if err != nil || len(docs) == 0 {
			t.Fatalf("%s: %d records, %v", tn.id, len(docs), err)
		}
		for _, d := range docs {
			if id, _ := d.DataAt("externalId"); !strings.HasPrefix(fmt.Sprint(id), tn.id+"-") {
				t.Errorf("tenant %s holds record %v: read through another tenant's connection", tn.id, id)
			}
		}
	}
	stats := login.Stats()
	for _, org := range []string{"00DA", "00DB"} {
		issued := 0
		for k, v := range stats[org] {
			if strings.HasPrefix(k, "token issued") {
				issued += v
			}
		}
		// Sessions of 2 simulated minutes over an import of several: refreshed several times,
		// ahead of their introspected expiry or when refused.
		if issued < 3 {
			t.Errorf("org %s: %v; want its tokens refreshed as its sessions ran out", org, stats[org])
		}
	}
	if c, err := pool.Connections.Get(ctx, "globex"); err != nil || c.Version < 2 {
		t.Errorf("globex's connection: version %d (%v); want its rotated refresh tokens stored", c.Version, err)
	}

	// acme's org has spent its budget down to its reserve: acme's next Job pauses (connected, a
	// budget pause); globex's org has its own budget, and its Job completes.
	orgs["acme"].SetAPIUsage(10_000 - 400)
	orgs["acme"].PutRecords("Contact", fixture.Row{ID: "acme-late-1", Modstamp: w.Clock.Now().Add(-time.Minute), Fields: map[string]any{"Name": "late"}})
	w.expect.Datasets[0].Rows = append(w.expect.Datasets[0].Rows, fixture.Row{ID: "acme-late-1", Modstamp: w.Clock.Now().Add(-time.Minute), Fields: map[string]any{"Name": "late"}})
	w.Clock.Advance(10 * time.Minute)
	tick(t, w.Env, "t-budget")
	if _, err := w.Drain(ctx, policy, 200); err != nil {
		t.Fatal(err)
	}
	jobs, err := w.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.TickID != "t-budget" {
			continue
		}
		switch {
		case j.TenantID == "acme" && (j.Status == model.JobCompleted || j.Pauses == 0):
			t.Errorf("acme's Job with its org's budget at its reserve: %s, %d pauses; want it paused", j.Status, j.Pauses)
		case j.TenantID == "globex" && j.Status != model.JobCompleted:
			t.Errorf("globex's Job beside acme's spent budget: %s (%s); want it COMPLETED on its own org's budget", j.Status, j.Pause)
		}
	}
	if at, _ := w.Comps.Store.Tenant(ctx, "acme"); at.IsDisconnected() {
		t.Errorf("acme out of budget is disconnected (%s); want a budget pause", at.Connection.Reason)
	}
	orgs["acme"].SetAPIUsage(0) // a new day: the sweep resumes acme's Job
	_, rep = w.settle(t, policy)
	if rep.Completed != rep.Jobs {
		t.Fatalf("after acme's budget came back: %s", rep)
	}

	// globex's consent is revoked: its next Job pauses (tenant disconnected, with the reason), none
	// fails; acme goes on. Reconnected, it resumes and nothing is lost.
	login.Deauthorize("app-globex", "int@globex.example")
	w.Clock.Advance(10 * time.Minute)
	tick(t, w.Env, "t2")
	if _, err := w.Drain(ctx, policy, 200); err != nil {
		t.Fatal(err)
	}
	gt, err := w.Comps.Store.Tenant(ctx, "globex")
	if err != nil || !gt.IsDisconnected() || !strings.Contains(gt.Connection.Reason, "invalid_grant") {
		t.Fatalf("globex after the revocation: %+v (%v); want disconnected with invalid_grant", gt.Connection, err)
	}
	if dls, _ := w.DeadLetters(ctx); len(dls) != 0 {
		t.Errorf("dead letters %v: a disconnected tenant pauses", dls)
	}
	rt, err := login.Consent("app-globex", "int@globex.example")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := pool.Connections.Get(ctx, "globex")
	if err := pool.Connections.Connect(ctx, c, connection.Credential(rt)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.FS.Collection(model.Tenants).Doc("globex").Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: model.Connected, ChangedAt: w.Clock.Now()}},
	}); err != nil {
		t.Fatal(err)
	}
	w.expect.MaxSearches = func(string) int { return 1 } // the resumption after the pause
	_, rep = w.settle(t, policy)
	if rep.Completed != rep.Jobs {
		t.Errorf("after reconnecting: %s", rep)
	}

	// No secret in anything captured: the functions' log lines, the spans, the dead letters, the
	// connections' documents as stored, the audit of both tenants.
	captured, err := w.Captured(ctx, logs.String(), spans.Ended(), []string{"acme", "globex"})
	if err != nil {
		t.Fatal(err)
	}
	if logs.String() == "" || len(spans.Ended()) == 0 {
		t.Fatal("nothing was captured: the check would pass on nothing")
	}
	planted := append(login.Secrets(), string(acmeKey[40:90]))
	for _, secret := range planted {
		if strings.Contains(captured, secret) {
			t.Errorf("a secret (%d characters, issued by the fixture) appears in the captured output", len(secret))
		}
	}
	t.Logf("%d secrets checked against %d bytes of logs, spans, dead letters, stored connections and audits", len(planted), len(captured))
}
