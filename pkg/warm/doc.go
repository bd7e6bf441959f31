// Package warm fills pull-through mirrors before nodes ask: the controller sees each new
// mirror-pinned digest when a pod asking for it is admitted (a pod informer, not the admission
// path), and reads the image once through its mirror, exactly as a node would pull it, with
// contract.Warmer (pkg/resolve: the resolver's transports, credentials and breakers).
//
// Queue is the orchestration: one warm per digest however many pods ask (the controller is
// leader-elected, so one per cluster), per-mirror concurrency, a no-progress timeout and a
// deadline that grows with the image's size, a byte budget per mirror and hour, and a few
// retries with backoff (Retry-After honoured) for 429s, 5xx and timeouts; never a hot loop.
// Watcher feeds it from pod and node informers whose transforms keep only images, phase and
// the node's platform. Each warm ends in metrics (pullgate_warm_*, by mirror host and outcome)
// and an Event on the pod that triggered it.
package warm
