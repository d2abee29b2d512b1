package settings

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

// Connect is a request to connect a tenant to its own org: the JWT bearer flow (Username and Key)
// or the refresh-token flow (RefreshToken, from a user's web-server consent).
type Connect struct {
	Tenant       string
	LoginURL     string // https://login.salesforce.com, https://test.salesforce.com or a My Domain URL
	ClientID     string // the connected app's consumer key
	Username     string
	Key          connection.Credential // the connected app certificate's private key (PEM)
	RefreshToken connection.Credential
	HTTPClient   *http.Client
}

// Validate reports every reason r cannot be tried, wrapping ErrInvalid. It never prints a secret.
func (r Connect) Validate() error {
	var errs []error
	if err := checkID("tenant", r.Tenant); err != nil {
		errs = append(errs, err)
	}
	if u, err := url.Parse(r.LoginURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		errs = append(errs, fmt.Errorf("login URL %q: want https://login.salesforce.com, https://test.salesforce.com or your My Domain", r.LoginURL))
	}
	if r.ClientID == "" {
		errs = append(errs, errors.New("no client ID (the connected app's consumer key)"))
	}
	jwtFlow, refreshFlow := !r.Key.Empty() || r.Username != "", !r.RefreshToken.Empty()
	switch {
	case jwtFlow && refreshFlow:
		errs = append(errs, errors.New("a key and a refresh token: choose the JWT bearer flow or the refresh-token flow"))
	case jwtFlow && (r.Key.Empty() || r.Username == ""):
		errs = append(errs, errors.New("the JWT bearer flow needs --username and --key-file"))
	case !jwtFlow && !refreshFlow:
		errs = append(errs, errors.New("no credentials: --username and --key-file, or --refresh-token-file"))
	}
	return invalid(errs)
}

func isLoopback(host string) bool { return host == "127.0.0.1" || host == "localhost" || host == "::1" }

// Connect stores the tenant's connection, its credential sealed by sealer, after proving it: one
// token exchange (which names the org's instance URL; a rotated refresh token is stored through
// the connection's refresher). The tenant is then connected: its paused Jobs resume at the next
// recovery sweep. A credential the org refuses is not stored, and the error says why without it.
func (a Admin) Connect(ctx context.Context, sealer connection.Sealer, r Connect) (connection.Connection, error) {
	if err := r.Validate(); err != nil {
		return connection.Connection{}, err
	}
	if _, err := a.Tenant(ctx, r.Tenant); err != nil {
		return connection.Connection{}, err
	}
	store := connection.Store{FS: a.FS, Sealer: sealer, Now: a.Now}
	c := connection.Connection{TenantID: r.Tenant, Connector: "salesforce", LoginURL: r.LoginURL, ClientID: r.ClientID, Username: r.Username}
	cfg := salesforce.OAuthConfig{LoginURL: r.LoginURL, ClientID: r.ClientID, HTTPClient: r.HTTPClient, Now: a.Now}
	cred := r.RefreshToken
	old, oldErr := store.Get(ctx, r.Tenant) // what a refused attempt must leave as it was
	if oldErr != nil && !errors.Is(oldErr, connection.ErrNoConnection) {
		return c, oldErr
	}
	if r.RefreshToken.Empty() {
		c.Method, cred = connection.MethodJWT, r.Key
		cfg.Username, cfg.PrivateKey = r.Username, r.Key.Reveal()
	} else {
		// The refresh token is stored first: the first exchange may rotate it, and the rotated
		// one must be kept by the refresher, not lost.
		c.Method = connection.MethodRefresh
		cfg.Refresh = connection.Keeper{Store: store, Tenant: r.Tenant}
		if err := store.Connect(ctx, c, cred); err != nil {
			return c, err
		}
	}
	auth, err := salesforce.NewOAuth(cfg)
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := auth.Token(ctx); err != nil {
		if c.Method == connection.MethodRefresh { // a refused token is not kept; the earlier connection stays
			if oldErr == nil {
				_ = store.Restore(ctx, old)
			} else {
				_ = store.Disconnect(ctx, r.Tenant)
			}
		}
		return c, fmt.Errorf("tenant %q: the org refused the credentials: %w", r.Tenant, err)
	}
	c.InstanceURL = auth.Instance()
	if c.Method == connection.MethodJWT {
		if err := store.Connect(ctx, c, cred); err != nil {
			return c, err
		}
	} else if _, err := a.FS.Collection(model.Connections).Doc(r.Tenant).Update(ctx, []firestore.Update{{Path: "instanceUrl", Value: c.InstanceURL}}); err != nil {
		return c, fmt.Errorf("settings: connection of %q: %w", r.Tenant, err)
	}
	if err := a.setConnection(ctx, r.Tenant, model.Connected, ""); err != nil {
		return c, err
	}
	return store.Get(ctx, r.Tenant)
}

// Disconnect removes the tenant's connection (its credential is gone) and marks the tenant
// disconnected: its Jobs pause until it is connected again.
func (a Admin) Disconnect(ctx context.Context, tenant, reason string) error {
	if _, err := a.Tenant(ctx, tenant); err != nil {
		return err
	}
	if err := (connection.Store{FS: a.FS}).Disconnect(ctx, tenant); err != nil {
		return err
	}
	return a.setConnection(ctx, tenant, model.Disconnected, reason)
}

// Connection reads the tenant's connection, its credential still sealed.
func (a Admin) Connection(ctx context.Context, tenant string) (connection.Connection, error) {
	return connection.Store{FS: a.FS}.Get(ctx, tenant)
}

func (a Admin) setConnection(ctx context.Context, tenant, state, reason string) error {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	_, err := a.FS.Collection(model.Tenants).Doc(tenant).Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: state, Reason: reason, ChangedAt: now().UTC()}},
	})
	if err != nil {
		return fmt.Errorf("settings: tenant %q: %w", tenant, err)
	}
	return nil
}
