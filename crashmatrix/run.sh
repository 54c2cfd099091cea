#!/usr/bin/env bash
# Usage: crashmatrix/run.sh [--quick] [--runs N] [--seconds S] [--seed N] [--only REGEX]
#                           [--seigo PATH] [--out DIR] [--state-dir DIR] [--base-port P] ...
#   The real-process crash matrix (TESTING.md, "Crash matrix"): `seigo demo run` under
#   coordinator crashes at every crash site, resolver crashes, kill -9 of the demo process,
#   kill -9 + restart of a shard, and connection cuts / lost replies from crashmatrix/proxy.py;
#   after each run `seigo recover` until exit 0, then `seigo demo audit`. seigo mode must have
#   zero VIOLATION lines; naive mode (the negative control) must have some.
#
#   --quick: the CI size (2 runs per cell, 2 s of trades each; about 2-3 minutes on 2 cores).
#   Default (full): 10 runs per cell, 4 s each (about 20 minutes). The full set also has the
#   cells deploy2 (two seigo deployments on the same servers: B dies at its commit point while
#   A's resolvers run past B's deadline) and dst (servers and application under
#   TZ=America/New_York + libfaketime across the autumn change); at the quick size they run
#   with --quick --only '^(deploy2|dst) ' (ctest CrashMatrixSharedServersAndDst, ~1-1.5 min).
#   It starts and stops its OWN MariaDB shards (scripts/servers.sh, state dir
#   /tmp/seigo-crashmatrix, which it wipes; ports 33461+, proxy 33471, control 33472): never
#   the servers that scripts/test.sh starts. Needs build/seigo (cmake --build build --target
#   seigo_cli) unless --seigo is given.
#   Writes results-<quick|full>-<date>.md, runs.jsonl and per-run logs to --out (default
#   build/crashmatrix). All options: crashmatrix/run.sh --help.
#   Exit status: 0 iff seigo had zero violations, zero stray InnoDB transactions and no errors
#   in every run, the proxy self-test saw lost replies, and naive mode showed at least one
#   violation; 1 otherwise. A run whose shard never came back after kill -9 (mariadbd aborting
#   in its own crash recovery) has no verdict: fresh shards are set up and it is only reported.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "crashmatrix: python3 is needed (scripts/install-deps.sh)" >&2; exit 1; }
exec python3 "$here/matrix.py" "$@"
