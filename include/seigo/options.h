// Tunables of the commit protocol and the resolver. Defaults are what the demo and the tests use.
#ifndef SEIGO_OPTIONS_H_
#define SEIGO_OPTIONS_H_

#include <cstdint>

namespace seigo {

struct ProtocolOptions {
  // Closure runs per Run(): conflicts (deadlock, lock-wait timeout) and unavailable shards
  // before the commit point are retried up to this many attempts in all.
  int max_attempts = 10;
  // Full-jitter exponential backoff between attempts: uniform in
  // [0, min(backoff_max_ms, backoff_base_ms * 2^(attempt-1))].
  int64_t backoff_base_ms = 4;
  int64_t backoff_max_ms = 500;
  // An attempt's deadline (written into its XIDs) is its start + txn_timeout_ms. The decider
  // refuses to commit after it; resolvers never abort before it. It bounds both how long a
  // closure + commit may take and how long a crashed coordinator's branches keep their locks.
  int64_t txn_timeout_ms = 10'000;
  // When the decider's COMMIT reply is lost, how many times the coordinator tries to learn the
  // outcome (a fencing insert) before returning kOutcomeUnknown and leaving it to the resolver.
  int unknown_resolve_tries = 5;
  // Phase 2 of one branch: XA COMMIT attempts from a fresh connection after the owning
  // connection failed, before the branch is left to the resolver.
  int phase2_tries = 5;
  // One-shard transactions insert a commit record (a decision row for their gid, on their
  // shard) in the same round trip as their COMMIT, so that a lost COMMIT reply is resolved —
  // committed or not — through the fence, like a multi-shard commit, instead of staying
  // outcome_unknown. It also puts the deadline on one-shard transactions (one still running
  // after txn_timeout_ms is refused and retried). Off by default: the row insert and its later
  // deletion cost one-shard throughput about 20 % on this project's benchmark (BENCHMARKS.md,
  // P2 0.80 with it against the goal 0.95).
  bool record_one_shard_commits = false;
};

struct ResolverOptions {
  // Decision rows are deleted once no branch of theirs is prepared anywhere and their deadline
  // is this far behind the decider's clock. Never less than kMinDecisionRetentionMs
  // (participant.h): values below are raised to it.
  int64_t decision_retention_ms = 120'000;
  // Garbage-collect decision rows in this pass (needs every shard to answer XA RECOVER).
  bool collect_garbage = true;
  // At most this many decision rows examined for garbage per shard per pass.
  int64_t gc_batch = 5'000;
};

}  // namespace seigo

#endif  // SEIGO_OPTIONS_H_
