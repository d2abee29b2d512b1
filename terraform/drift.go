// Package terraform checks, offline, that the Terraform configuration in this directory deploys
// what the code expects. Terraform cannot validate the configuration here (the google provider
// cannot be downloaded), so Check reads the HCL statically and compares it with the code's own
// sources of truth:
//
//   - entry points registered in the module root (parsed with go/parser) and config.EntryPoints;
//   - the Go version in go.mod, which decides the function runtime (go 1.26 -> go126);
//   - config.Vars: which environment variables each entry point reads, and which are secrets;
//   - model.TTLCollections, model.ExpireAtField and model.CompositeIndexes;
//   - telemetry.MetricDocs: the metrics the alert policies and the dashboard may name, all of which
//     the dashboard shows.
//
// It also enforces the deployment's own rules: Eventarc Pub/Sub triggers with retries and a
// dedicated trigger service account, internal ingress, publishers only on the topics a function
// publishes to, run.invoker only on a trigger's own function, no public members, a retaining
// dead-letter subscription, and an environment that config.Load accepts.
//
// # Findings
//
// Check returns one Finding per disagreement; an empty result means code and infrastructure
// agree. Each Finding names its check with a stable ID (for example "env-missing") so tests can
// assert that a given mutation is caught by the check meant to catch it.
//
// # Layout
//
// code.go reads the code (Go sources, go.mod, the registries in config and model); hcl.go parses
// and evaluates the configuration (variables with their type defaults, locals, references);
// checks.go holds the checks, one method per concern; this file, the entry point.
package terraform

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
)

// Finding is one disagreement between the code and the Terraform configuration.
type Finding struct {
	Check   string // stable ID of the check, e.g. "env-missing"
	Subject string // the resource or code item concerned, e.g. "google_cloudfunctions2_function.expander"
	Pos     string // file:line in the configuration, when known
	Message string
}

func (f Finding) String() string {
	pos := ""
	if f.Pos != "" {
		pos = f.Pos + ": "
	}
	return fmt.Sprintf("%s[%s] %s: %s", pos, f.Check, f.Subject, f.Message)
}

// Check compares the Terraform configuration in dir with code and returns every disagreement.
func Check(dir string, code Code) []Finding {
	pathModule := dir
	if code.Root != "" {
		pathModule = filepath.Join(code.Root, "terraform")
	}
	m := load(dir, pathModule)
	if len(m.findings) > 0 { // unparsable: nothing else is reliable
		return m.findings
	}
	m.checkEntryPoints(code)
	fns := m.functionsByEntryPoint()
	m.checkFunctions(code, fns)
	m.checkWiring(fns)
	m.checkIAM(fns)
	m.checkFirestore(code)
	m.checkSource(code, fns)
	m.checkVariables()
	m.checkConnectors(code)
	m.checkRanges(fns)
	m.checkConfigLoad(code, fns)
	m.checkPublic()
	m.checkMonitoring(code)
	sortFindings(m.findings)
	return m.findings
}

// --- Small helpers ------------------------------------------------------------------------------

func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Check, b.Check), cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.Message, b.Message))
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
