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

// Kinds are the connectors New builds (config.EnvSourceKind).
var Kinds = []string{"salesforce"}

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
// benchmark all build their source here. Adding a connector is a package below shared/source that
// passes the conformance suite (shared/source/sourcetest), a case here, and its name in Kinds.
func New(cfg config.Config, tune Tuning) (source.Source, error) {
	switch cfg.SourceKind {
	case "salesforce":
		c, err := salesforce.New(salesforce.Config{
			BaseURL: cfg.SourceURL, Token: cfg.SourceToken, PageSize: cfg.PageSize, Timeout: cfg.SourceTimeout,
			HTTPClient: tune.HTTPClient, MaxAttempts: tune.MaxAttempts, MinBackoff: tune.MinBackoff, MaxBackoff: tune.MaxBackoff,
		})
		if err != nil {
			return nil, fmt.Errorf("connectors: source %q: %w", cfg.SourceKind, err)
		}
		return c, nil
	default:
		return nil, fmt.Errorf("connectors: %s=%q is not a connector (known: %v)", config.EnvSourceKind, cfg.SourceKind, Kinds)
	}
}
