// Checker: records what happened in one seed and checks seigo's promises against it.
//
// The simulated shards report every durable change as it happens (a transaction's writes
// committed or discarded, an XA branch started / prepared / committed / rolled back, a decision
// row written or deleted); the workload reports what each Protocol::Run returned and what phase 2
// said. Some promises are checked at once (a decision never changes, an XA COMMIT never happens
// without a commit decision, phase 2's "OK" means committed right now, a "committed" Run really
// passed the commit point); the rest at the end of the seed, after the quiescent phase
// (CheckFinal). Invariants are listed in sim/README.md.
//
// The checker remembers every gid's decision forever, even after the resolver deleted the row
// (garbage collection): a decision written again later must be the same.
#ifndef SEIGO_SIM_CHECKER_H_
#define SEIGO_SIM_CHECKER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "seigo/participant.h"
#include "seigo/resolver.h"
#include "seigo/transaction.h"
#include "sim/common.h"

namespace seigo::sim {

// What one database (one deployment's shard) looks like at the end of a seed (after the
// quiescent phase).
struct DbFinalState {
  std::string deployment;
  uint32_t shard = 0;   // the deployment's shard index
  uint32_t server = 0;  // the server it lives on
  std::map<int64_t, int64_t> rows;
  std::map<std::string, Decision> decisions;  // committed decision rows
};

// What one server looks like at the end of a seed.
struct ServerFinalState {
  uint32_t index = 0;
  std::vector<Xid> prepared;    // seigo XA branches still prepared (limbo ones included)
  size_t foreign_prepared = 0;  // other applications' prepared XA transactions
  size_t limbo = 0;
  size_t locks_held = 0;
  size_t connections = 0;
};

class Checker {
 public:
  struct Stats {
    uint64_t txns = 0, committed = 0, aborted = 0, gave_up = 0, unknown = 0, crashed = 0;
    uint64_t multi_shard_committed = 0, attempts = 0;
    uint64_t commit_decisions = 0, abort_decisions = 0, decisions_forgotten = 0;
    uint64_t phase2_ok = 0, phase2_left = 0;
    uint64_t abort_reported_for_committed = 0;  // see OnResolverApplied
    uint64_t audits_committed = 0;  // bank audits that committed (their totals were checked)
    uint64_t read_only_committed = 0;  // ... of them read-only (RunOptions::read_only)
    // Attempts ended by a deadlock detector's interrupt (1317), and the most of one Run.
    uint64_t detector_victims = 0, max_victims_one_run = 0;
  };

  explicit Checker(Tracer* tracer) : tracer_(tracer) {}

  // ---- Reported by the simulated servers ----
  // `shard` is always the deployment's shard index (xid.branch for a branch). Gids are keyed
  // by deployment: a decision row written into one deployment's table never stands for another.
  void OnBranchStarted(uint32_t shard, const Xid& xid);
  void OnBranchPrepared(uint32_t shard, const Xid& xid);
  // The branch is gone from the server: committed, or rolled back (explicitly, by a deadlock,
  // by a disconnect or by a crash). `was_prepared` = it had been prepared.
  void OnBranchEnded(uint32_t shard, const Xid& xid, bool committed, bool was_prepared,
                     const char* why);
  // An XA COMMIT / ROLLBACK by XID landed in its owner's teardown and did nothing: the branch is
  // still prepared, hidden from XA RECOVER (doc/limbo-branch.md). A restart lists it again.
  void OnBranchLimbo(uint32_t shard, const Xid& xid, bool by_commit);
  void OnLimboRecovered(uint32_t shard, const Xid& xid);
  // Writes that became permanent (committed = true) or were thrown away.
  void OnEffects(uint32_t shard, const std::vector<Effect>& effects, bool committed);
  // A decision row became durable (committed) in `deployment`'s table on `shard`. `how`:
  // "commit point", "fence", ...
  void OnDecisionWritten(const std::string& deployment, uint32_t shard, const Decision& d,
                         const char* how);
  // A decision row was garbage-collected: never while a branch of a committed gid is still
  // prepared, nor while any branch of the gid is in limbo.
  void OnDecisionForgotten(const std::string& deployment, uint32_t shard, const std::string& gid);

  // ---- Reported by the workload (the simulated application) ----
  void OnTxnStarted(int64_t txn, const std::string& deployment);
  // The closure ran `delta` on `key` (shard `shard`) in attempt `attempt` and the server said
  // one row changed.
  void OnClosureEffect(int64_t txn, int attempt, uint32_t shard, int64_t key, int64_t delta);
  void OnClosureGid(int64_t txn, int attempt, const std::string& gid);
  // A bank audit's closure (a read-only transaction) read every player's gold in attempt
  // `attempt`: `total`, where every committed state of the data has `expected`. Invariant 13:
  // an audit that commits read exactly `expected` — its locking reads are serializable with the
  // transfers. Plain reads may see half of a transfer (Variant::kPlainAuditReads), and must be
  // caught.
  void OnAuditRead(int64_t txn, int attempt, int64_t total, int64_t expected);
  // The transaction runs read-only (RunOptions::read_only): it must leave no XA branch and no
  // decision row, and "committed" needs no commit decision.
  void OnReadOnly(int64_t txn);
  void OnRunReturned(int64_t txn, const TxResult& r);
  // Phase2Mode::kBeforeReturn: Run() returned committed after its own phase 2. Read-your-writes:
  // every branch of the gid outside r.pending_visibility is committed now.
  void OnVisibleAtReturn(const std::string& deployment, const TxResult& r);
  // Protocol::FinishPhase2 returned `s` for branch `xid`.
  void OnPhase2Finished(const Xid& xid, const Status& s);
  // A resolver pass of `deployment` reported `a` as applied: that branch is committed (or
  // rolled back) now, not just "the server said OK" (a limbo branch is neither).
  void OnResolverApplied(const std::string& deployment, const ResolveReport::Applied& a);
  // `seigo status` (core::InspectInDoubt) reported `tx`: any decision it shows must be the one
  // that was taken.
  void OnInDoubtReported(const std::string& deployment, const InDoubtTx& tx);

  // ---- End of seed ----
  // `collected`: the deployments whose final resolver collected garbage past every row's
  // retention: no decision row of theirs may be left (the table stays bounded, issue 7 case 7).
  void CheckFinal(const std::vector<DbFinalState>& dbs,
                  const std::vector<ServerFinalState>& servers,
                  const std::map<int64_t, int64_t>& initial_rows,
                  const std::set<std::string>& collected);

  void Violation(const std::string& what);
  bool violated() const { return !violations_.empty(); }
  const std::vector<std::string>& violations() const { return violations_; }
  const Stats& stats() const { return stats_; }

 private:
  enum class Fate { kActive, kPrepared, kCommitted, kRolledBack };
  struct GidRecord {
    std::optional<Outcome> decided;  // the first decision ever written; never forgotten
    uint32_t decider = 0;
    std::vector<uint32_t> decision_shards;
    std::map<uint32_t, Fate> branches;  // XA branches by shard
    std::set<uint32_t> limbo;           // branches in limbo now
  };
  struct ShardEffect {
    uint32_t shard;
    int64_t key;
    int64_t delta;
    bool operator<(const ShardEffect& o) const {
      return std::tie(shard, key, delta) < std::tie(o.shard, o.key, o.delta);
    }
    bool operator==(const ShardEffect& o) const = default;
  };
  struct TagEffects {
    std::vector<ShardEffect> committed, discarded;
  };
  struct AttemptRecord {
    std::vector<ShardEffect> expected;  // what the closure saw succeed
    std::string gid;
  };
  struct TxnRecord {
    std::string deployment;
    bool started = false;
    bool returned = false;
    bool audit = false;
    bool read_only = false;
    std::map<int, std::pair<int64_t, int64_t>> audit_reads;  // attempt -> (total, expected)
    TxResult result;
    std::map<int, AttemptRecord> attempts;
  };

  static std::string Short(const std::string& gid) { return gid.substr(0, 8); }
  // Gids are random, but a decision row may be written for another deployment's gid (by a
  // broken resolver): records are per deployment.
  static std::string Key(const std::string& deployment, const std::string& gid) {
    return deployment + "/" + gid;
  }
  GidRecord& Gid(const Xid& x) { return gids_[Key(x.deployment, x.gid)]; }
  void CheckTxn(int64_t txn, const TxnRecord& t);

  Tracer* tracer_;
  Stats stats_;
  std::vector<std::string> violations_;
  std::map<std::string, GidRecord> gids_;
  std::map<int64_t, TagEffects> effects_;  // by attempt tag
  std::map<int64_t, TxnRecord> txns_;
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_CHECKER_H_
