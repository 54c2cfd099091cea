// The cross-shard deadlock detector (doc/deadlocks.md): deterministic, thread-free, like the
// rest of src/core. The library runs DetectDeadlocks on a thread of its own every
// DeadlockOptions::poll_ms; the simulator runs the same function in a fiber of each simulated
// process.
#ifndef SEIGO_CORE_DEADLOCK_H_
#define SEIGO_CORE_DEADLOCK_H_

#include <map>
#include <set>
#include <tuple>
#include <span>
#include <string>
#include <vector>

#include "seigo/deadlock.h"
#include "seigo/env.h"
#include "seigo/participant.h"

namespace seigo::core {

// A statement to interrupt so that a cycle breaks.
// One waiting statement: (store index, server thread, query id).
using WaitKey = std::tuple<size_t, uint64_t, uint64_t>;

struct DeadlockVictim {
  size_t store = 0;  // index into the stores given to AnalyzeWaits
  uint64_t thread = 0, query = 0;
  int64_t published_for_ms = 0;  // since its wait was first published, by the store's clock
  bool presumed = false;  // the cycle rests on at least one presumed edge
  std::vector<WaitKey> others;  // the waiting statements of the cycle's other members
  std::vector<std::string> others_txn;  // ... and their Runs (same order)
  BrokenDeadlock report;  // `shard` is the store index here; DetectDeadlocks maps it
};

struct WaitGraph {
  std::vector<WaitEdge> edges;  // `shard` = store index
  std::vector<DeadlockVictim> victims;
};

// The wait-for graph between seigo transactions over the lock waits of every store
// (`waits[i]` read from the store whose id is `store_ids[i]`), its cycles and one victim per
// cycle: the youngest member (largest priority_ms, then largest txn). Rows whose statement the
// snapshot shows waiting get exact edges; the others presumed ones (deadlock.cc). A lock holder
// is known only through a published row of its own transaction (it waits somewhere else, or it
// would not be part of a cycle). `now_ms` (this process's clock) dates the waits for reports.
// A Run waiting on a store (its txn, the store index).
using RunWait = std::pair<std::string, size_t>;

// `disproved`: Runs whose presumed edges on that store proved wrong (DetectorState); they get
// none there, only exact ones.
WaitGraph AnalyzeWaits(std::span<const std::string> store_ids, std::span<const LockWaits> waits,
                       int64_t now_ms, const std::set<RunWait>* disproved = nullptr);

// What a process's detector learns between passes. When it broke a cycle that rested on a
// presumed edge and, a pass or two later, another member of it still waits in the same
// statement, that member was not waiting for the victim: the presumption was wrong (its holder
// is someone else — a crashed coordinator's prepared branch, say — and no fresh snapshot said
// so). That Run's presumed edges on that store are then dropped for 2 s after it was last seen
// waiting there — across its retries, which wait behind the same holder again — so a younger
// Run that waits behind it is not interrupted again and again for nothing.
struct DetectorState {
  std::map<WaitKey, std::pair<int64_t, std::string>> suspects;  // -> when broken, its Run
  std::map<RunWait, int64_t> disproved;                          // -> until (NowMs)
};

// One detector pass. When some statement of this process has been running for at least
// options.check_after_ms (or `force`), publishes those on their stores, reads every store's
// lock waits (at once, through env->ForEach) and, with `break_cycles`, interrupts each
// cycle's victim — at once if the victim's statement is this process's, else only once it has
// waited a grace period longer (its own process should have done it). Otherwise reads nothing
// (report.ran = false): no cost without waits.
DeadlockReport DetectDeadlocks(std::span<Participant* const> participants, Env* env,
                               const DeadlockOptions& options, bool force, bool break_cycles,
                               DetectorState* state = nullptr);

}  // namespace seigo::core

#endif  // SEIGO_CORE_DEADLOCK_H_
