package app

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/config"
)

func TestNewSourceBuildsEveryKnownConnector(t *testing.T) {
	cfg := config.Default()
	cfg.SourceURL, cfg.SourceToken = "https://acme.my.salesforce.com", "tok"
	for _, kind := range SourceKinds {
		cfg.SourceKind = kind
		if s, err := NewSource(cfg, SourceTuning{}); err != nil || s == nil {
			t.Errorf("NewSource(%q) = %v, %v", kind, s, err)
		}
	}
	cfg.SourceKind = "hubspot"
	if _, err := NewSource(cfg, SourceTuning{}); err == nil || !strings.Contains(err.Error(), config.EnvSourceKind) {
		t.Errorf("NewSource(hubspot) = %v, want an error naming %s", err, config.EnvSourceKind)
	}
	cfg.SourceKind, cfg.PageSize = "salesforce", 100
	if _, err := NewSource(cfg, SourceTuning{}); err == nil || !strings.Contains(err.Error(), "200..2000") {
		t.Errorf("NewSource with page size 100 = %v, want Salesforce's bounds", err)
	}
}
