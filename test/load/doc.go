// Command load is pullgate's load test: the real webhook binary under HTTPS load from vegeta
// (used as a library), in front of a real registry playing the mirror, next to a trivial webhook
// that measures what the machine, TLS and the harness cost on their own (the floor).
//
// It starts go-containerregistry's registry on 127.0.0.1 (optionally delaying every manifest
// request, always counting them), then for each scenario a fresh `webhook serve` child with a
// self-signed certificate and a policy mirroring docker.io to that registry, and prints one
// table: throughput, latency percentiles, wrong answers, the registry requests the scenario
// caused and the webhook's peak RSS (VmHWM). Scenarios: warm (a few tags over and over), cold
// (a new tag every request), burst (many identical new-tag pods at once), a five-container pod
// against a slow registry, and the memory held with a full digest cache.
//
// With -warming, the warm scenario runs while a stand-in controller (this binary again, as a
// process of its own) warms a large image through a local paced mirror with pullgate's warm
// reader: the admission figures with warming on, next to a run without.
//
// Everything runs on this machine: the load generator, the registry and the webhook share its
// cores, which the output says. The figures are for comparing rows of one run (pullgate against
// the floor), not for sizing a cluster.
//
// hack/loadtest.sh (make loadtest) builds bin/webhook and runs it; -smoke runs each scenario for
// about a second so CI keeps the harness working. The process exits non-zero when an answer is
// wrong or a request fails, or when an invariant that does not depend on timing breaks (a burst
// costing more than one manifest request, a cached digest asked for again). Latency and
// throughput targets are reported, never enforced.
package main
