package terraform

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/oncesync/oncesync/shared/config"
)

func (m *module) checkEntryPoints(code Code) {
	if !sameSet(code.EntryPoints, code.ConfigEntryPoints) {
		m.add("entrypoint-code", "functions.go", nil, "the root package registers %v but config.EntryPoints lists %v", code.EntryPoints, code.ConfigEntryPoints)
	}
	deployed := map[string]*block{}
	for _, b := range m.resources[tFunction] {
		if ep, ok := m.attrStr(b.body, "build_config", "entry_point"); ok {
			deployed[ep] = b
		}
	}
	for _, ep := range code.EntryPoints {
		if deployed[ep] == nil {
			m.add("entrypoint-missing", ep, nil, "entry point %q is registered in code but no %s deploys it", ep, tFunction)
		}
	}
	for ep, b := range deployed {
		if !slices.Contains(code.EntryPoints, ep) {
			m.add("entrypoint-unknown", b.addr(), &b.rng, "entry point %q is not registered in code (registered: %v)", ep, code.EntryPoints)
		}
	}
}

func (m *module) checkFunctions(code Code, fns map[string]*deployment) {
	runtimeSAs, triggerSAs := map[string]string{}, map[string]string{}
	for _, ep := range sortedKeys(fns) {
		fn := fns[ep]
		subj := fn.addr()
		if rt, _ := m.attrStr(fn.body, "build_config", "runtime"); rt != code.Runtime {
			m.add("runtime", subj, &fn.rng, "build_config.runtime is %q; go.mod needs %q", rt, code.Runtime)
		}
		if ing, _ := m.attrStr(fn.body, "service_config", "ingress_settings"); ing != ingress {
			m.add("ingress", subj, &fn.rng, "service_config.ingress_settings is %q, want %q", ing, ingress)
		}
		for _, a := range []string{"timeout_seconds", "available_memory", "max_instance_count", "max_instance_request_concurrency"} {
			at := attr(fn.body, "service_config", a)
			if at == nil || !slices.ContainsFunc(m.refs(at.Expr), func(r ref) bool { return r.typ == "var" }) {
				m.add("limits", subj, &fn.rng, "service_config.%s must be set from a variable", a)
			}
		}

		// Trigger.
		trig := blocks(fn.body, "event_trigger")
		if len(trig) == 0 {
			m.add("trigger", subj, &fn.rng, "no event_trigger: the function would never receive its messages")
		} else {
			if et, _ := m.attrStr(trig[0].Body, "event_type"); et != pubsubEvent {
				m.add("trigger", subj, ptr(trig[0].DefRange()), "event_trigger.event_type is %q, want %q", et, pubsubEvent)
			}
			switch rp, ok := m.attrStr(trig[0].Body, "retry_policy"); {
			case !ok:
				m.add("retry-policy", subj, ptr(trig[0].DefRange()), "event_trigger has no retry_policy; want %q: without retries a failed message is dropped", retryPolicy)
			case rp != retryPolicy:
				m.add("retry-policy", subj, ptr(trig[0].DefRange()), "event_trigger.retry_policy is %q, want %q: without retries a failed message is dropped", rp, retryPolicy)
			}
			if fn.topic == "" || !m.declared(tTopic, fn.topic) {
				m.add("trigger-topic", subj, ptr(trig[0].DefRange()), "event_trigger.pubsub_topic must refer to a declared %s", tTopic)
			}
			switch {
			case fn.triggerSA == "" || !m.declared(tSA, fn.triggerSA):
				m.add("trigger-sa", subj, ptr(trig[0].DefRange()), "event_trigger.service_account_email must refer to a declared %s of its own", tSA)
			case fn.triggerSA == fn.runtimeSA:
				m.add("trigger-sa", subj, ptr(trig[0].DefRange()), "the trigger and the function share %s.%s", tSA, fn.triggerSA)
			case triggerSAs[fn.triggerSA] != "":
				m.add("trigger-sa", subj, ptr(trig[0].DefRange()), "trigger service account %s.%s is shared with %s", tSA, fn.triggerSA, triggerSAs[fn.triggerSA])
			}
			triggerSAs[fn.triggerSA] = ep
		}

		// Runtime identity.
		switch {
		case fn.runtimeSA == "" || !m.declared(tSA, fn.runtimeSA):
			m.add("runtime-sa", subj, &fn.rng, "service_config.service_account_email must refer to a declared %s of its own", tSA)
		case runtimeSAs[fn.runtimeSA] != "":
			m.add("runtime-sa", subj, &fn.rng, "service account %s.%s is shared with %s", tSA, fn.runtimeSA, runtimeSAs[fn.runtimeSA])
		}
		runtimeSAs[fn.runtimeSA] = ep

		// Environment.
		want := varsFor(code.Vars, ep)
		for _, name := range want {
			_, plain := fn.env[name]
			_, secret := fn.secretEnv[name]
			if !plain && !secret {
				m.add("env-missing", subj, &fn.rng, "%s is read by %s (shared/config) but not set", name, ep)
			}
		}
		for _, name := range sortedKeys(fn.env) {
			if !slices.Contains(want, name) {
				m.add("env-extra", subj, ptr(fn.env[name].rng), "%s is set but %s does not read it (shared/config)", name, ep)
			}
		}
		for _, name := range sortedKeys(fn.secretEnv) {
			if !slices.Contains(want, name) {
				m.add("env-extra", subj, ptr(fn.secretEnv[name].DefRange()), "secret %s is mounted but %s does not read it (shared/config)", name, ep)
			}
			if _, plain := fn.env[name]; plain {
				m.add("env-duplicate", subj, ptr(fn.env[name].rng), "%s is set both as a plain and as a secret variable", name)
			}
		}
		for _, v := range code.Vars {
			if !v.Secret || !slices.Contains(v.Functions, ep) {
				continue
			}
			// A secret is a secret environment variable, or a plain variable naming a file that a
			// secret volume mounts (v.File).
			s, mounted := fn.secretEnv[v.Name]
			if e, plain := fn.env[v.Name]; plain {
				path, literal := m.str(e.expr)
				vol, ok := fn.secretFiles[path]
				switch {
				case v.File && literal && ok:
					s, mounted = vol, true
				case v.File:
					m.add("secret-plain", subj, &e.rng, "%s names a secret file: it must be a path a secret_volumes block mounts from Secret Manager", v.Name)
				default:
					m.add("secret-plain", subj, &e.rng, "%s is a secret: mount it with secret_environment_variables from Secret Manager, never as a plain value", v.Name)
				}
			}
			if mounted {
				a := s.Body.Attributes["secret"]
				name, ok := "", false
				if a != nil {
					name, ok = m.resourceRef(a.Expr, tSecret)
				}
				if !ok || !m.declared(tSecret, name) {
					m.add("secret-ref", subj, ptr(s.DefRange()), "the secret of %s must refer to a declared %s", v.Name, tSecret)
				} else if !m.hasBinding("google_secret_manager_secret_iam_member", name, fn.runtimeSA, "roles/secretmanager.secretAccessor") {
					m.add("secret-access", subj, ptr(s.DefRange()), "%s.%s has no roles/secretmanager.secretAccessor on %s.%s", tSA, fn.runtimeSA, tSecret, name)
				}
			}
		}

		// Topics it publishes to.
		published := map[string]bool{}
		for _, name := range sortedKeys(fn.env) {
			if !strings.HasPrefix(name, topicEnvPref) {
				continue
			}
			e := fn.env[name]
			topic, ok := m.resourceRef(e.expr, tTopic)
			switch {
			case !ok:
				m.add("topic-ref", subj, &e.rng, "%s must refer to a %s (google_pubsub_topic.<name>.name), not a literal", name, tTopic)
			case !m.declared(tTopic, topic):
				m.add("topic-undeclared", subj, &e.rng, "%s refers to %s.%s, which is not declared", name, tTopic, topic)
			default:
				published[topic] = true
				if !m.hasBinding("google_pubsub_topic_iam_member", topic, fn.runtimeSA, "roles/pubsub.publisher") {
					m.add("publisher-missing", subj, &e.rng, "%s.%s has no roles/pubsub.publisher on %s.%s (%s)", tSA, fn.runtimeSA, tTopic, topic, name)
				}
			}
		}
		for _, b := range m.iamGrants() {
			if b.resourceType == "google_pubsub_topic_iam_member" && b.member == fn.runtimeSA && !published[b.target] {
				m.add("publisher-extra", b.addr, &b.rng, "%s.%s may publish to %s.%s, which %s does not publish to", tSA, fn.runtimeSA, tTopic, b.target, ep)
			}
		}
	}
}

func varsFor(vars []config.Var, ep string) []string {
	var out []string
	for _, v := range vars {
		if slices.Contains(v.Functions, ep) {
			out = append(out, v.Name)
		}
	}
	return out
}

// checkWiring follows the pipeline: each topic variable must be the trigger topic of the
// function that consumes it, the tick job must feed the Scheduler, dead letters must be kept.
func (m *module) checkWiring(fns map[string]*deployment) {
	for _, ep := range sortedKeys(fns) {
		fn := fns[ep]
		for env, consumer := range consumers {
			e, ok := fn.env[env]
			if !ok {
				continue
			}
			topic, _ := m.resourceRef(e.expr, tTopic)
			c := fns[consumer]
			if topic != "" && c != nil && c.topic != topic {
				m.add("wiring", fn.addr(), &e.rng, "%s publishes to %s.%s but %s is triggered by %s.%s", env, tTopic, topic, consumer, tTopic, c.topic)
			}
		}
	}
	if s := fns[config.Scheduler]; s != nil && s.topic != "" {
		jobs := m.resources["google_cloud_scheduler_job"]
		feeds := false
		for _, j := range jobs {
			if a := attr(j.body, "pubsub_target", "topic_name"); a != nil {
				if t, _ := m.resourceRef(a.Expr, tTopic); t == s.topic {
					feeds = true
				}
			}
		}
		if !feeds {
			m.add("scheduler-job", tTopic+"."+s.topic, nil, "no google_cloud_scheduler_job publishes to the topic that triggers %s", config.Scheduler)
		}
	}

	dead := map[string]bool{}
	for _, fn := range fns {
		if e, ok := fn.env[config.EnvTopicDead]; ok {
			if t, ok := m.resourceRef(e.expr, tTopic); ok {
				dead[t] = true
			}
		}
	}
	for _, topic := range sortedKeys(dead) {
		for _, fn := range fns {
			if fn.topic == topic {
				m.add("deadletter-subscription", fn.addr(), &fn.rng, "%s is triggered by the dead-letter topic: dead letters would be consumed, not kept", fn.entryPoint)
			}
		}
		kept := false
		for _, s := range m.resources[tSubscription] {
			a := s.body.Attributes["topic"]
			if a == nil {
				continue
			}
			if t, _ := m.resourceRef(a.Expr, tTopic); t != topic {
				continue
			}
			pushes := len(blocks(s.body, "push_config"))+len(blocks(s.body, "bigquery_config"))+len(blocks(s.body, "cloud_storage_config")) > 0
			_, retains := s.body.Attributes["message_retention_duration"]
			ttl, hasTTL := m.attrStr(s.body, "expiration_policy", "ttl")
			if !pushes && retains && hasTTL && ttl == "" {
				kept = true
			}
		}
		if !kept {
			m.add("deadletter-subscription", tTopic+"."+topic, nil, "the dead-letter topic needs a pull subscription with message_retention_duration and expiration_policy { ttl = \"\" }, or nothing keeps its messages")
		}
	}
}

// --- IAM ----------------------------------------------------------------------------------------

// grant is one member of one IAM resource.
type grant struct {
	addr         string
	resourceType string
	role         string
	member       string // google_service_account name, or "" for other members
	memberText   string
	target       string // referenced resource name of the target type, if any
	rng          hcl.Range
}

// iamTargets names, per IAM resource type, the attribute holding the resource it grants on
// ("" for the project).
var iamTargets = map[string]string{
	"google_pubsub_topic_iam_member":                 "topic",
	"google_pubsub_topic_iam_binding":                "topic",
	"google_secret_manager_secret_iam_member":        "secret_id",
	"google_secret_manager_secret_iam_binding":       "secret_id",
	"google_cloud_run_v2_service_iam_member":         "name",
	"google_cloud_run_v2_service_iam_binding":        "name",
	"google_cloud_run_service_iam_member":            "service",
	"google_cloud_run_service_iam_binding":           "service",
	"google_cloudfunctions2_function_iam_member":     "cloud_function",
	"google_cloudfunctions2_function_iam_binding":    "cloud_function",
	"google_project_iam_member":                      "",
	"google_project_iam_binding":                     "",
	"google_service_account_iam_member":              "service_account_id",
	"google_storage_bucket_iam_member":               "bucket",
	"google_artifact_registry_repository_iam_member": "repository",
}

// targetTypes is the resource type an iamTargets attribute refers to.
var targetTypes = map[string]string{
	"topic":              tTopic,
	"secret_id":          tSecret,
	"name":               tFunction,
	"service":            tFunction,
	"cloud_function":     tFunction,
	"service_account_id": tSA,
	"bucket":             "google_storage_bucket",
	"repository":         "google_artifact_registry_repository",
}

// iamGrants lists every member of every additive or authoritative IAM resource.
func (m *module) iamGrants() []grant {
	var out []grant
	for _, typ := range sortedKeys(m.resources) {
		if !strings.Contains(typ, "_iam_") {
			continue
		}
		for _, b := range m.resources[typ] {
			role, _ := m.attrStr(b.body, "role")
			target := ""
			if t, ok := iamTargets[typ]; ok && t != "" {
				if a := b.body.Attributes[t]; a != nil {
					target, _ = m.resourceRef(a.Expr, targetTypes[t])
				}
			}
			var members []hclsyntax.Expression
			if a := b.body.Attributes["member"]; a != nil {
				members = append(members, a.Expr)
			}
			if a := b.body.Attributes["members"]; a != nil {
				if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
					members = append(members, tup.Exprs...)
				} else {
					members = append(members, a.Expr)
				}
			}
			for _, mem := range members {
				g := grant{addr: b.addr(), resourceType: typ, role: role, target: target, rng: b.rng}
				g.member, _ = m.resourceRef(mem, tSA)
				g.memberText, _ = m.str(mem)
				out = append(out, g)
			}
		}
	}
	return out
}

// hasBinding reports whether service account sa holds role on target through an IAM resource of
// type typ (or its _binding form).
func (m *module) hasBinding(typ, target, sa, role string) bool {
	return slices.ContainsFunc(m.iamGrants(), func(g grant) bool {
		return (g.resourceType == typ || g.resourceType == strings.Replace(typ, "_member", "_binding", 1)) &&
			g.target == target && g.member == sa && sa != "" && g.role == role
	})
}

func (m *module) checkIAM(fns map[string]*deployment) {
	runtimeSAs, triggerOf := map[string]bool{}, map[string]string{} // trigger SA -> entry point
	buildSAs := map[string]bool{}
	for ep, fn := range fns {
		runtimeSAs[fn.runtimeSA] = true
		if fn.triggerSA != "" {
			triggerOf[fn.triggerSA] = ep
		}
		if a := attr(fn.body, "build_config", "service_account"); a != nil {
			if sa, ok := m.resourceRef(a.Expr, tSA); ok {
				buildSAs[sa] = true
			}
		}
	}

	for _, typ := range []string{"google_project_iam_binding", "google_project_iam_policy"} {
		for _, b := range m.resources[typ] {
			m.add("iam-authoritative", b.addr(), &b.rng, "%s replaces every other member of the role; use google_project_iam_member", typ)
		}
	}
	for _, b := range m.resources["google_secret_manager_secret_version"] {
		if _, ok := b.body.Attributes["secret_data"]; ok {
			m.add("secret-in-state", b.addr(), &b.rng, "secret_data puts the secret's value in the plan and the state; add versions with gcloud")
		}
	}
	grants := m.iamGrants()
	for _, g := range grants {
		if slices.Contains(basicRoles, g.role) {
			m.add("iam-basic-role", g.addr, &g.rng, "basic role %s grants far more than any function needs", g.role)
		}
		if strings.HasPrefix(g.resourceType, "google_project_iam_") {
			allowed := []string(nil)
			switch {
			case runtimeSAs[g.member]:
				allowed = runtimeProjectRoles
			case buildSAs[g.member]:
				allowed = buildProjectRoles
			}
			if !slices.Contains(allowed, g.role) {
				who := g.memberText
				if g.member != "" {
					who = tSA + "." + g.member
				}
				m.add("iam-project-role", g.addr, &g.rng, "project-wide %s for %s: grant it on the one resource that needs it", g.role, cmp.Or(who, "a member"))
			}
		}
		if g.role == "roles/run.invoker" || g.role == "roles/cloudfunctions.invoker" {
			if ep, isTrigger := triggerOf[g.member]; isTrigger && g.target != fns[ep].name {
				m.add("invoker-foreign", g.addr, &g.rng, "the %s trigger account may invoke %s, not only its own function", ep, cmp.Or(g.target, "a resource that is not its function"))
			}
		}
	}
	for _, ep := range sortedKeys(fns) {
		fn := fns[ep]
		if fn.runtimeSA != "" && !slices.ContainsFunc(grants, func(g grant) bool {
			return g.resourceType == "google_project_iam_member" && g.member == fn.runtimeSA && g.role == "roles/datastore.user"
		}) {
			m.add("firestore-access", fn.addr(), &fn.rng, "%s.%s has no roles/datastore.user", tSA, fn.runtimeSA)
		}
		if fn.triggerSA != "" && !slices.ContainsFunc(grants, func(g grant) bool {
			return g.member == fn.triggerSA && g.target == fn.name && targetTypes[iamTargets[g.resourceType]] == tFunction &&
				(g.role == "roles/run.invoker" || (g.role == "roles/cloudfunctions.invoker" && strings.HasPrefix(g.resourceType, "google_cloudfunctions2")))
		}) {
			m.add("invoker-missing", fn.addr(), &fn.rng, "trigger account %s.%s has no roles/run.invoker on this function's service", tSA, fn.triggerSA)
		}
	}
}

// checkPublic fails on any allUsers / allAuthenticatedUsers anywhere in the configuration.
func (m *module) checkPublic() {
	for _, body := range m.bodies {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			lit, ok := n.(*hclsyntax.LiteralValueExpr)
			if !ok || lit.Val.Type() != cty.String || !lit.Val.IsKnown() || lit.Val.IsNull() {
				return nil
			}
			for _, p := range publicMembers {
				if strings.Contains(lit.Val.AsString(), p) {
					m.add("public", p, ptr(lit.Range()), "%s must not appear anywhere: nothing here is public", p)
				}
			}
			return nil
		})
	}
}

// --- Firestore ----------------------------------------------------------------------------------

func (m *module) checkFirestore(code Code) {
	for _, b := range m.resources["google_firestore_database"] {
		if t, _ := m.attrStr(b.body, "type"); t != "FIRESTORE_NATIVE" {
			m.add("firestore-mode", b.addr(), &b.rng, "type is %q; the code needs a FIRESTORE_NATIVE database", t)
		}
	}

	want := map[string]bool{}
	for _, c := range code.TTLCollections {
		want[c+"."+code.TTLField] = true
	}
	have := map[string]*block{}
	for _, b := range m.resources[tTTLField] {
		if len(blocks(b.body, "ttl_config")) == 0 {
			continue
		}
		c, ok1 := m.attrStr(b.body, "collection")
		f, ok2 := m.attrStr(b.body, "field")
		if !ok1 || !ok2 {
			m.add("ttl-static", b.addr(), &b.rng, "collection and field must be literals")
			continue
		}
		have[c+"."+f] = b
	}
	for _, k := range sortedKeys(want) {
		if have[k] == nil {
			m.add("ttl-missing", k, nil, "model.TTLCollections and model.ExpireAtField need a TTL policy on %s (a %s with ttl_config)", k, tTTLField)
		}
	}
	for _, k := range sortedKeys(have) {
		if !want[k] {
			m.add("ttl-extra", have[k].addr(), &have[k].rng, "TTL policy on %s, which the code does not expire (model.TTLCollections, model.ExpireAtField = %q)", k, code.TTLField)
		}
	}

	wantIdx := map[string]bool{}
	for _, ix := range code.Indexes {
		wantIdx[indexKey(ix.Collection, "COLLECTION", ix.Fields, nil)] = true
	}
	haveIdx := map[string]*block{}
	for _, b := range m.resources[tIndex] {
		c, ok := m.attrStr(b.body, "collection")
		scope, hasScope := m.attrStr(b.body, "query_scope")
		if !hasScope {
			scope = "COLLECTION"
		}
		var fields, orders []string
		for _, f := range blocks(b.body, "fields") {
			p, okp := m.attrStr(f.Body, "field_path")
			o, oko := m.attrStr(f.Body, "order")
			if !oko {
				o = "ARRAY_CONFIG"
			}
			ok = ok && okp
			fields, orders = append(fields, p), append(orders, o)
		}
		if n := len(fields); n > 0 && fields[n-1] == "__name__" {
			fields, orders = fields[:n-1], orders[:n-1]
		}
		if !ok {
			m.add("index-static", b.addr(), &b.rng, "collection and field paths must be literals")
			continue
		}
		haveIdx[indexKey(c, scope, fields, orders)] = b
	}
	for _, k := range sortedKeys(wantIdx) {
		if haveIdx[k] == nil {
			m.add("index-missing", k, nil, "model.CompositeIndexes needs this index; declare it as a %s", tIndex)
		}
	}
	for _, k := range sortedKeys(haveIdx) {
		if !wantIdx[k] {
			m.add("index-extra", haveIdx[k].addr(), &haveIdx[k].rng, "index %s is not in model.CompositeIndexes", k)
		}
	}
}

func indexKey(collection, scope string, fields, orders []string) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		o := "ASCENDING"
		if orders != nil {
			o = orders[i]
		}
		parts[i] = f + " " + o
	}
	return fmt.Sprintf("%s[%s](%s)", collection, scope, strings.Join(parts, ", "))
}

// --- Source, variables, rendered environment ---------------------------------------------------

func (m *module) checkSource(code Code, fns map[string]*deployment) {
	objects := map[string]bool{}
	for _, ep := range sortedKeys(fns) {
		fn := fns[ep]
		a := attr(fn.body, "build_config", "source", "storage_source", "object")
		obj, ok := "", false
		if a != nil {
			obj, ok = m.resourceRef(a.Expr, "google_storage_bucket_object")
		}
		if !ok {
			m.add("source", fn.addr(), &fn.rng, "build_config.source.storage_source.object must refer to the shared google_storage_bucket_object")
			continue
		}
		objects[obj] = true
	}
	if len(objects) > 1 {
		m.add("source", tFunction, nil, "the functions build from different objects %v; they must share one zip", sortedKeys(objects))
	}
	archives := m.data["archive_file"]
	if len(archives) == 0 {
		m.add("source", "data.archive_file", nil, "no archive_file builds the source zip")
	}
	for _, b := range archives {
		files, err := m.archiveFiles(b)
		if err != nil {
			m.add("source", b.addr(), &b.rng, "%v", err)
			continue
		}
		for _, f := range files {
			if !slices.Contains(code.BuildFiles, f) {
				m.add("source", b.addr(), &b.rng, "the zip would hold %s, which the functions do not build (go list -deps .; make source-files writes the list)", f)
			}
		}
		for _, f := range code.BuildFiles {
			if !slices.Contains(files, f) {
				m.add("source", b.addr(), &b.rng, "the zip lacks %s, which the build needs", f)
			}
		}
	}
}

// archiveFiles returns the files an archive_file zips: the for_each of its dynamic "source"
// blocks, evaluated. Anything else (source_dir, source_file, literal source blocks) is refused:
// the zip must be an allow-list the check can read.
func (m *module) archiveFiles(b *block) ([]string, error) {
	for _, a := range []string{"source_dir", "source_file", "source_content"} {
		if _, ok := b.body.Attributes[a]; ok {
			return nil, fmt.Errorf("%s zips whatever is there; list the files instead (dynamic \"source\" blocks over an allow-list)", a)
		}
	}
	var files []string
	found := false
	for _, d := range b.body.Blocks {
		if d.Type == "source" {
			return nil, errors.New("a literal source block; list the files with one dynamic \"source\" block over an allow-list")
		}
		if d.Type != "dynamic" || len(d.Labels) != 1 || d.Labels[0] != "source" {
			continue
		}
		a := d.Body.Attributes["for_each"]
		if a == nil {
			return nil, errors.New("dynamic \"source\" has no for_each")
		}
		v, diags := a.Expr.Value(m.ctx)
		if diags.HasErrors() || !v.IsWhollyKnown() || !v.CanIterateElements() {
			return nil, fmt.Errorf("dynamic \"source\" for_each cannot be evaluated offline: %s", diags.Error())
		}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.Type() != cty.String {
				return nil, fmt.Errorf("dynamic \"source\" for_each holds %s, want file names", e.Type().FriendlyName())
			}
			files = append(files, e.AsString())
		}
		found = true
	}
	if !found {
		return nil, errors.New("no dynamic \"source\" block lists the files to zip")
	}
	slices.Sort(files)
	return files, nil
}

// checkConnectors holds terraform's connector choices against the connectors the code has: the
// source_kind variable accepts exactly their kinds, page_size exactly the default connector's
// page sizes, and search_concurrency no more searches than it runs at once. Each validation is
// probed with values at and past the bounds.
func (m *module) checkConnectors(code Code) {
	if len(code.Connectors) == 0 {
		return
	}
	probe := func(name string, v cty.Value, want bool, why string) {
		got, err := m.validates(name, v)
		if err != nil {
			m.add("connector-bounds", "var."+name, nil, "%v", err)
			return
		}
		if got != want {
			verb := "refuses"
			if got {
				verb = "accepts"
			}
			m.add("connector-bounds", "var."+name, nil, "its validation %s %s, which %s", verb, v.GoString(), why)
		}
	}
	for _, k := range sortedKeys(code.Connectors) {
		probe("source_kind", cty.StringVal(k), true, "is a connector the code has")
	}
	probe("source_kind", cty.StringVal("no-such-connector"), false, "is no connector the code has")
	def, ok := code.Connectors[config.Default().SourceKind]
	if !ok {
		m.add("connector-bounds", "var.source_kind", nil, "the default connector %q is not registered", config.Default().SourceKind)
		return
	}
	n := func(i int) cty.Value { return cty.NumberIntVal(int64(i)) }
	probe("page_size", n(def.MinPageSize), true, "the connector serves")
	probe("page_size", n(def.MaxPageSize), true, "the connector serves")
	probe("page_size", n(def.MinPageSize-1), false, "is below the connector's pages")
	probe("page_size", n(def.MaxPageSize+1), false, "is past the connector's pages")
	probe("search_concurrency", n(def.MaxConcurrentSearches), true, "the connector runs at once")
	probe("search_concurrency", n(def.MaxConcurrentSearches+1), false, "is more searches than the connector runs at once")
}

// checkRanges holds terraform's variable validations against the configuration table's bounds
// (config.Vars Min and Max): for every bounded variable a function's environment sets from one
// terraform variable (tostring(var.x), "${var.x}m"), the variable's validation must refuse a
// value one of its units past each bound, where config.Load would refuse what it renders. A
// validation stricter than the table is fine.
func (m *module) checkRanges(fns map[string]*deployment) {
	example, _ := m.tfvarsExample()
	checked := map[string]bool{}
	for _, ep := range sortedKeys(fns) {
		fn := fns[ep]
		for _, envName := range sortedKeys(fn.env) {
			v, ok := config.Lookup(envName)
			if !ok || (v.Min == "" && v.Max == "") {
				continue
			}
			var name string
			for _, r := range m.refs(fn.env[envName].expr) {
				if r.typ == "var" && r.attr == "" && name == "" {
					name = r.name
				} else if r.typ == "var" {
					name = "-" // more than one, or an attribute: not a plain mapping
				}
			}
			if name == "" || name == "-" || checked[name+envName] {
				continue
			}
			checked[name+envName] = true
			m.checkRange(fn, envName, v, name, example)
		}
	}
}

// checkRange probes variable name, which sets v through fn's environment entry envName.
func (m *module) checkRange(fn *deployment, envName string, v config.Var, name string, example map[string]cty.Value) {
	render := func(x float64) (string, bool) {
		vals := maps.Clone(example)
		if vals == nil {
			vals = map[string]cty.Value{}
		}
		vals[name] = cty.NumberFloatVal(x)
		return valueString(fn.env[envName].expr, m.evalContext(vals))
	}
	unit, ok := render(1)
	if !ok {
		return // not a number in terraform
	}
	scale, err := numeric(v, unit)
	if err != nil || scale <= 0 {
		return
	}
	for _, b := range []struct {
		bound string
		step  float64
	}{{v.Min, -1}, {v.Max, 1}} {
		if b.bound == "" {
			continue
		}
		at, err := numeric(v, b.bound)
		if err != nil {
			m.add("config-range", "var."+name, nil, "%s's bound %q: %v", v.Name, b.bound, err)
			continue
		}
		edge := at / scale
		if b.step < 0 {
			edge = math.Ceil(edge)
		} else {
			edge = math.Floor(edge)
		}
		p := edge + b.step
		s, ok := render(p)
		if !ok || v.Within(s) == nil {
			continue // the code takes it too
		}
		if accepted, err := m.validates(name, cty.NumberFloatVal(p)); err == nil && accepted {
			m.add("config-range", "var."+name, nil, "its validation accepts %v, which renders %s=%q, outside the code's range %s..%s",
				p, envName, s, v.Min, v.Max)
		}
	}
}

// numeric is s, a value of v as spelled in the environment, as a number (durations in seconds).
func numeric(v config.Var, s string) (float64, error) {
	var c config.Config
	dst := v.Field(&c)
	switch p := dst.(type) {
	case *int:
		n, err := strconv.Atoi(s)
		return float64(n), err
	case *float64:
		return strconv.ParseFloat(s, 64)
	case *time.Duration:
		d, err := time.ParseDuration(s)
		return d.Seconds(), err
	default:
		return 0, fmt.Errorf("%s is not a number (%T)", v.Name, p)
	}
}

// validates reports whether every validation block of variable name holds for v.
func (m *module) validates(name string, v cty.Value) (bool, error) {
	body := m.variables[name]
	if body == nil {
		return false, fmt.Errorf("no variable %q", name)
	}
	ctx := m.ctx.NewChild()
	ctx.Variables = map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{name: v})}
	ok := true
	for _, b := range body.Blocks {
		if b.Type != "validation" || b.Body.Attributes["condition"] == nil {
			continue
		}
		c, diags := b.Body.Attributes["condition"].Expr.Value(ctx)
		if diags.HasErrors() || !c.IsKnown() || c.IsNull() || c.Type() != cty.Bool {
			return false, fmt.Errorf("variable %q: its validation cannot be evaluated offline: %s", name, diags.Error())
		}
		ok = ok && c.True()
	}
	return ok, nil
}

func (m *module) checkVariables() {
	for _, name := range sortedKeys(m.variables) {
		if d, ok := m.attrStr(m.variables[name], "description"); !ok || strings.TrimSpace(d) == "" {
			m.add("variable-doc", "var."+name, nil, "variable has no description")
		}
	}
	example, err := m.tfvarsExample()
	if err != nil {
		m.add("tfvars-example", "terraform.tfvars.example", nil, "%v", err)
		return
	}
	for _, k := range sortedKeys(example) {
		if m.variables[k] == nil {
			m.add("tfvars-example", "terraform.tfvars.example", nil, "sets %s, which is not a variable", k)
		}
	}
	for _, name := range sortedKeys(m.variables) {
		if _, hasDefault := m.variables[name].Attributes["default"]; !hasDefault {
			if _, ok := example[name]; !ok {
				m.add("tfvars-example", "terraform.tfvars.example", nil, "required variable %s is missing", name)
			}
		}
	}
}

func (m *module) tfvarsExample() (map[string]cty.Value, error) {
	name := filepath.Join(m.dir, "terraform.tfvars.example")
	f, diags := hclparse.NewParser().ParseHCLFile(name)
	if diags.HasErrors() {
		return nil, errors.New(diags.Error())
	}
	out := map[string]cty.Value{}
	for k, a := range f.Body.(*hclsyntax.Body).Attributes {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s: %s", k, diags.Error())
		}
		out[k] = v
	}
	return out, nil
}

// checkConfigLoad renders each function's environment from the variable defaults and the
// example tfvars, and runs it through config.Load: what Terraform deploys must be what the code
// accepts at cold start. Values only known after apply (topic names, the secret) get a
// placeholder.
func (m *module) checkConfigLoad(code Code, fns map[string]*deployment) {
	example, _ := m.tfvarsExample()
	ctx := m.evalContext(example)
	for _, ep := range sortedKeys(fns) {
		if !slices.Contains(code.ConfigEntryPoints, ep) {
			continue
		}
		fn := fns[ep]
		env := map[string]string{}
		for name, e := range fn.env {
			if s, ok := valueString(e.expr, ctx); ok {
				env[name] = s
			} else {
				env[name] = "placeholder"
			}
		}
		for name := range fn.secretEnv {
			env[name] = "placeholder-secret"
		}
		cfg, err := config.Load(ep, func(k string) string { return env[k] })
		if err != nil {
			m.add("config-load", fn.addr(), &fn.rng, "the deployed environment fails config.Load(%q): %v", ep, err)
			continue
		}
		if ep == config.Expander && code.SourceCheck != nil {
			if err := code.SourceCheck(cfg); err != nil {
				m.add("config-load", fn.addr(), &fn.rng, "the connector refuses the deployed source settings: %v", err)
			}
		}
	}
}

// metricRef is a Cloud Monitoring metric of the functions named in the configuration: the
// workload.googleapis.com domain written out, or through local.metric.
var metricRef = regexp.MustCompile(`(?:workload\.googleapis\.com|\$\{local\.metric\})/([A-Za-z0-9_.]+)`)

// checkMonitoring holds the alert policies and the dashboard to the metrics the code emits: every
// metric they name exists (metric-unknown), the dashboard shows every one (its tiles are the keys
// of local.dashboard_metrics: metric-not-on-dashboard), and every alert notifies
// var.notification_channels (alert-channels).
func (m *module) checkMonitoring(code Code) {
	emitted := map[string]bool{}
	for _, name := range code.Metrics {
		emitted[name] = true
	}
	src := func(b *block) string {
		data, err := os.ReadFile(b.body.SrcRange.Filename)
		if err != nil || b.body.SrcRange.End.Byte > len(data) {
			return ""
		}
		return string(data[b.body.SrcRange.Start.Byte:b.body.SrcRange.End.Byte])
	}
	refs := func(b *block, text string) {
		for _, mt := range metricRef.FindAllStringSubmatch(text, -1) {
			if !emitted[mt[1]] {
				m.add("metric-unknown", b.addr(), &b.rng, "names metric %s, which the code does not emit (telemetry.MetricDocs)", mt[1])
			}
		}
	}
	for _, b := range m.resources["google_monitoring_alert_policy"] {
		refs(b, src(b))
		if a, ok := b.body.Attributes["notification_channels"]; !ok || !isVarRef(a.Expr, "notification_channels") {
			m.add("alert-channels", b.addr(), &b.rng, "notification_channels is not var.notification_channels: the alert would notify no one the operator chose")
		}
	}
	dashboards := m.resources["google_monitoring_dashboard"]
	if len(dashboards) == 0 {
		m.add("metric-not-on-dashboard", "google_monitoring_dashboard", nil, "no dashboard shows the functions' metrics")
		return
	}
	shown := map[string]bool{}
	if a, ok := m.locals["dashboard_metrics"]; ok {
		if obj, ok := a.Expr.(*hclsyntax.ObjectConsExpr); ok {
			for _, item := range obj.Items {
				if v, diags := item.KeyExpr.Value(nil); !diags.HasErrors() && v.Type() == cty.String {
					shown[v.AsString()] = true
					if !emitted[v.AsString()] {
						m.add("metric-unknown", "local.dashboard_metrics", &a.SrcRange, "a tile for metric %s, which the code does not emit (telemetry.MetricDocs)", v.AsString())
					}
				}
			}
		}
	}
	for _, b := range dashboards {
		text := src(b)
		refs(b, strings.ReplaceAll(text, "${local.metric}/${name}", ""))
		if !strings.Contains(text, "local.dashboard_metrics") {
			shown = map[string]bool{}
		}
	}
	for _, name := range code.Metrics {
		if !shown[name] {
			m.add("metric-not-on-dashboard", dashboards[0].addr(), &dashboards[0].rng, "metric %s is emitted but has no tile (local.dashboard_metrics)", name)
		}
	}
}

// isVarRef reports whether e is exactly var.<name>.
func isVarRef(e hclsyntax.Expression, name string) bool {
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok || len(st.Traversal) != 2 || st.Traversal.RootName() != "var" {
		return false
	}
	attr, ok := st.Traversal[1].(hcl.TraverseAttr)
	return ok && attr.Name == name
}
