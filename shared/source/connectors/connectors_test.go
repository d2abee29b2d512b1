package connectors

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/config"
)

func TestNewSourceBuildsEveryKnownConnector(t *testing.T) {
	cfg := config.Default()
	cfg.SourceURL, cfg.SourceToken = "https://acme.my.salesforce.com", "tok"
	for _, kind := range Kinds() {
		cfg.SourceKind = kind
		if s, err := New(cfg, Tuning{}); err != nil || s == nil {
			t.Errorf("New(%q) = %v, %v", kind, s, err)
		}
	}
	cfg.SourceKind = "hubspot"
	if _, err := New(cfg, Tuning{}); err == nil || !strings.Contains(err.Error(), config.EnvSourceKind) {
		t.Errorf("New(hubspot) = %v, want an error naming %s", err, config.EnvSourceKind)
	}
	cfg.SourceKind, cfg.PageSize = "salesforce", 100
	if _, err := New(cfg, Tuning{}); err == nil || !strings.Contains(err.Error(), "200..2000") {
		t.Errorf("NewSource with page size 100 = %v, want Salesforce's bounds", err)
	}
}
