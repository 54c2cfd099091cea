#!/usr/bin/env bash
# Usage: scripts/grants.sh DATABASE USER [HOST]   (prints SQL; pipe it into `mariadb -uroot`)
#   The least privileges seigo needs on one shard's server for USER (the application's
#   coordinators and any `seigo recover`/`seigo status` run as the same user), database DATABASE,
#   connecting from HOST (default '%'). doc/library.md, "Privileges", explains each line.
#   Run it on every shard's server, with that shard's database name.
set -euo pipefail
db=${1:?usage: scripts/grants.sh DATABASE USER [HOST]}
user=${2:?usage: scripts/grants.sh DATABASE USER [HOST]}
host=${3:-%}
ident='^[A-Za-z0-9_$-]+$'
[[ $db =~ $ident ]] || { echo "grants.sh: bad database name: $db" >&2; exit 2; }
[[ $user =~ $ident ]] || { echo "grants.sh: bad user name: $user" >&2; exit 2; }
[[ $host =~ ^[A-Za-z0-9_.%:-]+$ ]] || { echo "grants.sh: bad host: $host" >&2; exit 2; }
cat <<SQL
-- The game's tables and seigo's own (seigo_decision, seigo_branch, seigo_shard).
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$db\`.* TO '$user'@'$host';
-- Only for the first Coordinator::Open with prepare_schema = true (creates seigo's tables) and
-- for upgrades from seigo 0.1 (ALTER). A DBA may create them instead and leave these out.
GRANT CREATE, ALTER ON \`$db\`.* TO '$user'@'$host';
-- information_schema.INNODB_TRX and other sessions' PROCESSLIST rows, read before a branch is
-- committed or rolled back from a connection that does not own it (doc/limbo-branch.md).
GRANT PROCESS ON *.* TO '$user'@'$host';
SQL
