package mutate

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
)

// OriginalAnnotation is set on every pod pullgate changes: the policy generation it was admitted
// under and the image references as their author wrote them. Reports read it to tell a pod pinned
// under an older policy from one admitted without pullgate (an outage under failurePolicy Ignore);
// signature verifiers and webhook explain read the original references.
//
// Its value is JSON: {"policy":"<generation>","images":{"spec.containers[0].image":"nginx:1.27"}}
// plus "omitted":N when entries were left out to keep it under maxOriginalLength.
const OriginalAnnotation = "pullgate.dev/original"

// maxOriginalLength bounds the annotation: a pod of a thousand images must not grow by a megabyte
// of metadata (the API server caps all annotations together at 256 KiB).
const maxOriginalLength = 1024

// Original is the decoded OriginalAnnotation.
type Original struct {
	Policy  string            `json:"policy"`
	Images  map[string]string `json:"images,omitempty"`
	Omitted int               `json:"omitted,omitempty"`
}

// ParseOriginal decodes an OriginalAnnotation value.
func ParseOriginal(s string) (Original, error) {
	var o Original
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		return Original{}, fmt.Errorf("annotation %s: %w", OriginalAnnotation, err)
	}
	return o, nil
}

// originalOp is the patch op that records the originals of the changed images. What this call
// changed is what its author wrote now (an UPDATE's new image); fields it left alone keep what
// an earlier call recorded (a reinvocation sees its own rewrites and changes nothing there).
func (p *Plan) originalOp(changes []Change) jsonpatch.JsonPatchOperation {
	var b strings.Builder
	b.Grow(64 + 96*len(changes))
	b.WriteString(`{"policy":`)
	quote(&b, p.generation)
	omitted := 0
	first := true
	add := func(field, image string) {
		// 32 bytes left for "omitted" and the closing braces.
		if b.Len()+len(field)+len(image)+8 > maxOriginalLength-32 {
			omitted++
			return
		}
		if first {
			b.WriteString(`,"images":{`)
			first = false
		} else {
			b.WriteByte(',')
		}
		quote(&b, field)
		b.WriteByte(':')
		quote(&b, image)
	}
	last := ""
	for _, c := range changes {
		// A field's changes are adjacent, and the first holds what the author wrote: a
		// rewrite's From, not its pin's.
		if (c.Action == ActionRewrite || c.Action == ActionPin) && c.Field != last {
			add(c.Field, c.From)
			last = c.Field
		}
	}
	if p.prevOriginal != "" {
		if prev, err := ParseOriginal(p.prevOriginal); err == nil {
			changed := make(map[string]bool, len(changes))
			for _, c := range changes {
				changed[c.Field] = true
			}
			fields := make([]string, 0, len(prev.Images))
			for f := range prev.Images {
				if !changed[f] {
					fields = append(fields, f)
				}
			}
			slices.Sort(fields)
			for _, f := range fields {
				add(f, prev.Images[f])
			}
			omitted += prev.Omitted
		}
	}
	if !first {
		b.WriteByte('}')
	}
	if omitted > 0 {
		b.WriteString(`,"omitted":`)
		b.WriteString(strconv.Itoa(omitted))
	}
	b.WriteByte('}')
	if !p.hasMetadata {
		return jsonpatch.NewOperation("add", "/metadata", map[string]any{"annotations": map[string]string{OriginalAnnotation: b.String()}})
	}
	if !p.hasAnnotations {
		return jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{OriginalAnnotation: b.String()})
	}
	return jsonpatch.NewOperation("add", "/metadata/annotations/"+escapedOriginal, b.String())
}

// escapedOriginal is OriginalAnnotation as a JSON pointer token ("/" is "~1").
var escapedOriginal = strings.ReplaceAll(OriginalAnnotation, "/", "~1")

// quote writes s as a JSON string without a copy: field paths and image references that parsed
// are plain ASCII, written as they are; anything else goes through encoding/json.
func quote(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			raw, _ := json.Marshal(s)
			b.Write(raw)
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}
