package app

import (
	"fmt"
	"net/http"
	"time"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

// SourceKinds are the connectors NewSource builds (config.EnvSourceKind).
var SourceKinds = []string{"salesforce"}

// SourceTuning adjusts how a connector retries; zero values keep its defaults. Production uses
// none; the harness shortens the backoffs and counts the requests.
type SourceTuning struct {
	HTTPClient  *http.Client
	MaxAttempts int
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
}

// NewSource returns the connector cfg.SourceKind names, configured from cfg. It is the one place
// a connector is chosen: the production entry points, the simulator and the benchmark all build
// their source here. Adding a connector is a package below shared/source that passes the
// conformance suite (shared/source/sourcetest), a case here, and its name in SourceKinds.
func NewSource(cfg config.Config, tune SourceTuning) (Source, error) {
	switch cfg.SourceKind {
	case "salesforce":
		c, err := salesforce.New(salesforce.Config{
			BaseURL: cfg.SourceURL, Token: cfg.SourceToken, PageSize: cfg.PageSize, Timeout: cfg.SourceTimeout,
			HTTPClient: tune.HTTPClient, MaxAttempts: tune.MaxAttempts, MinBackoff: tune.MinBackoff, MaxBackoff: tune.MaxBackoff,
		})
		if err != nil {
			return nil, fmt.Errorf("app: source %q: %w", cfg.SourceKind, err)
		}
		return c, nil
	default:
		return nil, fmt.Errorf("app: %s=%q is not a connector (known: %v)", config.EnvSourceKind, cfg.SourceKind, SourceKinds)
	}
}
