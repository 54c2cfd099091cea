// What the resolver reports: the in-doubt transactions it found and what it did about them.
//
// The resolver (src/core/resolver.cc, doc/protocol.md "Recovery") scans XA RECOVER on every
// shard, keeps seigo's XIDs, looks up each transaction's decision on its decider shard, writes an
// abort decision (a fencing insert) for transactions past their deadline without one, and then
// commits or rolls back their branches. It is safe at any time, from any process, concurrently
// with live coordinators and other resolvers.
#ifndef SEIGO_RESOLVER_H_
#define SEIGO_RESOLVER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "seigo/participant.h"
#include "seigo/status.h"

namespace seigo {

// One global transaction with at least one prepared branch.
struct InDoubtTx {
  std::string gid;
  uint32_t decider = 0;
  int64_t start_ms = 0;     // when the attempt began (coordinator's clock)
  int64_t deadline_ms = 0;
  std::vector<uint32_t> prepared_on;  // shards whose XA RECOVER lists a branch
  std::optional<Decision> decision;   // the decider's row, if any
  Status decision_error;              // why the decision could not be read (decider down...)
  int64_t age_ms = 0;                 // now - start
  int64_t overdue_ms = 0;             // now - deadline (negative: still running)
};

struct InDoubtReport {
  std::vector<InDoubtTx> txs;  // sorted by deadline, oldest first
  std::vector<Status> errors;  // shards that could not be scanned
  int64_t now_ms = 0;
};

struct ResolveReport {
  struct Applied {
    std::string gid;
    uint32_t shard = 0;
    Outcome outcome = Outcome::kAbort;
  };
  struct Pending {
    std::string gid;
    std::vector<uint32_t> shards;
    std::string reason;  // "running, deadline in 3.2 s", "decider shard 1 unreachable", ...
  };
  // A branch that a commit or rollback by XID did not finish although the server answered OK,
  // or that seigo's records show open while XA RECOVER does not list it: the MariaDB limbo
  // branch (doc/limbo-branch.md). Its decision is kept; `message` says what to do (restart the
  // server, then recover).
  struct Limbo {
    std::string gid;
    uint32_t shard = 0;
    std::string message;
  };
  std::vector<Applied> applied;    // branches committed or rolled back by this pass
  std::vector<Pending> pending;    // still in doubt; a later pass will retry
  std::vector<std::string> fenced; // gids this pass decided to abort: a fencing insert, or
                                   // no decision past the fence window (nothing written)
  std::vector<Limbo> limbo;        // see Limbo: each needs an operator
  size_t forgotten = 0;            // decision rows garbage-collected
  std::vector<Status> errors;      // shards that could not be scanned, failed calls
  bool complete = true;            // every shard was scanned
};

}  // namespace seigo

#endif  // SEIGO_RESOLVER_H_
