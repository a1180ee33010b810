#!/usr/bin/env bash
# Installs lwm2m-node-lib (an independent LwM2M server in Node.js) for the
# interop tests in interop/. Usage:
#
#   bash .ci/install-nodelib.sh [DIR]
#
# DIR defaults to a new temporary folder. The script prints DIR, the folder
# that holds node_modules/; pass it to the tests as LWM2M_NODE_LIB_DIR:
#
#   export LWM2M_NODE_LIB_DIR=$(bash .ci/install-nodelib.sh)
#   go test -race ./interop/...
#
# Progress goes to stderr so that stdout carries the folder only.
set -euo pipefail

version=1.4.0
dir=${1:-}
if [[ -z $dir ]]; then
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lwm2m-node-lib.XXXXXX")
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

command -v node >/dev/null || { echo "install-nodelib: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "install-nodelib: npm not found" >&2; exit 1; }

if [[ -f $dir/node_modules/lwm2m-node-lib/package.json ]] &&
	node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
		"$dir/node_modules/lwm2m-node-lib/package.json" "$version"; then
	echo "install-nodelib: lwm2m-node-lib@$version already in $dir" >&2
else
	# A package.json of our own keeps npm from walking up to a parent project.
	[[ -f $dir/package.json ]] || echo '{"name":"lwm2m-interop","private":true}' >"$dir/package.json"
	(cd "$dir" && npm install --no-audit --no-fund --no-save "lwm2m-node-lib@$version" >&2)
fi
echo "$dir"
