#!/usr/bin/env bash
# The Debian packages: cpack -G DEB into a temporary directory, dpkg -i them, check what they
# put under /usr, build examples/transfer against /usr with find_package(seigo) and run it on the
# test shards. When seigod is packaged and examples/python/trade.py exists, also start
# /usr/bin/seigod on 127.0.0.1:36890 and run the example with the installed Python client.
# The packages are removed at the end (dpkg -r), whatever happens; nothing is written into the
# source tree.
#   deb_install_test.sh SOURCE_DIR BUILD_DIR
# Exit status 77 (ctest: skipped) when it cannot run here: not root, no dpkg, or seigo files
# already under /usr (installed by hand or by a package) that it must not overwrite or remove.
set -euo pipefail
src=$(cd "$1" && pwd) build=$(cd "$2" && pwd)
skip() { echo "deb_install_test: skipped: $*"; exit 77; }
fail() { echo "deb_install_test: FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || skip "dpkg -i needs root"
command -v dpkg-deb >/dev/null && command -v cpack >/dev/null || skip "dpkg or cpack not found" # SC2015: fine
[[ -f $build/CPackConfig.cmake ]] || fail "$build/CPackConfig.cmake missing (configure first)"
: "${SEIGO_TEST_SHARDS:?run with scripts/test.sh (SEIGO_TEST_SHARDS)}"
pkgs=(seigod seigo libseigo-dev) # removal order
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
    skip "package $p is already installed (dpkg -r it to run this test)"
  fi
done
for f in /usr/bin/seigo /usr/bin/seigod /usr/include/seigo /usr/lib/cmake/seigo; do
  [[ ! -e $f ]] || skip "$f exists already; this test would overwrite and then remove it"
done

tmp=$(mktemp -d)
installed=() seigod_pid=
cleanup() {
  local rc=$?
  if [[ -n $seigod_pid ]] && kill -0 "$seigod_pid" 2>/dev/null; then
    kill "$seigod_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$seigod_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$seigod_pid" 2>/dev/null || true
    wait "$seigod_pid" 2>/dev/null || true
  fi
  if ((${#installed[@]})); then
    dpkg -r "${installed[@]}" >/dev/null || { echo "deb_install_test: dpkg -r ${installed[*]} failed" >&2; rc=1; }
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

# 1. Build the packages (cpack installs the build tree into $tmp, not into the build dir).
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log"; fail "cpack -G DEB"; }
debs=("$tmp"/pkg/*.deb)
[[ -f ${debs[0]} ]] || { cat "$tmp/cpack.log"; fail "cpack made no .deb"; }
for d in "${debs[@]}"; do
  echo "deb_install_test: $(basename "$d"): $(dpkg-deb -f "$d" Depends)"
done

# 2. Install them. Each package is removed at the end if dpkg got as far as unpacking it.
for d in "${debs[@]}"; do installed=("$(dpkg-deb -f "$d" Package)" "${installed[@]}"); done
dpkg -i "${debs[@]}"

test -x /usr/bin/seigo || fail "/usr/bin/seigo missing"
test -f /usr/include/seigo/coordinator.h || fail "/usr/include/seigo/coordinator.h missing"
dpkg -L seigo | grep -qx /usr/bin/seigo || fail "dpkg -L seigo does not list /usr/bin/seigo"
dpkg -L libseigo-dev | grep -qx /usr/include/seigo/coordinator.h ||
  fail "dpkg -L libseigo-dev does not list /usr/include/seigo/coordinator.h"
dpkg -L libseigo-dev | grep -q '/cmake/seigo/seigoConfig\.cmake$' ||
  fail "dpkg -L libseigo-dev does not list seigoConfig.cmake"

# 3. examples/transfer against /usr: found by find_package's default search, no prefix path.
env -u CMAKE_PREFIX_PATH -u seigo_DIR -u seigo_ROOT \
  cmake -S "$src/examples/transfer" -B "$tmp/example" >"$tmp/example.log" 2>&1 ||
  { cat "$tmp/example.log"; fail "configuring examples/transfer against /usr"; }
found=$(sed -n 's/^seigo_DIR:PATH=//p' "$tmp/example/CMakeCache.txt")
[[ $found == /usr/lib*/cmake/seigo ]] || fail "find_package(seigo) found $found, not /usr"
echo "deb_install_test: find_package(seigo): $found"
cmake --build "$tmp/example" -j2 >"$tmp/example.log" 2>&1 ||
  { cat "$tmp/example.log"; fail "building examples/transfer"; }
export SEIGO_SHARDS=$SEIGO_TEST_SHARDS
/usr/bin/seigo demo setup --players 20 >/dev/null
out=$("$tmp/example/transfer" 1 2 5)
echo "$out"
[[ $out == committed* ]] || fail "transfer did not commit"
/usr/bin/seigo demo audit

# 4. seigod and the Python example, when both are there.
example_toml=/usr/share/seigo/seigod.toml.example
trade=$src/examples/python/trade.py
if [[ ! -x /usr/bin/seigod || ! -f $trade ]]; then
  echo "deb_install_test: note: seigod part skipped ($([[ -x /usr/bin/seigod ]] || echo "/usr/bin/seigod not packaged; ")$([[ -f $trade ]] || echo "$trade missing"))"
  exit 0
fi
dpkg -L seigod | grep -qx /usr/bin/seigod || fail "dpkg -L seigod does not list /usr/bin/seigod"
[[ -f $example_toml ]] || fail "$example_toml not installed"
dpkg -L seigod | grep -q '/python3/dist-packages/seigo_client\.py$' ||
  fail "dpkg -L seigod does not list seigo_client.py"
# Our [server] and [shards]; every other section of the example (the statement catalog) as it
# is, except the optional stores, which this test does not start.
port=36890
{
  echo "[server]"
  echo "listen = \"127.0.0.1:$port\""
  echo
  echo "[shards]"
  IFS=, read -ra urls <<<"$SEIGO_TEST_SHARDS"
  printf 'urls = ['
  sep=
  for u in "${urls[@]}"; do printf '%s"%s"' "$sep" "$u"; sep=', '; done
  echo "]"
  echo
  awk '
    /^[[:space:]]*\[/ {
      name = $0
      sub(/^[[:space:]]*\[+[[:space:]]*/, "", name); sub(/[[:space:]]*\].*$/, "", name)
      top = name; sub(/\..*$/, "", top)
      keep = (top != "server" && top != "shards" && top != "redis" && top != "amqp")
    }
    keep' "$example_toml"
} >"$tmp/seigod.toml"
(cd "$tmp" && exec /usr/bin/seigod --config "$tmp/seigod.toml") >"$tmp/seigod.log" 2>&1 &
seigod_pid=$!
for i in $(seq 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  kill -0 "$seigod_pid" 2>/dev/null ||
    { cat "$tmp/seigod.toml" "$tmp/seigod.log"; fail "seigod exited before serving"; }
  [[ $i -lt 300 ]] || { cat "$tmp/seigod.log"; fail "seigod: no /healthz after 30 s"; }
  sleep 0.1
done
echo "deb_install_test: seigod serves on 127.0.0.1:$port"
# The installed client, not a copy from the source tree; no .pyc files written anywhere.
client=$(cd "$tmp" && env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -c \
  'import seigo_client; print(seigo_client.__file__)')
[[ $client == /usr/lib/python3/dist-packages/seigo_client.py ]] ||
  fail "python3 imports seigo_client from $client"
# The 20 players `seigo demo setup --players 20` made above: trades must commit.
trades=$(cd "$tmp" && env -u PYTHONPATH PYTHONDONTWRITEBYTECODE=1 \
  /usr/bin/python3 "$trade" --url "http://127.0.0.1:$port" --players 20 --max-price 20) ||
  { echo "$trades"; cat "$tmp/seigod.log"; fail "examples/python/trade.py"; }
echo "$trades"
[[ $trades =~ ([0-9]+)\ committed && ${BASH_REMATCH[1]} -ge 1 ]] ||
  fail "examples/python/trade.py committed no trade"
/usr/bin/seigo demo audit >/dev/null || fail "the audit after the trades through seigod"
kill "$seigod_pid"
rc=0
wait "$seigod_pid" || rc=$?
seigod_pid=
[[ $rc -eq 0 ]] || { cat "$tmp/seigod.log"; fail "seigod exited $rc on SIGTERM"; }
echo "deb_install_test: seigod stopped"
