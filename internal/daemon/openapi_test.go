package daemon

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"banger/internal/apitest"
	"banger/internal/engine"
)

// pendingRoutes are described in api/openapi.yaml for a branch that adds
// their handlers and is not merged yet. Each entry must name a route the
// document describes and the daemon does not serve; once the branch is
// merged the test fails until the entry is removed here.
var pendingRoutes = map[string]string{}

// TestOpenAPIDescribesEveryRoute fails when the daemon serves a route the
// document does not describe, or the document describes a route the
// daemon does not serve (but the pending ones above).
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc, err := apitest.Load(context.Background(), apitest.DocPath())
	if err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for path, item := range doc.T.Paths.Map() {
		for method := range item.Operations() {
			described[method+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range Routes() {
		served[r.String()] = true
	}
	if len(served) < 30 {
		t.Fatalf("Routes() found only %d routes: %v", len(served), Routes())
	}
	for r := range served {
		if !described[r] {
			t.Errorf("route %s is served but not described in api/openapi.yaml", r)
		}
		if reason, ok := pendingRoutes[r]; ok {
			t.Errorf("route %s is served now: remove its %q mark from pendingRoutes", r, reason)
		}
	}
	for r := range described {
		if !served[r] && pendingRoutes[r] == "" {
			t.Errorf("api/openapi.yaml describes %s, which the daemon does not serve", r)
		}
	}
	for r := range pendingRoutes {
		if !described[r] {
			t.Errorf("pending route %s is not described in api/openapi.yaml", r)
		}
	}
}

// TestOpenAPIErrorCodes: the document's Error.code enum is exactly the
// Code* constants of internal/api.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc, err := apitest.Load(context.Background(), apitest.DocPath())
	if err != nil {
		t.Fatal(err)
	}
	s, err := doc.Schema("Error")
	if err != nil {
		t.Fatal(err)
	}
	var enum []string
	for _, v := range s.Properties["code"].Value.Enum {
		enum = append(enum, v.(string))
	}
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "api", "api.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					codes = append(codes, v)
				}
			}
		}
	}
	slices.Sort(enum)
	slices.Sort(codes)
	if len(codes) < 8 || !slices.Equal(enum, codes) {
		t.Errorf("Error.code enum %v, internal/api codes %v", enum, codes)
	}
	for _, c := range codes {
		if c != "operation_failed" && httpStatus(c) == 500 {
			t.Errorf("code %q has no status of its own", c)
		}
	}
}

// TestOpenAPIEngineChoices: every engine field of the document offers
// exactly the choices of internal/engine, the one list of engine names.
func TestOpenAPIEngineChoices(t *testing.T) {
	doc, err := apitest.Load(context.Background(), apitest.DocPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"VMCreateParams"} {
		s, err := doc.Schema(name)
		if err != nil {
			t.Fatal(err)
		}
		p := s.Properties["engine"]
		if p == nil || p.Value == nil {
			t.Fatalf("%s has no engine property", name)
		}
		var enum []string
		for _, v := range p.Value.Enum {
			enum = append(enum, v.(string))
		}
		if want := engine.Choices(); !slices.Equal(enum, want) {
			t.Errorf("%s.engine enum %v, internal/engine offers %v", name, enum, want)
		}
	}
}
