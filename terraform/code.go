package terraform

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/modfile"

	"github.com/oncesync/oncesync/functions/app"
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
	// start (app.NewSource): the deployed source settings must be ones the connector accepts.
	SourceCheck func(config.Config) error
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
		SourceCheck: func(c config.Config) error {
			_, err := app.NewSource(c, app.SourceTuning{})
			return err
		},
	}, nil
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

// buildFiles returns what building the module root's package reads: go.mod, go.sum, and the
// non-test Go files of the root package and of every package of the module it imports,
// transitively (parsed with go/parser, imports only), relative to root and sorted.
func buildFiles(root string) ([]string, error) {
	modPath, err := modulePath(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	files := []string{"go.mod", "go.sum"}
	seen := map[string]bool{"": true}
	queue := []string{""} // package directories relative to root; "" is the root package
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			return nil, fmt.Errorf("terraform: package %s: %w", dir, err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			rel := filepath.ToSlash(filepath.Join(dir, name))
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, rel), nil, parser.ImportsOnly)
			if err != nil {
				return nil, fmt.Errorf("terraform: %w", err)
			}
			files = append(files, rel)
			for _, im := range f.Imports {
				p, _ := strconv.Unquote(im.Path.Value)
				if sub, ok := strings.CutPrefix(p, modPath+"/"); ok && !seen[sub] {
					seen[sub] = true
					queue = append(queue, sub)
				}
			}
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
