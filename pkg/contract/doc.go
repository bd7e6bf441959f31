// Package contract is what the mutation core and a resolver agree on: the request to pin a tag,
// the answer, and the interfaces a resolver implements.
//
// It is a leaf: pkg/mutate calls resolvers through it and pkg/resolve implements it, so neither
// imports the other, and the controller's packages can resolve without pulling in admission.
package contract
