#!/usr/bin/env bash
# golangci-lint (.golangci.yml) and govulncheck on both modules: the root module and test/.
#
#   hack/lint.sh
#
# Tools are installed with `go install` into $PULLGATE_CACHE/tools (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/pullgate/tools) when absent or at another version.
#
# govulncheck needs the Go vulnerability database. PULLGATE_VULNDB picks it:
#   auto (default)  vuln.go.dev when it resolves, else the offline snapshot below
#   online          vuln.go.dev only
#   offline         a database indexed from the golang.org/x/vulndb module (served by the Go
#                   module proxy), pinned at VULNDB_VERSION; it knows nothing newer than that
#   skip            do not run govulncheck (said loudly; the script still fails unless
#                   PULLGATE_VULN_SKIP_OK=1, so a skipped scan never passes for a clean one)
# The database used, and its newest entry, are printed. A called vulnerability fails the run,
# except those listed in ACCEPTED below for the exact toolchain they are accepted for.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

GOLANGCI_VERSION=v2.15.0
GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

# Called vulnerabilities accepted, for one toolchain only: they are in the standard library of
# ACCEPTED_GOVERSION and fixed in a later Go release that cannot be installed where this runs
# (GOTOOLCHAIN=local, no toolchain downloads). A finding is accepted only when every place it
# is found is that standard library (the same ID in a module, say golang.org/x/net, still
# fails: bump the module). With any other toolchain the list does not apply, so moving Go
# forward re-checks everything. Each run prints what it accepted.
ACCEPTED_GOVERSION=go1.26.8
ACCEPTED=(
	GO-2026-6603 # net/http: HTTP/2 server memory exhaustion via trailers (fixed in go1.26.9)
	GO-2026-6605 # net/http: HTTP/1 client desync after CONNECT rejection (go1.26.9)
	GO-2026-6607 # crypto/tls: malformed ECH outer extension references (go1.26.9)
	GO-2026-6608 # net/textproto, mime/multipart: memory limit bypass (go1.26.9)
	GO-2026-6610 # net/http: HTTP/2 transport accepts malformed framing headers (go1.26.9)
	GO-2026-6611 # net/http: CPU from repeated initial window changes (go1.26.9)
	GO-2026-6612 # net/http: double flow control refund on HTTP/2 server streams (go1.26.9)
	GO-2026-6613 # net/http: HTTP/1 server desync after 2xx CONNECT (go1.26.9)
	GO-2026-6617 # net/http: HTTP/2 server crash, HPACK encoder race (go1.26.9)
	GO-2026-6809 # crypto/x509: distrust compromised intermediates (go1.26.10)
	GO-2026-6599 # html/template: context tracking on consecutive expressions (go1.26.9)
	GO-2026-6600 # html/template: yield as a regexp preceder keyword (go1.26.9)
)

go="${GO:-go}"
cache="${PULLGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullgate}"
tools="$cache/tools"
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
step "golangci-lint $GOLANGCI_VERSION: test module"
if ! (cd test && "$tools/golangci-lint" run --allow-parallel-runners --config "$root/.golangci.yml" ./...); then
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
	3) ;; # called vulnerabilities found
	*)
		echo "govulncheck could not run in $dir (exit $rc)" >&2
		return 1
		;;
	esac
	local goversion id stdlib seen=0 unaccepted=()
	goversion="$("$go" env GOVERSION)"
	# One line per called vulnerability: its ID, and 1 when every "Found in:" is a standard
	# library package at this toolchain's version (module versions start with v, not go).
	while read -r id stdlib; do
		seen=$((seen + 1))
		if [ "$stdlib" = 1 ] && [ "$goversion" = "$ACCEPTED_GOVERSION" ] && printf '%s\n' "${ACCEPTED[@]}" | grep -qx "$id"; then
			echo "ACCEPTED, NOT FIXED: $id (standard library of $goversion; see ACCEPTED in hack/lint.sh)"
		else
			unaccepted+=("$id")
		fi
	done < <(printf '%s\n' "$out" | awk -v gv="$goversion" '
		/^Vulnerability #[0-9]+: GO-/ { if (id != "") print id, std; id = $3; std = 1; next }
		id != "" && $1 == "Found" && $2 == "in:" && $3 !~ ("@" gv "$") { std = 0 }
		END { if (id != "") print id, std }')
	if [ "$seen" -eq 0 ]; then
		echo "govulncheck reported called vulnerabilities in $dir, but none could be read from its output" >&2
		return 1
	fi
	if [ "${#unaccepted[@]}" -gt 0 ]; then
		echo "called vulnerabilities in $dir: ${unaccepted[*]}" >&2
		return 1
	fi
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
