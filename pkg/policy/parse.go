package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// maxPolicySize bounds the file we are willing to parse; a policy is a few kilobytes, and a
// runaway ConfigMap should be an error rather than a memory spike in every replica.
const maxPolicySize = 1 << 20

// Problem is one thing wrong with a policy file.
type Problem struct {
	Field   string // field path, e.g. mirrors[0].mirror; empty for the whole document
	Line    int    // 1-based line in the file, 0 when unknown
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error carries every problem found in a policy file.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid policy: " + strings.Join(parts, "; ")
}

// Parse decodes a policy strictly: unknown and duplicate keys are errors with their line.
// It neither defaults nor validates; see Load and Check for the whole pipeline.
func Parse(data []byte) (*Policy, error) {
	p, _, unknown, err := decode(data)
	if err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		return nil, &Error{Problems: unknown}
	}
	return p, nil
}

// decode reads a policy, and reports the keys the types do not know apart from failures that
// stop decoding, so that Check can report them beside every other problem.
func decode(data []byte) (*Policy, *yamlv3.Node, []Problem, error) {
	if len(data) > maxPolicySize {
		return nil, nil, nil, &Error{Problems: []Problem{{Message: fmt.Sprintf("file is %d bytes, larger than the %d byte limit", len(data), maxPolicySize)}}}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil, nil, &Error{Problems: []Problem{{Message: "file is empty"}}}
	}
	root, err := parseNode(data)
	if err != nil {
		return nil, nil, nil, &Error{Problems: []Problem{{Message: err.Error()}}}
	}
	if dups := duplicateKeys(root, nil); len(dups) > 0 {
		return nil, nil, nil, &Error{Problems: dups}
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, nil, nil, &Error{Problems: []Problem{{Message: err.Error()}}}
	}
	var p Policy
	strict, err := sigsjson.UnmarshalStrict(js, &p)
	if err != nil {
		return nil, nil, nil, &Error{Problems: []Problem{{Message: cleanJSONError(err)}}}
	}
	var unknown []Problem
	for _, s := range strict {
		unknown = append(unknown, strictProblem(root, s))
	}
	return &p, root, unknown, nil
}

// parseNode parses the document into a yaml.v3 node tree, which knows line numbers and rejects
// duplicate keys and multiple documents.
func parseNode(data []byte) (*yamlv3.Node, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var doc yamlv3.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var extra yamlv3.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("file holds more than one YAML document; a policy is exactly one")
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yamlv3.MappingNode {
		return nil, errors.New("a policy must be a YAML mapping")
	}
	return doc.Content[0], nil
}

// duplicateKeys reports keys given twice in one mapping: YAML forbids them, and silently
// taking the last one would hide an operator's mistake.
func duplicateKeys(n *yamlv3.Node, out []Problem) []Problem {
	if n.Kind == yamlv3.MappingNode {
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if first, ok := seen[k.Value]; ok {
				out = append(out, Problem{Field: k.Value, Line: k.Line, Message: fmt.Sprintf("duplicate key, already defined at line %d", first)})
			} else {
				seen[k.Value] = k.Line
			}
		}
	}
	for _, c := range n.Content {
		out = duplicateKeys(c, out)
	}
	return out
}

// strictProblem turns `unknown field "mirrors[0].foo"` into a Problem at that key's line.
func strictProblem(root *yamlv3.Node, err error) Problem {
	msg := err.Error()
	for _, prefix := range []string{"unknown field ", "duplicate field "} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			if path, uerr := strconv.Unquote(rest); uerr == nil {
				return Problem{Field: path, Line: lineOf(root, path), Message: strings.TrimSpace(prefix)}
			}
		}
	}
	return Problem{Message: msg}
}

// cleanJSONError keeps the decoder's message but drops the JSON-internal wording users never typed.
func cleanJSONError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

// lineOf finds the line of a field path such as rules[1].namespaceSelector.matchLabels in the
// YAML tree; 0 when the path does not lead to a node (for example a defaulted field).
func lineOf(root *yamlv3.Node, path string) int {
	if root == nil || path == "" {
		return 0
	}
	node := root
	line := root.Line
	for _, seg := range splitPath(path) {
		switch {
		case seg.key != "" && node.Kind == yamlv3.MappingNode:
			found := false
			for i := 0; i+1 < len(node.Content); i += 2 {
				if node.Content[i].Value == seg.key {
					line = node.Content[i].Line
					node = node.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return line
			}
		case seg.key == "" && node.Kind == yamlv3.SequenceNode && seg.index < len(node.Content):
			node = node.Content[seg.index]
			line = node.Line
		default:
			return line
		}
	}
	return line
}

type segment struct {
	key   string
	index int
}

// splitPath splits field.Path strings: a.b[2].c[key] -> a, b, [2], c, key.
func splitPath(path string) []segment {
	var segs []segment
	for _, part := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			segs = append(segs, segment{key: name})
		}
		for rest != "" {
			inner, after, _ := strings.Cut(rest, "]")
			if n, err := strconv.Atoi(inner); err == nil {
				segs = append(segs, segment{index: n})
			} else {
				segs = append(segs, segment{key: inner})
			}
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return segs
}

// Check runs the whole pipeline (parse, default, validate, compile) and returns every problem
// with its line, unknown keys included, in file order. It is what `webhook policy check` and
// Load use.
func Check(data []byte) (*Compiled, error) {
	p, root, problems, err := decode(data)
	if err != nil {
		return nil, err
	}
	p.SetDefaults()
	problems = append(problems, fieldErrors(root, p.Validate())...)
	if len(problems) > 0 {
		slices.SortStableFunc(problems, byLine)
		return nil, &Error{Problems: problems}
	}
	return p.Compile()
}

func fieldErrors(root *yamlv3.Node, errs field.ErrorList) []Problem {
	var out []Problem
	for _, fe := range errs {
		out = append(out, Problem{
			Field:   fe.Field,
			Line:    lineOf(root, fe.Field),
			Message: fe.ErrorBody(),
		})
	}
	return out
}

// byLine orders problems as the file has them; those without a line come last.
func byLine(a, b Problem) int {
	line := func(p Problem) int {
		if p.Line == 0 {
			return math.MaxInt
		}
		return p.Line
	}
	return cmp.Compare(line(a), line(b))
}

// Load reads and checks a policy file. Relative caFile paths stay relative to the process.
func Load(path string) (*Compiled, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	c, err := Check(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
