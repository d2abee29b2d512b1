package terraform

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/oncesync/oncesync/shared/source"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"golang.org/x/mod/modfile"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// --- Reading the code ---------------------------------------------------------------------------

// Code is what the code says the deployment must provide. LoadCode reads it from the module.
type Code struct {
	Root              string   // the module root, absolute: the configuration's path.module is Root/terraform
	BuildFiles        []string // what the buildpack compiles: go.mod, go.sum and the Go files of the root package and every package of the module it imports, relative to Root
	EntryPoints       []string // registered with the functions framework in the module root
	ConfigEntryPoints []string // config.EntryPoints
	Runtime           string   // Cloud Functions runtime matching go.mod, e.g. "go126"
	Vars              []config.Var
	TTLCollections    []string
	TTLField          string
	Indexes           []model.Index
	Metrics           []string // the metrics the functions emit (telemetry.MetricDocs)
	// SourceCheck builds the connector a configuration names, as the expander does at cold
	// start (connectors.New): the deployed source settings must be ones the connector accepts.
	SourceCheck func(config.Config) error
	// Connectors are the connectors the code has, by kind, with their limits: terraform's
	// source_kind list and its page_size and search_concurrency bounds are checked against them.
	Connectors map[string]source.Limits
}

// Functions-framework import path and the registration functions whose first argument is an
// entry point name.
const frameworkPath = "github.com/GoogleCloudPlatform/functions-framework-go/functions"

var registrations = []string{"CloudEvent", "HTTP", "Typed"}

// LoadCode reads the code's side of the contract from the module rooted at root.
func LoadCode(root string) (Code, error) {
	eps, err := registeredEntryPoints(root)
	if err != nil {
		return Code{}, err
	}
	rt, err := goRuntime(filepath.Join(root, "go.mod"))
	if err != nil {
		return Code{}, err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return Code{}, fmt.Errorf("terraform: %w", err)
	}
	files, err := buildFiles(abs)
	if err != nil {
		return Code{}, err
	}
	return Code{
		Root:              abs,
		BuildFiles:        files,
		EntryPoints:       eps,
		ConfigEntryPoints: slices.Clone(config.EntryPoints),
		Runtime:           rt,
		Vars:              slices.Clone(config.Vars),
		TTLCollections:    slices.Clone(model.TTLCollections),
		TTLField:          model.ExpireAtField,
		Indexes:           slices.Clone(model.CompositeIndexes),
		Metrics:           metricNames(),
		Connectors:        connectorLimits(),
		SourceCheck:       connectors.Check,
	}, nil
}

func connectorLimits() map[string]source.Limits {
	out := map[string]source.Limits{}
	for _, k := range connectors.Kinds() {
		c, _ := connectors.Get(k)
		out[k] = c.Limits
	}
	return out
}

// goRuntime maps go.mod's go directive to a Cloud Functions runtime: "1.26.0" -> "go126".
func goRuntime(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("terraform: read go.mod: %w", err)
	}
	f, err := modfile.ParseLax(gomod, data, nil)
	if err != nil {
		return "", fmt.Errorf("terraform: parse go.mod: %w", err)
	}
	if f.Go == nil {
		return "", errors.New("terraform: go.mod has no go directive")
	}
	parts := strings.Split(f.Go.Version, ".")
	if len(parts) < 2 {
		return "", fmt.Errorf("terraform: go.mod go directive %q has no minor version", f.Go.Version)
	}
	return "go" + parts[0] + parts[1], nil
}

// registeredEntryPoints parses the module root's non-test Go files (the package the Cloud
// Functions buildpack builds) and returns the names passed to functions.CloudEvent & co.
func registeredEntryPoints(root string) ([]string, error) {
	modPath, err := modulePath(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	files, err := parseGoDir(root)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("terraform: no Go files in %s", root)
	}
	var eps []string
	for _, f := range files {
		imports := map[string]string{} // local name -> import path
		for _, im := range f.file.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = p
		}
		var walkErr error
		ast.Inspect(f.file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			if !ok || imports[pkg.Name] != frameworkPath || !slices.Contains(registrations, sel.Sel.Name) {
				return true
			}
			name, err := stringConst(call.Args[0], f, imports, root, modPath)
			if err != nil {
				walkErr = fmt.Errorf("terraform: %s: entry point name: %w", f.fset.Position(call.Pos()), err)
				return false
			}
			eps = append(eps, name)
			return true
		})
		if walkErr != nil {
			return nil, walkErr
		}
	}
	return eps, nil
}

// goFile is one parsed Go file and the file set holding its positions.
type goFile struct {
	fset *token.FileSet
	file *ast.File
}

func parseGoDir(dir string) ([]goFile, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []goFile
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("terraform: parse %s: %w", name, err)
		}
		out = append(out, goFile{fset, f})
	}
	return out, nil
}

func modulePath(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("terraform: read go.mod: %w", err)
	}
	p := modfile.ModulePath(data)
	if p == "" {
		return "", errors.New("terraform: go.mod has no module path")
	}
	return p, nil
}

// stringConst resolves an entry point name: a string literal, a constant of the root package, or
// a constant of another package of this module (config.Scheduler).
func stringConst(e ast.Expr, f goFile, imports map[string]string, root, modPath string) (string, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			return strconv.Unquote(e.Value)
		}
	case *ast.Ident:
		return constIn(root, e.Name)
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok {
			if p, ok := imports[pkg.Name]; ok && (p == modPath || strings.HasPrefix(p, modPath+"/")) {
				return constIn(filepath.Join(root, strings.TrimPrefix(p, modPath)), e.Sel.Name)
			}
		}
	}
	return "", errors.New("not a string literal or a string constant of this module")
}

func constIn(dir, name string) (string, error) {
	files, err := parseGoDir(dir)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		for _, d := range f.file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if id.Name != name || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						return strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	return "", fmt.Errorf("string constant %s not found in %s", name, dir)
}

// buildFiles returns what the buildpack compiles, as `go list -deps` of the root package says:
// go.mod, go.sum and the Go files (tests excluded, build constraints applied) of every package of
// this module the root package needs, relative to root.
func buildFiles(root string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if and .Module .Module.Main}}{{.Dir}}{{range .GoFiles}}{{"\t"}}{{.}}{{end}}{{end}}`, ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("terraform: go list -deps of the root package: %w", err)
	}
	files := []string{"go.mod", "go.sum"}
	for line := range strings.Lines(string(out)) {
		fields := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if fields[0] == "" {
			continue
		}
		rel, err := filepath.Rel(root, fields[0])
		if err != nil {
			return nil, fmt.Errorf("terraform: %w", err)
		}
		for _, f := range fields[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	slices.Sort(files)
	return files, nil
}

func metricNames() []string {
	out := make([]string, len(telemetry.MetricDocs))
	for i, d := range telemetry.MetricDocs {
		out[i] = d.Name
	}
	return out
}
