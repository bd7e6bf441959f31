// Package node is the end-to-end suite on a real node: pods admitted by pullgate, installed by
// its chart from its own image, are pulled by containerd from an authenticated pull-through
// mirror and run. See test/e2e's netns.go and node.go for the bed, hack/e2e.sh to run it.
package node
