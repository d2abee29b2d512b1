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
	b.WriteString("| variable | functions | default | meaning |\n|---|---|---|---|\n")
	for _, v := range Vars {
		fns := strings.Join(v.Functions, ", ")
		if len(v.Functions) == len(EntryPoints) {
			fns = "all"
		}
		def := defaultText(v.Name)
		switch {
		case v.Required:
			def = "required"
		case def == "":
			def = "—"
		}
		if v.Secret {
			def += " (secret)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, fns, def, v.Doc)
	}
	b.WriteString("\nPer-setting knobs live in Firestore (`syncSettings`): source object, fields, target, chunk size, enabled. " +
		"`oncesync-ops settings add` writes them, checked (see [deploy.md](deploy.md#run-a-first-tick-by-hand)).\n")
	b.WriteString("The emulators are found through `FIRESTORE_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST`, as the Google client\n")
	b.WriteString("libraries read them.\n")
	return b.String()
}

// defaultText is the default of variable name as it is written in the environment.
func defaultText(name string) string {
	d := Default()
	switch name {
	case EnvDatabase:
		return "`" + d.Database + "`"
	case EnvSourceKind:
		return "`" + d.SourceKind + "`"
	case EnvPageSize:
		return fmt.Sprint(d.PageSize)
	case EnvChunkSize:
		return fmt.Sprint(d.ChunkSize)
	case EnvLease:
		return d.Lease.String()
	case EnvKeyRetention:
		return d.KeyRetention.String()
	case EnvStuckAfter:
		return d.StuckAfter.String()
	case EnvWindowLag:
		return d.WindowLag.String()
	case EnvSourceTimeout:
		return d.SourceTimeout.String()
	case EnvMaxChunkBytes:
		return fmt.Sprint(d.MaxChunkBytes)
	case EnvSweepBatchSize:
		return fmt.Sprint(d.SweepLimit)
	case EnvMaxDeliveryAge:
		return d.MaxDeliveryAge.String()
	case EnvTimeout:
		return d.Timeout.String()
	case EnvBudgetPercent:
		return fmt.Sprint(d.BudgetPercent)
	case EnvSliceRows:
		return fmt.Sprint(d.SliceRows)
	case EnvMaxSlices:
		return fmt.Sprint(d.MaxSlices)
	case EnvSearchSlots:
		return fmt.Sprint(d.SearchSlots)
	case EnvParallelAfter:
		return d.ParallelAfter.String()
	case EnvTraces:
		return "`none`"
	case EnvMetrics:
		return "`none`"
	case EnvTraceSample:
		return fmt.Sprint(d.TraceSample)
	}
	return ""
}
