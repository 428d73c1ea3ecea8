package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type options struct {
	image     string
	namespace string
}

// document is one YAML document of the output: raw is printed as it was
// read; otherwise obj is marshalled. comment lines go before it.
type document struct {
	comment []string
	raw     []byte
	obj     any
}

// migrate reads the input's documents and returns the output's, and the
// notes for stderr.
func migrate(input []byte, o options) ([]document, []string, error) {
	var (
		out      []document
		notes    []string
		others   []string // what was not migrated, and why
		migrated int
	)
	visit := func(obj map[string]any, raw []byte) error {
		kind, _ := obj["kind"].(string)
		apiVersion, _ := obj["apiVersion"].(string)
		name := objectName(obj)
		passThrough := func(why string) { // a List's items (raw nil) are marshalled again
			out = append(out, document{raw: raw, obj: obj})
			others = append(others, why)
			notes = append(notes, why+": printed unchanged")
		}
		if kind != "OpenTelemetryCollector" || !strings.HasPrefix(apiVersion, "opentelemetry.io/") {
			passThrough(fmt.Sprintf("%s %s is not an OpenTelemetryCollector", orUnknown(kind), name))
			return nil
		}
		if apiVersion != "opentelemetry.io/v1beta1" {
			return fmt.Errorf("OpenTelemetryCollector %s is %s: only opentelemetry.io/v1beta1 is read (its spec.config is an object); "+
				"the operator converts it: kubectl get opentelemetrycollectors.v1beta1.opentelemetry.io %s -o yaml", name, apiVersion, bareName(obj))
		}
		ta, err := mapAt(obj, "spec", "targetAllocator")
		if err != nil {
			return fmt.Errorf("OpenTelemetryCollector %s: %w", name, err)
		}
		if enabled, _ := ta["enabled"].(bool); !enabled {
			passThrough(fmt.Sprintf("OpenTelemetryCollector %s: spec.targetAllocator.enabled is not true, nothing to migrate", name))
			return nil
		}
		c, err := newCollector(obj, o)
		if err != nil {
			return fmt.Errorf("OpenTelemetryCollector %s: %w", name, err)
		}
		docs, err := c.migrate()
		for _, n := range c.notes {
			notes = append(notes, fmt.Sprintf("OpenTelemetryCollector %s: %s", name, n))
		}
		if err != nil {
			return fmt.Errorf("OpenTelemetryCollector %s: %w", name, err)
		}
		out = append(out, docs...)
		migrated++
		return nil
	}

	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(input)))
	for i := 1; ; i++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, notes, fmt.Errorf("read YAML: %w", err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			return nil, notes, fmt.Errorf("document %d: %w", i, err)
		}
		if obj == nil {
			continue // only comments, or nothing
		}
		if obj["kind"] == "List" {
			items, _ := obj["items"].([]any)
			for j, item := range items {
				m, ok := item.(map[string]any)
				if !ok {
					return nil, notes, fmt.Errorf("document %d: items[%d] is not an object", i, j)
				}
				if err := visit(m, nil); err != nil {
					return nil, notes, err
				}
			}
			continue
		}
		if err := visit(obj, raw); err != nil {
			return nil, notes, err
		}
	}
	if migrated == 0 {
		if len(others) == 0 {
			return nil, notes, errors.New("no YAML document in the input")
		}
		return nil, notes, fmt.Errorf("no OpenTelemetryCollector with spec.targetAllocator.enabled: true in the input (%s)", strings.Join(others, "; "))
	}
	return out, notes, nil
}

// write prints docs as one YAML stream.
func write(w io.Writer, docs []document) error {
	var b bytes.Buffer
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		for _, line := range d.comment {
			b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
		}
		body := d.raw
		if body == nil {
			var err error
			if body, err = yaml.Marshal(d.obj); err != nil {
				return err
			}
		}
		b.Write(body)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// objectName is "namespace/name", or "name" without a namespace.
func objectName(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if ns, _ := meta["namespace"].(string); ns != "" {
		return ns + "/" + name
	}
	return name
}

func bareName(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return name
}

func orUnknown(kind string) string {
	if kind == "" {
		return "a document without kind"
	}
	return kind
}

// mapAt is the object at path in m: nil (no error) when a step is absent or
// null, an error naming the path when a step is not an object.
func mapAt(m map[string]any, path ...string) (map[string]any, error) {
	cur := m
	for i, key := range path {
		v, ok := cur[key]
		if !ok || v == nil {
			return nil, nil
		}
		next, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s is %s, not an object", strings.Join(path[:i+1], "."), describe(v))
		}
		cur = next
	}
	return cur, nil
}

// describe names a YAML value's type for an error.
func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case []any:
		return "a list"
	case bool:
		return "a boolean"
	case float64, int, int64:
		return "a number"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// sortedKeys are m's keys in order, so that notes and output are the same
// on every run.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
