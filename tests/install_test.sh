#!/usr/bin/env bash
# cmake --install into a temporary prefix, then build examples/transfer and examples/game
# against it with find_package(seigo) and run them on the test shards.
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

# The game example (players seeded with 1000 gold): a gacha pull, a guild donation to a treasury on another shard, a refused
# pull, and a read-only read-back of the whole state after each.
cmake -S "$src/examples/game" -B "$tmp/game" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/game" -j2 >/dev/null
game=$tmp/game/game
"$game" setup
before=$("$game" show 3 18446744073709551557)
echo "$before"
"$game" gacha 3 5
"$game" donate 3 18446744073709551557 250
after=$("$game" show 3 18446744073709551557)
echo "$after"
# gold = before - 5 * 100 - 250; items + 5; treasury + 250
read -r g0 i0 t0 < <(sed -E 's/.*gold ([0-9-]+), items ([0-9]+), guild [0-9]+ treasury ([0-9-]+)/\1 \2 \3/' <<<"$before")
read -r g1 i1 t1 < <(sed -E 's/.*gold ([0-9-]+), items ([0-9]+), guild [0-9]+ treasury ([0-9-]+)/\1 \2 \3/' <<<"$after")
[[ $g1 -eq $((g0 - 750)) && $i1 -eq $((i0 + 5)) && $t1 -eq $((t0 + 250)) ]] ||
  { echo "install_test: game state did not move as expected"; exit 1; }
# A pull the player cannot pay for: refused with the guard's reason, nothing changes.
set +e
out=$("$game" gacha 3 10)  # 1000 gold; 250 left
rc=$?
set -e
echo "$out"
[[ $rc -eq 1 && $out == *"not enough gold"* ]] || { echo "install_test: expected a refused pull"; exit 1; }
[[ $("$game" show 3 18446744073709551557) == "$after" ]] || { echo "install_test: refused pull changed state"; exit 1; }
