package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatePath says, per workload kind, where its pod template is. mutate and explain apply the
// policy to it as to a pod the workload's controller would create.
var templatePath = map[string][]string{
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// podOwner is the controller that creates a workload's pods, as their ownerReference names it:
// exclude.owners decides on it at admission, so it does offline too.
var podOwner = map[string][2]string{
	"Deployment": {"apps/v1", "ReplicaSet"},
	"CronJob":    {"batch/v1", "Job"},
}

const inputKinds = "an AdmissionReview, a Pod, or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob"

// document is one document of mutate's or explain's input: a Pod or a workload.
type document struct {
	Kind, Name, Namespace string
	obj                   map[string]any // the document as written; numbers kept as json.Number
	path                  []string       // where its pod template is; nil for a Pod
}

func (m *document) String() string { return m.Kind + "/" + m.Name }

// isPod: a Pod or a workload with a pod template.
func (m *document) isPod() bool { return m.Kind == "Pod" || m.path != nil }

// splitDocuments decodes every document of raw (YAML with ---, or JSON); empty ones are
// skipped, a List's items are documents of their own.
func splitDocuments(raw []byte) ([]*document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []*document
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, docError{i, err}
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		data, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, docError{i, fmt.Errorf("is neither JSON nor YAML: %w", err)}
		}
		if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			return nil, docError{i, fmt.Errorf("is not a Kubernetes object: %w", err)}
		}
		if items, ok := obj["items"].([]any); ok && obj["kind"] == "List" {
			for _, it := range items {
				if o, ok := it.(map[string]any); ok {
					out = append(out, newDocument(o))
				}
			}
			continue
		}
		out = append(out, newDocument(obj))
	}
}

// docError is a document that cannot be read, by its place in the input.
type docError struct {
	n   int
	err error
}

func (e docError) Error() string { return fmt.Sprintf("document %d %v", e.n, e.err) }
func (e docError) Unwrap() error { return e.err }

func newDocument(obj map[string]any) *document {
	m := &document{obj: obj}
	m.Kind, _ = obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	m.Name, _ = meta["name"].(string)
	m.Namespace, _ = meta["namespace"].(string)
	m.path = templatePath[m.Kind]
	return m
}

// podJSON is the pod the document stands for, in namespace: a Pod as written; a workload's
// template as the pod its controller would create (owned by that controller).
func (m *document) podJSON(namespace string) ([]byte, error) {
	if m.path == nil {
		return json.Marshal(m.obj)
	}
	tpl, _ := dig(m.obj, m.path...).(map[string]any)
	if tpl == nil {
		return nil, fmt.Errorf("%s has no %s", m, strings.Join(m.path, "."))
	}
	meta := map[string]any{}
	if tm, ok := tpl["metadata"].(map[string]any); ok {
		for k, v := range tm {
			meta[k] = v
		}
	}
	meta["namespace"] = namespace
	if _, named := meta["name"]; !named {
		meta["generateName"] = m.Name + "-"
	}
	owner, ok := podOwner[m.Kind]
	if !ok {
		apiVersion, _ := m.obj["apiVersion"].(string)
		owner = [2]string{apiVersion, m.Kind}
	}
	meta["ownerReferences"] = []any{map[string]any{"apiVersion": owner[0], "kind": owner[1], "name": m.Name, "uid": "", "controller": true}}
	return json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tpl["spec"]})
}

// setPod puts the mutated pod back: a Pod whole; into a workload's template its spec only (the
// pods created from the template get pullgate's annotation at admission).
func (m *document) setPod(pod []byte) error {
	dec := json.NewDecoder(bytes.NewReader(pod))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("decoding the mutated pod: %w", err)
	}
	if m.path == nil {
		m.obj = obj
		return nil
	}
	dig(m.obj, m.path...).(map[string]any)["spec"] = obj["spec"]
	return nil
}

// writeDocuments prints the documents as YAML documents.
func writeDocuments(w io.Writer, ms []*document) error {
	for i, m := range ms {
		out, err := yaml.Marshal(m.obj)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", m, err)
		}
		if i > 0 {
			out = append([]byte("---\n"), out...)
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}
