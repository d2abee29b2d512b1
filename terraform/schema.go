package terraform

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// --- The provider schema ---------------------------------------------------------------------------
//
// CheckSchema holds the configuration against the real providers' schema (`terraform providers
// schema -json` of hashicorp/google 8.0.0 and hashicorp/archive 2.8.0), which is what `terraform
// validate` would do if the provider could be downloaded here. testdata/provider-schema.json is
// that schema cut to the types the configuration uses (TestSchemaCopy keeps it equal to the kit's
// copy, and -update rewrites it).

// SchemaFile is the committed provider schema, relative to this directory.
const SchemaFile = "testdata/provider-schema.json"

// Schema is a provider-schema document, as much of it as the checks read.
type Schema struct {
	ProviderSchemas map[string]struct {
		ResourceSchemas   map[string]schemaEntry `json:"resource_schemas"`
		DataSourceSchemas map[string]schemaEntry `json:"data_source_schemas"`
	} `json:"provider_schemas"`
}

type schemaEntry struct {
	Block schemaBlock `json:"block"`
}

type schemaBlock struct {
	Attributes map[string]schemaAttr      `json:"attributes"`
	BlockTypes map[string]schemaBlockType `json:"block_types"`
	Deprecated bool                       `json:"deprecated"`
}

type schemaAttr struct {
	Required   bool `json:"required"`
	Optional   bool `json:"optional"`
	Computed   bool `json:"computed"`
	Deprecated bool `json:"deprecated"`
}

type schemaBlockType struct {
	NestingMode string      `json:"nesting_mode"`
	MinItems    int         `json:"min_items"`
	MaxItems    int         `json:"max_items"`
	Block       schemaBlock `json:"block"`
}

// ReadSchema reads a provider-schema JSON file.
func ReadSchema(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("terraform: schema: %w", err)
	}
	var s Schema
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("terraform: schema %s: %w", path, err)
	}
	return &s, nil
}

// lookup returns the schema of a resource ("resource") or data source ("data") type.
func (s *Schema) lookup(kind, typ string) (schemaBlock, bool) {
	provider := "registry.terraform.io/hashicorp/" + typ[:strings.Index(typ+"_", "_")]
	p, ok := s.ProviderSchemas[provider]
	if !ok {
		return schemaBlock{}, false
	}
	entries := p.ResourceSchemas
	if kind == "data" {
		entries = p.DataSourceSchemas
	}
	e, ok := entries[typ]
	return e.Block, ok
}

// Meta-arguments Terraform itself reads on every resource and data source.
var (
	metaAttributes = map[string]bool{"count": true, "for_each": true, "depends_on": true, "provider": true}
	metaBlocks     = map[string]bool{"lifecycle": true, "provisioner": true, "connection": true}
)

// CheckSchema checks every resource and data source in dir against schema. Findings:
// schema-type (a type the providers do not have), schema-attribute (an unknown attribute),
// schema-block (an unknown block), schema-required (a required attribute missing),
// schema-blocks (a block count outside min_items..max_items), schema-computed (a computed-only
// attribute set), schema-deprecated (a deprecated attribute or block).
func CheckSchema(dir string, schema *Schema) []Finding {
	m := load(dir, dir)
	if len(m.findings) > 0 {
		return m.findings
	}
	for kind, byType := range map[string]map[string][]*block{"resource": m.resources, "data": m.data} {
		for _, typ := range sortedKeys(byType) {
			sb, ok := schema.lookup(kind, typ)
			for _, b := range byType[typ] {
				if !ok {
					m.add("schema-type", b.addr(), &b.rng, "the providers have no %s type %q", kind, typ)
					continue
				}
				m.checkSchemaBody(b, b.addr(), b.body, sb, true)
			}
		}
	}
	sortFindings(m.findings)
	return m.findings
}

func (m *module) checkSchemaBody(b *block, path string, body *hclsyntax.Body, sb schemaBlock, top bool) {
	for _, name := range sortedKeys(body.Attributes) {
		if top && metaAttributes[name] {
			continue
		}
		rng := body.Attributes[name].SrcRange
		sa, ok := sb.Attributes[name]
		switch {
		case !ok:
			m.add("schema-attribute", path, &rng, "has no attribute %q", name)
		case sa.Computed && !sa.Optional && !sa.Required:
			m.add("schema-computed", path, &rng, "attribute %q is computed by the provider and cannot be set", name)
		case sa.Deprecated:
			m.add("schema-deprecated", path, &rng, "attribute %q is deprecated", name)
		}
	}
	for _, name := range sortedKeys(sb.Attributes) {
		if sb.Attributes[name].Required && body.Attributes[name] == nil {
			m.add("schema-required", path, &b.rng, "required attribute %q is missing", name)
		}
	}
	counts, dynamic := map[string]int{}, map[string]bool{}
	for _, blk := range body.Blocks {
		rng := blk.DefRange()
		name := blk.Type
		if top && metaBlocks[name] {
			continue
		}
		inner := blk.Body
		if name == "dynamic" && len(blk.Labels) == 1 {
			name = blk.Labels[0]
			dynamic[name] = true
			inner = nil
			for _, c := range blk.Body.Blocks {
				if c.Type == "content" {
					inner = c.Body
				}
			}
		}
		bt, ok := sb.BlockTypes[name]
		if !ok {
			m.add("schema-block", path, &rng, "has no block %q", name)
			continue
		}
		if bt.Block.Deprecated {
			m.add("schema-deprecated", path, &rng, "block %q is deprecated", name)
		}
		counts[name]++
		if inner != nil {
			m.checkSchemaBody(b, path+"."+name, inner, bt.Block, false)
		}
	}
	for _, name := range sortedKeys(sb.BlockTypes) {
		bt := sb.BlockTypes[name]
		max := bt.MaxItems
		if bt.NestingMode == "single" {
			max = 1
		}
		switch n := counts[name]; {
		case dynamic[name]: // as many as its for_each: not countable offline
		case n < bt.MinItems:
			m.add("schema-blocks", path, &b.rng, "block %q appears %d times, at least %d required", name, n, bt.MinItems)
		case max > 0 && n > max:
			m.add("schema-blocks", path, &b.rng, "block %q appears %d times, at most %d allowed", name, n, max)
		}
	}
}
