#!/usr/bin/env bash
# Usage: sim/measure-variants.sh [BUILD_DIR]   (default build/)
# Re-measures the numbers in sim/README.md's two variant tables: for each deliberately broken
# variant, the first violating seed and the violating seeds in 1-2000 ("Self-test"); for each
# issue-7 regression run, the violating seeds of its command with the old code's variant added
# ("The widened envelope"). Any change to the workload or the core's schedule changes them.
set -euo pipefail
sim=${1:-build}/sim/seigo_sim
first_violation() {
  local out
  out=$("$@" 2>&1 || true)
  grep -m1 -o "VIOLATION in seed [0-9]*" <<<"$out" | grep -o "[0-9]*$" || echo none
}
violations() { { "$@" 2>&1 || true; } | sed -n 's/^sim: [0-9]* seeds, \([0-9]*\) violations.*/\1/p'; }
echo "variant | caught at seed | violating seeds in 1-2000"
for v in no_fence ignore_deadline nota_is_done commit_before_decision ignore_deployment \
         zone_clock no_classifier pool_tainted no_owner_wait gc_oldest_trx \
         commit_error_is_abort no_pool_flush plain_audit_reads no_deadlock_detector \
         deadlock_kills_oldest redis_locks_expire redis_no_read_validation \
         redis_escrow_ignores_pending redis_no_read_locks; do
  echo "$v | $(first_violation "$sim" --variant "$v" --seeds 2000) | $(violations "$sim" --variant "$v" --seeds 2000)"
done
echo
echo "regression run | old code's variant | violating seeds | first"
while IFS='|' read -r name v args; do
  # shellcheck disable=SC2086
  echo "$name | $v | $(violations "$sim" $args --variant "$v") | $(first_violation "$sim" $args --variant "$v")"
done <<'LIST'
two_deployments_share_servers|ignore_deployment|--seeds 500 --force-fault two_deployments
decider_clock_dst_step|zone_clock|--seeds 500 --force-fault dst_step
closure_ends_transaction|no_classifier|--seeds 500 --force-fault closure_ends_transaction
session_state_never_pooled|pool_tainted|--seeds 500 --force-fault closure_ends_transaction --force-fault closure_changes_session
limbo_branch_during_owner_teardown|no_owner_wait|--seeds 3000 --force-fault slow_teardown --force-fault crash@after_decision
pool_after_server_restart|no_pool_flush|--seeds 500 --force-fault shard_crash
gc_with_foreign_snapshot|gc_oldest_trx|--seeds 500 --force-fault long_foreign_snapshot
commit_statement_error_is_outcome_unknown|commit_error_is_abort|--seeds 500 --force-fault commit_statement_error
LIST
