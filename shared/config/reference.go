package config

import (
	"fmt"
	"strings"
)

// Reference renders Vars as the Markdown reference kept in docs/configuration.md; a test fails
// when that file is stale (go test ./shared/config -update rewrites it).
func Reference() string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from `config.Vars` (`go test ./shared/config -update`); a test fails when this file is stale.\n\n")
	b.WriteString("Environment variables, read once per instance at cold start by `shared/config`. Terraform sets exactly the\n")
	b.WriteString("ones each function reads, and the drift test in `terraform/` fails when it does not.\n\n")
	b.WriteString("| variable | functions | default | range | meaning |\n|---|---|---|---|---|\n")
	for _, v := range Vars {
		fns := strings.Join(v.Functions, ", ")
		if len(v.Functions) == len(EntryPoints) {
			fns = "all"
		}
		def := "`" + v.Default + "`"
		switch {
		case v.Required:
			def = "required"
		case v.Default == "":
			def = "—"
		case v.Tuned:
			def += " †"
		}
		switch {
		case v.Secret && v.File:
			def += " (secret file)"
		case v.Secret:
			def += " (secret)"
		}
		rng := "—"
		switch {
		case v.Min != "" && v.Max != "":
			rng = v.Min + " .. " + v.Max
		case v.Min != "":
			rng = "≥ " + v.Min
		case v.Max != "":
			rng = "≤ " + v.Max
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", v.Name, fns, def, rng, v.Doc)
	}
	b.WriteString("\n† A default tuned on the emulators and this project's 2-core machines, not derived from a production limit:\n" +
		"measure on the real services (`make bench` has the method) before relying on it.\n")
	b.WriteString("\nPer-setting knobs live in Firestore (`syncSettings`): source object, fields, target, chunk size, enabled. " +
		"`oncesync-ops settings add` writes them, checked (see [deploy.md](deploy.md#run-a-first-tick-by-hand)).\n")
	b.WriteString("The emulators are found through `FIRESTORE_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST`, as the Google client\n")
	b.WriteString("libraries read them.\n")
	return b.String()
}
