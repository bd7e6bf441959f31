// Package prepull keeps large images cached on the nodes that need them, pinned, before any pod
// asks. The pure part turns a policy group and its pinned images into a DaemonSet (one sleeping
// container per image) and pods into per-group status; every image goes through pkg/mutate's
// planner, so a node caches exactly the reference and digest an admitted pod will ask for.
// Beside it, Reconciler applies the DaemonSets and reports.
package prepull
