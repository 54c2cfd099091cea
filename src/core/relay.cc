// The relay and the inbox rule (doc/outbox.md). See relay.h.
//
// Crash windows of the relay, each safe because the outbox is only ever cleared AFTER the
// broker confirmed (publish at least once) and consumers deduplicate by message id:
//   * killed before publishing: the entries stay claimed until the lease ends; then any
//     coordinator's poll claims and publishes them;
//   * killed after publishing, before the confirm (or the confirm is lost with the
//     connection): the same; the broker may now hold the message twice — same message id;
//   * killed after the confirm, before FinishOutbox: republished after the lease: a duplicate;
//   * FinishOutbox's reply lost: it is idempotent (delete by gid; dead letters INSERT IGNORE),
//     and a republish after the lease is again only a duplicate.

#include "core/relay.h"

#include <algorithm>
#include <map>

namespace seigo::core {

int64_t RelayRetryMs(int tries) {
  const int shift = std::clamp(tries, 0, 7);
  return std::min<int64_t>(30'000, int64_t{250} << shift);
}

namespace {

// Settles one outbox's entries by their broker results (see RelayBatch).
RelayStats Settle(Participant* outbox, std::span<const OutboxEntry> entries,
                  std::span<const Broker::Result> results, const std::string& claim) {
  RelayStats st;
  // Settle per transaction, in the order its first entry appears.
  std::vector<std::string> done;
  std::map<int, std::vector<std::string>> retry;  // by the transaction's tries: its backoff
  std::vector<DeadLetter> dead;
  std::string first_error;
  size_t i = 0;
  while (i < entries.size()) {
    const std::string& gid = entries[i].gid;
    size_t j = i;
    bool all_settled = true;
    int tries = 0;
    std::vector<DeadLetter> its_dead;
    for (; j < entries.size() && entries[j].gid == gid; ++j) {
      const Broker::Result& r = results[j];
      if (r.fate == Broker::Fate::kRetry) {
        all_settled = false;
        if (first_error.empty()) first_error = r.reason;
      } else if (r.fate == Broker::Fate::kDead) {
        its_dead.push_back({gid, entries[j].seq, r.reason});
      }
      tries = std::max(tries, entries[j].tries);
    }
    const uint64_t n = j - i;
    ++st.claimed_txns;
    if (all_settled) {
      done.push_back(gid);
      st.confirmed += n - its_dead.size();
      st.dead += its_dead.size();
      dead.insert(dead.end(), its_dead.begin(), its_dead.end());
    } else {
      retry[tries].push_back(gid);
      st.retried += n;
    }
    i = j;
  }
  Status s = outbox->FinishOutbox(done, dead);
  if (!s.ok()) st.error = s;  // the lease ends; a later poll republishes them (duplicates)
  if (!retry.empty()) {
    if (first_error.empty()) first_error = "not confirmed";
    if (st.error.ok()) st.error = Status::Unavailable("publishing: " + first_error);
    // Each transaction waits by its own tries: a fresh commit caught in a batch with an old
    // failing transaction is not held back for the old one's 30 s.
    for (const auto& [tries, gids] : retry) {
      Status r = outbox->ReleaseOutbox(gids, claim, RelayRetryMs(tries), first_error);
      if (!r.ok() && st.error.ok()) st.error = r;
    }
  }
  return st;
}

}  // namespace

std::vector<RelayStats> RelayBatches(Env* env, Broker* broker, std::span<const OutboxBatch> batches,
                                     const std::string& claim) {
  std::vector<RelayStats> out(batches.size());
  // One stream to the broker for every outbox: a single wait for the confirms per round,
  // instead of one per outbox.
  std::vector<OutboxEntry> all;
  size_t total = 0;
  for (const OutboxBatch& b : batches) total += b.entries.size();
  if (total == 0) return out;
  all.reserve(total);
  for (const OutboxBatch& b : batches) all.insert(all.end(), b.entries.begin(), b.entries.end());
  std::vector<Broker::Result> results = broker->Publish(all);
  // Killed here, the broker holds (some of) the messages and the outboxes still have them,
  // claimed by a process that is gone: after the lease a poll publishes them again
  // (duplicates, which the inbox drops).
  env->CrashPoint(CrashSite::kRelayAfterPublish);
  if (results.size() != total) {
    results.assign(total, Broker::Result{Broker::Fate::kRetry, "broker gave no result"});
  }
  size_t at = 0;
  for (size_t k = 0; k < batches.size(); ++k) {
    const size_t n = batches[k].entries.size();
    if (n > 0) {
      out[k] = Settle(batches[k].outbox, batches[k].entries,
                      std::span<const Broker::Result>(results).subspan(at, n), claim);
    }
    at += n;
  }
  return out;
}

RelayStats RelayBatch(Env* env, Participant* outbox, Broker* broker,
                      std::span<const OutboxEntry> entries, const std::string& claim) {
  OutboxBatch b{outbox, std::vector<OutboxEntry>(entries.begin(), entries.end())};
  return RelayBatches(env, broker, std::span<const OutboxBatch>(&b, 1), claim)[0];
}

std::vector<RelayStats> PollOutboxes(Env* env, std::span<Participant* const> outboxes,
                                     Broker* broker, const std::string& claim, int64_t lease_ms,
                                     size_t max_txns) {
  std::vector<RelayStats> out(outboxes.size());
  if (!broker->Ready()) {
    for (RelayStats& st : out) st.error = Status::Unavailable("the broker is unreachable: not claiming");
    return out;
  }
  // The claims are independent local transactions, one per outbox: made at once (Env::ForEach
  // runs them on threads in a real process, in order in the simulator).
  std::vector<Result<std::vector<OutboxEntry>>> claimed(outboxes.size(),
                                                        Status::Internal("not claimed"));
  env->ForEach(outboxes.size(), [&](size_t i) {
    claimed[i] = outboxes[i]->ClaimOutbox(claim, lease_ms, max_txns);
  });
  std::vector<OutboxBatch> batches;
  std::vector<size_t> index;  // batches[k] is outboxes[index[k]]
  for (size_t i = 0; i < outboxes.size(); ++i) {
    if (!claimed[i].ok()) {
      out[i].error = claimed[i].status();
      continue;
    }
    if (claimed[i]->empty()) continue;
    batches.push_back({outboxes[i], std::move(*claimed[i])});
    index.push_back(i);
  }
  std::vector<RelayStats> r = RelayBatches(env, broker, batches, claim);
  for (size_t k = 0; k < batches.size(); ++k) {
    r[k].claimed = batches[k].entries.size();
    out[index[k]] = r[k];
  }
  return out;
}

RelayStats PollOutbox(Env* env, Participant* outbox, Broker* broker, const std::string& claim,
                      int64_t lease_ms, size_t max_txns) {
  return PollOutboxes(env, std::span<Participant* const>(&outbox, 1), broker, claim, lease_ms,
                      max_txns)[0];
}

DeliveryAction ApplyOnce(Env* env, const std::function<TxResult(const TxFn&)>& run,
                         const std::function<Result<bool>(Tx&)>& record, const TxFn& handler,
                         int tries, int max_tries, bool* applied, Status* why) {
  *applied = false;
  bool duplicate = false;
  TxResult r = run([&](Tx& tx) -> Status {
    duplicate = false;
    // The inbox row first: a second delivery of the same message being handled at the same
    // time waits on this row's lock and then finds it, instead of applying it again.
    Result<bool> fresh = record(tx);
    if (!fresh.ok()) return fresh.status();
    if (!*fresh) {
      duplicate = true;
      return Status::OK();  // applied before: commit nothing but the (no-op) read
    }
    Status s = handler(tx);
    // Killed here, the transaction (inbox row and handler's writes) rolls back with the dead
    // connection and the broker redelivers the unacknowledged message: applied later, once.
    if (s.ok()) env->CrashPoint(CrashSite::kConsumerBeforeCommit);
    return s;
  });
  *why = r.status;
  if (r.committed()) {
    // Killed here, the message is applied and not acknowledged: the broker redelivers it and
    // the inbox row makes the redelivery a duplicate.
    env->CrashPoint(CrashSite::kConsumerAfterCommit);
    *applied = !duplicate;
    return DeliveryAction::kAck;
  }
  // Conflicts that outlasted the retries, unavailable stores, a lost commit reply: nothing is
  // known to be applied, so the message must come again (a lost commit that did apply is then
  // a duplicate, which the inbox catches).
  if (r.state != TxState::kAborted) return DeliveryAction::kRetry;
  return tries >= max_tries ? DeliveryAction::kDeadLetter : DeliveryAction::kRetry;
}

}  // namespace seigo::core
