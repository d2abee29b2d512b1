package terraform

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite "+SchemaFile+" from the kit's provider schema")

// kitSchema is the provider schema the project kit holds beside the checkout.
const kitSchema = "../../shared/terraform/google-8.0.0-archive-2.8.0.schema.json"

// TestSchemaCopy keeps the committed schema equal to the kit's, cut to the types the
// configuration uses. A new resource type needs `go test ./terraform -run TestSchemaCopy -update`.
func TestSchemaCopy(t *testing.T) {
	data, err := os.ReadFile(kitSchema)
	if os.IsNotExist(err) {
		t.Skipf("the kit's schema (%s) is not beside this checkout; the committed copy is checked by TestConfigurationMatchesSchema alone", kitSchema)
	}
	if err != nil {
		t.Fatal(err)
	}
	var kit struct {
		FormatVersion   string `json:"format_version"`
		ProviderSchemas map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(data, &struct {
		FormatVersion   *string                                `json:"format_version"`
		ProviderSchemas *map[string]map[string]json.RawMessage `json:"provider_schemas"`
	}{&kit.FormatVersion, &kit.ProviderSchemas}); err != nil {
		t.Fatal(err)
	}
	m := load(".", ".")
	used := map[string][]string{"resource_schemas": sortedKeys(m.resources), "data_source_schemas": sortedKeys(m.data)}
	cut := map[string]map[string]map[string]json.RawMessage{}
	for provider, parts := range kit.ProviderSchemas {
		short := provider[strings.LastIndex(provider, "/")+1:]
		out := map[string]map[string]json.RawMessage{}
		for part, types := range used {
			var all map[string]json.RawMessage
			if err := json.Unmarshal(parts[part], &all); err != nil {
				t.Fatal(err)
			}
			out[part] = map[string]json.RawMessage{}
			for _, typ := range types {
				if strings.HasPrefix(typ, short+"_") && all[typ] != nil {
					out[part][typ] = all[typ]
				}
			}
		}
		cut[provider] = out
	}
	want, err := json.MarshalIndent(map[string]any{"format_version": kit.FormatVersion, "provider_schemas": cut}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(SchemaFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(SchemaFile)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s is stale or missing (%v): run go test ./terraform -run TestSchemaCopy -update", SchemaFile, err)
	}
}

func readSchema(t *testing.T) *Schema {
	t.Helper()
	s, err := ReadSchema(SchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfigurationMatchesSchema(t *testing.T) {
	if got := CheckSchema(".", readSchema(t)); len(got) > 0 {
		t.Errorf("the configuration disagrees with the provider schema:\n%s", list(got))
	}
}

// TestSchemaCheckCatchesMutations: one mutation per kind of error the real provider would refuse.
func TestSchemaCheckCatchesMutations(t *testing.T) {
	for _, mu := range []mutation{
		{"unknown attribute", "pubsub.tf", replaceOnce(`resource "google_pubsub_topic" "expand" {`, "resource \"google_pubsub_topic\" \"expand\" {\n  retention_days = 7"), "schema-attribute", "retention_days"},
		{"unknown attribute in a nested block", "functions.tf", replaceOnce(`    entry_point = "Importer"`, "    entry_point = \"Importer\"\n    entrypoint  = \"Importer\""), "schema-attribute", `"entrypoint"`},
		{"unknown block", "pubsub.tf", replaceOnce(`resource "google_pubsub_topic" "expand" {`, "resource \"google_pubsub_topic\" \"expand\" {\n  retry {\n  }"), "schema-block", `"retry"`},
		{"unknown resource type", "pubsub.tf", appendText("\nresource \"google_pubsub_queue\" \"q\" {\n  name = \"q\"\n}\n"), "schema-type", "google_pubsub_queue"},
		{"required attribute missing", "pubsub.tf", removeMatch(`(?m)^  topic += google_pubsub_topic\.deadletters\.(id|name)\n`), "schema-required", `"topic"`},
		{"block repeated past max_items", "pubsub.tf", replaceOnce("  expiration_policy {", "  expiration_policy {\n    ttl = \"\"\n  }\n\n  expiration_policy {"), "schema-blocks", `"expiration_policy"`},
		{"computed-only attribute set", "pubsub.tf", replaceOnce(`resource "google_pubsub_topic" "expand" {`, "resource \"google_pubsub_topic\" \"expand\" {\n  effective_labels = {}"), "schema-computed", "effective_labels"},
	} {
		t.Run(mu.name, func(t *testing.T) { mu.run(t, func(dir string) []Finding { return CheckSchema(dir, readSchema(t)) }) })
	}
	// No attribute the configuration uses is deprecated in 8.0.0, so the deprecated check is
	// shown on the real schema with one attribute in use marked deprecated, as a later provider
	// release would.
	t.Run("deprecated attribute", func(t *testing.T) {
		s := readSchema(t)
		p := s.ProviderSchemas["registry.terraform.io/hashicorp/google"]
		topic := p.ResourceSchemas["google_pubsub_topic"]
		a := topic.Block.Attributes["name"]
		a.Deprecated = true
		topic.Block.Attributes["name"] = a
		got := CheckSchema(".", s)
		if !slices.ContainsFunc(got, func(f Finding) bool { return f.Check == "schema-deprecated" && strings.Contains(f.Message, `"name"`) }) {
			t.Errorf("no schema-deprecated finding; got:\n%s", list(got))
		}
	})
}
