// Package kjson reads and writes the JSON of admission: the AdmissionReviews the API server
// sends, the objects in them, and the answers.
//
// encoding/json, and sigs.k8s.io/json built on it, scans a document twice (a validity check,
// then the decoding) and once more for every raw value it captures: a pod inside a review was
// scanned four times. The load test's profile put that at a third of an admission's CPU.
// go-json-experiment/json (encoding/json/v2, which Go 1.27 ships and the module then forwards
// to) validates while it decodes and skips unread members without building them; with the pod
// decoded in the same pass as its review (mutate.DecodedObject), it is scanned once.
//
// The options keep what the API machinery's decoder accepts, so that answers stay those of
// controller-runtime's adapter: names match case-sensitively (as sigs.k8s.io/json's
// UnmarshalCaseSensitivePreserveInts, v2's default), unknown members are ignored, a duplicate
// name means the last one wins, and invalid UTF-8 becomes U+FFFD rather than an error.
package kjson

import (
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

var options = json.JoinOptions(
	jsontext.AllowDuplicateNames(true),
	jsontext.AllowInvalidUTF8(true),
)

// Unmarshal decodes data into v, which must be a non-nil pointer.
func Unmarshal(data []byte, v any) error {
	return json.Unmarshal(data, v, options)
}

// UnmarshalDecode decodes the decoder's next value into v, for a type that decodes itself
// (json.UnmarshalerFrom) as part of a document Unmarshal reads.
func UnmarshalDecode(dec *jsontext.Decoder, v any) error {
	return json.UnmarshalDecode(dec, v, options)
}
