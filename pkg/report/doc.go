// Package report says what pullgate's policy would change, or finds changed, in the pods that
// already run: the audit before a namespace opts in, and drift after.
//
// The pure part (Plan, Scan.Finish, Build) takes pods, namespaces and the policy and returns
// findings and report objects; every pod goes through pkg/mutate's planner as a CREATE, so a
// report says exactly what admission would do. Resolve asks the resolver for the digests, once
// per distinct tag. The writer (Writer) and the controller's runnable (Controller) put the
// reports in the cluster: openreports.io where that API is served, else wgpolicyk8s.io.
package report
