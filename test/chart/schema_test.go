package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

// TestSchemaCoversPolicy: values.schema.json's policy part is written by hand and forbids
// unknown keys, so every field pkg/policy accepts must be in it (or chart users could not set
// it), and it must name no field pkg/policy would reject. apiVersion and kind are the chart's.
func TestSchemaCoversPolicy(t *testing.T) {
	t.Parallel()
	schema := loadSchema(t)
	pol := dig(t, schema, "properties", "policy")
	compare(t, "policy", reflect.TypeFor[policy.Policy](), resolver(schema)(pol), map[string]bool{"apiVersion": true, "kind": true}, resolver(schema))
}

// resolver follows a node's "#/definitions/..." $ref, as shared definitions are written.
func resolver(schema map[string]any) func(map[string]any) map[string]any {
	defs, _ := schema["definitions"].(map[string]any)
	return func(node map[string]any) map[string]any {
		if ref, ok := node["$ref"].(string); ok {
			if def, ok := defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any); ok {
				return def
			}
		}
		return node
	}
}

// compare walks a Go struct type and a JSON schema object side by side.
func compare(t *testing.T, path string, typ reflect.Type, node map[string]any, skip map[string]bool, deref func(map[string]any) map[string]any) {
	t.Helper()
	node = deref(node)
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
		if items, ok := node["items"].(map[string]any); ok {
			node = deref(items)
		}
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[policy.Policy]().PkgPath() {
		return // a leaf, or a Kubernetes type (label selector, duration) the schema treats whole
	}
	props, _ := node["properties"].(map[string]any)
	fields := jsonFields(typ)
	for name, ft := range fields {
		if skip[name] {
			continue
		}
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("values.schema.json lacks %s.%s, which the policy accepts", path, name)
			continue
		}
		compare(t, path+"."+name, ft, sub, nil, deref)
	}
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("values.schema.json allows %s.%s, which the policy rejects", path, name)
		}
	}
}

// jsonFields lists a struct's JSON field names, with inline (embedded) structs flattened.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

func dig(t *testing.T, m map[string]any, keys ...string) map[string]any {
	t.Helper()
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("values.schema.json has no %s", strings.Join(keys, "."))
		}
		m = next
	}
	return m
}

// TestSchemaOwnersAgreeWithValidate: the chart's schema spells exclude.owners as a pattern and
// pkg/policy as code; on each example both accept or both refuse, so that helm install and
// "webhook policy check" never disagree (a bare "*" once passed the schema and failed the
// webhook's policy load).
func TestSchemaOwnersAgreeWithValidate(t *testing.T) {
	t.Parallel()
	schema := loadSchema(t)
	items := dig(t, schema, "properties", "policy", "properties", "exclude", "properties", "owners", "items")
	// The pattern is written in the subset that ECMA-262 and RE2 read alike.
	pattern, err := regexp.Compile(items["pattern"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{
		"Pod", "StatefulSet", "apps/StatefulSet", "postgresql.cnpg.io/Cluster", "argoproj.io/*", "a-b.example/Kind", "x/K9",
		"*", "/Kind", "apps/", "", "*/Cluster", "Apps/Deployment", "apps/v1/Deployment", "pod", "apps/pod",
		"a..b/Kind", "-a/Kind", "a-/Kind", "apps/*/x", "apps/K-ind",
	} {
		t.Run(owner, func(t *testing.T) {
			t.Parallel()
			schemaOK := pattern.MatchString(owner)
			doc := fmt.Sprintf("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nexclude: {owners: [%q]}\n", owner)
			_, err := policy.Check([]byte(doc))
			if schemaOK != (err == nil) {
				t.Errorf("schema accepts %q: %v; policy check: %v", owner, schemaOK, err)
			}
		})
	}
}

// loadSchema reads the chart's values.schema.json.
func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	return schema
}
