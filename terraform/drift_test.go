package terraform

import (
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// loadCode reads the code's side of the contract from this module.
func loadCode(t *testing.T) Code {
	t.Helper()
	code, err := LoadCode("..")
	if err != nil {
		t.Fatalf("LoadCode: %v", err)
	}
	return code
}

func TestLoadCodeReadsTheModule(t *testing.T) {
	code := loadCode(t)
	if !sameSet(code.EntryPoints, config.EntryPoints) {
		t.Errorf("entry points registered in the root package = %v, config.EntryPoints = %v", code.EntryPoints, config.EntryPoints)
	}
	if !regexp.MustCompile(`^go1[0-9]{2}$`).MatchString(code.Runtime) {
		t.Errorf("runtime = %q, want go1NN", code.Runtime)
	}
	// What the build reads: the root package and what it imports, never tests, tools or the harness.
	for _, f := range []string{"go.mod", "go.sum", "functions.go", "functions/app/app.go", "shared/delivery/http.go", "shared/idem/run.go"} {
		if !slices.Contains(code.BuildFiles, f) {
			t.Errorf("build files lack %s: %v", f, code.BuildFiles)
		}
	}
	for _, f := range code.BuildFiles {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "harness/") || strings.HasPrefix(f, "shared/ops/") {
			t.Errorf("build files hold %s, which the functions do not import", f)
		}
	}
}

func TestLoadCodeResolvesRegistrations(t *testing.T) {
	root := t.TempDir()
	write(t, root, "go.mod", "module example.com/fn\n\ngo 1.24.3\n")
	write(t, root, "names/names.go", "package names\n\nconst Second = \"Second\"\n")
	write(t, root, "fn.go", `package fn

import (
	ff "github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"example.com/fn/names"
)

const third = "Third"

func init() {
	ff.CloudEvent("First", nil)
	ff.CloudEvent(names.Second, nil)
	ff.HTTP(third, nil)
	other.CloudEvent("NotAnEntryPoint", nil)
}
`)
	write(t, root, "fn_test.go", "package fn\n\nfunc init() { ff.CloudEvent(\"TestOnly\", nil) }\n")

	eps, err := registeredEntryPoints(root)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"First", "Second", "Third"}, eps); diff != "" {
		t.Errorf("entry points (-want +got):\n%s", diff)
	}
	rt, err := goRuntime(filepath.Join(root, "go.mod"))
	if err != nil || rt != "go124" {
		t.Errorf("goRuntime = %q, %v; want go124", rt, err)
	}
}

// TestConfigurationMatchesCode is the drift check CI runs: the configuration in this directory
// and the code must agree.
func TestConfigurationMatchesCode(t *testing.T) {
	for _, f := range Check(".", loadCode(t)) {
		t.Error(f)
	}
}

// TestTerraformFmt runs `terraform fmt -check -recursive`. It never skips: CI installs
// Terraform, and a missing binary must fail loudly rather than pass silently.
func TestTerraformFmt(t *testing.T) {
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Fatal("terraform is not on PATH: install Terraform >= 1.9 (CI does); this check does not skip")
	}
	out, err := exec.CommandContext(t.Context(), bin, "fmt", "-check", "-recursive", "-diff", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("terraform fmt -check -recursive: %v\n%s", err, out)
	}

	t.Run("fails on an unformatted copy", func(t *testing.T) {
		dir := copyConfig(t)
		write(t, dir, "bad.tf", "locals {\n    x=1\n}\n")
		cmd := exec.CommandContext(t.Context(), bin, "fmt", "-check", "-recursive", ".")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("terraform fmt -check passed on an unformatted file:\n%s", out)
		}
		if !strings.Contains(string(out), "bad.tf") {
			t.Errorf("terraform fmt -check did not name bad.tf:\n%s", out)
		}
	})
}

// A mutation edits one file of a copy of the configuration; Check must then report a finding of
// the check meant to catch it, naming the thing that drifted.
type mutation struct {
	name  string
	file  string
	edit  func(t *testing.T, src string) string
	check string // Finding.Check that must appear
	about string // must appear in that finding's Subject or Message
}

func TestCheckCatchesMutations(t *testing.T) {
	code := loadCode(t)
	mutations := []mutation{
		// The list the issue asks for.
		{"function resource removed", "functions.tf", removeResource(tFunction, "importer"), "entrypoint-missing", "Importer"},
		{"unknown entry point deployed", "functions.tf", addResourceCopy(tFunction, "importer", "reporter", `"Importer"`, `"Reporter"`), "entrypoint-unknown", `"Reporter"`},
		{"topic reference renamed", "functions.tf", replaceOnce("ONCESYNC_TOPIC_EXPAND       = google_pubsub_topic.expand.name\n      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name\n      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name\n      ONCESYNC_DEFAULT_CHUNK_SIZE", "ONCESYNC_TOPIC_EXPAND       = google_pubsub_topic.expand_jobs.name\n      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name\n      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name\n      ONCESYNC_DEFAULT_CHUNK_SIZE"), "topic-undeclared", "expand_jobs"},
		{"environment variable dropped", "functions.tf", replaceOnce("      ONCESYNC_SWEEP_LIMIT        = tostring(var.sweep_limit)\n", ""), "env-missing", config.EnvSweepBatchSize},
		{"shared environment variable dropped", "functions.tf", replaceOnce("    ONCESYNC_KEY_RETENTION     = \"${var.key_retention_hours}h\"\n", ""), "env-missing", config.EnvKeyRetention},
		{"extra environment variable", "functions.tf", replaceOnce("var.importer.concurrency\n\n    environment_variables = local.common_env", "var.importer.concurrency\n\n    environment_variables = merge(local.common_env, { ONCESYNC_VERBOSE = \"1\" })"), "env-extra", "ONCESYNC_VERBOSE"},
		{"event_trigger removed", "functions.tf", removeMatch(`(?s)\n  event_trigger \{[^}]*scheduler_trigger[^}]*\}\n`), "trigger", "no event_trigger"},
		{"retry_policy removed", "functions.tf", replaceOnce("google_pubsub_topic.expand.id\n    retry_policy          = \"RETRY_POLICY_RETRY\"\n", "google_pubsub_topic.expand.id\n"), "retry-policy", "RETRY_POLICY_RETRY"},
		{"retry disabled", "functions.tf", replaceOnce("google_pubsub_topic.chunks.id\n    retry_policy          = \"RETRY_POLICY_RETRY\"", "google_pubsub_topic.chunks.id\n    retry_policy          = \"RETRY_POLICY_DO_NOT_RETRY\""), "retry-policy", "DO_NOT_RETRY"},
		{"allUsers invoker binding", "iam.tf", appendText(`
resource "google_cloud_run_v2_service_iam_member" "public" {
  project  = var.project
  location = var.region
  name     = google_cloudfunctions2_function.importer.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
`), "public", "allUsers"},
		{"allAuthenticatedUsers topic binding", "pubsub.tf", appendText(`
resource "google_pubsub_topic_iam_binding" "open" {
  topic   = google_pubsub_topic.ticks.name
  role    = "roles/pubsub.publisher"
  members = ["allAuthenticatedUsers"]
}
`), "public", "allAuthenticatedUsers"},
		{"runtime go122", "functions.tf", replaceOnce(`go_runtime = "go126"`, `go_runtime = "go122"`), "runtime", `"go122"`},
		{"TTL field renamed", "firestore.tf", replaceOnce("collection = \"idempotencyKeys\"\n  field      = \"expireAt\"", "collection = \"idempotencyKeys\"\n  field      = \"expiresAt\""), "ttl-missing", model.Keys + "." + model.ExpireAtField},
		{"TTL policy removed", "firestore.tf", removeResource(tTTLField, "deliveries_ttl"), "ttl-missing", model.Deliveries},
		{"composite index removed", "firestore.tf", removeResource(tIndex, "jobs_tenant_created_at"), "index-missing", "jobs[COLLECTION](tenantId ASCENDING, createdAt ASCENDING)"},
		{"index field order changed", "firestore.tf", replaceOnce("field_path = \"createdAt\"\n    order      = \"ASCENDING\"\n  }\n}\n\n# Audit: a tenant's", "field_path = \"createdAt\"\n    order      = \"DESCENDING\"\n  }\n}\n\n# Audit: a tenant's"), "index-missing", "status ASCENDING, createdAt ASCENDING"},
		{"keyset file outside its secret volume", "functions.tf", replaceOnce(`ONCESYNC_KEYSET             = "/etc/oncesync/keyset/keyset.json"`, `ONCESYNC_KEYSET             = "/tmp/keyset.json"`), "secret-plain", config.EnvKeyset},
		{"keyset volume reads another secret", "functions.tf", replaceOnce("secret     = google_secret_manager_secret.credentials_keyset.secret_id", "secret     = google_secret_manager_secret.keyset_elsewhere.secret_id"), "secret-ref", config.EnvKeyset},

		// Monitoring: the alerts and the dashboard name what the code emits.
		{"alert on a metric the code does not emit", "monitoring.tf", replaceOnce(`filter          = "metric.type=\"${local.metric}/oncesync.dead_letters\""`, `filter          = "metric.type=\"${local.metric}/oncesync.deadletters\""`), "metric-unknown", "oncesync.deadletters"},
		{"metric left off the dashboard", "monitoring.tf", removeMatch(`\n *"oncesync\.jobs\.stuck" *= \{[^}]*\}`), "metric-not-on-dashboard", "oncesync.jobs.stuck"},
		{"alert notifies no one", "monitoring.tf", replaceOnce("display_name          = \"${var.name_prefix}: dead letters recorded\"\n  combiner              = \"OR\"\n  notification_channels = var.notification_channels", "display_name          = \"${var.name_prefix}: dead letters recorded\"\n  combiner              = \"OR\"\n  notification_channels = []"), "alert-channels", "dead_letters"},

		// Wiring and least privilege.
		{"topic as a literal", "functions.tf", replaceOnce("ONCESYNC_TOPIC_EXPAND       = google_pubsub_topic.expand.name\n      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name\n      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name\n      ONCESYNC_DEFAULT_CHUNK_SIZE", "ONCESYNC_TOPIC_EXPAND       = \"oncesync-expand\"\n      ONCESYNC_TOPIC_CHUNKS       = google_pubsub_topic.chunks.name\n      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name\n      ONCESYNC_DEFAULT_CHUNK_SIZE"), "topic-ref", config.EnvTopicExpand},
		{"importer triggered by the wrong topic", "functions.tf", replaceOnce("pubsub_topic          = google_pubsub_topic.chunks.id", "pubsub_topic          = google_pubsub_topic.expand.id"), "wiring", config.EnvTopicChunks},
		{"bulk importer triggered by the standard lane", "functions.tf", replaceOnce("pubsub_topic          = google_pubsub_topic.chunks_bulk.id", "pubsub_topic          = google_pubsub_topic.chunks.id"), "wiring", config.EnvTopicBulk},
		{"bulk lane's topic not published to", "functions.tf", replaceOnce("      ONCESYNC_TOPIC_CHUNKS_BULK  = google_pubsub_topic.chunks_bulk.name\n      ONCESYNC_BULK_AFTER", "      ONCESYNC_BULK_AFTER"), "env-missing", config.EnvTopicBulk},
		{"tick job feeds the wrong topic", "scheduler.tf", replaceOnce("topic_name = google_pubsub_topic.ticks.id", "topic_name = google_pubsub_topic.expand.id"), "scheduler-job", config.Scheduler},
		{"dead-letter subscription removed", "pubsub.tf", removeResource(tSubscription, "deadletters"), "deadletter-subscription", "deadletters"},
		{"dead-letter subscription expires", "pubsub.tf", replaceOnce(`ttl = "" # never expire`, `ttl = "2678400s" #`), "deadletter-subscription", "deadletters"},
		{"publisher binding missing", "iam.tf", removeResource("google_pubsub_topic_iam_member", "scheduler_expand"), "publisher-missing", "expand"},
		{"publisher on a topic it does not publish to", "iam.tf", appendText(`
resource "google_pubsub_topic_iam_member" "importer_chunks" {
  topic  = google_pubsub_topic.chunks.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.importer.email}"
}
`), "publisher-extra", "chunks"},
		{"project-wide publisher", "iam.tf", appendText(`
resource "google_project_iam_member" "scheduler_publisher" {
  project = var.project
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}
`), "iam-project-role", "roles/pubsub.publisher"},
		{"editor for a function", "iam.tf", replaceOnce("role    = \"roles/datastore.user\"\n  member  = \"serviceAccount:${google_service_account.importer.email}\"", "role    = \"roles/editor\"\n  member  = \"serviceAccount:${google_service_account.importer.email}\""), "iam-basic-role", "roles/editor"},
		{"Firestore access missing", "iam.tf", removeResource("google_project_iam_member", "expander_firestore"), "firestore-access", "expander"},
		{"secret accessor missing", "credentials.tf", removeResource("google_secret_manager_secret_iam_member", "expander_credentials_keyset"), "secret-access", "credentials_keyset"},
		{"secret value in state", "credentials.tf", appendText(`
resource "google_secret_manager_secret_version" "credentials_keyset" {
  secret      = google_secret_manager_secret.credentials_keyset.id
  secret_data = "not-here"
}
`), "secret-in-state", "credentials_keyset"},
		{"trigger invokes another function", "iam.tf", replaceOnce("name     = google_cloudfunctions2_function.expander.name", "name     = google_cloudfunctions2_function.importer.name"), "invoker-foreign", "Expander"},
		{"trigger cannot invoke its function", "iam.tf", removeResource("google_cloud_run_v2_service_iam_member", "scheduler_trigger_invoker"), "invoker-missing", "scheduler_trigger"},
		{"trigger account shared", "functions.tf", replaceOnce("service_account_email = google_service_account.importer_trigger.email", "service_account_email = google_service_account.expander_trigger.email"), "trigger-sa", "expander_trigger"},
		{"ingress open", "functions.tf", replaceOnce("ALLOW_INTERNAL_ONLY\"\n    all_traffic_on_latest_revision   = true\n    timeout_seconds                  = var.importer.", "ALLOW_ALL\"\n    all_traffic_on_latest_revision   = true\n    timeout_seconds                  = var.importer."), "ingress", "ALLOW_ALL"},
		{"timeout hard-coded", "functions.tf", replaceOnce("timeout_seconds                  = var.expander.timeout_seconds", "timeout_seconds                  = 60"), "limits", "timeout_seconds"},
		{"event type changed", "functions.tf", replaceOnce("event_type            = \"google.cloud.pubsub.topic.v1.messagePublished\"\n    pubsub_topic          = google_pubsub_topic.ticks.id", "event_type            = \"google.cloud.storage.object.v1.finalized\"\n    pubsub_topic          = google_pubsub_topic.ticks.id"), "trigger", "finalized"},
		{"harness shipped in the zip", "source.tf", shipAlso("harness/sim/env.go"), "source", "harness/sim/env.go"},
		{"operator code shipped in the zip", "source.tf", shipAlso("shared/ops/audit/audit.go"), "source", "shared/ops/audit/audit.go, which the functions do not build"},
		{"bin/ and docs/ shipped in the zip", "source.tf", shipAlso("Makefile", "docs/design.md"), "source", "Makefile"},
		{"tests shipped in the zip", "source.tf", shipAlso("shared/idem/idem_test.go"), "source", "_test.go"},
		{"test data shipped in the zip", "source.tf", shipAlso("shared/delivery/testdata/fuzz/FuzzDecode/seed"), "source", "testdata/fuzz/"},
		{"a package the build imports left out", "source.tf", replaceOnce(`jsondecode(file("${path.module}/source-files.json"))`,
			`[for f in jsondecode(file("${path.module}/source-files.json")) : f if !startswith(f, "shared/delivery/")]`), "source", "lacks shared/delivery/delivery.go"},
		{"budget range wider than the code's", "variables.tf", replaceOnce(`var.expansion_budget_percent <= 80`, `var.expansion_budget_percent <= 95`), "config-range", "ONCESYNC_BUDGET_PERCENT"},
		{"chunk size range wider than the code's", "variables.tf", replaceOnce(`var.chunk_size <= 5000`, `var.chunk_size <= 9000`), "config-range", "outside the code's range 1..5000"},
		{"a bound dropped", "variables.tf", replaceOnce(`var.max_slices >= 1 && var.max_slices <= 999`, `var.max_slices >= 1`), "config-range", "max_slices"},
		{"a duration's floor dropped", "variables.tf", replaceOnce(`var.max_delivery_age_minutes >= 1 &&`, `var.max_delivery_age_minutes >= 0 &&`), "config-range", "ONCESYNC_MAX_DELIVERY_AGE"},
		{"a connector terraform does not offer", "variables.tf", replaceOnce(`contains(["salesforce"], var.source_kind)`, `contains(["hubspot"], var.source_kind)`), "connector-bounds", "salesforce"},
		{"page size past the connector's", "variables.tf", replaceOnce(`var.page_size <= 2000`, `var.page_size <= 5000`), "connector-bounds", "past the connector's pages"},
		{"more searches than the connector runs", "variables.tf", replaceOnce(`var.search_concurrency <= 10`, `var.search_concurrency <= 50`), "connector-bounds", "more searches"},
		{"the whole tree zipped", "source.tf", replaceOnce(`  type        = "zip"`, `  type        = "zip"
  source_dir  = "${path.module}/.."`), "source", "source_dir"},
		{"page size the connector refuses", "functions.tf", replaceOnce(`ONCESYNC_PAGE_SIZE        = tostring(var.page_size)`, `ONCESYNC_PAGE_SIZE        = "100"`), "config-load", "page size 100"},
		{"a connector oncesync does not have", "functions.tf", replaceOnce(`ONCESYNC_SOURCE_KIND      = var.source_kind`, `ONCESYNC_SOURCE_KIND      = "hubspot"`), "config-load", "hubspot"},
		{"value the code rejects", "functions.tf", replaceOnce(`ONCESYNC_LEASE             = "${var.lease_minutes}m"`, `ONCESYNC_LEASE             = "${var.lease_minutes} minutes"`), "config-load", config.EnvLease},
		{"variable without description", "variables.tf", replaceOnce(`  description = "IANA time zone the schedule is read in."`+"\n", ""), "variable-doc", "time_zone"},
		{"required variable missing from the example", "terraform.tfvars.example", replaceOnce(`project = "my-oncesync-prod"`, ""), "tfvars-example", "project"},
		{"function replicated with count", "functions.tf", replaceOnce("name        = \"${var.name_prefix}-importer\"", "name        = \"${var.name_prefix}-importer\"\n  count       = 1"), "static", "count"},
	}

	for _, mu := range mutations {
		t.Run(mu.name, func(t *testing.T) { mu.run(t, func(dir string) []Finding { return Check(dir, code) }) })
	}
}

// Code-side drift: the same configuration checked against code that changed.
func TestCheckCatchesCodeChanges(t *testing.T) {
	changes := []struct {
		name   string
		change func(*Code)
		check  string
		about  string
	}{
		{"new entry point in code", func(c *Code) { c.EntryPoints = append(c.EntryPoints, "Reporter") }, "entrypoint-missing", "Reporter"},
		{"registration and config disagree", func(c *Code) { c.ConfigEntryPoints = c.ConfigEntryPoints[:2] }, "entrypoint-code", "config.EntryPoints"},
		{"go.mod bumped", func(c *Code) { c.Runtime = "go127" }, "runtime", "go127"},
		{"TTL field renamed in code", func(c *Code) { c.TTLField = "expiresAt" }, "ttl-missing", "expiresAt"},
		{"new TTL collection", func(c *Code) { c.TTLCollections = append(c.TTLCollections, model.DeadLetters) }, "ttl-missing", model.DeadLetters},
		{"new query index", func(c *Code) {
			c.Indexes = append(c.Indexes, model.Index{Collection: model.DeadLetters, Fields: []string{"jobId", "lastAt"}})
		}, "index-missing", "deadLetters[COLLECTION](jobId ASCENDING, lastAt ASCENDING)"},
		{"new variable", func(c *Code) {
			c.Vars = append(c.Vars, config.Var{Name: "ONCESYNC_NEW", Functions: []string{config.Importer}})
		}, "env-missing", "ONCESYNC_NEW"},
		{"new metric in code", func(c *Code) { c.Metrics = append(c.Metrics, "oncesync.records.rewritten") }, "metric-not-on-dashboard", "oncesync.records.rewritten"},
		{"metric renamed in code", func(c *Code) {
			c.Metrics = slices.DeleteFunc(c.Metrics, func(n string) bool { return n == "oncesync.dead_letters" })
		}, "metric-unknown", "oncesync.dead_letters"},
		{"variable becomes a secret", func(c *Code) {
			for i := range c.Vars {
				if c.Vars[i].Name == config.EnvSourceKind {
					c.Vars[i].Secret = true
				}
			}
		}, "secret-plain", config.EnvSourceKind},
		{"a secret file becomes a secret variable", func(c *Code) {
			for i := range c.Vars {
				if c.Vars[i].Name == config.EnvKeyset {
					c.Vars[i].File = false
				}
			}
		}, "secret-plain", config.EnvKeyset},
	}
	for _, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			code := loadCode(t)
			ch.change(&code)
			got := Check(".", code)
			t.Logf("findings:\n%s", list(got))
			if !slices.ContainsFunc(got, func(f Finding) bool {
				return f.Check == ch.check && strings.Contains(f.Subject+" "+f.Message, ch.about)
			}) {
				t.Errorf("no %q finding about %q; got:\n%s", ch.check, ch.about, list(got))
			}
		})
	}
}

// --- Helpers ------------------------------------------------------------------------------------

// copyConfig copies this directory's configuration into a temporary directory.
// run applies mu to a copy of the configuration and asserts that check, run on the copy, reports
// mu's finding.
func (mu mutation) run(t *testing.T, check func(dir string) []Finding) {
	t.Helper()
	dir := copyConfig(t)
	src, err := os.ReadFile(filepath.Join(dir, mu.file))
	if err != nil {
		t.Fatal(err)
	}
	mutated := mu.edit(t, string(src))
	if mutated == string(src) {
		t.Fatal("the mutation changed nothing")
	}
	write(t, dir, mu.file, mutated)
	got := check(dir)
	t.Logf("findings:\n%s", list(got))
	if !slices.ContainsFunc(got, func(f Finding) bool {
		return f.Check == mu.check && strings.Contains(f.Subject+" "+f.Message, mu.about)
	}) {
		t.Errorf("no %q finding about %q; got:\n%s", mu.check, mu.about, list(got))
	}
}

func copyConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	names, err := filepath.Glob("*.tf")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append(names, "terraform.tfvars.example") {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, name, string(data))
	}
	return dir
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func list(fs []Finding) string {
	if len(fs) == 0 {
		return "  (no findings)"
	}
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

// replaceOnce replaces old, which must occur exactly once, so a mutation can never silently
// miss after the configuration is edited. Runs of spaces in old match any run of blanks, so
// `terraform fmt` realigning the "=" signs does not break the mutations.
func replaceOnce(old, new string) func(*testing.T, string) string {
	return func(t *testing.T, src string) string {
		t.Helper()
		var pat strings.Builder
		for i, part := range strings.Split(old, " ") {
			if i > 0 {
				pat.WriteString(`[ \t]*`)
			}
			pat.WriteString(regexp.QuoteMeta(part))
		}
		re := regexp.MustCompile(pat.String())
		locs := re.FindAllStringIndex(src, -1)
		if len(locs) != 1 {
			t.Fatalf("mutation target %q occurs %d times, want 1", old, len(locs))
		}
		return src[:locs[0][0]] + new + src[locs[0][1]:]
	}
}

// removeMatch removes the one match of the regular expression.
func removeMatch(expr string) func(*testing.T, string) string {
	return func(t *testing.T, src string) string {
		t.Helper()
		re := regexp.MustCompile(expr)
		if n := len(re.FindAllStringIndex(src, -1)); n != 1 {
			t.Fatalf("mutation pattern %q matches %d times, want 1", expr, n)
		}
		return re.ReplaceAllString(src, "\n")
	}
}

// resourceBlock returns the text of a top-level resource block (from its header to the closing
// brace at the start of a line).
func resourceBlock(t *testing.T, src, typ, name string) string {
	t.Helper()
	header := `resource "` + typ + `" "` + name + `" {`
	start := strings.Index(src, header)
	if start < 0 {
		t.Fatalf("no %s.%s in the file", typ, name)
	}
	end := strings.Index(src[start:], "\n}\n")
	if end < 0 {
		t.Fatalf("%s.%s has no closing brace", typ, name)
	}
	return src[start : start+end+3]
}

func removeResource(typ, name string) func(*testing.T, string) string {
	return func(t *testing.T, src string) string {
		t.Helper()
		return strings.Replace(src, resourceBlock(t, src, typ, name), "", 1)
	}
}

// addResourceCopy appends a copy of a resource under a new name, with old replaced by new in it.
func addResourceCopy(typ, name, newName, old, new string) func(*testing.T, string) string {
	return func(t *testing.T, src string) string {
		t.Helper()
		b := resourceBlock(t, src, typ, name)
		b = strings.Replace(b, `"`+name+`" {`, `"`+newName+`" {`, 1)
		if !strings.Contains(b, old) {
			t.Fatalf("%s.%s does not contain %q", typ, name, old)
		}
		return src + "\n" + strings.ReplaceAll(b, old, new)
	}
}

func appendText(text string) func(*testing.T, string) string {
	return func(_ *testing.T, src string) string { return src + text }
}

// shipAlso is a mutation of source.tf that adds files to the zip's list.
func shipAlso(files ...string) func(t *testing.T, src string) string {
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = strconv.Quote(f)
	}
	return replaceOnce(`jsondecode(file("${path.module}/source-files.json"))`,
		`concat(jsondecode(file("${path.module}/source-files.json")), [`+strings.Join(quoted, ", ")+`])`)
}

var updateSourceFiles = flag.Bool("update-source-files", false, "rewrite source-files.json from go list -deps of the root package")

// TestSourceFilesAreWhatTheFunctionsBuild: source-files.json, the zip's list, is exactly what `go
// list -deps` of the root package builds (make source-files rewrites it), and none of it is the
// operator's code, the harness or a test.
func TestSourceFilesAreWhatTheFunctionsBuild(t *testing.T) {
	code := loadCode(t)
	if *updateSourceFiles {
		b, err := json.MarshalIndent(code.BuildFiles, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("source-files.json", append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("source-files.json")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := json.Unmarshal(b, &listed); err != nil {
		t.Fatalf("source-files.json: %v", err)
	}
	if diff := cmp.Diff(code.BuildFiles, listed); diff != "" {
		t.Errorf("source-files.json is not what the functions build (-go list -deps +listed); run make source-files:\n%s", diff)
	}
	for _, f := range listed {
		if strings.HasPrefix(f, "shared/ops/") || strings.HasPrefix(f, "harness/") || strings.HasSuffix(f, "_test.go") || strings.Contains(f, "sourcetest") {
			t.Errorf("the functions build %s: operator code, the harness and test kits must stay out of what they import", f)
		}
	}
}
