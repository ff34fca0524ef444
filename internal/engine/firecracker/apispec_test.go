package firecracker

// This file reads Firecracker's published API definition (swagger 2.0
// YAML, kept outside the repository in ../shared/reference/firecracker) at
// run time and validates requests and responses against it. The
// validator implements the JSON-schema subset the definition uses: $ref
// (local, nested), type (object, string, integer, number, boolean,
// array), properties, required, additionalProperties, items, enum,
// minimum, maximum, integer formats int32/int64 and readOnly. Decoding is
// strict: a schema keyword it does not know (say a future "pattern" or
// "oneOf") fails the load instead of being silently ignored.
//
// One rule goes beyond plain JSON schema, on purpose: a property not in
// "properties" is a violation unless additionalProperties allows it.
// Swagger would allow it, but Firecracker's server rejects unknown fields
// (its request types are serde structs with deny_unknown_fields), so a
// misspelt field must fail here too.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"banger/internal/testreq"
)

// specRel is where the API definition lives, relative to the directory
// that holds the repository (both here and in CI, shared/ sits beside it).
const specRel = "shared/reference/firecracker/firecracker-api.yaml"

// apiSpec is the part of a swagger 2.0 document the tests use.
type apiSpec struct {
	Swagger        string                           `yaml:"swagger"`
	Info           yaml.Node                        `yaml:"info"`
	Host           string                           `yaml:"host"`
	BasePath       string                           `yaml:"basePath"`
	Schemes        []string                         `yaml:"schemes"`
	Consumes       []string                         `yaml:"consumes"`
	Produces       []string                         `yaml:"produces"`
	Paths          map[string]map[string]*operation `yaml:"paths"`
	Definitions    map[string]*schema               `yaml:"definitions"`
	SecurityDefs   yaml.Node                        `yaml:"securityDefinitions"`
	ExternalDocs   yaml.Node                        `yaml:"externalDocs"`
	Tags           yaml.Node                        `yaml:"tags"`
	ParametersDefs yaml.Node                        `yaml:"parameters"`
	ResponsesDefs  yaml.Node                        `yaml:"responses"`
}

type operation struct {
	Summary     string               `yaml:"summary"`
	Description string               `yaml:"description"`
	OperationID string               `yaml:"operationId"`
	Parameters  []parameter          `yaml:"parameters"`
	Responses   map[string]*response `yaml:"responses"`
	Tags        []string             `yaml:"tags"`
	Deprecated  bool                 `yaml:"deprecated"`
}

type parameter struct {
	Name        string  `yaml:"name"`
	In          string  `yaml:"in"`
	Description string  `yaml:"description"`
	Required    bool    `yaml:"required"`
	Type        string  `yaml:"type"`
	Schema      *schema `yaml:"schema"`
}

type response struct {
	Description string  `yaml:"description"`
	Schema      *schema `yaml:"schema"`
}

type schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Format               string             `yaml:"format"`
	Description          string             `yaml:"description"`
	Title                string             `yaml:"title"`
	Default              yaml.Node          `yaml:"default"`
	Example              yaml.Node          `yaml:"example"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*schema `yaml:"properties"`
	AdditionalProperties *additional        `yaml:"additionalProperties"`
	Items                *schema            `yaml:"items"`
	Enum                 []any              `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
	ReadOnly             bool               `yaml:"readOnly"`
}

// additional is additionalProperties: a boolean or a schema.
type additional struct {
	allowed bool
	schema  *schema
}

func (a *additional) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&a.allowed)
	}
	a.allowed = true
	a.schema = new(schema)
	return n.Decode(a.schema)
}

// findSpec returns the API definition's path: ../shared/... relative to
// the repository root, the nearest directory above the working directory
// that holds go.mod.
func findSpec() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(dir), specRel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// loadSpecFile parses and sanity-checks the definition at path.
func loadSpecFile(path string) (*apiSpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var s apiSpec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if s.Swagger != "2.0" {
		return nil, fmt.Errorf("%s: swagger %q, want 2.0", path, s.Swagger)
	}
	if len(s.Paths) == 0 || len(s.Definitions) == 0 {
		return nil, fmt.Errorf("%s: no paths or definitions", path)
	}
	// Every $ref must resolve, so that a broken reference cannot make
	// validation vacuous.
	var refs []string
	var walk func(*schema)
	walk = func(sc *schema) {
		if sc == nil {
			return
		}
		if sc.Ref != "" {
			refs = append(refs, sc.Ref)
		}
		for _, p := range sc.Properties {
			walk(p)
		}
		walk(sc.Items)
		if sc.AdditionalProperties != nil {
			walk(sc.AdditionalProperties.schema)
		}
	}
	for _, d := range s.Definitions {
		walk(d)
	}
	for _, item := range s.Paths {
		for _, op := range item {
			for _, p := range op.Parameters {
				walk(p.Schema)
			}
			for _, r := range op.Responses {
				walk(r.Schema)
			}
		}
	}
	for _, r := range refs {
		if _, err := s.resolve(&schema{Ref: r}); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return &s, nil
}

// noSpecEnv opts out of the contract tests for builds outside the layout
// that has shared/ beside the repository: with it set they skip even under
// BANGER_TEST_STRICT=1 (where a missing definition otherwise fails them).
const noSpecEnv = "BANGER_TEST_NO_FIRECRACKER_SPEC"

// specUsers names the tests (top-level) that loaded the definition;
// TestMain prints how many, so a run says whether the contract tests ran.
var (
	specMu    sync.Mutex
	specUsers = map[string]bool{}
	specPath  string
)

// loadSpec loads the definition for a test. Where it is absent the test
// fails under BANGER_TEST_STRICT=1 (make unit, make test) unless
// BANGER_TEST_NO_FIRECRACKER_SPEC=1 opts out, and skips otherwise.
func loadSpec(t testing.TB) (*apiSpec, string) {
	t.Helper()
	if os.Getenv(noSpecEnv) == "1" {
		t.Skipf("skipping: %s=1: the firecracker API contract is not checked", noSpecEnv)
	}
	path, err := findSpec()
	if err == nil {
		_, err = os.Stat(path)
	}
	testreq.Require(t, err == nil, fmt.Sprintf("firecracker API definition (%v): these tests validate against ../%s beside the repository; set %s=1 to build outside that layout", err, specRel, noSpecEnv))
	s, err := loadSpecFile(path)
	if err != nil {
		t.Fatalf("load API definition: %v", err)
	}
	specMu.Lock()
	specUsers[strings.SplitN(t.Name(), "/", 2)[0]] = true
	specPath = path
	specMu.Unlock()
	return s, path
}

// reportSpecUse prints the one line that says the contract tests ran.
func reportSpecUse() {
	specMu.Lock()
	defer specMu.Unlock()
	if n := len(specUsers); n > 0 {
		fmt.Printf("firecracker API contract: %d tests validated their requests against %s\n", n, specPath)
	}
}

// resolve follows local $refs ("#/definitions/Name").
func (s *apiSpec) resolve(sc *schema) (*schema, error) {
	for i := 0; sc != nil && sc.Ref != ""; i++ {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok || i > 32 {
			return nil, fmt.Errorf("unsupported $ref %q", sc.Ref)
		}
		def, ok := s.Definitions[name]
		if !ok {
			return nil, fmt.Errorf("$ref %q: no such definition", sc.Ref)
		}
		sc = def
	}
	return sc, nil
}

// definition returns a named definition, resolved.
func (s *apiSpec) definition(name string) *schema {
	d, err := s.resolve(&schema{Ref: "#/definitions/" + name})
	if err != nil {
		panic(err)
	}
	return d
}

// findOperation matches a request against the spec's paths. Literal path
// segments win over {templated} ones. It returns the template, the
// operation and the path parameters.
func (s *apiSpec) findOperation(method, path string) (string, *operation, map[string]string, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	bestScore := -1
	var bestTmpl string
	var bestParams map[string]string
	for tmpl := range s.Paths {
		tsegs := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(tsegs) != len(segs) {
			continue
		}
		params := map[string]string{}
		score := 0
		ok := true
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}") {
				if segs[i] == "" {
					ok = false
					break
				}
				params[ts[1:len(ts)-1]] = segs[i]
				continue
			}
			if ts != segs[i] {
				ok = false
				break
			}
			score++
		}
		if ok && score > bestScore {
			bestScore, bestTmpl, bestParams = score, tmpl, params
		}
	}
	if bestScore < 0 {
		return "", nil, nil, fmt.Errorf("path %s is not in the API definition", path)
	}
	op, ok := s.Paths[bestTmpl][strings.ToLower(method)]
	if !ok {
		var allowed []string
		for m := range s.Paths[bestTmpl] {
			allowed = append(allowed, strings.ToUpper(m))
		}
		sort.Strings(allowed)
		return bestTmpl, nil, nil, fmt.Errorf("%s %s: the API definition allows only %s on %s", method, path, strings.Join(allowed, ", "), bestTmpl)
	}
	return bestTmpl, op, bestParams, nil
}

// checkRequest validates one request (query string excluded from path)
// and returns the matched operation (nil if none) and every violation.
func (s *apiSpec) checkRequest(method, path, rawQuery, contentType string, body []byte) (*operation, []string) {
	_, op, params, err := s.findOperation(method, path)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var v []string
	if rawQuery != "" {
		v = append(v, "query parameters are not defined for "+op.OperationID)
	}
	var bodyParam *parameter
	for i, p := range op.Parameters {
		switch p.In {
		case "body":
			bodyParam = &op.Parameters[i]
		case "path":
			if params[p.Name] == "" {
				v = append(v, fmt.Sprintf("path parameter %s is empty", p.Name))
			}
		}
	}
	body = bytes.TrimSpace(body)
	switch {
	case bodyParam == nil && len(body) > 0:
		v = append(v, op.OperationID+" takes no body")
	case bodyParam != nil && len(body) == 0 && bodyParam.Required:
		v = append(v, op.OperationID+": body "+bodyParam.Name+" is required")
	case bodyParam != nil && len(body) > 0:
		if mt, _, _ := strings.Cut(contentType, ";"); strings.TrimSpace(mt) != "application/json" {
			v = append(v, fmt.Sprintf("content type %q, the API consumes application/json", contentType))
		}
		val, err := decodeJSON(body)
		if err != nil {
			v = append(v, "body: "+err.Error())
			break
		}
		v = append(v, s.validate(val, bodyParam.Schema, "body", true)...)
		// The API server rejects a body whose id differs from the path's
		// (the definition names both the same, e.g. drive_id).
		if obj, ok := val.(map[string]any); ok {
			for name, pv := range params {
				if bv, ok := obj[name]; ok && bv != pv {
					v = append(v, fmt.Sprintf("body.%s %v differs from path parameter %s=%s", name, bv, name, pv))
				}
			}
		}
	}
	return op, v
}

// checkResponse validates a response the fake is about to send.
func (s *apiSpec) checkResponse(op *operation, status int, body []byte) []string {
	r, ok := op.Responses[strconv.Itoa(status)]
	if !ok {
		r, ok = op.Responses["default"]
	}
	if !ok {
		return []string{fmt.Sprintf("%s: status %d is not a documented response", op.OperationID, status)}
	}
	body = bytes.TrimSpace(body)
	if r.Schema == nil {
		if len(body) > 0 {
			return []string{fmt.Sprintf("%s: status %d has no body in the API definition", op.OperationID, status)}
		}
		return nil
	}
	val, err := decodeJSON(body)
	if err != nil {
		return []string{fmt.Sprintf("%s: status %d body: %v", op.OperationID, status, err)}
	}
	return s.validate(val, r.Schema, "response", false)
}

// decodeJSON decodes exactly one JSON value, numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// validate checks v against sc and returns the violations, each prefixed
// with its location ("body.rx_rate_limiter.bandwidth.size"). In a request,
// readOnly properties must not appear.
func (s *apiSpec) validate(v any, sc *schema, where string, request bool) []string {
	sc, err := s.resolve(sc)
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	if sc == nil {
		return nil
	}
	bad := func(format string, args ...any) []string {
		return []string{where + ": " + fmt.Sprintf(format, args...)}
	}
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	var out []string
	switch typ {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("want an object, got %s", jsonKind(v))
		}
		for _, r := range sc.Required {
			if _, ok := obj[r]; !ok {
				out = append(out, fmt.Sprintf("%s: required property %q is missing", where, r))
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub := where + "." + k
			if p, ok := sc.Properties[k]; ok {
				if rp, err := s.resolve(p); err == nil && request && (p.ReadOnly || rp.ReadOnly) {
					out = append(out, sub+": property is read-only and must not be sent")
				}
				out = append(out, s.validate(obj[k], p, sub, request)...)
				continue
			}
			switch ap := sc.AdditionalProperties; {
			case ap == nil || !ap.allowed:
				out = append(out, sub+": unknown property")
			case ap.schema != nil:
				out = append(out, s.validate(obj[k], ap.schema, sub, request)...)
			}
		}
		return out
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return bad("want an array, got %s", jsonKind(v))
		}
		for i, e := range arr {
			out = append(out, s.validate(e, sc.Items, fmt.Sprintf("%s[%d]", where, i), request)...)
		}
		return out
	case "string":
		if _, ok := v.(string); !ok {
			return bad("want a string, got %s", jsonKind(v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad("want a boolean, got %s", jsonKind(v))
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return bad("want %s, got %s", typ, jsonKind(v))
		}
		f, err := n.Float64()
		if err != nil {
			return bad("bad number %s", n)
		}
		if typ == "integer" {
			i, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil {
				return bad("want an integer, got %s", n)
			}
			switch sc.Format {
			case "int32":
				if i < math.MinInt32 || i > math.MaxInt32 {
					out = append(out, fmt.Sprintf("%s: %d out of int32 range", where, i))
				}
			}
		}
		if sc.Minimum != nil && f < *sc.Minimum {
			out = append(out, fmt.Sprintf("%s: %s is below the minimum %v", where, n, *sc.Minimum))
		}
		if sc.Maximum != nil && f > *sc.Maximum {
			out = append(out, fmt.Sprintf("%s: %s is above the maximum %v", where, n, *sc.Maximum))
		}
	case "":
		// No type: anything goes.
	default:
		return bad("schema type %q is not supported by the test validator", typ)
	}
	if len(sc.Enum) > 0 {
		found := false
		for _, e := range sc.Enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("%s: %v is not one of %v", where, v, sc.Enum))
		}
	}
	return out
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
