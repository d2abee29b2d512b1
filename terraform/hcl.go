package terraform

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/oncesync/oncesync/shared/config"
)

// --- The configuration ------------------------------------------------------------------------

const (
	tFunction     = "google_cloudfunctions2_function"
	tTopic        = "google_pubsub_topic"
	tSubscription = "google_pubsub_subscription"
	tSA           = "google_service_account"
	tSecret       = "google_secret_manager_secret"
	tTTLField     = "google_firestore_field"
	tIndex        = "google_firestore_index"

	pubsubEvent  = "google.cloud.pubsub.topic.v1.messagePublished"
	retryPolicy  = "RETRY_POLICY_RETRY"
	ingress      = "ALLOW_INTERNAL_ONLY"
	topicEnvPref = "ONCESYNC_TOPIC_"
)

// consumers says which entry point each topic variable feeds: what the scheduler publishes to
// ONCESYNC_TOPIC_EXPAND must be what triggers the expander, and so on.
var consumers = map[string]string{
	config.EnvTopicExpand: config.Expander,
	config.EnvTopicChunks: config.Importer,
	config.EnvTopicBulk:   config.ImporterBulk,
}

// Project-level roles each kind of principal may hold. Everything else is granted on a resource.
var (
	runtimeProjectRoles = []string{"roles/datastore.user", "roles/cloudtrace.agent", "roles/monitoring.metricWriter"} // Firestore, spans, metrics: none has a finer resource
	buildProjectRoles   = []string{"roles/logging.logWriter", "roles/storage.objectViewer"}
	basicRoles          = []string{"roles/owner", "roles/editor", "roles/viewer"}
	publicMembers       = []string{"allUsers", "allAuthenticatedUsers"}
)

// block is one top-level resource or data block.
type block struct {
	kind string // "resource" or "data"
	typ  string
	name string
	body *hclsyntax.Body
	rng  hcl.Range
}

func (b *block) addr() string {
	if b.kind == "data" {
		return "data." + b.typ + "." + b.name
	}
	return b.typ + "." + b.name
}

// module is the configuration of one directory, parsed, plus the findings so far.
type module struct {
	dir       string
	path      string // what path.module evaluates to
	resources map[string][]*block
	data      map[string][]*block
	variables map[string]*hclsyntax.Body
	locals    map[string]*hclsyntax.Attribute
	bodies    []*hclsyntax.Body
	ctx       *hcl.EvalContext // variable defaults and the locals they determine
	findings  []Finding
}

func (m *module) add(check, subject string, rng *hcl.Range, format string, args ...any) {
	f := Finding{Check: check, Subject: subject, Message: fmt.Sprintf(format, args...)}
	if rng != nil && rng.Filename != "" {
		f.Pos = fmt.Sprintf("%s:%d", filepath.Base(rng.Filename), rng.Start.Line)
	}
	m.findings = append(m.findings, f)
}

// load reads the configuration in dir; path.module evaluates to pathModule (where the
// configuration lives in the module: a test's copy of it is checked as if it were there).
func load(dir, pathModule string) *module {
	m := &module{
		dir:       dir,
		path:      pathModule,
		resources: map[string][]*block{},
		data:      map[string][]*block{},
		variables: map[string]*hclsyntax.Body{},
		locals:    map[string]*hclsyntax.Attribute{},
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(names) == 0 {
		m.add("parse", dir, nil, "no .tf files (%v)", err)
		return m
	}
	slices.Sort(names)
	p := hclparse.NewParser()
	for _, name := range names {
		f, diags := p.ParseHCLFile(name)
		if diags.HasErrors() {
			m.add("parse", filepath.Base(name), nil, "%s", diags.Error())
			continue
		}
		body := f.Body.(*hclsyntax.Body)
		m.bodies = append(m.bodies, body)
		for _, b := range body.Blocks {
			switch {
			case b.Type == "resource" && len(b.Labels) == 2:
				m.resources[b.Labels[0]] = append(m.resources[b.Labels[0]], &block{"resource", b.Labels[0], b.Labels[1], b.Body, b.DefRange()})
			case b.Type == "data" && len(b.Labels) == 2:
				m.data[b.Labels[0]] = append(m.data[b.Labels[0]], &block{"data", b.Labels[0], b.Labels[1], b.Body, b.DefRange()})
			case b.Type == "variable" && len(b.Labels) == 1:
				m.variables[b.Labels[0]] = b.Body
			case b.Type == "locals":
				for name, a := range b.Body.Attributes {
					m.locals[name] = a
				}
			}
		}
	}
	m.ctx = m.evalContext(nil)
	return m
}

// evalContext evaluates variable defaults, overridden by vals, and every local that depends on
// nothing else (resource attributes stay unknown and make an expression unresolvable).
func (m *module) evalContext(vals map[string]cty.Value) *hcl.EvalContext {
	vars := map[string]cty.Value{}
	for name, body := range m.variables {
		if a, ok := body.Attributes["default"]; ok {
			if v, diags := a.Expr.Value(nil); !diags.HasErrors() {
				vars[name] = withTypeDefaults(body, v)
			}
		}
	}
	for k, v := range vals {
		vars[k] = v
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(vars), "path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(m.path)})},
		Functions: functions,
	}
	locals := map[string]cty.Value{}
	for range len(m.locals) + 1 { // locals may refer to each other: iterate to a fixed point
		ctx.Variables["local"] = cty.ObjectVal(locals)
		grown := false
		for name, a := range m.locals {
			if _, done := locals[name]; done {
				continue
			}
			if v, diags := a.Expr.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
				locals[name] = v
				grown = true
			}
		}
		if !grown {
			break
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	return ctx
}

// withTypeDefaults applies the optional(…, default) attributes of the variable's type to v, as
// Terraform does: var.expander = {} has timeout_seconds = 540.
func withTypeDefaults(body *hclsyntax.Body, v cty.Value) cty.Value {
	a, ok := body.Attributes["type"]
	if !ok {
		return v
	}
	ty, defaults, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
	if diags.HasErrors() {
		return v
	}
	if defaults != nil {
		v = defaults.Apply(v)
	}
	if cv, err := convert.Convert(v, ty); err == nil {
		return cv
	}
	return v
}

var functions = map[string]function.Function{
	"merge":      stdlib.MergeFunc,
	"coalesce":   stdlib.CoalesceFunc,
	"format":     stdlib.FormatFunc,
	"join":       stdlib.JoinFunc,
	"lower":      stdlib.LowerFunc,
	"upper":      stdlib.UpperFunc,
	"max":        stdlib.MaxFunc,
	"min":        stdlib.MinFunc,
	"concat":     stdlib.ConcatFunc,
	"setunion":   stdlib.SetUnionFunc,
	"sort":       stdlib.SortFunc,
	"contains":   stdlib.ContainsFunc,
	"floor":      stdlib.FloorFunc,
	"jsondecode": stdlib.JSONDecodeFunc,
	"file": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, err := os.ReadFile(args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(string(b)), nil
		},
	}),
	"fileset": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "pattern", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Set(cty.String)),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			// Terraform's fileset: files only, paths relative to path, with forward slashes.
			matches, err := doublestar.Glob(os.DirFS(args[0].AsString()), args[1].AsString(), doublestar.WithFilesOnly())
			if err != nil {
				return cty.NilVal, err
			}
			if len(matches) == 0 {
				return cty.SetValEmpty(cty.String), nil
			}
			vals := make([]cty.Value, len(matches))
			for i, s := range matches {
				vals[i] = cty.StringVal(s)
			}
			return cty.SetVal(vals), nil
		},
	}),
	"endswith":    stringTest(strings.HasSuffix),
	"startswith":  stringTest(strings.HasPrefix),
	"strcontains": stringTest(strings.Contains),
	"tostring": function.New(&function.Spec{
		Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType, AllowNull: true}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return convert.Convert(args[0], cty.String)
		},
	}),
}

// stringTest is a Terraform function f(s, x) returning a bool.
func stringTest(f func(s, x string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}, {Name: "x", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

// --- Expression helpers -----------------------------------------------------------------------

// ref is one reference found in an expression.
type ref struct {
	typ, name, attr string // resource type (or "var", "local", "data.<type>"), name, first attribute
}

// refs lists what expr refers to, following local values to what they refer to.
func (m *module) refs(expr hclsyntax.Expression) []ref {
	return m.refsSeen(expr, map[string]bool{})
}

func (m *module) refsSeen(expr hclsyntax.Expression, seen map[string]bool) []ref {
	var out []ref
	for _, t := range expr.Variables() {
		var names []string
		for _, step := range t {
			switch s := step.(type) {
			case hcl.TraverseRoot:
				names = append(names, s.Name)
			case hcl.TraverseAttr:
				names = append(names, s.Name)
			}
		}
		if len(names) < 2 {
			continue
		}
		r := ref{typ: names[0], name: names[1]}
		rest := names[2:]
		if names[0] == "data" && len(names) >= 3 {
			r = ref{typ: "data." + names[1], name: names[2]}
			rest = names[3:]
		}
		if len(rest) > 0 {
			r.attr = rest[0]
		}
		out = append(out, r)
		if r.typ == "local" && !seen[r.name] {
			seen[r.name] = true
			if a, ok := m.locals[r.name]; ok {
				out = append(out, m.refsSeen(a.Expr, seen)...)
			}
		}
	}
	return out
}

// resourceRef is the name of the one resource of type typ that expr refers to.
func (m *module) resourceRef(expr hclsyntax.Expression, typ string) (string, bool) {
	var names []string
	for _, r := range m.refs(expr) {
		if r.typ == typ && !slices.Contains(names, r.name) {
			names = append(names, r.name)
		}
	}
	if len(names) != 1 {
		return "", false
	}
	return names[0], true
}

// str is expr's value when it is a string known without applying (a literal, or built from
// variable defaults and locals).
func (m *module) str(expr hclsyntax.Expression) (string, bool) {
	return valueString(expr, m.ctx)
}

func valueString(expr hclsyntax.Expression, ctx *hcl.EvalContext) (string, bool) {
	v, diags := expr.Value(ctx)
	if diags.HasErrors() || !v.IsWhollyKnown() || v.IsNull() {
		return "", false
	}
	s, err := convert.Convert(v, cty.String)
	if err != nil {
		return "", false
	}
	return s.AsString(), true
}

func attr(body *hclsyntax.Body, path ...string) *hclsyntax.Attribute {
	for _, blockType := range path[:len(path)-1] {
		bs := blocks(body, blockType)
		if len(bs) == 0 {
			return nil
		}
		body = bs[0].Body
	}
	return body.Attributes[path[len(path)-1]]
}

func blocks(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func (m *module) attrStr(body *hclsyntax.Body, path ...string) (string, bool) {
	a := attr(body, path...)
	if a == nil {
		return "", false
	}
	return m.str(a.Expr)
}

func (m *module) declared(typ, name string) bool {
	return slices.ContainsFunc(m.resources[typ], func(b *block) bool { return b.name == name })
}

// entry is one key of a map expression (an environment variable) and its value.
type entry struct {
	key  string
	expr hclsyntax.Expression
	rng  hcl.Range
}

// entries lists the keys of a map expression: an object literal, merge() of map expressions, or
// a local holding one. Later keys win, as in merge().
func (m *module) entries(expr hclsyntax.Expression, seen map[string]bool) ([]entry, error) {
	switch e := expr.(type) {
	case *hclsyntax.ObjectConsExpr:
		var out []entry
		for _, item := range e.Items {
			k, diags := item.KeyExpr.Value(nil)
			if diags.HasErrors() || k.Type() != cty.String || !k.IsKnown() {
				return nil, fmt.Errorf("a key at %s is not a literal", item.KeyExpr.Range())
			}
			out = append(out, entry{k.AsString(), item.ValueExpr, item.KeyExpr.Range()})
		}
		return out, nil
	case *hclsyntax.FunctionCallExpr:
		if e.Name != "merge" {
			break
		}
		var out []entry
		for _, arg := range e.Args {
			es, err := m.entries(arg, seen)
			if err != nil {
				return nil, err
			}
			for _, en := range es {
				out = slices.DeleteFunc(out, func(o entry) bool { return o.key == en.key })
				out = append(out, en)
			}
		}
		return out, nil
	case *hclsyntax.ScopeTraversalExpr:
		if e.Traversal.RootName() == "local" && len(e.Traversal) == 2 {
			if a, ok := e.Traversal[1].(hcl.TraverseAttr); ok && !seen[a.Name] {
				seen[a.Name] = true
				if l, ok := m.locals[a.Name]; ok {
					return m.entries(l.Expr, seen)
				}
			}
		}
	}
	return nil, fmt.Errorf("%s is not an object literal, merge() or local the check can read", expr.Range())
}

// --- Functions ----------------------------------------------------------------------------------

// deployment is one google_cloudfunctions2_function, read statically.
type deployment struct {
	*block
	entryPoint string
	runtimeSA  string // google_service_account name
	triggerSA  string
	topic      string // google_pubsub_topic name of the trigger
	env        map[string]entry
	secretEnv  map[string]*hclsyntax.Block
	// secretFiles are the files secret_volumes mount: mount_path/versions.path → the volume.
	secretFiles map[string]*hclsyntax.Block
}

func (m *module) functionsByEntryPoint() map[string]*deployment {
	fns := map[string]*deployment{}
	for _, b := range m.resources[tFunction] {
		for _, meta := range []string{"count", "for_each"} {
			if _, ok := b.body.Attributes[meta]; ok {
				m.add("static", b.addr(), &b.rng, "%s makes the function unreadable without applying; declare one resource per entry point", meta)
			}
		}
		hclsyntax.VisitAll(b.body, func(n hclsyntax.Node) hcl.Diagnostics {
			if d, ok := n.(*hclsyntax.Block); ok && d.Type == "dynamic" {
				m.add("static", b.addr(), &b.rng, "dynamic %q block cannot be checked offline; write the blocks out", d.Labels)
			}
			return nil
		})
		fn := &deployment{block: b, env: map[string]entry{}, secretEnv: map[string]*hclsyntax.Block{}, secretFiles: map[string]*hclsyntax.Block{}}
		ep, ok := m.attrStr(b.body, "build_config", "entry_point")
		if !ok {
			m.add("entrypoint-unknown", b.addr(), &b.rng, "build_config.entry_point is missing or not a literal")
			continue
		}
		fn.entryPoint = ep
		if other, dup := fns[ep]; dup {
			m.add("entrypoint-duplicate", b.addr(), &b.rng, "entry point %q is also deployed by %s", ep, other.addr())
			continue
		}
		fns[ep] = fn
		if a := attr(b.body, "service_config", "service_account_email"); a != nil {
			fn.runtimeSA, _ = m.resourceRef(a.Expr, tSA)
		}
		if a := attr(b.body, "event_trigger", "service_account_email"); a != nil {
			fn.triggerSA, _ = m.resourceRef(a.Expr, tSA)
		}
		if a := attr(b.body, "event_trigger", "pubsub_topic"); a != nil {
			fn.topic, _ = m.resourceRef(a.Expr, tTopic)
		}
		if sc := blocks(b.body, "service_config"); len(sc) > 0 {
			if a := sc[0].Body.Attributes["environment_variables"]; a != nil {
				es, err := m.entries(a.Expr, map[string]bool{})
				if err != nil {
					m.add("env-static", b.addr(), &a.SrcRange, "environment_variables: %v", err)
				}
				for _, e := range es {
					fn.env[e.key] = e
				}
			}
			for _, s := range blocks(sc[0].Body, "secret_environment_variables") {
				key, ok := m.attrStr(s.Body, "key")
				if !ok {
					m.add("env-static", b.addr(), ptr(s.DefRange()), "secret_environment_variables.key is not a literal")
					continue
				}
				if _, dup := fn.secretEnv[key]; dup {
					m.add("env-duplicate", b.addr(), ptr(s.DefRange()), "%s is set by two secret_environment_variables blocks", key)
				}
				fn.secretEnv[key] = s
			}
			for _, v := range blocks(sc[0].Body, "secret_volumes") {
				dir, ok := m.attrStr(v.Body, "mount_path")
				if !ok {
					m.add("env-static", b.addr(), ptr(v.DefRange()), "secret_volumes.mount_path is not a literal")
					continue
				}
				for _, ver := range blocks(v.Body, "versions") {
					if file, ok := m.attrStr(ver.Body, "path"); ok {
						fn.secretFiles[strings.TrimSuffix(dir, "/")+"/"+strings.TrimPrefix(file, "/")] = v
					}
				}
			}
		}
	}
	return fns
}

func ptr(r hcl.Range) *hcl.Range { return &r }
