// Package connectors chooses a source connector from configuration: the one place a connector is
// named, used by the functions (functions/app), the operator's tool (shared/ops) and the harness
// alike. It imports every connector package and nothing of the functions, so the operator's tool
// links no handler to build a source.
package connectors

import (
	"fmt"
	"net/http"
	"time"

	"github.com/oncesync/oncesync/shared/config"
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
	build         func(cfg config.Config, tune Tuning) (source.Source, error)
}

// registry is every connector: the registration.
var registry = []Connector{
	{Kind: "salesforce", Limits: salesforce.Limits, ValidateQuery: salesforce.ValidateQuery, build: newSalesforce},
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

// New returns the connector cfg.SourceKind names, configured from cfg. It is the one place a
// connector is chosen: the production entry points, the operator's tool, the simulator and the
// benchmark all build their source here.
func New(cfg config.Config, tune Tuning) (source.Source, error) {
	c, err := Get(cfg.SourceKind)
	if err != nil {
		return nil, err
	}
	src, err := c.build(cfg, tune)
	if err != nil {
		return nil, fmt.Errorf("connectors: source %q: %w", cfg.SourceKind, err)
	}
	return src, nil
}

func newSalesforce(cfg config.Config, tune Tuning) (source.Source, error) {
	c, err := salesforce.New(salesforce.Config{
		BaseURL: cfg.SourceURL, Token: cfg.SourceToken, PageSize: cfg.PageSize, Timeout: cfg.SourceTimeout,
		HTTPClient: tune.HTTPClient, MaxAttempts: tune.MaxAttempts, MinBackoff: tune.MinBackoff, MaxBackoff: tune.MaxBackoff,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
