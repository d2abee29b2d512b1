package connection_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

func sealer(t *testing.T) *connection.Keyset {
	t.Helper()
	k, _, err := connection.NewLocal()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A credential sealed for one tenant opens only as that tenant's, and prints as [redacted] in
// every form a log, a span, a report or an error could take.
func TestCredentialsAreSealedPerTenantAndNeverPrinted(t *testing.T) {
	k := sealer(t)
	secret := connection.Credential("5Aep861-the-refresh-token")
	sealed, err := k.Seal(secret.Reveal(), []byte("oncesync/connection/acme"))
	if err != nil || bytes.Contains(sealed, secret.Reveal()) {
		t.Fatalf("sealed %q (%v): the plaintext shows", sealed, err)
	}
	if _, err := k.Open(sealed, []byte("oncesync/connection/globex")); err == nil {
		t.Error("acme's credential opened as globex's")
	}
	if got, err := k.Open(sealed, []byte("oncesync/connection/acme")); err != nil || !bytes.Equal(got, secret.Reveal()) {
		t.Errorf("open as acme: %q, %v", got, err)
	}
	var log bytes.Buffer
	slog.New(slog.NewJSONHandler(&log, nil)).Info("x", "credential", secret, "c", connection.Connection{TenantID: "acme", Sealed: sealed})
	j, _ := json.Marshal(struct{ C connection.Credential }{secret})
	for _, out := range []string{fmt.Sprint(secret), fmt.Sprintf("%v %s %+v %#v %q", secret, secret, secret, secret, secret),
		fmt.Errorf("wrapped: %v", secret).Error(), string(j), log.String()} {
		if strings.Contains(out, "refresh-token") {
			t.Errorf("the credential shows: %s", out)
		}
	}
}

// rig is a login host with rotation, a tenant connected with a refresh token, and a clock for the
// refresher lease.
type rig struct {
	*sim.Clock
	login    *fixture.Login
	loginURL string
	store    connection.Store
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{Clock: sim.NewClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))}
	r.login = fixture.NewLogin(fixture.LoginOptions{Rotate: true, Now: r.Now})
	srv := httptest.NewServer(r.login)
	t.Cleanup(srv.Close)
	r.loginURL = srv.URL
	r.login.SetURL(srv.URL)
	r.login.AddOrg("00DA", "https://acme.example")
	r.login.RegisterApp(fixture.App{ClientID: "app", Secret: "s3cr3t"})
	r.login.AddUser("int@acme.example", "00DA")
	rt, err := r.login.Consent("app", "int@acme.example")
	if err != nil {
		t.Fatal(err)
	}
	r.store = connection.Store{FS: emu.Firestore(t, emu.ProjectID(t)), Sealer: sealer(t), Now: r.Now}
	c := connection.Connection{TenantID: "acme", Connector: "salesforce", LoginURL: r.loginURL, Method: connection.MethodRefresh, ClientID: "app"}
	if err := r.store.Connect(t.Context(), c, connection.Credential(rt)); err != nil {
		t.Fatal(err)
	}
	return r
}

// instance is one function instance's OAuth for the tenant: its own in-memory token cache.
func (r *rig) instance(t *testing.T, keeper salesforce.RefreshTokens) *salesforce.OAuth {
	t.Helper()
	if keeper == nil {
		keeper = connection.Keeper{Store: r.store, Tenant: "acme"}
	}
	a, err := salesforce.NewOAuth(salesforce.OAuthConfig{LoginURL: r.loginURL, ClientID: "app", ClientSecret: "s3cr3t", Refresh: keeper, Now: r.Now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Rotation survives concurrent refreshes: instances refreshing the same tenant at once each
// exchange the latest refresh token under the lease, and none is refused.
func TestRotationSurvivesConcurrentRefreshes(t *testing.T) {
	r := newRig(t)
	const instances, rounds = 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, instances*rounds)
	for range instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if _, err := r.instance(t, nil).Token(t.Context()); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a refresh failed: %v", err)
	}
	c, err := r.store.Get(t.Context(), "acme")
	if err != nil || c.Version != 1+instances*rounds || c.Refresher != "" {
		t.Errorf("connection after %d refreshes: version %d, refresher %q (%v); want every rotation stored, the lease free", instances*rounds, c.Version, c.Refresher, err)
	}
	if refused := r.login.Stats()["00DA"]["refused: expired access/refresh token"]; refused != 0 {
		t.Errorf("%d refreshes refused", refused)
	}
}

// unleased is the mutant "two refreshers at once": it reads the stored refresh token, exchanges
// it and stores the result, with no lease. Two instances that read before either stores exchange
// the same token, and the rotation refuses the second.
type unleased struct {
	store   connection.Store
	barrier *sync.WaitGroup
}

func (u unleased) Exchange(ctx context.Context, exchange func(context.Context, string) (string, error)) error {
	c, err := u.store.Get(ctx, "acme")
	if err != nil {
		return err
	}
	cred, err := u.store.Credential(c)
	if err != nil {
		return err
	}
	u.barrier.Done()
	u.barrier.Wait() // both have read before either exchanges
	rotated, err := exchange(ctx, string(cred.Reveal()))
	if err != nil {
		return err
	}
	c.TenantID = "acme"
	return u.store.Connect(ctx, c, connection.Credential(rotated))
}

func TestTwoRefreshersAtOnceLoseTheConnection(t *testing.T) {
	r := newRig(t)
	var barrier sync.WaitGroup
	barrier.Add(2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.instance(t, unleased{store: r.store, barrier: &barrier}).Token(t.Context())
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !source.IsDisconnected(errs[0]) && !source.IsDisconnected(errs[1]) {
		t.Fatalf("two refreshers at once: %v / %v; want exactly one refused (what the lease prevents)", errs[0], errs[1])
	}
}

// A crash between the exchange and the write: the lease runs out with the exchange marked
// started, and the next refresher, refused for the rotated-away token, reports the tenant
// disconnected with that reason instead of failing silently.
func TestACrashAfterTheExchangeDisconnectsWithThatReason(t *testing.T) {
	r := newRig(t)
	keeper := connection.Keeper{Store: r.store, Tenant: "acme", Lease: time.Minute}
	crashing := crashAfterExchange{keeper}
	func() {
		defer func() { _ = recover() }()
		_, _ = r.instance(t, crashing).Token(t.Context())
		t.Error("the crash did not happen")
	}()
	r.Advance(2 * time.Minute) // the crashed refresher's lease runs out
	_, err := r.instance(t, keeper).Token(t.Context())
	if !source.IsDisconnected(err) || !strings.Contains(err.Error(), "interrupted after its exchange") || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("after the crash: %v; want disconnected, saying a refresh was interrupted", err)
	}
}

// crashAfterExchange runs the keeper's exchange, then dies before the result is stored.
type crashAfterExchange struct{ k connection.Keeper }

func (c crashAfterExchange) Exchange(ctx context.Context, exchange func(context.Context, string) (string, error)) error {
	return c.k.Exchange(ctx, func(ctx context.Context, rt string) (string, error) {
		if _, err := exchange(ctx, rt); err != nil {
			return "", err
		}
		panic("crash between the exchange and the write")
	})
}
