#!/usr/bin/env bash
# helm lint + helm template of deploy/helm/pullgate, with the default values and with each example
# values file, all with --strict. Uses helm from PATH, else a cached helm, installed with
# `go install` on first use (the module proxy is the one download source CI has).
set -euo pipefail

# The chart requires Kubernetes >= 1.30; a go-installed helm has no release ldflags and would
# otherwise render for its built-in default (v1.20).
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart=$root/deploy/helm/pullgate

helm=$("$root/hack/helm.sh")

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # run <label> [helm args...]
  local label=$1
  shift
  "$helm" lint --strict --kube-version "$KUBE_VERSION" "$chart" "$@" >"$out/lint.log" 2>&1 ||
    { cat "$out/lint.log" >&2; echo "FAIL lint ($label)" >&2; return 1; }
  "$helm" template pullgate "$chart" --namespace pullgate-system --kube-version "$KUBE_VERSION" \
    "$@" >"$out/rendered.yaml" 2>"$out/template.log" ||
    { cat "$out/template.log" >&2; echo "FAIL template ($label)" >&2; return 1; }
  printf 'ok   %-34s %s objects\n' "$label" "$(grep -c '^kind:' "$out/rendered.yaml")"
}

echo "helm: $("$helm" version --short) at $helm"
run defaults
for f in "$chart"/examples/*.yaml; do
  run "examples/$(basename "$f")" --values "$f"
done

# Values the chart must refuse: the webhook timeout not above the resolve budget, and a typo.
refuse() { # refuse <label> [helm args...]
  local label=$1
  shift
  if "$helm" template pullgate "$chart" --namespace pullgate-system --kube-version "$KUBE_VERSION" \
    "$@" >/dev/null 2>&1; then
    echo "FAIL template accepted $label" >&2
    return 1
  fi
  printf 'ok   refused %s\n' "$label"
}
refuse "timeoutSeconds<=resolve.timeout" --set webhook.timeoutSeconds=2 --set policy.resolve.timeout=2s
refuse "unknown value key" --set webhook.timeoutSecond=5
