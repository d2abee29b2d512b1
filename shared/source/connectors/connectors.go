// Package connectors chooses a source connector from configuration: the one place a connector is
// named, used by the functions (functions/app), the operator's tool (shared/ops) and the harness
// alike. It imports every connector package and nothing of the functions, so the operator's tool
// links no handler to build a source.
package connectors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

// Connector is one source connector as oncesync knows it: its kind (config.EnvSourceKind), its
// limits, its own check of a setting's query, and how it is built. A new connector is a package
// below shared/source that passes the conformance suite (shared/source/sourcetest) and one entry
// in registry.
type Connector struct {
	Kind   string
	Limits source.Limits
	// ValidateQuery checks a setting's query as the connector would send it, before the setting
	// is saved; the error says what the source would refuse.
	ValidateQuery func(q source.Query) error
	build         func(cfg config.Config, at Endpoint, tune Tuning) (source.Source, error)
	// open builds a tenant's source from its connection (nil: the connector has none yet).
	open func(ctx context.Context, p *Pool, conn connection.Connection) (source.Source, error)
}

// registry is every connector: the registration.
var registry = []Connector{
	{Kind: "salesforce", Limits: salesforce.Limits, ValidateQuery: salesforce.ValidateQuery, build: newSalesforce, open: openSalesforce},
}

// Kinds are the connectors' kinds, in registration order.
func Kinds() []string {
	out := make([]string, len(registry))
	for i, c := range registry {
		out[i] = c.Kind
	}
	return out
}

// Get returns the connector of kind.
func Get(kind string) (Connector, error) {
	for _, c := range registry {
		if c.Kind == kind {
			return c, nil
		}
	}
	return Connector{}, fmt.Errorf("connectors: %s=%q is not a connector (known: %v)", config.EnvSourceKind, kind, Kinds())
}

// Tuning adjusts how a connector retries; zero values keep its defaults. Production uses
// none; the harness shortens the backoffs and counts the requests.
type Tuning struct {
	HTTPClient  *http.Client
	MaxAttempts int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
}

// Endpoint is a source reached at a fixed URL with a fixed bearer token. No deployment has one:
// each tenant reaches its own org through its connection (Pool). The harness's one-org fixture
// does, for the properties that are not about connections.
type Endpoint struct {
	URL, Token string
}

// Direct returns the connector cfg.SourceKind names at the endpoint, configured from cfg.
func Direct(cfg config.Config, at Endpoint, tune Tuning) (source.Source, error) {
	c, err := Get(cfg.SourceKind)
	if err != nil {
		return nil, err
	}
	src, err := c.build(cfg, at, tune)
	if err != nil {
		return nil, fmt.Errorf("connectors: source %q: %w", cfg.SourceKind, err)
	}
	return src, nil
}

// Check builds the connector cfg.SourceKind names with cfg's settings (page size, timeout), with
// no network, so that a configuration every tenant's client would refuse fails when the expander
// starts, not at each tenant's first search.
func Check(cfg config.Config) error {
	_, err := Direct(cfg, Endpoint{URL: "https://config-check.invalid", Token: "-"}, Tuning{})
	return err
}

func newSalesforce(cfg config.Config, at Endpoint, tune Tuning) (source.Source, error) {
	c, err := salesforce.New(salesforce.Config{
		BaseURL: at.URL, Token: at.Token, PageSize: cfg.PageSize, Timeout: cfg.SourceTimeout,
		HTTPClient: tune.HTTPClient, MaxAttempts: tune.MaxAttempts, MinBackoff: tune.MinBackoff, MaxBackoff: tune.MaxBackoff,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Pool is the Sources of a deployment where each tenant has its own connection: it opens a
// tenant's source through connections/{tenant} (its connector, org and credentials) and keeps one
// client per tenant per connection for the instance's life, so that the tenant's access token is
// cached and refreshed in one place (salesforce.OAuth). The org's API budget and concurrent
// queries are then the tenant's own.
type Pool struct {
	Connections connection.Store
	Config      config.Config // page size and request timeout
	Tuning      Tuning
	MaxTokenAge time.Duration // refresh a tenant's token this old before use (0: the connector's default)
	// Now is the clock tokens are aged by (default time.Now).
	Now func() time.Time
	// Refresher keeps a tenant's refresh token (default: a connection.Keeper, one refresher per
	// tenant at a time across instances); Auth wraps a tenant's token source as built (default:
	// none). The chaos harness's mutants replace them.
	Refresher func(s connection.Store, tenant string) salesforce.RefreshTokens
	Auth      func(a salesforce.Auth) salesforce.Auth

	mu      sync.Mutex
	clients map[string]pooled // by tenant
}

type pooled struct {
	key string // the connection it was built for: instance and connect time
	src source.Source
}

// Open implements expander.Sources.
func (p *Pool) Open(ctx context.Context, t model.Tenant) (source.Source, error) {
	conn, err := p.Connections.Get(ctx, t.ID)
	if errors.Is(err, connection.ErrNoConnection) {
		return nil, fmt.Errorf("connectors: tenant %q has no connection (oncesync-ops tenants connect %s): %w", t.ID, t.ID, source.ErrDisconnected)
	}
	if err != nil {
		return nil, err
	}
	key := conn.InstanceURL + "|" + conn.ConnectedAt.String()
	p.mu.Lock()
	c, ok := p.clients[t.ID]
	p.mu.Unlock()
	if ok && c.key == key {
		return c.src, nil
	}
	// Built without the lock: a connection with no instance URL yet asks its org for a token
	// first, and a slow org must not hold every other tenant's open on this instance.
	connector, err := Get(conn.Connector)
	if err != nil {
		return nil, fmt.Errorf("connectors: tenant %q: %w: %w", t.ID, err, source.ErrDisconnected)
	}
	if connector.open == nil {
		return nil, fmt.Errorf("connectors: tenant %q: connector %s has no per-tenant connections: %w", t.ID, connector.Kind, source.ErrDisconnected)
	}
	src, err := connector.open(ctx, p, conn)
	if err != nil {
		return nil, fmt.Errorf("connectors: tenant %q: %w", t.ID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[t.ID]; ok && c.key == key {
		return c.src, nil // another delivery built it meanwhile: one client (one token) per tenant
	}
	if p.clients == nil {
		p.clients = map[string]pooled{}
	}
	p.clients[t.ID] = pooled{key: key, src: src}
	return src, nil
}

// openSalesforce builds a tenant's Salesforce client: OAuth with the connection's flow, on the
// connection's instance (or the one the first token answer names).
func openSalesforce(ctx context.Context, p *Pool, conn connection.Connection) (source.Source, error) {
	cfg := salesforce.OAuthConfig{LoginURL: conn.LoginURL, ClientID: conn.ClientID, MaxAge: p.MaxTokenAge, HTTPClient: p.Tuning.HTTPClient,
		Introspect: true, Now: p.Now}
	switch conn.Method {
	case connection.MethodJWT:
		key, err := p.Connections.Credential(conn)
		if err != nil {
			return nil, err
		}
		cfg.Username, cfg.PrivateKey = conn.Username, key.Reveal()
	case connection.MethodRefresh:
		cfg.Refresh = connection.Keeper{Store: p.Connections, Tenant: conn.TenantID}
		if p.Refresher != nil {
			cfg.Refresh = p.Refresher(p.Connections, conn.TenantID)
		}
	default:
		return nil, fmt.Errorf("unknown auth method %q: %w", conn.Method, source.ErrDisconnected)
	}
	auth, err := salesforce.NewOAuth(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, source.ErrDisconnected)
	}
	instance := conn.InstanceURL
	if instance == "" {
		if _, err := auth.Token(ctx); err != nil {
			return nil, err
		}
		instance = auth.Instance()
	}
	var a salesforce.Auth = auth
	if p.Auth != nil {
		a = p.Auth(auth)
	}
	client, err := salesforce.New(salesforce.Config{BaseURL: instance, Auth: a, PageSize: p.Config.PageSize, Timeout: p.Config.SourceTimeout,
		HTTPClient: p.Tuning.HTTPClient, MaxAttempts: p.Tuning.MaxAttempts, MinBackoff: p.Tuning.MinBackoff, MaxBackoff: p.Tuning.MaxBackoff})
	if err != nil {
		return nil, err
	}
	return client, nil
}
