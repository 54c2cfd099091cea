// The cross-shard deadlock detector (doc/deadlocks.md): deterministic, thread-free, like the
// rest of src/core. The library runs DetectDeadlocks on a thread of its own every
// DeadlockOptions::poll_ms; the simulator runs the same function in a fiber of each simulated
// process.
#ifndef SEIGO_CORE_DEADLOCK_H_
#define SEIGO_CORE_DEADLOCK_H_

#include <span>
#include <string>
#include <vector>

#include "seigo/deadlock.h"
#include "seigo/env.h"
#include "seigo/participant.h"

namespace seigo::core {

// A statement to interrupt so that a cycle breaks.
struct DeadlockVictim {
  size_t store = 0;  // index into the stores given to AnalyzeWaits
  uint64_t thread = 0, query = 0;
  BrokenDeadlock report;  // `shard` is the store index here; DetectDeadlocks maps it
};

struct WaitGraph {
  std::vector<WaitEdge> edges;  // `shard` = store index
  std::vector<DeadlockVictim> victims;
};

// The wait-for graph between seigo transactions over the lock waits of every store
// (`waits[i]` read from the store whose id is `store_ids[i]`), its cycles and one victim per
// cycle: the youngest member (largest priority_ms, then largest txn). A published row counts
// only while its statement is still the one waiting on its thread (same query id); a lock
// holder is known only through a published row of its own transaction (it waits somewhere
// else, or it would not be part of a cycle). `now_ms` dates the waits.
WaitGraph AnalyzeWaits(std::span<const std::string> store_ids, std::span<const LockWaits> waits,
                       int64_t now_ms);

// One detector pass. When some statement of this process has been running for at least
// options.check_after_ms (or `force`), publishes those on their stores, reads every store's
// lock waits (at once, through env->ForEach) and, with `break_cycles`, interrupts each
// cycle's victim — at once if the victim's statement is this process's, else only once it has
// waited a grace period longer (its own process should have done it). Otherwise reads nothing
// (report.ran = false): no cost without waits.
DeadlockReport DetectDeadlocks(std::span<Participant* const> participants, Env* env,
                               const DeadlockOptions& options, bool force, bool break_cycles);

}  // namespace seigo::core

#endif  // SEIGO_CORE_DEADLOCK_H_
