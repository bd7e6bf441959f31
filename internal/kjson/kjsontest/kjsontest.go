// Package kjsontest compares kjson's output with encoding/json's, for tests.
package kjsontest

import "bytes"

// SameAsMarshal reports whether got is what json.Marshal wrote as want. Invalid UTF-8 is the
// one thing Go releases write differently: up to go1.26 as the escape \ufffd (as kjson does,
// staying ASCII), from go1.27 as the character U+FFFD itself. Both decode the same, so the two
// spellings count as one.
func SameAsMarshal(got, want []byte) bool {
	return bytes.Equal(got, want) || bytes.Equal(literal(got), literal(want))
}

func literal(b []byte) []byte { return bytes.ReplaceAll(b, []byte(`\ufffd`), []byte("\uFFFD")) }
