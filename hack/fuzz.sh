#!/usr/bin/env bash
# Run every Go fuzz target of the root module for a fixed time, one target at a time.
#
#   hack/fuzz.sh [seconds]      (default 60 per target; FUZZ_PACKAGES overrides ./...)
#
# `go test -fuzz` takes one package and one target per run, so targets are discovered with
# `go test -list` and run in turn. The seed corpora (f.Add and testdata/fuzz/FuzzXxx/) already
# run as ordinary tests under `make test`; this script is the long, randomised part. A crash
# stops the script with a non-zero exit: the failing input is written to the package's
# testdata/fuzz/FuzzXxx/ directory, where it becomes a regression seed once committed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
	echo "usage: $0 [seconds per target, a positive integer]" >&2
	exit 2
fi
go="${GO:-go}"
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

targets=()
# shellcheck disable=SC2086 # FUZZ_PACKAGES is a list of package patterns
for pkg in $("$go" list ${FUZZ_PACKAGES:-./...}); do
	while read -r name; do
		[[ "$name" == Fuzz* ]] && targets+=("$pkg $name")
	done < <("$go" test -list '^Fuzz' "$pkg" 2>/dev/null)
done
if [ "${#targets[@]}" -eq 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi

summary=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	printf '\n=== %s %s (%ss)\n' "$pkg" "$name" "$secs"
	log="$log_dir/$name.log"
	if ! "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" "$pkg" 2>&1 | tee "$log"; then
		echo "FAIL: $pkg $name; the failing input is under its testdata/fuzz/$name/ (commit it as a seed after the fix)" >&2
		exit 1
	fi
	last="$(grep -E '^fuzz: elapsed:' "$log" | tail -n1 || true)"
	summary+=("$name ($pkg): ${last#fuzz: }")
done

printf '\n=== fuzz summary (%ss per target)\n' "$secs"
printf '%s\n' "${summary[@]}"
