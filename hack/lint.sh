#!/usr/bin/env bash
# golangci-lint (.golangci.yml) and govulncheck on both modules: the root module and test/.
#
#   hack/lint.sh
#
# Tools are installed with `go install` into $PULLGATE_CACHE/tools/GOVERSION (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/pullgate/tools/go1.27.3) when absent or at another version.
#
# govulncheck needs the Go vulnerability database. PULLGATE_VULNDB picks it:
#   auto (default)  vuln.go.dev when it resolves, else the offline snapshot below
#   online          vuln.go.dev only
#   offline         a database indexed from the golang.org/x/vulndb module (served by the Go
#                   module proxy), pinned at VULNDB_VERSION; it knows nothing newer than that
#   skip            do not run govulncheck (said loudly; the script still fails unless
#                   PULLGATE_VULN_SKIP_OK=1, so a skipped scan never passes for a clean one)
# The database used, and its newest entry, are printed. A called vulnerability fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

GOLANGCI_VERSION=v2.15.0
GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

go="${GO:-go}"
cache="${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}"
# Per Go release: golangci-lint and govulncheck type-check the standard library of the Go that
# runs them, so a binary built by an older Go must not be reused under a newer one.
tools="$cache/tools/$("$go" env GOVERSION)"
mkdir -p "$tools"

step() { printf '\n=== %s\n' "$*"; }

# install NAME PACKAGE VERSION CURRENT-VERSION-COMMAND...
install() {
	local name="$1" pkg="$2" version="$3"
	shift 3
	if [ -x "$tools/$name" ] && [ "$("$@" 2>/dev/null || true)" = "$version" ]; then
		return
	fi
	echo "installing $name $version into $tools"
	GOBIN="$tools" GOFLAGS=-mod=mod "$go" install "$pkg@$version"
}
golangci_version() { echo "v$("$tools/golangci-lint" version --short)"; }
govulncheck_version() { "$tools/govulncheck" -version | sed -n 's/^Scanner: govulncheck@//p'; }

install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_VERSION" golangci_version
install govulncheck golang.org/x/vuln/cmd/govulncheck "$GOVULNCHECK_VERSION" govulncheck_version

failed=()

step "golangci-lint $GOLANGCI_VERSION: root module"
# Other checkouts on the machine may lint at the same time; they do not share our cache lock.
if ! "$tools/golangci-lint" run --allow-parallel-runners ./...; then
	failed+=("golangci-lint (root)")
fi
step "golangci-lint $GOLANGCI_VERSION: test module (with the e2e suites: -tags e2e)"
if ! (cd test && "$tools/golangci-lint" run --allow-parallel-runners --build-tags e2e --config "$root/.golangci.yml" ./...); then
	failed+=("golangci-lint (test)")
fi

# offline_db builds (once) a v1 database from the OSV files golang.org/x/vulndb ships and
# prints its file:// URL.
offline_db() {
	local out="$cache/vulndb-$VULNDB_VERSION"
	if [ ! -f "$out/index/db.json" ]; then
		local dir
		dir="$("$go" mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		[ -d "$dir/data/osv" ] || { echo "golang.org/x/vulndb@$VULNDB_VERSION has no data/osv" >&2; return 1; }
		install indexdb golang.org/x/vulndb/cmd/indexdb "$VULNDB_VERSION" false >&2
		rm -rf "$out.tmp"
		"$tools/indexdb" -vulns "$dir/data/osv" -out "$out.tmp" >&2
		mv "$out.tmp" "$out"
		# The newest entry, for the report: the snapshot knows nothing after it.
		find "$dir/data/osv" -name 'GO-*.json' -printf '%f\n' | sed 's/\.json$//' | sort -V | tail -n1 >"$out/NEWEST"
	fi
	echo "file://$out"
}

mode="${PULLGATE_VULNDB:-auto}"
db=""
case "$mode" in
online) db="https://vuln.go.dev" ;;
offline) db="$(offline_db)" ;;
auto)
	if getent hosts vuln.go.dev >/dev/null 2>&1; then
		db="https://vuln.go.dev"
	else
		echo "vuln.go.dev does not resolve here; using the offline snapshot golang.org/x/vulndb@$VULNDB_VERSION"
		db="$(offline_db)"
	fi
	;;
skip) ;;
*)
	echo "PULLGATE_VULNDB=$mode: want auto, online, offline or skip" >&2
	exit 2
	;;
esac

# vulncheck DIR: run govulncheck in a module and judge its called findings.
vulncheck() {
	local dir="$1" out rc=0
	out="$(cd "$dir" && "$tools/govulncheck" -db "$db" ./... 2>&1)" || rc=$?
	# The call traces run to thousands of lines; the summary names each finding and its fix.
	printf '%s\n' "$out" | grep -vE '^[[:space:]]+#[0-9]+: ' || true
	[ "$rc" = 3 ] && echo "(call traces: cd $dir && $tools/govulncheck -db $db ./...)"
	case "$rc" in
	0) return 0 ;;
	3)
		echo "called vulnerabilities in $dir (go $("$go" env GOVERSION)): update the module, or Go (GOTOOLCHAIN in the Makefile)" >&2
		return 1
		;;
	*)
		echo "govulncheck could not run in $dir (exit $rc)" >&2
		return 1
		;;
	esac
}

if [ -z "$db" ]; then
	step "govulncheck: NOT RUN (PULLGATE_VULNDB=skip)"
	[ "${PULLGATE_VULN_SKIP_OK:-}" = 1 ] || failed+=("govulncheck (skipped)")
else
	newest=""
	[ -f "${db#file://}/NEWEST" ] && newest=", newest entry $(cat "${db#file://}/NEWEST")"
	step "govulncheck $GOVULNCHECK_VERSION: root module (database $db$newest)"
	vulncheck . || failed+=("govulncheck (root)")
	step "govulncheck $GOVULNCHECK_VERSION: test module (database $db$newest)"
	vulncheck test || failed+=("govulncheck (test)")
fi

if [ "${#failed[@]}" -gt 0 ]; then
	printf '\nlint FAILED: %s\n' "${failed[*]}" >&2
	exit 1
fi
printf '\nlint passed\n'
