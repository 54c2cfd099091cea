#include "sim/checker.h"

#include <algorithm>
#include <cstdio>

namespace seigo::sim {

void Checker::Violation(const std::string& what) {
  if (tracer_->on()) tracer_->Log("VIOLATION: %s", what.c_str());
  if (violations_.size() < 20) violations_.push_back(what);
}

// ---- Shards ----

void Checker::OnBranchStarted(uint32_t shard, const Xid& xid) {
  GidRecord& g = Gid(xid);
  g.decider = xid.decider;
  g.branches[shard] = Fate::kActive;
}

void Checker::OnBranchPrepared(uint32_t shard, const Xid& xid) {
  Gid(xid).branches[shard] = Fate::kPrepared;
}

void Checker::OnBranchLimbo(uint32_t shard, const Xid& xid, bool by_commit) {
  (void)by_commit;
  Gid(xid).limbo.insert(shard);
}

void Checker::OnLimboRecovered(uint32_t shard, const Xid& xid) { Gid(xid).limbo.erase(shard); }

void Checker::OnBranchEnded(uint32_t shard, const Xid& xid, bool committed, bool was_prepared,
                            const char* why) {
  GidRecord& g = Gid(xid);
  g.limbo.erase(shard);
  const bool commit_decided = g.decided && *g.decided == Outcome::kCommit;
  if (committed && !commit_decided) {
    // Invariant 2: a branch is committed only after its commit decision is durable.
    Violation("branch of gid " + Short(xid.gid) + " on shard " + std::to_string(shard) +
              " committed (" + why + ") without a commit decision (decision: " +
              (g.decided ? OutcomeName(*g.decided) : "none") + ")");
  }
  if (!committed && was_prepared && commit_decided) {
    Violation("prepared branch of committed gid " + Short(xid.gid) + " on shard " +
              std::to_string(shard) + " was rolled back (" + why + ")");
  }
  g.branches[shard] = committed ? Fate::kCommitted : Fate::kRolledBack;
}

void Checker::OnEffects(uint32_t shard, const std::vector<Effect>& effects, bool committed) {
  for (const Effect& e : effects) {
    TagEffects& t = effects_[e.tag];
    (committed ? t.committed : t.discarded).push_back(ShardEffect{shard, e.key, e.delta});
  }
}

void Checker::OnDecisionWritten(const std::string& deployment, uint32_t shard, const Decision& d,
                                const char* how) {
  GidRecord& g = gids_[Key(deployment, d.gid)];
  // Every decision row lives on its gid's decider: a one-shard transaction (which has no XA
  // branch to name its decider) is learned from here.
  g.decider = shard;
  if (g.decided && *g.decided != d.outcome) {
    // Invariant 1: a gid's decision never changes, not even after its row was collected (a
    // stalled resolver once rewrote a collected commit row as abort: sim/README.md, "Fixed").
    Violation("decision of gid " + Short(d.gid) + " flipped from " + OutcomeName(*g.decided) +
              " to " + OutcomeName(d.outcome) + " on shard " + std::to_string(shard) + " (" + how +
              ")");
  }
  if (!g.decided) {
    g.decided = d.outcome;
    g.decision_shards = d.shards;
    (d.outcome == Outcome::kCommit ? stats_.commit_decisions : stats_.abort_decisions)++;
  }
  if (d.outcome == Outcome::kCommit) {
    for (const auto& [s, fate] : g.branches) {
      if (fate == Fate::kRolledBack) {
        Violation("commit decision for gid " + Short(d.gid) +
                  " written after its branch on "
                  "shard " +
                  std::to_string(s) + " was rolled back");
      }
    }
  }
}

void Checker::OnDecisionForgotten(const std::string& deployment, uint32_t shard,
                                  const std::string& gid) {
  stats_.decisions_forgotten++;
  auto it = gids_.find(Key(deployment, gid));
  if (it == gids_.end()) return;
  const GidRecord& g = it->second;
  // Garbage collection must keep every decision a branch still needs. A branch in limbo is
  // prepared inside InnoDB although XA RECOVER does not list it; after a restart it is listed
  // again, and without its decision row a resolver past the fence window would roll it back
  // (for a committed gid: half a transaction lost).
  for (uint32_t s : g.limbo) {
    Violation("decision row of gid " + Short(gid) + " collected on shard " + std::to_string(shard) +
              " while its branch on shard " + std::to_string(s) +
              " is in limbo (prepared, hidden from XA RECOVER until a restart)");
  }
  if (g.decided && *g.decided == Outcome::kCommit) {
    for (const auto& [s, fate] : g.branches) {
      if (fate == Fate::kPrepared && !g.limbo.count(s)) {
        Violation("commit decision of gid " + Short(gid) + " collected on shard " +
                  std::to_string(shard) + " while its branch on shard " + std::to_string(s) +
                  " is still prepared");
      }
    }
  }
}

// ---- Workload ----

void Checker::OnTxnStarted(int64_t txn, const std::string& deployment) {
  txns_[txn].started = true;
  txns_[txn].deployment = deployment;
  stats_.txns++;
}

void Checker::OnClosureEffect(int64_t txn, int attempt, uint32_t shard, int64_t key,
                              int64_t delta) {
  txns_[txn].attempts[attempt].expected.push_back(ShardEffect{shard, key, delta});
}

void Checker::OnClosureGid(int64_t txn, int attempt, const std::string& gid) {
  txns_[txn].attempts[attempt].gid = gid;
}

void Checker::OnReadOnly(int64_t txn) { txns_[txn].read_only = true; }

void Checker::OnAuditRead(int64_t txn, int attempt, int64_t total, int64_t expected) {
  TxnRecord& t = txns_[txn];
  t.audit = true;
  t.audit_reads[attempt] = {total, expected};
}

void Checker::OnRunReturned(int64_t txn, const TxResult& r) {
  TxnRecord& t = txns_[txn];
  t.returned = true;
  t.result = r;
  stats_.attempts += static_cast<uint64_t>(r.attempts);
  uint64_t victims = 0;
  for (const AttemptInfo& a : r.history) victims += a.status.server_errno() == 1317 ? 1 : 0;
  stats_.detector_victims += victims;
  stats_.max_victims_one_run = std::max(stats_.max_victims_one_run, victims);
  switch (r.state) {
    case TxState::kCommitted:
      stats_.committed++;
      break;
    case TxState::kAborted:
      stats_.aborted++;
      break;
    case TxState::kGaveUp:
      stats_.gave_up++;
      break;
    case TxState::kOutcomeUnknown:
      stats_.unknown++;
      break;
  }
  if (r.state != TxState::kCommitted) return;
  // Invariant 3: "committed" means the commit point has passed when Run returns.
  const std::string where = "txn " + std::to_string(txn) + " attempt " + std::to_string(r.attempts);
  if (t.read_only) {
    // Nothing to commit; CheckTxn checks the reads, and that no attempt left a branch or a
    // decision.
    if (!r.gid.empty()) Violation(where + " (read-only) reported gid " + Short(r.gid));
  } else if (r.shards > 1) {
    stats_.multi_shard_committed++;
    auto it = gids_.find(Key(t.deployment, r.gid));
    if (it == gids_.end() || !it->second.decided || *it->second.decided != Outcome::kCommit) {
      Violation(where + " reported committed, but gid " + Short(r.gid) + " has no commit decision");
    }
  } else if (!t.audit) {
    auto it = effects_.find(MakeTag(txn, r.attempts));
    if (it == effects_.end() || it->second.committed.empty()) {
      Violation(where + " reported committed (one shard), but none of its writes is committed");
    }
  }
}

void Checker::OnVisibleAtReturn(const std::string& deployment, const TxResult& r) {
  if (r.shards < 2) return;
  auto it = gids_.find(Key(deployment, r.gid));
  if (it == gids_.end()) return;
  for (const auto& [shard, fate] : it->second.branches) {
    const bool pending = std::find(r.pending_visibility.begin(), r.pending_visibility.end(),
                                   shard) != r.pending_visibility.end();
    if (!pending && fate != Fate::kCommitted) {
      Violation("gid " + Short(r.gid) +
                " returned committed (read-your-writes), but its branch on "
                "shard " +
                std::to_string(shard) + " is not committed and not listed as pending");
    }
  }
}

void Checker::OnPhase2Finished(const Xid& xid, const Status& s) {
  if (!s.ok()) {
    stats_.phase2_left++;
    return;
  }
  stats_.phase2_ok++;
  // Invariant 4, FinishPhase2's contract: OK = the branch is committed (now, not eventually).
  bool committed = false;
  auto it = gids_.find(Key(xid.deployment, xid.gid));
  if (it != gids_.end()) {
    auto b = it->second.branches.find(xid.branch);
    committed = b != it->second.branches.end() && b->second == Fate::kCommitted;
  }
  if (!committed) {
    Violation("FinishPhase2 returned OK for gid " + Short(xid.gid) + " on shard " +
              std::to_string(xid.branch) + ", but that branch is not committed");
  }
}

void Checker::OnResolverApplied(const std::string& deployment, const ResolveReport::Applied& a) {
  // Invariant 4b: as for phase 2, a resolver's "applied" is a fact now. Believing a server's OK
  // for a commit by XID that landed in the owner's teardown (the limbo branch) breaks it.
  auto it = gids_.find(Key(deployment, a.gid));
  Fate fate = Fate::kActive;
  bool known = false;
  if (it != gids_.end()) {
    auto b = it->second.branches.find(a.shard);
    if (b != it->second.branches.end()) {
      fate = b->second;
      known = true;
    }
  }
  // RollbackXid's OK means "nothing of the branch is left": after its commit row was collected,
  // a stalled resolver's pass may "apply" abort to a branch that committed long ago and whose
  // marker is forgotten too (nothing happens; ResolveReport then misnames it). A limbo or any
  // still prepared branch is never "applied".
  const bool ok = a.outcome == Outcome::kCommit ? known && fate == Fate::kCommitted
                                                : !known || fate != Fate::kPrepared;
  if (a.outcome == Outcome::kAbort && known && fate == Fate::kCommitted) {
    stats_.abort_reported_for_committed++;
  }
  if (!ok) {
    Violation(std::string("a resolver reported gid ") + Short(a.gid) + " " +
              OutcomeName(a.outcome) + " applied on shard " + std::to_string(a.shard) +
              ", but that branch is " +
              (!known                      ? "unknown"
               : fate == Fate::kPrepared   ? "still prepared"
               : fate == Fate::kCommitted  ? "committed"
               : fate == Fate::kRolledBack ? "rolled back"
                                           : "active"));
  }
}

void Checker::OnInDoubtReported(const std::string& deployment, const InDoubtTx& tx) {
  // Invariant 5.
  if (!tx.decision) return;
  auto it = gids_.find(Key(deployment, tx.gid));
  if (it == gids_.end() || !it->second.decided || *it->second.decided != tx.decision->outcome) {
    Violation("seigo status reported gid " + Short(tx.gid) + " as decided " +
              OutcomeName(tx.decision->outcome) + ", which is not the decision that was taken");
  }
}

// ---- End of seed ----

void Checker::CheckTxn(int64_t txn, const TxnRecord& t) {
  const std::string name = "txn " + std::to_string(txn);
  // Which attempts left committed writes, and were they all-or-nothing?
  std::vector<int> committed_attempts;
  for (auto it = effects_.lower_bound(MakeTag(txn, 0));
       it != effects_.end() && TagTxn(it->first) == txn; ++it) {
    const TagEffects& e = it->second;
    const int attempt = TagAttempt(it->first);
    if (!e.committed.empty()) committed_attempts.push_back(attempt);
    if (!e.committed.empty() && !e.discarded.empty()) {
      // Invariant 9: one attempt's writes committed on one shard, discarded on another.
      std::string detail;
      for (const ShardEffect& x : e.committed) {
        detail += " +shard" + std::to_string(x.shard) + ":key" + std::to_string(x.key);
      }
      for (const ShardEffect& x : e.discarded) {
        detail += " -shard" + std::to_string(x.shard) + ":key" + std::to_string(x.key);
      }
      auto a = t.attempts.find(attempt);
      Violation(name + " attempt " + std::to_string(attempt) + " (gid " +
                (a == t.attempts.end() ? std::string("?") : Short(a->second.gid)) +
                ") is half committed:" + detail);
    }
  }
  if (committed_attempts.size() > 1) {
    Violation(name + ": " + std::to_string(committed_attempts.size()) +
              " attempts committed (a retry after a commit)");
  }
  if (!t.returned) {
    stats_.crashed++;  // its coordinator died: either way, but atomic (checked above)
    return;
  }
  const TxResult& r = t.result;
  if (t.audit) {
    if (!committed_attempts.empty()) Violation(name + " (a read-only audit) committed writes");
    if (r.state != TxState::kCommitted) return;
    auto a = t.audit_reads.find(r.attempts);
    if (a == t.audit_reads.end()) {
      Violation(name + " (an audit) committed attempt " + std::to_string(r.attempts) +
                ", which never finished its reads");
      return;
    }
    stats_.audits_committed++;
    if (t.read_only) {
      stats_.read_only_committed++;
      for (const auto& [attempt, rec] : t.attempts) {
        auto g = gids_.find(Key(t.deployment, rec.gid));
        if (g != gids_.end() && (!g->second.branches.empty() || g->second.decided)) {
          Violation(name + " (read-only) left an XA branch or a decision for gid " +
                    Short(rec.gid));
        }
      }
    }
    if (a->second.first != a->second.second) {
      // Invariant 17.
      Violation(name + " (an audit, gid " + Short(r.gid) + ") committed having read a gold "
                "total of " + std::to_string(a->second.first) + ", but every committed state "
                "has " + std::to_string(a->second.second) + ": a fractured read");
    }
    return;
  }
  const std::string state = TxStateName(r.state);
  switch (r.state) {
    case TxState::kCommitted: {
      if (committed_attempts.size() != 1 || committed_attempts[0] != r.attempts) {
        Violation(name + " reported committed in attempt " + std::to_string(r.attempts) +
                  ", but its committed attempts are " +
                  (committed_attempts.empty() ? std::string("none")
                                              : std::to_string(committed_attempts[0])));
        break;
      }
      // Invariant 9: exactly the writes the closure saw succeed, on every shard it touched.
      std::vector<ShardEffect> want = t.attempts.count(r.attempts)
                                          ? t.attempts.at(r.attempts).expected
                                          : std::vector<ShardEffect>{};
      std::vector<ShardEffect> got = effects_[MakeTag(txn, r.attempts)].committed;
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      if (want != got) {
        Violation(name + " reported committed, but the committed writes (" +
                  std::to_string(got.size()) + ") differ from what the closure did (" +
                  std::to_string(want.size()) + ")");
      }
      if (r.shards > 1) {
        auto g = gids_.find(Key(t.deployment, r.gid));
        if (g != gids_.end()) {
          for (const auto& [shard, fate] : g->second.branches) {
            if (fate != Fate::kCommitted) {
              Violation(name + " committed (gid " + Short(r.gid) + "), but its branch on shard " +
                        std::to_string(shard) + " is not committed");
            }
          }
        }
      }
      break;
    }
    case TxState::kAborted:
    case TxState::kGaveUp:
      // Invariant 9: no trace.
      if (!committed_attempts.empty()) {
        Violation(name + " reported " + state + ", but attempt " +
                  std::to_string(committed_attempts[0]) + " committed");
      }
      break;
    case TxState::kOutcomeUnknown:
      // Either way, but only the last attempt can have committed: earlier ones were retried
      // because they definitely did not.
      if (!committed_attempts.empty() && committed_attempts[0] != r.attempts) {
        Violation(name + " reported outcome_unknown in attempt " + std::to_string(r.attempts) +
                  ", but earlier attempt " + std::to_string(committed_attempts[0]) + " committed");
      }
      break;
  }
}

void Checker::CheckFinal(const std::vector<DbFinalState>& dbs,
                         const std::vector<ServerFinalState>& servers,
                         const std::map<int64_t, int64_t>& initial_rows,
                         const std::set<std::string>& collected) {
  // Invariant 10: nothing left in doubt, nothing left locked or connected.
  for (const ServerFinalState& s : servers) {
    for (const Xid& x : s.prepared) {
      Violation("branch of gid " + Short(x.gid) + " (shard " + std::to_string(x.branch) +
                ") still prepared on server " + std::to_string(s.index) +
                " after the quiescent phase");
    }
    if (s.limbo != 0) {
      Violation(std::to_string(s.limbo) + " limbo branches left on server " +
                std::to_string(s.index) + " at the end (nobody reported them)");
    }
    if (s.foreign_prepared != 0) {
      Violation(std::to_string(s.foreign_prepared) +
                " prepared XA transactions of another application left on server " +
                std::to_string(s.index));
    }
    if (s.locks_held != 0) {
      Violation(std::to_string(s.locks_held) + " row locks still held on server " +
                std::to_string(s.index) + " at the end");
    }
    if (s.connections != 0) {
      Violation(std::to_string(s.connections) + " connections still open on server " +
                std::to_string(s.index) + " at the end");
    }
  }
  for (const DbFinalState& s : dbs) {
    // The rows left on the shard agree with what was ever decided.
    for (const auto& [gid, d] : s.decisions) {
      auto g = gids_.find(Key(s.deployment, gid));
      if (g == gids_.end() || !g->second.decided || *g->second.decided != d.outcome) {
        Violation("decision row of gid " + Short(gid) + " on shard " + std::to_string(s.shard) +
                  " says " + OutcomeName(d.outcome) + ", which is not the decision that was taken");
      }
      // Invariant 12: the decision table stays bounded. The final resolver ran garbage
      // collection past every row's retention with every branch finished, with whatever else
      // runs on the servers (a long foreign snapshot) still running.
      if (collected.count(s.deployment)) {
        Violation("decision row of gid " + Short(gid) + " (deadline " +
                  std::to_string(d.deadline_ms) + ") on shard " + std::to_string(s.shard) +
                  " of deployment " + s.deployment.substr(0, 4) +
                  " was never garbage-collected although every branch of it finished");
      }
    }
  }

  // Invariant 8: all branches committed or all rolled back, as decided.
  for (const auto& [key, g] : gids_) {
    const std::string gid = key.substr(key.find('/') + 1);
    const bool commit = g.decided && *g.decided == Outcome::kCommit;
    for (const auto& [shard, fate] : g.branches) {
      if (commit && fate != Fate::kCommitted) {
        Violation("gid " + Short(gid) + " decided commit, but its branch on shard " +
                  std::to_string(shard) + " did not commit");
      }
      if (!commit && fate == Fate::kCommitted) {
        Violation("gid " + Short(gid) + " not decided commit, but its branch on shard " +
                  std::to_string(shard) + " committed");
      }
    }
    if (commit) {
      for (uint32_t s : g.decision_shards) {
        if (s == g.decider) continue;
        auto b = g.branches.find(s);
        if (b == g.branches.end() || b->second != Fate::kCommitted) {
          Violation("gid " + Short(gid) + " decided commit on shards it never committed (" +
                    std::to_string(s) + ")");
        }
      }
    }
  }

  // Invariant 9 per transaction.
  for (const auto& [txn, t] : txns_) CheckTxn(txn, t);

  // Invariant 7: conservation, no negative balance, and the rows are exactly the initial rows
  // plus every committed write.
  std::map<int64_t, int64_t> expect = initial_rows;
  for (const auto& [tag, e] : effects_) {
    for (const ShardEffect& x : e.committed) expect[x.key] += x.delta;
  }
  std::map<int64_t, int64_t> initial_sum, final_sum;
  for (const auto& [key, v] : initial_rows) initial_sum[key % 10] += v;
  for (const DbFinalState& s : dbs) {
    for (const auto& [key, v] : s.rows) {
      final_sum[key % 10] += v;
      if (v < 0) {
        Violation("key " + std::to_string(key) + " on shard " + std::to_string(s.shard) +
                  " is negative: " + std::to_string(v));
      }
      if (expect[key] != v) {
        Violation("key " + std::to_string(key) + " on shard " + std::to_string(s.shard) + " is " +
                  std::to_string(v) + ", expected " + std::to_string(expect[key]) +
                  " from the committed writes");
      }
    }
  }
  for (const auto& [cls, sum] : initial_sum) {
    if (final_sum[cls] != sum) {
      Violation(std::string(cls == 1 ? "gold" : cls == 5 ? "redis tokens" : "items") +
                " not conserved: " + std::to_string(sum) + " at the start, " +
                std::to_string(final_sum[cls]) + " at the end");
    }
  }
}

}  // namespace seigo::sim
