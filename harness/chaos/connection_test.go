package chaos

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"pgregory.net/rapid"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/connectors"
	"github.com/oncesync/oncesync/shared/source/salesforce"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// TestChaosConnections is the per-tenant connections property: for any two or three tenants, each
// on its own org through its own connection (the JWT bearer flow or a refresh token, rotated or
// not), sessions that end mid-search, several function instances that refresh the same tenant at
// once, consents revoked and reconnected, and token answers lost after the provider rotated the
// refresh token (an instance that died between the exchange and the write), once every revoked
// tenant is reconnected and the faults stop:
//   - every Job completes, no record is lost or duplicated (sim.Check);
//   - no tenant's record is read through another tenant's connection or written under another
//     tenant;
//   - no token, refresh token or private key appears in a log line, span, dead letter, stored
//     connection or audit;
//   - a tenant is disconnected only while its consent is withdrawn (or its rotated refresh token
//     was lost), never for a session that ended or a refresh another instance made at once;
//   - a disconnected tenant makes no dead letter (the checkers allow none).
func TestChaosConnections(t *testing.T) {
	withRapid(t, connectionChecks(), false, func() {
		h := newConnHarness(t, connMutation{})
		checkFrom(t, *seedFlag, h.property(nil))
	})
}

// connectionChecks is the property's number of cases: one per 25 of the main property's.
func connectionChecks() int { return max(8, pipelineChecks()/25) }

// connMutation breaks the connections as a mutant does (see connection mutants below).
type connMutation struct {
	Name    string
	Sources func(real expander.Sources, w *connWorld) expander.Sources
	Pool    func(p *connectors.Pool, w *connWorld)
}

// Event kinds of a connections case.
const (
	evRevoked    = "consent revoked"           // the user's approval of the app is withdrawn: every grant and session ends
	evAnswerLost = "rotated answer lost"       // the next refresh's answer is lost after the provider rotated the token
	evLoggedOut  = "sessions ended, instances" // an admin logs the user out, and every instance asks the org at once
)

type connTenant struct {
	JWT      bool // the JWT bearer flow; else a refresh token from a user's consent
	Settings int  // sync settings (objects) of the tenant: two Jobs expand side by side
	Rows     int  // rows per object
}

type connEvent struct {
	Kind   string
	Tenant int
	Tick   int // before this tick
	Back   int // reconnected before this tick (Ticks: after the last); evRevoked, evAnswerLost
}

type connCase struct {
	Tenants   []connTenant
	Ticks     int
	Session   time.Duration // the orgs' session timeout
	Step      time.Duration // the orgs' clock moves this much per request: sessions end mid-search
	Rotate    bool          // refresh answers rotate the refresh token
	Instances int           // function instances, each with its own pool of clients (tokens)
	Dup       bool          // every expand message is delivered twice at once
	Events    []connEvent
	Seed      int64
}

func (c connCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ticks, sessions of %v, %v per request, rotate %v, %d instances, duplicates %v\n", c.Ticks, c.Session, c.Step, c.Rotate, c.Instances, c.Dup)
	for i, t := range c.Tenants {
		flow := "refresh token"
		if t.JWT {
			flow = "JWT bearer"
		}
		fmt.Fprintf(&b, "  tenant t%d: %s, %d setting(s) of %d rows\n", i, flow, t.Settings, t.Rows)
	}
	for _, e := range c.Events {
		fmt.Fprintf(&b, "  before tick %d: t%d %s (reconnected before tick %d)\n", e.Tick, e.Tenant, e.Kind, e.Back)
	}
	return b.String()
}

func drawConnCase(rt *rapid.T) connCase {
	session := rapid.IntRange(1, 4).Draw(rt, "session minutes")
	c := connCase{
		Ticks:   rapid.IntRange(2, 3).Draw(rt, "ticks"),
		Session: time.Duration(session) * time.Minute,
		// A session outlives a refresh and one request (an org's shortest timeout, 15 minutes,
		// outlives a request by far): it ends after two and a half to six requests, mid-search. Not
		// two: the token answer and the first page would end it exactly, a fresh token refused at
		// its first use, which no org with a 15-minute session does (a CI seed drew it).
		Step:      time.Duration(rapid.IntRange(10*session, 24*session).Draw(rt, "seconds per request")) * time.Second,
		Rotate:    rapid.Bool().Draw(rt, "rotate"),
		Instances: rapid.IntRange(1, 3).Draw(rt, "instances"),
		Dup:       rapid.Bool().Draw(rt, "duplicates"),
		Seed:      rapid.Int64Range(1, 1<<40).Draw(rt, "seed"),
	}
	n := rapid.IntRange(2, 3).Draw(rt, "tenants")
	for i := range n {
		c.Tenants = append(c.Tenants, connTenant{
			JWT:      rapid.Bool().Draw(rt, fmt.Sprintf("t%d jwt", i)),
			Settings: rapid.IntRange(1, 2).Draw(rt, fmt.Sprintf("t%d settings", i)),
			Rows:     rapid.IntRange(20, 90).Draw(rt, fmt.Sprintf("t%d rows", i)),
		})
	}
	events := rapid.IntRange(0, 3).Draw(rt, "events")
	for i := range events {
		e := connEvent{
			Kind:   rapid.SampledFrom([]string{evRevoked, evAnswerLost, evLoggedOut}).Draw(rt, fmt.Sprintf("event %d", i)),
			Tenant: rapid.IntRange(0, n-1).Draw(rt, fmt.Sprintf("event %d tenant", i)),
			Tick:   rapid.IntRange(0, c.Ticks-1).Draw(rt, fmt.Sprintf("event %d tick", i)),
		}
		if e.Kind != evLoggedOut {
			e.Back = rapid.IntRange(e.Tick+1, c.Ticks).Draw(rt, fmt.Sprintf("event %d back", i))
		}
		c.Events = append(c.Events, e)
	}
	return c
}

// mayDisconnect reports whether tenant i may be disconnected at tick k: an event withdrew its
// consent (or lost its rotated refresh token) before k, and it was not reconnected since.
func (c connCase) mayDisconnect(i, k int) bool {
	for _, e := range c.Events {
		if e.Tenant != i || e.Kind == evLoggedOut || (e.Kind == evAnswerLost && (c.Tenants[i].JWT || !c.Rotate)) {
			continue
		}
		if e.Tick <= k && k < e.Back {
			return true
		}
	}
	return false
}

// connHarness runs connections cases on one Env, reset between them.
type connHarness struct {
	t      *testing.T
	env    *sim.Env
	mut    connMutation
	logs   *sim.LockedBuffer
	spans  *tracetest.SpanRecorder
	sealer connection.Sealer
	cur    atomic.Pointer[connWorld]
}

func newConnHarness(t *testing.T, m connMutation) *connHarness {
	keys, _, err := connection.NewLocal()
	if err != nil {
		t.Fatal(err)
	}
	h := &connHarness{t: t, mut: m, logs: &sim.LockedBuffer{}, spans: tracetest.NewSpanRecorder(), sealer: keys}
	h.env = sim.New(t, sim.Options{
		Start: simStart, Log: h.logs, PageSize: connPageSize,
		Traces:  telemetry.FromSDK(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))),
		Sources: func(*firestore.Client, config.Config) expander.Sources { return perCase{h: h} },
	})
	return h
}

const connPageSize = 20

// instances opens a tenant's source on one of the case's function instances, in turn.
type instances struct{ h *connHarness }

func (in instances) Open(ctx context.Context, t model.Tenant) (source.Source, error) {
	w := in.h.cur.Load()
	p := w.pools[int(w.next.Add(1))%len(w.pools)]
	return p.Open(ctx, t)
}

// perCase opens a tenant's source in the current case's world: on its instances, through the
// mutation's Sources if any.
type perCase struct{ h *connHarness }

func (p perCase) Open(ctx context.Context, t model.Tenant) (source.Source, error) {
	w := p.h.cur.Load()
	return w.mutated.Open(ctx, t)
}

// connWorld is one case's orgs, login service and instances.
type connWorld struct {
	c        connCase
	login    *fixture.Login
	clock    *sim.Clock // the orgs' and the login service's clock
	loginURL string
	pools    []*connectors.Pool
	next     atomic.Int64
	mutated  expander.Sources
	tick     int            // the tick being delivered
	keys     map[int][]byte // JWT tenants' private keys
	objects  []string

	mu      sync.Mutex
	lose    map[string]int // client ID → refresh answers still to lose
	refused []string       // requests refused to an instance for a tenant whose consent stands
	bursts  int
}

func tenantID(i int) string      { return fmt.Sprintf("t%d", i) }
func tenantUser(i int) string    { return fmt.Sprintf("int@t%d.example", i) }
func tenantClient(i int) string  { return fmt.Sprintf("app-t%d", i) }
func tenantOrg(i int) string     { return fmt.Sprintf("00D%d", i) }
func settingID(i, j int) string  { return fmt.Sprintf("t%d-s%d", i, j) }
func tickAt(k int) time.Duration { return time.Duration(k) * 10 * time.Minute }
func connObject(j int) string    { return []string{"Contact", "Lead"}[j] }
func recordPrefix(i int) string  { return tenantID(i) + "-" }
func connTickID(k int) string    { return fmt.Sprintf("conn-%d", k) }
func (w *connWorld) admin(e *sim.Env) settings.Admin {
	return settings.Admin{FS: e.FS, Now: e.Clock.Now}
}

// property is the connections property; last receives each failing case's violations.
func (h *connHarness) property(last func(c connCase, violations []string)) func(*rapid.T) {
	return func(rt *rapid.T) {
		c := drawConnCase(rt)
		rt.Logf("case:\n%s", c)
		start := time.Now()
		violations, stats, err := h.run(rt.Context(), c)
		if err != nil {
			rt.Fatalf("chaos: the harness failed (not a finding about the pipeline): %v", err)
		}
		report.connection(h.mut.Name != "", stats, len(violations), time.Since(start))
		rt.Logf("outcome: %s", stats)
		if len(violations) > 0 {
			if last != nil {
				last(c, violations)
			}
			rt.Fatalf("%d violation(s):\n  %s", len(violations), strings.Join(violations, "\n  "))
		}
	}
}

// connStats is what one connections case did.
type connStats struct {
	deliveries, jobs, completed, refreshes, disconnects, reconnects, bursts, secrets, captured int
}

func (s connStats) String() string {
	return fmt.Sprintf("%d deliveries, jobs %d/%d completed, %d token answers, %d disconnections, %d reconnections, %d bursts of instances; %d secrets checked against %d bytes",
		s.deliveries, s.completed, s.jobs, s.refreshes, s.disconnects, s.reconnects, s.bursts, s.secrets, s.captured)
}

// run builds the case's world, runs its ticks and events, reconnects every tenant and settles,
// and returns what the checkers found.
func (h *connHarness) run(ctx context.Context, c connCase) ([]string, connStats, error) {
	e := h.env
	var st connStats
	if err := e.Reset(ctx, sim.ResetOptions{PageSize: connPageSize}); err != nil {
		return nil, st, err
	}
	h.logs.Reset()
	spansBefore := len(h.spans.Ended())
	w, datasets, err := h.world(ctx, c)
	if err != nil {
		return nil, st, err
	}
	h.cur.Store(w)
	var violations []string
	violate := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }

	expands := 0
	policy := sim.Policy{
		Plan: func(d sim.Delivery) sim.Plan {
			if c.Dup && d.Topic == sim.TopicExpand && d.Attempt == 1 && d.Copy == 0 {
				return sim.Plan{Concurrent: 1}
			}
			return sim.Plan{}
		},
		// After every other expansion, one tenant is logged out (its sessions end) and every
		// instance asks its org at once: concurrent refreshes of one tenant.
		Between: func(d sim.Delivery) {
			if d.Topic != sim.TopicExpand || !slices.ContainsFunc(c.Events, func(e connEvent) bool { return e.Kind == evLoggedOut }) {
				return
			}
			if expands++; expands%2 == 0 {
				h.burst(ctx, w, (expands/2)%len(c.Tenants), e.Clock.Now())
			}
		},
	}
	reconnect := func(i int) error {
		if err := h.reconnect(ctx, w, i); err != nil {
			return err
		}
		st.reconnects++
		return nil
	}
	for k := range c.Ticks {
		for _, ev := range c.Events {
			if ev.Back == k && ev.Kind != evLoggedOut {
				if err := reconnect(ev.Tenant); err != nil {
					return nil, st, err
				}
			}
		}
		for _, ev := range c.Events {
			if ev.Tick == k {
				w.apply(ev)
			}
		}
		w.tick = k
		e.Clock.Set(simStart.Add(tickAt(k)))
		if err := e.Tick(ctx, connTickID(k)); err != nil {
			return nil, st, err
		}
		s, err := e.Drain(ctx, policy, faultRounds)
		st.deliveries += s.Deliveries
		if err != nil {
			return nil, st, err
		}
		for i := range c.Tenants {
			t, err := e.Comps.Store.Tenant(ctx, tenantID(i))
			if err != nil {
				return nil, st, err
			}
			if t.IsDisconnected() {
				st.disconnects++
				if !c.mayDisconnect(i, k) {
					violate("tenant %s is disconnected after tick %d though its consent stands: %s", tenantID(i), k, t.Connection.Reason)
				}
			}
		}
	}
	// Every tenant whose consent was withdrawn is connected again; the sweep resumes its Jobs.
	for _, ev := range c.Events {
		if ev.Back == c.Ticks && ev.Kind != evLoggedOut {
			if err := reconnect(ev.Tenant); err != nil {
				return nil, st, err
			}
		}
	}
	s, err := e.SettleAll(ctx, sim.Policy{}, settleSweeps)
	st.deliveries += s.Deliveries
	if err != nil {
		return nil, st, err
	}
	rep, err := e.Check(ctx, sim.Expect{Datasets: datasets, MaxSearches: func(string) int { return 2*len(c.Events) + 2 }})
	if err != nil {
		return nil, st, err
	}
	st.jobs, st.completed = rep.Jobs, rep.Completed
	violations = append(violations, rep.Violations...)
	if rep.Completed != rep.Jobs {
		violate("%d of %d Jobs completed once every tenant was reconnected", rep.Completed, rep.Jobs)
	}
	for i := range c.Tenants {
		t, err := e.Comps.Store.Tenant(ctx, tenantID(i))
		if err != nil {
			return nil, st, err
		}
		if t.IsDisconnected() {
			violate("tenant %s is still disconnected at the end: %s", tenantID(i), t.Connection.Reason)
		}
	}
	w.mu.Lock()
	violations = append(violations, w.refused...)
	st.bursts = w.bursts
	w.mu.Unlock()

	// No tenant's records under another tenant, nor read from another tenant's org.
	docs, err := e.FS.Collection(model.Engagements).Documents(ctx).GetAll()
	if err != nil {
		return nil, st, err
	}
	for _, d := range docs {
		var eng model.Engagement
		if err := d.DataTo(&eng); err != nil {
			return nil, st, err
		}
		if !strings.HasPrefix(eng.ExternalID, eng.TenantID+"-") {
			violate("tenant %s holds record %s: read through another tenant's connection", eng.TenantID, eng.ExternalID)
		}
	}

	// No secret in anything captured.
	var tenants []string
	for i := range c.Tenants {
		tenants = append(tenants, tenantID(i))
	}
	captured, err := e.Captured(ctx, h.logs.String(), h.spans.Ended()[spansBefore:], tenants)
	if err != nil {
		return nil, st, err
	}
	planted := w.login.Secrets()
	for _, k := range w.keys {
		planted = append(planted, string(k[40:90]))
	}
	for _, secret := range planted {
		if strings.Contains(captured, secret) {
			violate("a secret (%d characters, issued by the fixture) appears in the captured logs, spans, dead letters, connections or audits", len(secret))
		}
	}
	st.secrets, st.captured = len(planted), len(captured)
	if len(captured) == 0 {
		violate("nothing was captured: the secrets check would pass on nothing")
	}
	for _, m := range w.login.Stats() {
		for k, v := range m {
			if strings.HasPrefix(k, "token issued") {
				st.refreshes += v
			}
		}
	}
	return violations, st, nil
}

// world builds the case's login service, orgs, tenants, settings and connections.
func (h *connHarness) world(ctx context.Context, c connCase) (*connWorld, []sim.Dataset, error) {
	e := h.env
	w := &connWorld{c: c, clock: sim.NewClock(simStart), keys: map[int][]byte{}, lose: map[string]int{}}
	w.login = fixture.NewLogin(fixture.LoginOptions{Now: w.clock.Now, SessionTimeout: c.Session, Rotate: c.Rotate})
	ls := httptest.NewServer(http.HandlerFunc(w.serveLogin))
	h.t.Cleanup(ls.Close)
	w.loginURL = ls.URL
	w.login.SetURL(ls.URL)
	var datasets []sim.Dataset
	end := simStart.Add(tickAt(c.Ticks))
	for i, tn := range c.Tenants {
		org := fixture.New(fixture.Options{Sessions: w.login, OrgID: tenantOrg(i), PageSize: connPageSize, Now: w.clock.Now, LocatorTTL: 24 * time.Hour})
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w.clock.Advance(c.Step) // each request takes this long on the orgs' clock
			org.ServeHTTP(rw, r)
		}))
		h.t.Cleanup(srv.Close)
		w.login.AddOrg(tenantOrg(i), srv.URL)
		e.Tenant(ctx, tenantID(i))
		for j := range tn.Settings {
			rows := fixture.Generate(c.Seed+int64(i*7+j), tn.Rows, windowStart, end, fixture.GenOptions{})
			for r := range rows {
				rows[r].ID = recordPrefix(i) + rows[r].ID // whose org a record came from shows in its ID
			}
			org.PutRecords(connObject(j), rows...)
			s := model.SyncSetting{ID: settingID(i, j), TenantID: tenantID(i), SourceObject: connObject(j), Fields: []string{"Name", "Email"},
				Target: model.TargetUpsert, ChunkSize: 15, Enabled: true, Watermark: windowStart}
			e.Setting(ctx, s)
			datasets = append(datasets, sim.Dataset{Setting: s, Rows: rows})
		}
		app := fixture.App{ClientID: tenantClient(i)}
		if tn.JWT {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return nil, nil, err
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return nil, nil, err
			}
			w.keys[i] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			app.Key = &key.PublicKey
		}
		w.login.RegisterApp(app)
		w.login.AddUser(tenantUser(i), tenantOrg(i))
		if err := h.connect(ctx, w, i); err != nil {
			return nil, nil, err
		}
	}
	for range c.Instances {
		p := &connectors.Pool{Connections: connection.Store{FS: e.FS, Sealer: h.sealer, Now: e.Clock.Now}, Config: e.Config, Now: w.clock.Now,
			Tuning: connectors.Tuning{MaxAttempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}}
		if h.mut.Pool != nil {
			h.mut.Pool(p, w)
		}
		w.pools = append(w.pools, p)
	}
	w.mutated = instances{h: h}
	if h.mut.Sources != nil {
		w.mutated = h.mut.Sources(instances{h: h}, w)
	}
	return w, datasets, nil
}

// connect connects tenant i as its operator does (oncesync-ops tenants connect): the JWT bearer
// flow with its key, or a refresh token from the user's consent.
func (h *connHarness) connect(ctx context.Context, w *connWorld, i int) error {
	r := settings.Connect{Tenant: tenantID(i), LoginURL: w.loginURL, ClientID: tenantClient(i)}
	if key, ok := w.keys[i]; ok {
		w.login.AddUser(tenantUser(i), tenantOrg(i), tenantClient(i)) // the admin pre-authorizes the user
		r.Username, r.Key = tenantUser(i), connection.Credential(key)
	} else {
		rt, err := w.login.Consent(tenantClient(i), tenantUser(i))
		if err != nil {
			return err
		}
		r.RefreshToken = connection.Credential(rt)
	}
	if _, err := w.admin(h.env).Connect(ctx, h.sealer, r); err != nil {
		return fmt.Errorf("connect %s: %w", tenantID(i), err)
	}
	return nil
}

func (h *connHarness) reconnect(ctx context.Context, w *connWorld, i int) error {
	w.mu.Lock()
	delete(w.lose, tenantClient(i))
	w.mu.Unlock()
	return h.connect(ctx, w, i)
}

// apply makes an event happen.
func (w *connWorld) apply(ev connEvent) {
	switch ev.Kind {
	case evRevoked:
		w.login.Deauthorize(tenantClient(ev.Tenant), tenantUser(ev.Tenant))
	case evAnswerLost:
		w.mu.Lock()
		w.lose[tenantClient(ev.Tenant)]++
		w.mu.Unlock()
	}
}

// serveLogin serves the login service, losing the answers of refreshes that an evAnswerLost
// armed: the provider has exchanged (and maybe rotated) the refresh token, and the instance that
// asked never learns the new one — as if it died between the exchange and the write.
func (w *connWorld) serveLogin(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/services/oauth2/token" && r.ParseForm() == nil && r.PostForm.Get("grant_type") == "refresh_token" {
		client := r.PostForm.Get("client_id")
		w.mu.Lock()
		lose := w.lose[client] > 0
		if lose {
			w.lose[client]--
		}
		w.mu.Unlock()
		if lose {
			w.login.ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler) // the connection drops before the answer
		}
	}
	w.login.ServeHTTP(rw, r)
}

// burst logs tenant i's user out (every session ends) and has every instance ask its org at once:
// each refreshes, and a refresh token rotates under all of them. A refusal while the tenant's
// consent stands is a violation.
func (h *connHarness) burst(ctx context.Context, w *connWorld, i int, now time.Time) {
	w.login.RevokeUser(tenantUser(i))
	w.mu.Lock()
	w.bursts++
	w.mu.Unlock()
	k := w.tick
	var wg sync.WaitGroup
	for n, p := range w.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src, err := p.Open(ctx, model.Tenant{ID: tenantID(i)})
			if err == nil {
				err = src.Search(ctx, source.Query{Object: connObject(0), From: windowStart, To: now}, func(context.Context, source.Page) error { return errStopSearch })
				if errors.Is(err, errStopSearch) {
					err = nil
				}
			}
			if err != nil && source.IsDisconnected(err) && !w.c.mayDisconnect(i, k) {
				w.mu.Lock()
				w.refused = append(w.refused, fmt.Sprintf("instance %d was refused tenant %s's org at tick %d though its consent stands: %v", n, tenantID(i), k, err))
				w.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// errStopSearch ends a burst's search after its first page.
var errStopSearch = errors.New("chaos: one page is enough")

// The connections mutants: each breaks one guarantee of per-tenant connections, and the property
// must catch it.
var (
	// MutantTokenCapturedOnce is "a token captured once per search" (Singer's tap before its fix):
	// a tenant's first access token is kept, and a refusal cannot replace it.
	MutantTokenCapturedOnce = connMutation{
		Name: "a token captured once per search",
		Pool: func(p *connectors.Pool, _ *connWorld) {
			p.Auth = func(a salesforce.Auth) salesforce.Auth { return &capturedOnce{Auth: a} }
		},
	}
	// MutantTwoRefreshers is "two refreshers at once under rotation": each instance reads the
	// stored refresh token, exchanges it and stores the rotated one with no lease, so two
	// instances that refresh at once exchange the same token, and the rotation refuses one.
	MutantTwoRefreshers = connMutation{
		Name: "two refreshers at once under rotation",
		Pool: func(p *connectors.Pool, _ *connWorld) {
			p.Refresher = func(s connection.Store, tenant string) salesforce.RefreshTokens {
				return unleased{store: s, tenant: tenant}
			}
		},
	}
	// MutantForeignConnection is "a tenant searched through another tenant's connection": every
	// tenant is opened as the first tenant opened.
	MutantForeignConnection = connMutation{
		Name:    "a tenant searched through another tenant's connection",
		Sources: func(real expander.Sources, _ *connWorld) expander.Sources { return &onlyFirst{Sources: real} },
	}
	// MutantSecretInError is "a secret included in an error": a failed search says so with the
	// tokens its instance holds.
	MutantSecretInError = connMutation{
		Name:    "a secret included in an error",
		Sources: func(real expander.Sources, w *connWorld) expander.Sources { return leaky{Sources: real, w: w} },
	}
)

func TestMutantTokenCapturedOncePerSearch(t *testing.T) { testConnMutant(t, MutantTokenCapturedOnce) }

func TestMutantTwoRefreshersAtOnce(t *testing.T) { testConnMutant(t, MutantTwoRefreshers) }

func TestMutantTenantThroughAnotherConnection(t *testing.T) {
	testConnMutant(t, MutantForeignConnection)
}

func TestMutantSecretInAnError(t *testing.T) { testConnMutant(t, MutantSecretInError) }

// connMutantChecks is the most cases a connections mutant may take.
const connMutantChecks = 60

// testConnMutant runs the connections property against a mutation and requires rapid to find a
// case it breaks.
func testConnMutant(t *testing.T, m connMutation) {
	h := newConnHarness(t, m)
	var (
		mu       sync.Mutex
		lastCase connCase
		last     []string
	)
	rec := newRecorder(t, "Mutant "+m.Name)
	withRapid(t, connMutantChecks, true, func() {
		rec.check(h.property(func(c connCase, v []string) {
			mu.Lock()
			defer mu.Unlock()
			lastCase, last = c, v
		}))
	})
	line := mutantLine{name: m.Name}
	if !rec.Failed() || last == nil {
		report.mutant(line)
		t.Fatalf("mutation %q survived %d generated cases\nrapid said: %s", m.Name, connMutantChecks, rec.text())
	}
	line.found, line.casesToFind = true, rec.casesBeforeFailure()+1
	line.caughtBy = "TestChaosConnections"
	line.detail = fmt.Sprintf("counterexample (not shrunk):\n%s\nfirst violation: %s", lastCase, last[0])
	report.mutant(line)
	t.Logf("mutation %q caught after %d case(s)\n%s", m.Name, line.casesToFind, line.detail)
}

// capturedOnce is MutantTokenCapturedOnce's token source.
type capturedOnce struct {
	salesforce.Auth
	mu    sync.Mutex
	token string
}

func (c *capturedOnce) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" {
		t, err := c.Auth.Token(ctx)
		if err != nil {
			return "", err
		}
		c.token = t
	}
	return c.token, nil
}

func (c *capturedOnce) Refused(string) bool { return false }

// unleased is MutantTwoRefreshers' refresh-token keeper.
type unleased struct {
	store  connection.Store
	tenant string
}

func (u unleased) Exchange(ctx context.Context, exchange func(context.Context, string) (string, error)) error {
	c, err := u.store.Get(ctx, u.tenant)
	if err != nil {
		return err
	}
	cred, err := u.store.Credential(c)
	if err != nil {
		return err
	}
	rotated, err := exchange(ctx, string(cred.Reveal()))
	if err != nil || rotated == "" {
		return err
	}
	return u.store.Connect(ctx, c, connection.Credential(rotated))
}

// onlyFirst is MutantForeignConnection's Sources.
type onlyFirst struct {
	expander.Sources
	mu    sync.Mutex
	first *model.Tenant
}

func (o *onlyFirst) Open(ctx context.Context, t model.Tenant) (source.Source, error) {
	o.mu.Lock()
	if o.first == nil {
		o.first = &t
	}
	t = *o.first
	o.mu.Unlock()
	return o.Sources.Open(ctx, t)
}

// leaky is MutantSecretInError's Sources: a failed search's error carries the tokens issued.
type leaky struct {
	expander.Sources
	w *connWorld
}

func (l leaky) Open(ctx context.Context, t model.Tenant) (source.Source, error) {
	src, err := l.Sources.Open(ctx, t)
	if err != nil {
		return nil, err
	}
	return leakySource{Source: src, w: l.w}, nil
}

type leakySource struct {
	source.Source
	w *connWorld
}

func (l leakySource) Search(ctx context.Context, q source.Query, fn func(context.Context, source.Page) error) error {
	if err := l.Source.Search(ctx, q, fn); err != nil {
		secrets := l.w.login.Secrets()
		return fmt.Errorf("%w (last token issued: %s)", err, secrets[len(secrets)-1])
	}
	return nil
}
