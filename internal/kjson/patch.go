package kjson

import (
	"encoding/json"
	"slices"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// EncodePatch writes a JSON patch byte for byte as json.Marshal writes the operations, without
// reflection (BenchmarkPatch has the figures). The values pullgate patches in are strings,
// pull-secret references and string maps (a pod's first annotation); a patch with any other
// value goes through json.Marshal.
func EncodePatch(ops []jsonpatch.JsonPatchOperation) ([]byte, error) {
	if ops == nil {
		return []byte("null"), nil
	}
	size := 2
	for _, op := range ops {
		switch v := op.Value.(type) {
		case string:
			size += len(v)
		case corev1.LocalObjectReference:
			size += len(v.Name)
		case []corev1.LocalObjectReference:
			if v == nil {
				return json.Marshal(ops) // null
			}
			for _, r := range v {
				size += len(r.Name) + 12
			}
		case map[string]string:
			if v == nil {
				return json.Marshal(ops) // null
			}
			for k, val := range v {
				size += len(k) + len(val) + 6
			}
		default:
			return json.Marshal(ops)
		}
		size += len(op.Operation) + len(op.Path) + 64
	}
	b := make([]byte, 0, size)
	b = append(b, '[')
	for i, op := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(append(b, `{"op":`...), op.Operation)
		b = AppendString(append(b, `,"path":`...), op.Path)
		b = append(b, `,"value":`...)
		switch v := op.Value.(type) {
		case string:
			b = AppendString(b, v)
		case corev1.LocalObjectReference:
			b = appendRef(b, v)
		case []corev1.LocalObjectReference:
			b = append(b, '[')
			for j, r := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendRef(b, r)
			}
			b = append(b, ']')
		case map[string]string:
			b = appendStringMap(b, v)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendStringMap writes m with its keys sorted, as encoding/json does.
func appendStringMap(b []byte, m map[string]string) []byte {
	b = append(b, '{')
	if len(m) == 1 {
		for k, v := range m {
			b = AppendString(append(AppendString(b, k), ':'), v)
		}
		return append(b, '}')
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(append(AppendString(b, k), ':'), m[k])
	}
	return append(b, '}')
}

// appendRef writes a LocalObjectReference: its name is omitempty.
func appendRef(b []byte, r corev1.LocalObjectReference) []byte {
	if r.Name == "" {
		return append(b, "{}"...)
	}
	return append(AppendString(append(b, `{"name":`...), r.Name), '}')
}
