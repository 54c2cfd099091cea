// The resolver: finishes transactions that their coordinators left in doubt (doc/protocol.md,
// "Recovery").
//
// Rules, each of which is what makes it safe to run at any time, from any process, next to live
// coordinators and other resolvers:
//   * It acts only on a decision row that exists on the decider. Commit row -> XA COMMIT,
//     abort row -> XA ROLLBACK. No row -> nothing, unless the deadline has passed: then it
//     writes an abort row first (FenceAbort), which makes the decider's commit impossible.
//   * "Deadline passed" is judged by the decider server's clock inside FenceAbort, the same clock
//     that refuses a late commit. The local clock only saves a useless round trip.
//   * A fence that waits on a live decider's row lock comes back kBusy: "not decided yet".
//   * XAER_NOTA on XA COMMIT/ROLLBACK means "finished, or owned by a live connection"; either
//     way there is nothing to do now, and a later pass looks again. It is never counted as done.
//   * Decision rows are deleted only when no shard lists a branch of theirs (scanned AFTER the
//     rows were read, see CollectGarbage), the deadline is decision_retention_ms behind the
//     decider's clock — so no commit can arrive later and no coordinator will still ask — and
//     every branch shard's own record of the gid (its marker, ProbeBranches) shows no open
//     transaction: proof from seigo's records, not from what else runs on the servers.

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "core/protocol.h"

namespace seigo::core {
namespace {

struct Scan {
  struct Tx {
    Xid any;  // decider and deadline are the same in every branch of a gid
    std::set<uint32_t> shards;
    std::vector<Xid> branches;
  };
  std::map<std::string, Tx> by_gid;
  std::vector<Status> errors;
  bool complete = true;
};

// XA RECOVER on every shard, the shards at once (Env::ForEach).
Scan ScanPrepared(std::span<Participant* const> ps, Env* env) {
  std::vector<Result<std::vector<Xid>>> got(ps.size(), std::vector<Xid>{});
  env->ForEach(ps.size(), [&](size_t i) { got[i] = ps[i]->RecoverPrepared(); });
  Scan scan;
  for (size_t i = 0; i < ps.size(); ++i) {
    if (!got[i].ok()) {
      scan.complete = false;
      scan.errors.push_back(got[i].status().Annotate("XA RECOVER on " + ps[i]->name()));
      continue;
    }
    for (Xid& x : *got[i]) {
      Scan::Tx& t = scan.by_gid[x.gid];
      t.any = x;
      t.shards.insert(x.branch);
      t.branches.push_back(std::move(x));
    }
  }
  return scan;
}

std::string Seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

// Deletes decision rows nobody needs any more. `before` was read before `scan` was taken: a row
// committed before the scan started had all its branches prepared before that (a commit row is
// written only after every PREPARE succeeded; an abort row's transaction can no longer commit),
// so if the scan lists none of them, none will ever be prepared again for a commit.
//
// XA RECOVER is not the whole truth on MariaDB (the limbo branch: prepared inside InnoDB, not
// listed), so each branch shard is also asked what its marker says (ProbeBranches). A row is
// forgotten only when no branch shard holds an open transaction of the gid; the markers of
// committed branches go first, then the row. Crash window: markers gone, row kept — the next
// pass finds no marker (kNone) and forgets the row.
size_t CollectGarbage(std::span<Participant* const> ps,
                      const std::vector<std::vector<Decision>>& before, const Scan& scan,
                      ResolveReport* report) {
  struct Candidate {
    const Decision* d;
    uint32_t decider;
    bool finished = true;
  };
  std::vector<Candidate> cands;
  for (size_t i = 0; i < ps.size(); ++i) {
    for (const Decision& d : before[i]) {
      if (!scan.by_gid.count(d.gid)) cands.push_back({&d, static_cast<uint32_t>(i)});
    }
  }
  if (cands.empty()) return 0;
  // Per branch shard: which candidates to probe there.
  std::vector<std::vector<size_t>> on(ps.size());
  for (size_t c = 0; c < cands.size(); ++c) {
    for (uint32_t s : cands[c].d->shards) {
      if (s == cands[c].decider) continue;  // the decider's work is a local transaction
      if (s >= ps.size()) {
        cands[c].finished = false;  // a shard we cannot ask: keep the row
        continue;
      }
      on[s].push_back(c);
    }
  }
  std::vector<std::vector<std::string>> committed_markers(ps.size());
  for (size_t s = 0; s < ps.size(); ++s) {
    if (on[s].empty()) continue;
    std::vector<std::string> gids;
    for (size_t c : on[s]) gids.push_back(cands[c].d->gid);
    Result<std::vector<BranchTrace>> traces = ps[s]->ProbeBranches(gids);
    if (!traces.ok() || traces->size() != gids.size()) {
      for (size_t c : on[s]) cands[c].finished = false;
      report->errors.push_back(traces.status().Annotate("probing branches on " + ps[s]->name()));
      continue;
    }
    for (size_t k = 0; k < on[s].size(); ++k) {
      Candidate& cand = cands[on[s][k]];
      switch ((*traces)[k]) {
        case BranchTrace::kNone:
          break;
        case BranchTrace::kCommitted:
          committed_markers[s].push_back(cand.d->gid);
          break;
        case BranchTrace::kOpen:
          cand.finished = false;
          // Past retention and not in XA RECOVER, yet open on the server. For a commit
          // decision every branch was prepared before the row was written: this is a prepared
          // branch the server does not list (limbo). For an abort decision it may also be a
          // transaction of a hung coordinator that never prepared.
          report->limbo.push_back(
              {cand.d->gid, static_cast<uint32_t>(s),
               std::string("decided ") + OutcomeName(cand.d->outcome) + " long ago, but " +
                   ps[s]->name() + " still has an open transaction of it that XA RECOVER does "
                   "not list (doc/limbo-branch.md). Its locks are held. Remedy: restart that "
                   "server, then run `seigo recover`; the decision is kept until then"});
          break;
      }
    }
  }
  std::vector<std::vector<std::string>> forget(ps.size());
  for (const Candidate& c : cands) {
    if (c.finished) forget[c.decider].push_back(c.d->gid);
  }
  std::set<std::string> finished_gids;
  for (const auto& v : forget) finished_gids.insert(v.begin(), v.end());
  for (size_t s = 0; s < ps.size(); ++s) {
    std::vector<std::string> gids;
    for (const std::string& g : committed_markers[s]) {
      if (finished_gids.count(g)) gids.push_back(g);
    }
    if (gids.empty()) continue;
    Status st = ps[s]->ForgetBranches(gids);
    if (!st.ok()) {
      report->errors.push_back(st.Annotate("forgetting branch markers on " + ps[s]->name()));
      for (const std::string& g : gids) finished_gids.erase(g);  // keep their rows
    }
  }
  size_t forgotten = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    std::vector<std::string> gids;
    for (const std::string& g : forget[i]) {
      if (finished_gids.count(g)) gids.push_back(g);
    }
    if (gids.empty()) continue;
    Status s = ps[i]->ForgetDecisions(gids);
    if (s.ok()) {
      forgotten += gids.size();
    } else {
      report->errors.push_back(s.Annotate("forgetting decisions on " + ps[i]->name()));
    }
  }
  return forgotten;
}

}  // namespace

ResolveReport ResolvePass(std::span<Participant* const> ps, Env* env,
                          const ResolverOptions& options) {
  ResolveReport report;
  const int64_t retention = std::max(options.decision_retention_ms, kMinDecisionRetentionMs);

  // Garbage candidates are read first, before the scan: see CollectGarbage.
  std::vector<std::vector<Decision>> expired(ps.size());
  bool gc = options.collect_garbage;
  if (gc) {
    for (size_t i = 0; i < ps.size(); ++i) {
      auto r = ps[i]->ListExpiredDecisions(retention, static_cast<size_t>(options.gc_batch));
      if (r.ok()) {
        expired[i] = std::move(*r);
      } else {
        gc = false;
        report.errors.push_back(r.status().Annotate("listing decisions on " + ps[i]->name()));
      }
    }
  }

  Scan scan = ScanPrepared(ps, env);
  report.complete = scan.complete;
  for (Status& e : scan.errors) report.errors.push_back(std::move(e));

  // Every gid's decision, read in one batch per decider.
  std::vector<std::vector<std::string>> ask(ps.size());
  for (const auto& [gid, t] : scan.by_gid) {
    if (t.any.decider < ps.size()) ask[t.any.decider].push_back(gid);
  }
  struct Known {
    std::optional<Decision> decision;
    Status error;
  };
  std::map<std::string, Known> known;
  std::vector<Result<std::vector<std::optional<Decision>>>> read(
      ps.size(), std::vector<std::optional<Decision>>{});
  env->ForEach(ps.size(), [&](size_t i) {
    if (!ask[i].empty()) read[i] = ps[i]->ReadDecisions(ask[i]);
  });
  for (size_t i = 0; i < ps.size(); ++i) {
    const Result<std::vector<std::optional<Decision>>>& r = read[i];
    for (size_t k = 0; k < ask[i].size(); ++k) {
      Known& kn = known[ask[i][k]];
      if (!r.ok()) {
        kn.error = r.status();
      } else if (k < r->size()) {
        kn.decision = (*r)[k];
      } else {
        kn.error = Status::Internal("short batch of decisions");
      }
    }
  }

  // What to do with each branch, collected per shard so that each shard is asked once.
  std::vector<std::vector<Xid>> to_commit(ps.size()), to_rollback(ps.size());
  std::map<std::string, std::vector<uint32_t>> shards_of;
  for (auto& [gid, t] : scan.by_gid) {
    const std::vector<uint32_t> shards(t.shards.begin(), t.shards.end());
    shards_of[gid] = shards;
    auto pending = [&](std::string reason) {
      report.pending.push_back({gid, shards, std::move(reason)});
    };
    if (t.any.decider >= ps.size()) {
      pending("its decider is shard " + std::to_string(t.any.decider) + ", but only " +
              std::to_string(ps.size()) + " shards are configured");
      continue;
    }
    Participant* decider = ps[t.any.decider];
    const Known& kn = known[gid];
    if (!kn.error.ok()) {
      pending("cannot read the decision on " + decider->name() + ": " + kn.error.ToString());
      continue;
    }
    Outcome outcome;
    if (kn.decision.has_value()) {
      outcome = kn.decision->outcome;
    } else {
      const int64_t now = env->NowMs();
      if (now < t.any.deadline_ms) {
        pending("running, no decision yet, deadline in " + Seconds(t.any.deadline_ms - now));
        continue;
      }
      // Crash window (resolver): nothing written yet. Dying here changes nothing.
      Decision abort;
      abort.gid = gid;
      abort.outcome = Outcome::kAbort;
      abort.deadline_ms = t.any.deadline_ms;
      abort.shards = shards;
      Result<Outcome> f = decider->FenceAbort(abort, /*by_coordinator=*/false);
      if (!f.ok()) {
        pending("no decision; fencing on " + decider->name() + " not possible yet: " +
                f.status().ToString());
        continue;
      }
      outcome = *f;
      if (outcome == Outcome::kAbort) report.fenced.push_back(gid);
      // Crash window (resolver): the abort decision is durable, the branches are still
      // prepared. The next pass (ours or anyone's) reads the abort row and rolls them back.
      env->CrashPoint(CrashSite::kResolverAfterFence);
    }
    for (const Xid& x : t.branches) {
      if (x.branch >= ps.size()) continue;
      (outcome == Outcome::kCommit ? to_commit : to_rollback)[x.branch].push_back(x);
    }
  }

  // Apply: each shard's commits and rollbacks in one batch each, the shards at once. Every call
  // is idempotent by XID, so a crash anywhere in here is finished by the next pass.
  std::vector<std::vector<Status>> committed(ps.size()), rolled_back(ps.size());
  env->ForEach(ps.size(), [&](size_t s) {
    if (!to_commit[s].empty()) {
      for (size_t k = 0; k < to_commit[s].size(); ++k) {
        env->CrashPoint(CrashSite::kResolverBeforeApply);
      }
      committed[s] = ps[s]->CommitXids(to_commit[s]);
    }
    if (!to_rollback[s].empty()) {
      for (size_t k = 0; k < to_rollback[s].size(); ++k) {
        env->CrashPoint(CrashSite::kResolverBeforeApply);
      }
      rolled_back[s] = ps[s]->RollbackXids(to_rollback[s]);
    }
  });
  for (size_t s = 0; s < ps.size(); ++s) {
    for (Outcome outcome : {Outcome::kCommit, Outcome::kAbort}) {
      const std::vector<Xid>& xids = outcome == Outcome::kCommit ? to_commit[s] : to_rollback[s];
      const std::vector<Status>& st = outcome == Outcome::kCommit ? committed[s] : rolled_back[s];
      for (size_t k = 0; k < xids.size(); ++k) {
        const Xid& x = xids[k];
        const Status r = k < st.size() ? st[k] : Status::Internal("short batch of results");
        if (r.ok()) {
          report.applied.push_back({x.gid, x.branch, outcome});
        } else if (r.Is(Code::kCorruption)) {
          report.limbo.push_back({x.gid, x.branch, r.message()});
        } else if (r.Is(Code::kNotFound)) {
          report.pending.push_back({x.gid, shards_of[x.gid],
                                    std::string("decided ") + OutcomeName(outcome) +
                                        "; branch on " + ps[s]->name() +
                                        " is owned by a live connection or finished "
                                        "concurrently"});
        } else {
          report.pending.push_back({x.gid, shards_of[x.gid],
                                    std::string("decided ") + OutcomeName(outcome) + "; " +
                                        ps[s]->name() + ": " + r.ToString()});
        }
      }
    }
  }

  if (gc && scan.complete) report.forgotten = CollectGarbage(ps, expired, scan, &report);
  return report;
}

InDoubtReport InspectInDoubt(std::span<Participant* const> ps, Env* env) {
  InDoubtReport report;
  Scan scan = ScanPrepared(ps, env);
  report.errors = std::move(scan.errors);
  report.now_ms = env->NowMs();
  for (auto& [gid, t] : scan.by_gid) {
    InDoubtTx tx;
    tx.gid = gid;
    tx.decider = t.any.decider;
    tx.start_ms = t.any.start_ms;
    tx.deadline_ms = t.any.deadline_ms;
    tx.age_ms = report.now_ms - t.any.start_ms;
    tx.prepared_on.assign(t.shards.begin(), t.shards.end());
    tx.overdue_ms = report.now_ms - t.any.deadline_ms;
    if (t.any.decider < ps.size()) {
      Result<std::optional<Decision>> d = ps[t.any.decider]->ReadDecision(gid);
      if (d.ok()) {
        tx.decision = std::move(*d);
      } else {
        tx.decision_error = d.status();
      }
    } else {
      tx.decision_error = Status::InvalidArgument("decider shard not configured");
    }
    report.txs.push_back(std::move(tx));
  }
  std::sort(report.txs.begin(), report.txs.end(),
            [](const InDoubtTx& a, const InDoubtTx& b) { return a.deadline_ms < b.deadline_ms; });
  return report;
}

}  // namespace seigo::core
