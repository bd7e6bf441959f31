package mutate

import (
	"encoding/json"

	"gomodules.xyz/jsonpatch/v2"

	"github.com/pullgate/pullgate/internal/kjson"
)

// EncodePatch writes a JSON patch byte for byte as json.Marshal writes the operations, without
// reflection: marshalling the patch by reflection was a tenth of a warm admission's CPU under
// load. The values pullgate patches in are strings and pull-secret references; a patch with
// any other value goes through json.Marshal.
func EncodePatch(ops []jsonpatch.JsonPatchOperation) ([]byte, error) {
	if ops == nil {
		return []byte("null"), nil
	}
	size := 2
	for _, op := range ops {
		switch v := op.Value.(type) {
		case string:
			size += len(v)
		case map[string]string:
			if !isRef(v) {
				return json.Marshal(ops)
			}
		case []map[string]string:
			if v == nil || !allRefs(v) {
				return json.Marshal(ops)
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
		b = kjson.AppendString(append(b, `{"op":`...), op.Operation)
		b = kjson.AppendString(append(b, `,"path":`...), op.Path)
		b = append(b, `,"value":`...)
		switch v := op.Value.(type) {
		case string:
			b = kjson.AppendString(b, v)
		case map[string]string:
			b = appendRef(b, v["name"])
		case []map[string]string:
			b = append(b, '[')
			for j, m := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendRef(b, m["name"])
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// isRef reports whether m is a LocalObjectReference: {"name": ...} and nothing else.
func isRef(m map[string]string) bool {
	_, ok := m["name"]
	return ok && len(m) == 1
}

func allRefs(ms []map[string]string) bool {
	for _, m := range ms {
		if !isRef(m) {
			return false
		}
	}
	return true
}

func appendRef(b []byte, name string) []byte {
	return append(kjson.AppendString(append(b, `{"name":`...), name), '}')
}
