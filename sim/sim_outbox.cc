// seigo_sim_outbox: the deterministic simulation of the relay and the inbox rule
// (doc/outbox.md) against a SIMULATED outbox store and a SIMULATED broker. It runs the real
// core::RelayBatch, core::PollOutbox and core::ApplyOnce (src/core/relay.cc); everything around
// them here is simulated and seeded, so a failing seed replays exactly.
//
// The world of one seed: an application commits transactions (some abort: their messages are
// never written) whose messages go into the outbox claimed by one of two relays; the relays
// publish right away or poll expired claims; they crash (losing what they held in memory). The
// outbox store loses replies (before or after applying a call). The broker nacks, loses
// confirms (the message may or may not be queued), crashes losing unconfirmed messages, and
// returns unroutable ones. A consumer applies deliveries through ApplyOnce; its transactions
// conflict, lose their commit reply (committed or not), and its acks get lost (redelivery).
// The relay and the consumer also die at their crash points (relay_after_publish,
// consumer_before_commit, consumer_after_commit: env.h), from inside the real core code.
// At the end the faults stop and everything drains. The checker: every committed message was
// applied exactly once (or is in a dead-letter record: unroutable, or poison after max_tries),
// no message of an aborted transaction was applied, and the outbox and queue are empty.
//
// Usage: seigo_sim_outbox [--seeds N] [--first-seed S] [--variant V --expect-violation]
//   variants (each breaks the code AROUND the core the way a careless integration would; the
//   checker must catch it): ack_before_commit, confirm_is_optional, no_inbox
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/relay.h"

namespace seigo::simoutbox {
namespace {

std::string variant;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  bool P(double p) { return std::uniform_real_distribution<double>(0, 1)(g) < p; }
  uint64_t U(uint64_t n) { return n == 0 ? 0 : g() % n; }
};

// The simulated outbox: the store's side of doc/outbox.md's claim protocol.
class SimOutbox final : public Participant {
 public:
  SimOutbox(Rng* rng, const int64_t* now, const bool* faults) : rng_(rng), now_(now), faults_(faults) {}
  struct Row {
    OutboxEntry e;
    std::string claim;
    int64_t claimed_until = 0;
  };
  std::map<uint64_t, Row> rows;  // by id
  std::map<std::string, std::string> dead;  // message id -> reason
  uint64_t next_id = 1;

  void Insert(const std::string& gid, const std::vector<Message>& msgs, const std::string& claim,
              int64_t lease) {
    for (size_t i = 0; i < msgs.size(); ++i) {
      Row r;
      r.e.id = next_id++;
      r.e.gid = gid;
      r.e.seq = static_cast<uint32_t>(i);
      r.e.msg = msgs[i];
      r.claim = claim;
      r.claimed_until = *now_ + lease;
      rows[r.e.id] = r;
    }
  }

  // A lost reply: before (nothing done) or after (done) — the caller cannot tell.
  int Fault() {
    if (!*faults_ || !rng_->P(0.05)) return 0;
    return rng_->P(0.5) ? 1 : 2;  // 1 = lost before, 2 = lost after applying
  }

  Result<std::vector<OutboxEntry>> ClaimOutbox(const std::string& claim, int64_t lease_ms,
                                               size_t max_txns) override {
    const int f = Fault();
    if (f == 1) return Status::Unavailable("sim: claim lost before");
    std::vector<std::string> gids;
    for (auto& [id, r] : rows) {
      if (r.e.seq == 0 && r.claimed_until < *now_ && gids.size() < max_txns) gids.push_back(r.e.gid);
    }
    std::vector<OutboxEntry> out;
    for (auto& [id, r] : rows) {
      for (const std::string& g : gids) {
        if (r.e.gid != g) continue;
        r.claim = claim;
        r.claimed_until = *now_ + lease_ms;
        r.e.tries++;
        out.push_back(r.e);
      }
    }
    if (f == 2) return Status::Unavailable("sim: claim reply lost");  // claimed, nobody knows
    return out;
  }

  Status FinishOutbox(std::span<const std::string> gids, std::span<const DeadLetter> d) override {
    const int f = Fault();
    if (f == 1) return Status::Unavailable("sim: finish lost before");
    for (const DeadLetter& x : d) {
      for (auto& [id, r] : rows) {
        if (r.e.gid == x.gid && r.e.seq == x.seq) dead.emplace(r.e.message_id(), x.reason);
      }
    }
    for (auto it = rows.begin(); it != rows.end();) {
      bool del = false;
      for (const std::string& g : gids) del |= it->second.e.gid == g;
      it = del ? rows.erase(it) : std::next(it);
    }
    return f == 2 ? Status::Unavailable("sim: finish reply lost") : Status::OK();
  }

  Status ReleaseOutbox(std::span<const std::string> gids, const std::string& claim,
                       int64_t retry_ms, const std::string&) override {
    const int f = Fault();
    if (f == 1) return Status::Unavailable("sim: release lost before");
    for (auto& [id, r] : rows) {
      for (const std::string& g : gids) {
        if (r.e.gid == g && r.claim == claim) r.claimed_until = *now_ + retry_ms;
      }
    }
    return f == 2 ? Status::Unavailable("sim: release reply lost") : Status::OK();
  }

  // The rest of the participant interface is not part of this simulation.
  uint32_t index() const override { return 0; }
  std::string name() const override { return "sim outbox"; }
  const std::string& deployment() const override { return dep_; }
  bool has_outbox() const override { return true; }
  Result<std::unique_ptr<Session>> Acquire() override { return Status::Unsupported("sim"); }
  void Release(std::unique_ptr<Session>) override {}
  Result<std::vector<Xid>> RecoverPrepared() override { return Status::Unsupported("sim"); }
  Status CommitXid(const Xid&) override { return Status::Unsupported("sim"); }
  Status RollbackXid(const Xid&) override { return Status::Unsupported("sim"); }
  Result<std::vector<BranchTrace>> ProbeBranches(std::span<const std::string>) override {
    return Status::Unsupported("sim");
  }
  Status ForgetBranches(std::span<const std::string>) override { return Status::Unsupported("sim"); }
  Result<std::optional<Decision>> ReadDecision(std::string_view) override {
    return Status::Unsupported("sim");
  }
  Result<Outcome> FenceAbort(const Decision&, bool) override { return Status::Unsupported("sim"); }
  Result<std::vector<Decision>> ListExpiredDecisions(int64_t, size_t) override {
    return Status::Unsupported("sim");
  }
  Status ForgetDecisions(std::span<const std::string>) override { return Status::Unsupported("sim"); }

 private:
  Rng* rng_;
  const int64_t* now_;
  const bool* faults_;
  std::string dep_ = "0000000000000000";
};

struct Queued {
  std::string id, body, routing_key;
  int deliveries = 0;
};

// The simulated broker: a durable queue plus what a publisher sees of it.
class SimBroker final : public core::Broker {
 public:
  SimBroker(Rng* rng, const bool* faults) : rng_(rng), faults_(faults) {}
  std::deque<Queued> queue;
  std::vector<Queued> dlq;
  uint64_t returned = 0;

  std::vector<Result> Publish(std::span<const OutboxEntry> entries) override {
    std::vector<Result> out;
    bool crashed = false;
    for (const OutboxEntry& e : entries) {
      if (crashed) {
        out.push_back({Fate::kRetry, "sim: connection lost"});
        continue;
      }
      if (e.msg.routing_key == "nowhere") {  // no queue bound: returned, then acked
        out.push_back({Fate::kDead, "sim: 312 NO_ROUTE"});
        returned++;
        continue;
      }
      if (*faults_ && rng_->P(0.03)) {  // broker crash: unconfirmed messages lost
        crashed = true;
        out.push_back({Fate::kRetry, "sim: broker crashed"});
        continue;
      }
      if (*faults_ && rng_->P(0.03)) {  // nack: not queued
        out.push_back({Fate::kRetry, "sim: nack"});
        continue;
      }
      queue.push_back({e.message_id(), e.msg.body, e.msg.routing_key, 0});
      if (*faults_ && rng_->P(0.05)) {  // queued, but the confirm is lost
        out.push_back({Fate::kRetry, "sim: confirm lost"});
        continue;
      }
      out.push_back({Fate::kConfirmed, ""});
    }
    if (variant == "confirm_is_optional") {
      // A relay that does not wait for confirms: whatever it sent counts as done.
      for (Result& r : out) {
        if (r.fate == Fate::kRetry) r = {Fate::kConfirmed, ""};
      }
    }
    return out;
  }

 private:
  Rng* rng_;
  const bool* faults_;
};

// A Tx for ApplyOnce's closures: the simulated consumer's "transaction" stages in `staged`.
class SimTx final : public Tx {
 public:
  Result<QueryResult> ExecOn(uint32_t, std::string_view, std::span<const Value>) override {
    return Status::Unsupported("sim");
  }
  Result<uint64_t> ExecEachOn(uint32_t, std::string_view, std::span<const Value>,
                              const RowFn&) override {
    return Status::Unsupported("sim");
  }
  Result<KvReply> KvOn(uint32_t, const KvOp&) override { return Status::Unsupported("sim"); }
  uint32_t KvStoreFor(std::string_view) const override { return 0; }
  Status Fail(Status s) override { return s; }
  int attempt() const override { return 1; }
  const std::string& gid() const override { return gid_; }
  bool read_only() const override { return false; }
  Result<std::string> Publish(Message) override { return Status::Unsupported("sim"); }

 protected:
  uint32_t ShardForKey(int64_t) const override { return 0; }

 private:
  std::string gid_ = "sim";
};

// The process crashes at the relay's and the consumer's crash points (env.h) with probability
// 0.1 while faults are on: CrashPoint throws, unwinding out of RelayBatch / ApplyOnce exactly
// where the real process would die; the driver then drops what that process held in memory.
struct Crashed {};
class SimOutboxEnv final : public Env {
 public:
  SimOutboxEnv(Rng* rng, int64_t* now, const bool* faults) : rng_(rng), now_(now), faults_(faults) {}
  int64_t NowMs() override { return *now_; }
  void SleepMs(int64_t ms) override { *now_ += ms; }
  uint64_t Random64() override { return rng_->g(); }
  void CrashPoint(CrashSite) override {
    if (*faults_ && rng_->P(0.1)) {
      crashes++;
      throw Crashed{};
    }
  }
  uint64_t crashes = 0;

 private:
  Rng* rng_;
  int64_t* now_;
  const bool* faults_;
};

struct Result1 {
  bool ok = true;
  std::string why;
};

Result1 RunSeed(uint64_t seed, bool verbose) {
  Rng rng(seed);
  int64_t now = 0;
  bool faults = true;
  SimOutbox outbox(&rng, &now, &faults);
  SimBroker broker(&rng, &faults);
  SimOutboxEnv env(&rng, &now, &faults);
  const char* claims[2] = {"00000000000000a1", "00000000000000b2"};
  const int64_t lease = 1'000;
  std::vector<OutboxEntry> pending[2];  // what each relay holds in memory (its own commits)
  std::set<std::string> committed, aborted, poison;
  std::map<std::string, int> applied;   // message id -> times its effect committed
  std::set<std::string> inbox;          // the consumer's inbox (committed rows)
  const int max_tries = 3;
  uint64_t txn = 0;

  // One delivery through the real inbox rule. The simulated transaction stages the inbox row
  // and the effect; its commit may conflict, or lose its reply after or before committing.
  auto consume_one = [&]() {
    if (broker.queue.empty()) return;
    const size_t i = rng.U(std::min<size_t>(broker.queue.size(), 4));  // prefetch: any of the first
    Queued q = broker.queue[i];
    broker.queue.erase(broker.queue.begin() + static_cast<long>(i));
    q.deliveries++;
    if (variant == "ack_before_commit") {
      // A consumer that acks on receipt (auto-ack) and then applies: a failure loses it.
      if (q.body == "poison") {
        broker.dlq.push_back(q);
        return;
      }
      bool fresh = !inbox.count(q.id);
      if (fresh && !(faults && rng.P(0.2))) {
        inbox.insert(q.id);
        applied[q.id]++;
      }
      return;
    }
    bool staged_fresh = false, staged_effect = false;
    auto run = [&](const TxFn& fn) -> TxResult {
      SimTx tx;
      staged_fresh = staged_effect = false;
      TxResult r;
      Status s = fn(tx);
      if (!s.ok()) {
        r.state = s.Is(Code::kAborted) ? TxState::kAborted : TxState::kGaveUp;
        r.status = s;
        return r;
      }
      if (faults && rng.P(0.1)) {  // conflicts that outlasted the retries
        r.state = TxState::kGaveUp;
        r.status = Status::Conflict("sim: deadlock");
        return r;
      }
      const bool lost = faults && rng.P(0.1);
      const bool commits = !lost || rng.P(0.5);
      if (commits) {
        if (staged_fresh) inbox.insert(q.id);
        if (staged_effect) applied[q.id]++;
      }
      r.state = lost ? TxState::kOutcomeUnknown : TxState::kCommitted;
      if (lost) r.status = Status::OutcomeUnknown("sim: commit reply lost");
      return r;
    };
    auto record = [&](Tx&) -> Result<bool> {
      staged_fresh = variant == "no_inbox" || !inbox.count(q.id);
      return staged_fresh;
    };
    auto handler = [&](Tx&) -> Status {
      if (q.body == "poison") return Status::Aborted("sim: poison message");
      staged_effect = true;
      return Status::OK();
    };
    bool did = false;
    Status why;
    core::DeliveryAction a;
    try {
      a = core::ApplyOnce(&env, run, record, handler, q.deliveries, max_tries, &did, &why);
    } catch (const Crashed&) {
      // The consumer died before its ack (before or after its commit): redelivered.
      broker.queue.push_back(q);
      return;
    }
    const bool ack_lost = faults && rng.P(0.1);  // the consumer dies before its ack arrives
    if (a == core::DeliveryAction::kAck && !ack_lost) return;
    if (a == core::DeliveryAction::kDeadLetter && !ack_lost) {
      broker.dlq.push_back(q);
      return;
    }
    broker.queue.push_back(q);  // requeued / redelivered
  };

  auto step = [&](int r) {
    switch (rng.U(6)) {
      case 0: {  // the application commits (or aborts) a transaction with 1..3 messages
        const std::string gid = std::to_string(seed) + "g" + std::to_string(++txn);
        std::vector<Message> msgs;
        const size_t n = 1 + rng.U(3);
        for (size_t i = 0; i < n; ++i) {
          Message m;
          m.routing_key = rng.P(0.03) ? "nowhere" : "q";
          m.body = rng.P(0.03) ? "poison" : "ok";
          msgs.push_back(m);
        }
        if (rng.P(0.2)) {  // aborted: its messages never reach the outbox
          for (size_t i = 0; i < n; ++i) aborted.insert(gid + "-" + std::to_string(i));
          break;
        }
        outbox.Insert(gid, msgs, claims[r], lease);
        for (size_t i = 0; i < n; ++i) {
          const std::string id = gid + "-" + std::to_string(i);
          committed.insert(id);
          if (msgs[i].body == "poison" && msgs[i].routing_key != "nowhere") poison.insert(id);
          OutboxEntry e;
          e.gid = gid;
          e.seq = static_cast<uint32_t>(i);
          e.msg = msgs[i];
          pending[r].push_back(e);
        }
        break;
      }
      case 1:  // the relay publishes what it committed
        try {
          core::RelayBatch(&env, &outbox, &broker, pending[r], claims[r]);
        } catch (const Crashed&) {  // killed after publishing: its claims stay until the lease
        }
        pending[r].clear();
        break;
      case 2:
        try {
          core::PollOutbox(&env, &outbox, &broker, claims[r], lease, 1 + rng.U(4));
        } catch (const Crashed&) {
        }
        break;
      case 3:
        if (faults && rng.P(0.2)) pending[r].clear();  // the relay process crashes
        break;
      case 4:
        consume_one();
        break;
      case 5:
        now += static_cast<int64_t>(rng.U(400));
        break;
    }
  };
  const int steps = 200 + static_cast<int>(rng.U(400));
  for (int i = 0; i < steps; ++i) step(static_cast<int>(rng.U(2)));
  // Heal: no more faults; the relays' leases end; everything drains.
  faults = false;
  for (int round = 0; round < 2000 && (!outbox.rows.empty() || !broker.queue.empty() ||
                                       !pending[0].empty() || !pending[1].empty());
       ++round) {
    now += 500;
    for (int r = 0; r < 2; ++r) {
      core::RelayBatch(&env, &outbox, &broker, pending[r], claims[r]);
      pending[r].clear();
      core::PollOutbox(&env, &outbox, &broker, claims[r], lease, 16);
    }
    while (!broker.queue.empty()) consume_one();
  }
  Result1 res;
  auto fail = [&](const std::string& w) {
    if (res.ok) res = {false, w};
  };
  if (!outbox.rows.empty()) fail("outbox not empty after the drain");
  std::set<std::string> in_dlq;
  for (const Queued& q : broker.dlq) in_dlq.insert(q.id);
  for (const std::string& id : committed) {
    const int n = applied.count(id) ? applied[id] : 0;
    if (outbox.dead.count(id)) {
      if (n != 0) fail(id + ": dead-lettered by the relay but applied");
    } else if (poison.count(id)) {
      if (!in_dlq.count(id)) fail(id + ": a poison message is not in the dead-letter queue");
      if (n != 0) fail(id + ": poison applied");
    } else if (n != 1) {
      fail(id + ": committed message applied " + std::to_string(n) + " times");
    }
  }
  for (const std::string& id : aborted) {
    if (applied.count(id)) fail(id + ": message of an aborted transaction applied");
  }
  if (verbose || !res.ok) {
    std::printf("seed %llu: %zu committed messages, %zu aborted, %zu dead (relay), %zu in DLQ, "
                "%llu returns, %llu crash-point kills: %s\n",
                static_cast<unsigned long long>(seed), committed.size(), aborted.size(),
                outbox.dead.size(), broker.dlq.size(),
                static_cast<unsigned long long>(broker.returned),
                static_cast<unsigned long long>(env.crashes),
                res.ok ? "ok" : res.why.c_str());
  }
  return res;
}

}  // namespace
}  // namespace seigo::simoutbox

int main(int argc, char** argv) {
  using namespace seigo::simoutbox;
  uint64_t seeds = 1000, first = 1;
  bool expect_violation = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "seigo_sim_outbox: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seeds") seeds = std::strtoull(next(), nullptr, 10);
    else if (a == "--first-seed") first = std::strtoull(next(), nullptr, 10);
    else if (a == "--variant") variant = next();
    else if (a == "--expect-violation") expect_violation = true;
    else if (a == "--verbose") verbose = true;
    else {
      std::fprintf(stderr, "usage: seigo_sim_outbox [--seeds N] [--first-seed S] [--variant "
                           "ack_before_commit|confirm_is_optional|no_inbox] [--expect-violation] "
                           "[--verbose]\n");
      return 2;
    }
  }
  if (!variant.empty() && variant != "ack_before_commit" && variant != "confirm_is_optional" &&
      variant != "no_inbox") {
    std::fprintf(stderr, "seigo_sim_outbox: unknown variant '%s'\n", variant.c_str());
    return 2;
  }
  for (uint64_t s = first; s < first + seeds; ++s) {
    Result1 r = RunSeed(s, verbose);
    if (!r.ok) {
      if (expect_violation) {
        std::printf("variant %s caught at seed %llu: %s\n", variant.c_str(),
                    static_cast<unsigned long long>(s), r.why.c_str());
        return 0;
      }
      std::printf("VIOLATION at seed %llu (replay: --first-seed %llu --seeds 1 --verbose)\n",
                  static_cast<unsigned long long>(s), static_cast<unsigned long long>(s));
      return 1;
    }
    if ((s - first + 1) % 1000 == 0) {
      std::fprintf(stderr, "seigo_sim_outbox: %llu seeds ok\n",
                   static_cast<unsigned long long>(s - first + 1));
    }
  }
  if (expect_violation) {
    std::printf("variant %s NOT caught in %llu seeds\n", variant.c_str(),
                static_cast<unsigned long long>(seeds));
    return 1;
  }
  std::printf("seigo_sim_outbox: %llu seeds, no violation\n", static_cast<unsigned long long>(seeds));
  return 0;
}
