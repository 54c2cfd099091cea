#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build examples/transfer against it with
# find_package(seigo) and run one transfer on the test shards.
#   install_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -x "$tmp/prefix/bin/seigo"
test -f "$tmp/prefix/include/seigo/coordinator.h"
cmake -S "$src/examples/transfer" -B "$tmp/example" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/example" -j2 >/dev/null
export SEIGO_SHARDS=$SEIGO_TEST_SHARDS
"$tmp/prefix/bin/seigo" demo setup --players 20 >/dev/null
out=$("$tmp/example/transfer" 1 2 5)
echo "$out"
[[ $out == committed* ]]
"$tmp/prefix/bin/seigo" demo audit
