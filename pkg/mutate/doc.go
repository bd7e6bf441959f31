// Package mutate decides what pullgate changes in a Pod and builds the JSON patch for it.
//
// It has two layers. The core (plan.go, image.go, fields.go) is pure: it finds every image field
// with its JSON path, decides per image whether to move it to a mirror, pin it and set its pull
// policy, and turns the decisions plus resolved digests into targeted patch operations, warnings
// and audit annotations. The adapter (handler.go) implements controller-runtime's
// admission.Handler and is the only place that calls the Resolver.
package mutate
