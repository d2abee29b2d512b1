package settings_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/connectors"
)

func good() model.SyncSetting {
	return model.SyncSetting{ID: "acme-contacts", TenantID: "acme", SourceObject: "Contact", Fields: []string{"Name", "Email", "Score__c"},
		Target: model.TargetUpsert, ChunkSize: 500, Enabled: true, Watermark: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), APIReserve: 300}
}

func TestValidateSetting(t *testing.T) {
	if err := settings.ValidateSetting(good(), sf(t)); err != nil {
		t.Fatalf("a good setting: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(s *model.SyncSetting)
		want string
	}{
		{"no ID", func(s *model.SyncSetting) { s.ID = "" }, `setting ID ""`},
		{"ID with a slash", func(s *model.SyncSetting) { s.ID = "a/b" }, `setting ID "a/b"`},
		{"ID with the key separator", func(s *model.SyncSetting) { s.ID = "a~b" }, `setting ID "a~b"`},
		{"tenant ID", func(s *model.SyncSetting) { s.TenantID = "acme corp" }, `tenant ID "acme corp"`},
		{"no object", func(s *model.SyncSetting) { s.SourceObject = "" }, "no source object"},
		{"object injection", func(s *model.SyncSetting) { s.SourceObject = "Contact WHERE Id != null" }, "is not a SOQL identifier"},
		{"field injection", func(s *model.SyncSetting) { s.Fields = []string{"Name, (SELECT Id FROM Cases)"} }, "is not a SOQL identifier"},
		{"field twice", func(s *model.SyncSetting) { s.Fields = []string{"Name", "name"} }, "selected twice"},
		{"Id selected", func(s *model.SyncSetting) { s.Fields = []string{"Id"} }, "always selected"},
		{"unknown target", func(s *model.SyncSetting) { s.Target = "bigquery" }, `unknown target "bigquery" (one of upsert, generated)`},
		{"chunk size too large", func(s *model.SyncSetting) { s.ChunkSize = 5001 }, "chunk size 5001 outside 1..5000"},
		{"negative chunk size", func(s *model.SyncSetting) { s.ChunkSize = -1 }, "chunk size -1"},
		{"last Job set", func(s *model.SyncSetting) { s.LastJobID = "x" }, "lastJobId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.edit(&s)
			err := settings.ValidateSetting(s, sf(t))
			if !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
	// Every reason at once, not the first only.
	err := settings.ValidateSetting(model.SyncSetting{ID: "x", TenantID: "y", SourceObject: "1x", Target: "z", ChunkSize: -3}, sf(t))
	for _, want := range []string{"SOQL identifier", "unknown target", "chunk size -3"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("all reasons: %v lacks %q", err, want)
		}
	}
}

func TestValidateTenant(t *testing.T) {
	if err := settings.ValidateTenant(model.Tenant{ID: "acme", SearchConcurrency: 4}, sf(t)); err != nil {
		t.Fatal(err)
	}
	for _, tn := range []model.Tenant{{ID: ""}, {ID: "-acme"}, {ID: "acme", SearchConcurrency: 11}, {ID: "acme", SearchConcurrency: -1}} {
		if err := settings.ValidateTenant(tn, sf(t)); !errors.Is(err, settings.ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", tn, err)
		}
	}
}

func TestAdminWritesTheDocumentedDocuments(t *testing.T) {
	ctx := t.Context()
	fs := emu.Firestore(t, emu.ProjectID(t))
	a := settings.Admin{FS: fs}

	// A setting needs its tenant.
	if err := a.AddSetting(ctx, good()); !errors.Is(err, settings.ErrUnknownTenant) {
		t.Fatalf("setting before its tenant: %v, want ErrUnknownTenant", err)
	}
	if _, err := fs.Collection(model.SyncSettings).Doc("acme-contacts").Get(ctx); err == nil {
		t.Fatal("a rejected setting was written")
	}
	if err := a.AddTenant(ctx, model.Tenant{ID: "acme", Name: "Acme", Enabled: true, SearchConcurrency: 2}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddTenant(ctx, model.Tenant{ID: "acme", Name: "Other"}); !errors.Is(err, settings.ErrExists) {
		t.Fatalf("tenant added twice: %v, want ErrExists", err)
	}
	if err := a.AddSetting(ctx, good()); err != nil {
		t.Fatal(err)
	}
	again := good()
	again.SourceObject = "Lead"
	if err := a.AddSetting(ctx, again); !errors.Is(err, settings.ErrExists) {
		t.Fatalf("setting added twice: %v, want ErrExists", err)
	}

	// Exactly the fields docs/design.md lists, with the values given, and the tenant unchanged
	// by the rejected second add.
	snap, err := fs.Collection(model.SyncSettings).Doc("acme-contacts").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"tenantId": "acme", "sourceObject": "Contact", "fields": []any{"Name", "Email", "Score__c"}, "target": "upsert",
		"chunkSize": int64(500), "enabled": true, "watermark": good().Watermark, "lastJobId": "", "apiReserve": int64(300)}
	if got := snap.Data(); !reflect.DeepEqual(got, want) {
		t.Fatalf("syncSettings/acme-contacts = %v, want %v", got, want)
	}
	tsnap, err := fs.Collection(model.Tenants).Doc("acme").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tsnap.Data(), map[string]any{"name": "Acme", "enabled": true, "searchConcurrency": int64(2)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tenants/acme = %v, want %v", got, want)
	}

	// Enable and disable change the flag only, and only of what exists.
	if err := a.EnableSetting(ctx, "acme-contacts", false); err != nil {
		t.Fatal(err)
	}
	if err := a.EnableTenant(ctx, "acme", false); err != nil {
		t.Fatal(err)
	}
	if err := a.EnableSetting(ctx, "acme-leads", true); !errors.Is(err, settings.ErrNotFound) {
		t.Fatalf("enable an unknown setting: %v, want ErrNotFound", err)
	}
	if err := a.EnableTenant(ctx, "globex", true); !errors.Is(err, settings.ErrNotFound) {
		t.Fatalf("enable an unknown tenant: %v, want ErrNotFound", err)
	}
	if _, err := fs.Collection(model.Tenants).Doc("globex").Get(ctx); err == nil {
		t.Fatal("enabling an unknown tenant created it")
	}
	s, err := a.Setting(ctx, "acme-contacts")
	if err != nil {
		t.Fatal(err)
	}
	wantSetting := good()
	wantSetting.Enabled = false
	if !reflect.DeepEqual(s, wantSetting) {
		t.Fatalf("setting read back %+v, want %+v", s, wantSetting)
	}
	tn, err := a.Tenant(ctx, "acme")
	if err != nil || tn.Enabled || tn.Name != "Acme" || tn.SearchConcurrency != 2 {
		t.Fatalf("tenant read back %+v, %v", tn, err)
	}

	// Lists, by ID, filtered by tenant.
	if err := a.AddTenant(ctx, model.Tenant{ID: "globex", Name: "Globex", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	other := good()
	other.ID, other.TenantID, other.Target = "globex-leads", "globex", model.TargetGenerated
	if err := a.AddSetting(ctx, other); err != nil {
		t.Fatal(err)
	}
	all, err := a.Settings(ctx, "")
	if err != nil || len(all) != 2 || all[0].ID != "acme-contacts" || all[1].ID != "globex-leads" {
		t.Fatalf("every setting: %+v, %v", all, err)
	}
	mine, err := a.Settings(ctx, "globex")
	if err != nil || len(mine) != 1 || mine[0].ID != "globex-leads" {
		t.Fatalf("globex's settings: %+v, %v", mine, err)
	}
	tenants, err := a.Tenants(ctx)
	if err != nil || len(tenants) != 2 || tenants[0].ID != "acme" || tenants[1].ID != "globex" {
		t.Fatalf("tenants: %+v, %v", tenants, err)
	}
	if _, err := a.Setting(ctx, "nope"); !errors.Is(err, settings.ErrNotFound) {
		t.Fatalf("unknown setting: %v", err)
	}
}

// sf is the Salesforce connector, the one these rules are written for.
func sf(t *testing.T) connectors.Connector {
	t.Helper()
	c, err := connectors.Get("salesforce")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A setting is checked by its connector's own rules, not Salesforce's whatever the connector: a
// connector that refuses what Salesforce accepts refuses the setting, and its own limit bounds a
// tenant's concurrent searches.
func TestSettingsAreCheckedByTheirConnector(t *testing.T) {
	strict := connectors.Connector{Kind: "strict", Limits: source.Limits{MaxConcurrentSearches: 2},
		ValidateQuery: func(q source.Query) error { return fmt.Errorf("strict: no object %q here", q.Object) }}
	err := settings.ValidateSetting(good(), strict)
	if !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), "strict: no object") {
		t.Errorf("ValidateSetting with a strict connector = %v; want its refusal", err)
	}
	if err := settings.ValidateTenant(model.Tenant{ID: "acme", SearchConcurrency: 3}, strict); !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), "0..2") {
		t.Errorf("3 searches at once on a connector that runs 2: %v", err)
	}
	if err := settings.ValidateTenant(model.Tenant{ID: "acme", SearchConcurrency: 3}, sf(t)); err != nil {
		t.Errorf("3 searches at once on Salesforce: %v", err)
	}
}
