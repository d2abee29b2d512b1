package config_test

import (
	"flag"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/config"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestLoad(t *testing.T) {
	c, err := config.Load(config.Importer, env(map[string]string{config.EnvProject: "p", config.EnvLease: "20m"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Project != "p" || c.Lease != 20*time.Minute || c.KeyRetention != 192*time.Hour || c.ChunkSize != 500 {
		t.Errorf("config %+v", c)
	}
	// The expander needs the keyset its tenants' connections are sealed with; the importer does
	// not.
	_, err = config.Load(config.Expander, env(map[string]string{config.EnvProject: "p"}))
	for _, v := range []string{config.EnvKeyset, config.EnvTopicChunks} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("expander without %s: %v", v, err)
		}
	}
	for name, kv := range map[string]map[string]string{
		"bad duration":          {config.EnvProject: "p", config.EnvLease: "15 minutes"},
		"bad number":            {config.EnvProject: "p", config.EnvPageSize: "lots"},
		"page size":             {config.EnvProject: "p", config.EnvPageSize: "0"},
		"retention below lease": {config.EnvProject: "p", config.EnvKeyRetention: "1m"},
	} {
		if _, err := config.Load(config.Importer, env(kv)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestVarsFor(t *testing.T) {
	for _, fn := range config.EntryPoints {
		for _, name := range config.VarsFor(fn) {
			if !strings.HasPrefix(name, "ONCESYNC_") {
				t.Errorf("%s reads %s", fn, name)
			}
		}
	}
	for _, v := range config.Vars {
		if v.Secret && len(v.Functions) != 1 {
			t.Errorf("secret %s is read by %v: keep secrets to one function", v.Name, v.Functions)
		}
	}
}

var update = flag.Bool("update", false, "rewrite docs/configuration.md from config.Vars")

func TestReferenceIsCurrent(t *testing.T) {
	const path = "../../docs/configuration.md"
	want := config.Reference()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is stale: run go test ./shared/config -update", path)
	}
	for _, v := range config.Vars {
		if !strings.Contains(want, "`"+v.Name+"`") {
			t.Errorf("reference misses %s", v.Name)
		}
	}
}

// Every Var is well formed: a field, a default that parses and lies within its own bounds, and no
// default on a required variable.
func TestEveryVarIsWellFormed(t *testing.T) {
	for _, v := range config.Vars {
		if v.Field == nil {
			t.Errorf("%s has no field", v.Name)
			continue
		}
		if v.Required && v.Default != "" {
			t.Errorf("%s is required and has a default %q", v.Name, v.Default)
		}
		if v.Default != "" {
			if err := v.Within(v.Default); err != nil {
				t.Errorf("%s: default %q: %v", v.Name, v.Default, err)
			}
		}
	}
}

// The table's bounds are what Load enforces: each bounded variable is accepted at its bounds and
// refused just past them.
func TestBoundsComeFromTheTable(t *testing.T) {
	base := map[string]string{config.EnvProject: "p", config.EnvLease: "1h", config.EnvKeyRetention: "200h"}
	past := map[string][2]string{ // just below Min, just above Max
		config.EnvChunkSize: {"0", "5001"}, config.EnvBudgetPercent: {"0", "81"}, config.EnvMaxSlices: {"0", "1000"},
		config.EnvMaxChunkBytes: {"9999", "1000001"}, config.EnvTraceSample: {"-0.1", "1.1"}, config.EnvPageSize: {"0", ""},
		config.EnvSearchSlots: {"0", ""}, config.EnvWindowLag: {"-1s", ""}, config.EnvSweepBatchSize: {"0", ""},
	}
	n := 0
	for _, v := range config.Vars {
		if v.Min == "" && v.Max == "" {
			continue
		}
		for _, ok := range []string{v.Min, v.Max} {
			if ok == "" {
				continue
			}
			kv := map[string]string{v.Name: ok}
			maps.Copy(kv, base)
			if _, err := config.Load("", env(kv)); err != nil && !strings.Contains(err.Error(), "required") {
				t.Errorf("%s=%s (a bound) refused: %v", v.Name, ok, err)
			}
		}
		p, listed := past[v.Name]
		if !listed {
			continue
		}
		for _, bad := range p {
			if bad == "" {
				continue
			}
			n++
			kv := map[string]string{v.Name: bad}
			maps.Copy(kv, base)
			if _, err := config.Load(config.Importer, env(kv)); err == nil || !strings.Contains(err.Error(), v.Name) {
				t.Errorf("%s=%s (past its bound) accepted or not named: %v", v.Name, bad, err)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d out-of-bounds values tried", n)
	}
}
