// The commit protocol and the resolver: the one place where seigo decides anything.
//
// Everything here is deterministic given its inputs: it talks to stores only through
// Participant/Session (participant.h) and to the world only through Env (env.h). No sockets, no
// threads, no clocks. The library (src/coordinator.cc) runs it on caller threads with MariaDB
// participants; the simulator (sim/) runs the same code against simulated participants.
//
// Read doc/protocol.md alongside: it names every crash window that the comments in
// protocol.cc and resolver.cc handle.
#ifndef SEIGO_CORE_PROTOCOL_H_
#define SEIGO_CORE_PROTOCOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <span>
#include <vector>

#include "seigo/env.h"
#include "seigo/options.h"
#include "seigo/participant.h"
#include "seigo/resolver.h"
#include "seigo/transaction.h"

namespace seigo::core {

// A prepared branch whose transaction has committed: phase 2 still has to XA COMMIT it, on the
// session that prepared it (the owning connection).
struct Phase2Item {
  Participant* participant = nullptr;
  std::unique_ptr<Session> session;
  Xid xid;
};

// A transaction whose decider COMMIT reply was lost and whose outcome its coordinator could not
// learn before returning kOutcomeUnknown. Its prepared branches hold their locks until a decision
// exists; a resolver may only write one after the deadline. The coordinator, which knows its
// decider session is gone, keeps trying to fence (TrySettle) so that the branches are finished as
// soon as the decider is reachable again, not at the deadline.
struct LostCommit {
  Participant* decider = nullptr;
  Decision abort;  // the abort decision to fence with
};

// Where the messages of committed transactions go (doc/outbox.md).
struct OutboxConfig {
  bool enabled = false;   // false: Tx::Publish is refused (no broker configured)
  std::string claim;      // this process's relay: committed entries are claimed by it first
  int64_t lease_ms = 10'000;  // ... for this long after the commit, then any relay may take them
};

struct RunOutput {
  TxResult result;
  // A committed transaction's messages, now in `outbox` (the decider's participant), for this
  // process's relay to publish at once (the entries' ids are 0: unknown to the caller).
  std::vector<OutboxEntry> messages;
  Participant* outbox = nullptr;
  std::vector<Phase2Item> phase2;  // non-empty only when result is committed
  std::optional<LostCommit> lost;  // set only when result is kOutcomeUnknown
};

// Runs transactions. Thread-compatible: one Protocol may serve many threads at once as long as
// the participants and env are thread-safe (it has no mutable state of its own).
class Protocol {
 public:
  // `participants[i]` is participant i: the first `sql_shards` are the SQL shards (Tx::ShardFor
  // hashes over them), the rest key-value stores (Tx::KvStoreFor). Pointers must outlive the
  // Protocol.
  Protocol(std::vector<Participant*> participants, Env* env, ProtocolOptions options,
           size_t sql_shards = SIZE_MAX, OutboxConfig outbox = {});

  // Runs `fn` and commits it; retries conflicts. The caller must hand result.phase2 to
  // FinishPhase2 (now or on another thread); dropping an item only delays it until a resolver
  // pass (its connection closes, the branch detaches, the resolver sees the commit decision).
  RunOutput Run(const TxFn& fn, const RunOptions& run = {}) const;

  // Phase 2 of one branch. OK = committed; kBusy = left to the resolver (the commit decision is
  // durable, so that is safe, only slower).
  static Status FinishPhase2(Phase2Item item, Env* env, const ProtocolOptions& options);

  // One attempt to settle a lost commit. Returns true when nothing is left to do here: a
  // decision exists now (a resolver pass finishes the branches either way), or the coordinator's
  // fence window has closed (resolvers take over after the deadline).
  static bool TrySettle(const LostCommit& lost, Env* env);

  size_t shard_count() const { return participants_.size(); }  // every participant
  size_t sql_shards() const { return sql_shards_; }
  Participant* participant(uint32_t i) const { return participants_[i]; }
  Env* env() const { return env_; }
  const ProtocolOptions& options() const { return options_; }

 private:
  friend class Attempt;
  std::vector<Participant*> participants_;
  size_t sql_shards_;
  Env* env_;
  ProtocolOptions options_;
  OutboxConfig outbox_;
};

// One resolver pass over all shards (doc/protocol.md, "Recovery").
ResolveReport ResolvePass(std::span<Participant* const> participants, Env* env,
                          const ResolverOptions& options);

// What is in doubt right now, without changing anything (for `seigo status`).
InDoubtReport InspectInDoubt(std::span<Participant* const> participants, Env* env);

// A fresh gid: 32 lowercase hex digits from env->Random64().
std::string NewGid(Env* env);

}  // namespace seigo::core

#endif  // SEIGO_CORE_PROTOCOL_H_
