package connectors

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/config"
)

func TestDirectBuildsEveryKnownConnector(t *testing.T) {
	cfg := config.Default()
	at := Endpoint{URL: "https://acme.my.salesforce.com", Token: "tok"}
	for _, kind := range Kinds() {
		cfg.SourceKind = kind
		if s, err := Direct(cfg, at, Tuning{}); err != nil || s == nil {
			t.Errorf("Direct(%q) = %v, %v", kind, s, err)
		}
	}
	cfg.SourceKind = "hubspot"
	if _, err := Direct(cfg, at, Tuning{}); err == nil || !strings.Contains(err.Error(), config.EnvSourceKind) {
		t.Errorf("Direct(hubspot) = %v, want an error naming %s", err, config.EnvSourceKind)
	}
	cfg.SourceKind, cfg.PageSize = "salesforce", 100
	if _, err := Direct(cfg, at, Tuning{}); err == nil || !strings.Contains(err.Error(), "200..2000") {
		t.Errorf("Direct with page size 100 = %v, want Salesforce's bounds", err)
	}
}
