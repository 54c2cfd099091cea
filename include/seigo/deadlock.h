// Cross-shard deadlock detection: its options and what one pass of the detector saw and did
// (doc/deadlocks.md).
//
// A deadlock whose cycle runs through two shards is invisible to each server: each sees one
// transaction waiting for another that is merely idle. Without help both wait out
// innodb_lock_wait_timeout. seigo's detector joins every shard's lock waits into one wait-for
// graph between seigo transactions — across coordinator processes, through what each process
// publishes on the shard where it waits — and breaks each cycle by interrupting the waiting
// statement of its youngest transaction (the Run whose first attempt started last), which then
// rolls back and retries as after any deadlock. The oldest transaction of a cycle never loses.
#ifndef SEIGO_DEADLOCK_H_
#define SEIGO_DEADLOCK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "seigo/status.h"

namespace seigo {

struct DeadlockOptions {
  // false: no detector; cross-shard cycles last until innodb_lock_wait_timeout (the backstop,
  // which stays in force either way for what the detector cannot see).
  bool enabled = true;
  // A pass runs while a statement of this process has been running at least this long. Lower
  // = cycles broken sooner, and more passes (a round trip to every shard) under contention.
  int64_t check_after_ms = 10;
  // How often the detector thread looks at this process's running statements (in memory).
  int64_t poll_ms = 5;
  // At most one pass (a round trip to every shard) per this many ms while something waits.
  int64_t pass_interval_ms = 10;
};

// One wait-for edge between two seigo transactions, on one shard.
struct WaitEdge {
  uint32_t shard = 0;
  std::string waiter, holder;    // the Runs (the gid of each one's first attempt)
  uint64_t waiter_thread = 0, holder_thread = 0;  // server threads (PROCESSLIST ids)
  int64_t waited_ms = 0;         // how long the waiter's statement has been running
};

// One cycle the detector broke.
struct BrokenDeadlock {
  std::string victim;              // its Run (youngest of the cycle)
  uint32_t shard = 0;              // where the victim's statement waited
  int64_t waited_ms = 0;           // how long that statement had waited when it was broken
  bool cross_shard = true;         // the cycle's waits are on more than one shard
  std::vector<std::string> cycle;  // the Runs of the cycle, the victim first
};

struct DeadlockReport {
  bool ran = false;                   // the stores were read (something had waited long enough)
  std::vector<WaitEdge> waits;        // every edge between known seigo transactions
  std::vector<BrokenDeadlock> broken; // cycles broken by this pass (victims interrupted)
  std::vector<Status> errors;         // shards that could not be read, failed interrupts
};

}  // namespace seigo

#endif  // SEIGO_DEADLOCK_H_
