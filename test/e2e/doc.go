// Package e2e runs pullgate end to end: a real kube-apiserver on a real etcd, a registry that plays
// upstream, a Distribution pull-through mirror in front of it, and the real webhook binary
// registered the way the Helm chart registers it.
//
// The exported helpers (Env, StartWebhook, Register, WaitForMutation, the registry and fault
// proxy helpers) are meant for every end-to-end test in this module; the test files carry the
// `e2e` build tag so that `make test` does not start a control plane. hack/e2e.sh is the entry
// point: it finds or builds the binaries and runs `go test -tags e2e ./e2e/...`.
//
// Everything the harness starts runs in its own process group with a parent-death signal, so a
// panic, a `go test -timeout` or an interrupt cannot leave an etcd or an API server behind.
package e2e
