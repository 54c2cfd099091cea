// Coordinator: the library's threads and pools around the protocol core (src/core/).
//
// Nothing here decides anything about a transaction: Run() calls core::Protocol::Run on the
// caller's thread, hands the prepared branches of committed transactions to phase-2 threads,
// and a background thread calls core::ResolvePass every resolver_interval_ms.

#include "seigo/coordinator.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "amqp/amqp_connection.h"
#include "core/deadlock.h"
#include "core/protocol.h"
#include "core/relay.h"
#include "mariadb/lazy_shard.h"
#include "mariadb/mariadb_participant.h"
#include "redis/redis_participant.h"

namespace seigo {

const char* EventKindName(Event::Kind k) {
  switch (k) {
    case Event::Kind::kAttemptStarted: return "attempt_started";
    case Event::Kind::kAttemptFailed: return "attempt_failed";
    case Event::Kind::kCommitted: return "committed";
    case Event::Kind::kFailed: return "failed";
    case Event::Kind::kPhase2Left: return "phase2_left";
    case Event::Kind::kLimbo: return "limbo";
    case Event::Kind::kResolverPass: return "resolver_pass";
    case Event::Kind::kResolverError: return "resolver_error";
    case Event::Kind::kDeadlockBroken: return "deadlock_broken";
    case Event::Kind::kRelayError: return "relay_error";
  }
  return "unknown";
}

class Coordinator::Impl {
 public:
  Impl(ShardMap map, std::vector<std::unique_ptr<mariadb::LazyShard>> parts,
       std::vector<std::unique_ptr<redis::RedisParticipant>> redis, std::string deployment,
       const CoordinatorOptions& o, Env* env)
      : map_(std::move(map)),
        owned_(std::move(parts)),
        redis_(std::move(redis)),
        deployment_(std::move(deployment)),
        raw_(RawPointers(owned_, redis_)),
        options_(o),
        env_(env),
        claim_(NewClaim(env)),
        protocol_(raw_, env, o.protocol, owned_.size(),
                  core::OutboxConfig{!o.amqp.empty(), claim_, o.relay.lease_ms}),
        max_queue_(static_cast<size_t>(std::max(1, o.phase2_threads)) * 4) {}

  // The broker for the relay thread (Open parsed and checked the URL).
  void SetBroker(std::unique_ptr<amqp::AmqpBroker> b) { broker_ = std::move(b); }

  ~Impl() { Stop(); }

  void Start() {
    // Phase-2 threads only for Phase2Mode::kBackground: otherwise callers run their own.
    const int threads =
        options_.phase2 == Phase2Mode::kBackground ? std::max(1, options_.phase2_threads) : 0;
    for (int i = 0; i < threads; ++i) {
      phase2_workers_.emplace_back([this] { Phase2Loop(); });
    }
    if (options_.resolver_interval_ms > 0) {
      resolver_ = std::thread([this] { ResolverLoop(); });
    }
    if (options_.deadlock.enabled) {
      detector_ = std::thread([this] { DetectorLoop(); });
    }
    if (broker_) relay_ = std::thread([this] { RelayLoop(); });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    resolver_cv_.notify_all();
    for (std::thread& t : phase2_workers_) t.join();
    if (resolver_.joinable()) resolver_.join();
    if (detector_.joinable()) detector_.join();
    {
      std::lock_guard<std::mutex> l(relay_mu_);
      relay_stopping_ = true;
    }
    relay_cv_.notify_all();
    if (relay_.joinable()) relay_.join();
  }

  TxResult Run(const TxFn& fn, const RunOptions& run) {
    // A Run inside a closure (of this coordinator or any other) would be an independent
    // transaction: it would commit even if the outer one aborts, and wait for the outer's locks.
    thread_local bool in_closure = false;
    if (in_closure) {
      TxResult refused;
      refused.status = Status::InvalidArgument(
          "Coordinator::Run called inside a transaction's closure: nested transactions are not "
          "supported (do the work in the outer closure's Tx)");
      aborted_++;
      return refused;
    }
    struct Mark {  // also reset when the closure throws
      bool& flag;
      explicit Mark(bool& f) : flag(f) { flag = true; }
      ~Mark() { flag = false; }
    };
    core::RunOutput out;
    const int64_t started = env_->NowMs();
    {
      Mark mark(in_closure);
      if (options_.on_event) {
        out = protocol_.Run(
            [&](Tx& tx) {
              Event e;
              e.kind = Event::Kind::kAttemptStarted;
              e.gid = tx.gid();
              e.attempt = tx.attempt();
              Emit(e);
              return fn(tx);
            },
            run);
      } else {
        out = protocol_.Run(fn, run);
      }
    }
    if (options_.on_event) {
      const TxResult& res = out.result;
      for (const AttemptInfo& a : res.history) {
        if (a.status.ok() || &a == &res.history.back()) continue;
        Event e;
        e.kind = Event::Kind::kAttemptFailed;
        e.gid = a.gid;
        e.attempt = a.attempt;
        e.shard = a.status.shard();
        e.duration_ms = a.duration_ms;
        e.status = a.status;
        Emit(e);
      }
    }
    const TxResult& r = out.result;
    attempts_ += static_cast<uint64_t>(r.attempts);
    for (const AttemptInfo& a : r.history) {
      // KILL QUERY: a deadlock detector (this process's or another's) chose this attempt.
      if (a.status.server_errno() == 1317) deadlock_victims_++;
    }
    switch (r.state) {
      case TxState::kCommitted: committed_++; break;
      case TxState::kAborted: aborted_++; break;
      case TxState::kGaveUp: gave_up_++; break;
      case TxState::kOutcomeUnknown: unknown_++; break;
    }
    if (!out.phase2.empty() && options_.phase2 == Phase2Mode::kBeforeReturn) {
      // Read-your-writes: every branch is committed before the caller hears "committed". Under
      // a Run deadline the XA COMMIT is cut at it, and a branch whose owning connection failed
      // is left to the resolver at once (named in pending_visibility) rather than retried on
      // fresh connections that could wait on a frozen shard.
      ProtocolOptions phase2_options = options_.protocol;
      if (run.timeout_ms > 0) phase2_options.phase2_tries = 0;
      for (core::Phase2Item& item : out.phase2) {
        const uint32_t shard = item.xid.branch;
        const std::string gid = item.xid.gid;
        if (run.timeout_ms > 0) item.session->SetDeadline(started + run.timeout_ms);
        Status s = core::Protocol::FinishPhase2(std::move(item), env_, phase2_options);
        CountPhase2(s, gid, shard);
        if (!s.ok()) out.result.pending_visibility.push_back(shard);
      }
    } else if (!out.phase2.empty()) {
      // Phase 2 is asynchronous but bounded: every queued item holds a connection and a prepared
      // branch's row locks. When the queue is full the caller commits its own branches
      // (backpressure), so neither connections nor locks pile up under load.
      bool inline_phase2;
      {
        std::lock_guard<std::mutex> l(mu_);
        inline_phase2 = queue_.size() >= max_queue_;
        if (!inline_phase2) {
          for (core::Phase2Item& item : out.phase2) {
            queue_.push_back({++queued_, std::move(item)});
            in_flight_.insert(queued_);
          }
        }
      }
      if (inline_phase2) {
        for (core::Phase2Item& item : out.phase2) {
          const std::string gid = item.xid.gid;
          const uint32_t shard = item.xid.branch;
          CountPhase2(core::Protocol::FinishPhase2(std::move(item), env_, options_.protocol), gid,
                      shard);
        }
      } else {
        cv_.notify_one();
      }
    }
    if (out.lost) {
      std::lock_guard<std::mutex> l(mu_);
      lost_.push_back(std::move(*out.lost));
    }
    if (!out.messages.empty() && broker_) {
      // This process publishes its own messages first, at once, off the caller's thread. A
      // full queue only delays them: they are in the outbox, and a poll takes them after the
      // lease.
      size_t bytes = 0;
      for (const OutboxEntry& e : out.messages) bytes += e.msg.body.size() + 256;
      std::lock_guard<std::mutex> l(relay_mu_);
      if (relay_pending_ < kMaxRelayQueue && relay_pending_bytes_ < kMaxRelayQueueBytes) {
        relay_pending_ += out.messages.size();
        relay_pending_bytes_ += bytes;
        relay_queue_.push_back({out.outbox, std::move(out.messages), env_->NowMs()});
        ++relay_enqueued_;
        relay_cv_.notify_one();
      }
    }
    if (options_.on_event) {  // after phase 2: the Run's whole duration, as the caller sees it
      const TxResult& res = out.result;
      Event e;
      e.kind = res.committed() ? Event::Kind::kCommitted : Event::Kind::kFailed;
      e.gid = res.history.empty() ? res.gid : res.history.back().gid;
      e.attempt = res.attempts;
      e.shard = res.status.shard();
      e.duration_ms = env_->NowMs() - started;
      e.status = res.status;
      e.state = res.state;
      Emit(e);
    }
    return std::move(out.result);
  }

  // Waits for the items queued before the call — by their sequence numbers, not by a count of
  // finished items (other threads' items may finish first).
  void DrainPhase2() {
    std::unique_lock<std::mutex> l(mu_);
    const uint64_t target = queued_;
    drained_cv_.wait(l, [&] { return in_flight_.empty() || *in_flight_.begin() > target; });
  }

  // One resolver pass, after trying to settle this process's lost commits (so that the pass can
  // finish their branches; also when the caller drives recovery, resolver_interval_ms = 0).
  ResolveReport Recover() {
    std::vector<core::LostCommit> lost;
    {
      std::lock_guard<std::mutex> l(mu_);
      lost.swap(lost_);
    }
    std::vector<core::LostCommit> keep;
    for (core::LostCommit& x : lost) {
      if (!core::Protocol::TrySettle(x, env_)) keep.push_back(std::move(x));
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      for (core::LostCommit& x : keep) lost_.push_back(std::move(x));
    }
    std::lock_guard<std::mutex> l(resolve_mu_);  // one pass at a time from this process
    ResolveReport r = core::ResolvePass(raw_, env_, options_.resolver);
    limbo_ += r.limbo.size();
    resolver_passes_++;
    resolver_errors_ += r.errors.size();
    for (const ResolveReport::Limbo& l : r.limbo) {
      Log("seigo: " + l.message);
      Event e;
      e.kind = Event::Kind::kLimbo;
      e.gid = l.gid;
      e.shard = static_cast<int>(l.shard);
      e.status = Status::Corruption(l.message);
      Emit(e);
    }
    for (const Status& err : r.errors) {
      Event e;
      e.kind = Event::Kind::kResolverError;
      e.status = err;
      e.shard = err.shard();
      Emit(e);
    }
    Event e;
    e.kind = Event::Kind::kResolverPass;
    e.report = &r;
    Emit(e);
    return r;
  }

  std::vector<Result<OutboxStats>> OutboxStatus() {
    std::vector<Result<OutboxStats>> out;
    for (auto& p : owned_) out.push_back(p->ReadOutboxStats());
    return out;
  }

  std::vector<Result<std::vector<DeadRecord>>> DeadLetters(size_t limit) {
    std::vector<Result<std::vector<DeadRecord>>> out;
    for (auto& p : owned_) out.push_back(p->ListDeadLetters(limit));
    return out;
  }

  Result<size_t> ResendDeadLetters(std::span<const std::string> ids, bool all) {
    // Which letters, per old transaction: named ones are looked up by (gid, seq) on every
    // shard (a gid's letters are on its decider's shard; elsewhere nothing is found), so an
    // id is found however many older letters there are; --all lists each shard's oldest.
    std::map<std::string, std::vector<DeadLetter>> named;
    for (const std::string& id : ids) {
      const size_t dash = id.rfind('-');
      uint32_t seq = 0;
      const char* end = id.data() + id.size();
      // Checked here, before any shard is asked: a gid is 32 lowercase hex digits.
      const bool gid_ok = dash == 32 && std::all_of(id.begin(), id.begin() + 32, [](char ch) {
        return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
      });
      if (!gid_ok || std::from_chars(id.data() + dash + 1, end, seq).ptr != end ||
          dash + 1 == id.size()) {
        return Status::InvalidArgument("not a message id <gid>-<seq> (32 hex digits, '-', a "
                                       "number): " + id);
      }
      named[id.substr(0, dash)].push_back({id.substr(0, dash), seq, ""});
    }
    size_t moved = 0, wanted = 0;
    Status first_error;
    for (auto& p : owned_) {
      std::vector<std::pair<std::string, std::vector<DeadLetter>>> groups;
      if (all) {
        Result<std::vector<DeadRecord>> dead = p->ListDeadLetters(10'000);
        if (!dead.ok()) {
          if (first_error.ok()) first_error = dead.status();
          continue;  // the other shards' letters are still resent
        }
        for (const DeadRecord& d : *dead) {
          if (groups.empty() || groups.back().first != d.entry.gid) groups.push_back({d.entry.gid, {}});
          groups.back().second.push_back({d.entry.gid, d.entry.seq, ""});
        }
      } else {
        for (const auto& [gid, letters] : named) groups.push_back({gid, letters});
      }
      for (auto& [gid, letters] : groups) {
        std::sort(letters.begin(), letters.end(),
                  [](const DeadLetter& a, const DeadLetter& b) { return a.seq < b.seq; });
        letters.erase(std::unique(letters.begin(), letters.end(),
                                  [](const DeadLetter& a, const DeadLetter& b) { return a.seq == b.seq; }),
                      letters.end());
        Result<size_t> n = p->ResendDeadLetters(letters, core::NewGid(env_));
        if (!n.ok()) {
          if (first_error.ok()) first_error = n.status();
          break;  // this shard is failing: on to the next
        }
        moved += *n;
      }
    }
    for (const auto& [gid, letters] : named) {
      std::set<uint32_t> seqs;
      for (const DeadLetter& d : letters) seqs.insert(d.seq);
      wanted += seqs.size();
    }
    const std::string done = std::to_string(moved) + " resent";
    if (!first_error.ok()) return first_error.Annotate(done);
    if (!all && moved < wanted) {
      return Status::NotFound(std::to_string(wanted - moved) + " of the " +
                              std::to_string(wanted) + " message ids name no dead letter; " + done);
    }
    return moved;
  }

  void DrainRelay() {
    if (!broker_) return;
    std::unique_lock<std::mutex> l(relay_mu_);
    const uint64_t target = relay_enqueued_;
    relay_drained_cv_.wait(l, [&] { return relay_done_ >= target; });
  }

  InDoubtReport InDoubt() { return core::InspectInDoubt(raw_, env_); }

  DeadlockReport LockWaits() {
    return core::DetectDeadlocks(raw_, env_, options_.deadlock, /*force=*/true,
                                 /*break_cycles=*/false);
  }

  const ShardMap& map() const { return map_; }
  const std::string& deployment() const { return deployment_; }
  mariadb::LazyShard* shard(uint32_t i) { return owned_[i].get(); }
  size_t redis_count() const { return redis_.size(); }
  redis::RedisParticipant* redis(size_t i) { return redis_[i].get(); }

  Counters counters() const {
    Counters c;
    c.committed = committed_;
    c.aborted = aborted_;
    c.gave_up = gave_up_;
    c.unknown = unknown_;
    c.attempts = attempts_;
    c.phase2_done = phase2_done_;
    c.phase2_left = phase2_left_;
    c.limbo = limbo_;
    c.resolver_passes = resolver_passes_;
    c.resolver_errors = resolver_errors_;
    c.deadlock_passes = deadlock_passes_;
    c.deadlocks_cross_shard = deadlocks_cross_shard_;
    c.deadlocks_local = deadlocks_local_;
    c.deadlock_wait_ms_total = deadlock_wait_ms_total_;
    c.deadlock_wait_ms_max = deadlock_wait_ms_max_;
    c.deadlock_victims = deadlock_victims_;
    c.messages_confirmed = messages_confirmed_;
    c.messages_dead = messages_dead_;
    c.messages_retried = messages_retried_;
    c.relay_errors = relay_errors_;
    return c;
  }

 private:
  static std::vector<Participant*> RawPointers(
      const std::vector<std::unique_ptr<mariadb::LazyShard>>& v,
      const std::vector<std::unique_ptr<redis::RedisParticipant>>& r) {
    std::vector<Participant*> out;
    for (const auto& p : v) out.push_back(p.get());
    for (const auto& p : r) out.push_back(p.get());
    return out;
  }

  void CountPhase2(const Status& s, const std::string& gid, uint32_t shard) {
    if (s.ok()) {
      phase2_done_++;
      return;
    }
    phase2_left_++;
    Event e;
    e.kind = Event::Kind::kPhase2Left;
    e.gid = gid;
    e.shard = static_cast<int>(shard);
    e.status = s;
    if (s.Is(Code::kCorruption)) {
      // A limbo branch: the decision is kept (GC probes the branch's marker), but an operator
      // must restart the server. Say so now, not only in the next resolver report.
      limbo_++;
      Log("seigo: " + s.ToString());
      e.kind = Event::Kind::kLimbo;
    }
    Emit(e);
  }

  void Emit(const Event& e) {
    if (!options_.on_event) return;
    try {
      options_.on_event(e);
    } catch (...) {
      Log(std::string("seigo: the on_event hook threw on a ") + EventKindName(e.kind) +
          " event; ignored");
    }
  }

  void Log(const std::string& line) {
    if (options_.log) {
      try {
        options_.log(line);
        return;
      } catch (...) {
      }
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  void Phase2Loop() {
    for (;;) {
      Queued q;
      {
        std::unique_lock<std::mutex> l(mu_);
        // On shutdown the queue is still drained: every item gets its XA COMMIT attempt.
        cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        q = std::move(queue_.front());
        queue_.pop_front();
      }
      const std::string gid = q.item.xid.gid;
      const uint32_t shard = q.item.xid.branch;
      CountPhase2(core::Protocol::FinishPhase2(std::move(q.item), env_, options_.protocol), gid,
                  shard);
      {
        std::lock_guard<std::mutex> l(mu_);
        in_flight_.erase(q.seq);
      }
      drained_cv_.notify_all();
    }
  }

  static std::string NewClaim(Env* env) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(env->Random64()));
    return buf;
  }

  void CountRelay(const core::RelayStats& st, int shard) {
    messages_confirmed_ += st.confirmed;
    messages_dead_ += st.dead;
    messages_retried_ += st.retried;
    if (st.error.ok()) return;
    relay_errors_++;
    Event e;
    e.kind = Event::Kind::kRelayError;
    e.shard = shard;
    e.status = st.error;
    Emit(e);
  }

  // The relay (doc/outbox.md): publishes this process's committed messages as they come, and
  // every poll_interval_ms polls every shard's outbox for messages whose claim expired.
  void RelayLoop() {
    const int64_t interval = std::max<int64_t>(10, options_.relay.poll_interval_ms);
    int64_t next_poll = env_->NowMs();
    std::unique_lock<std::mutex> l(relay_mu_);
    for (;;) {
      const int64_t wait = std::max<int64_t>(0, next_poll - env_->NowMs());
      relay_cv_.wait_for(l, std::chrono::milliseconds(wait),
                         [&] { return relay_stopping_ || !relay_queue_.empty(); });
      std::deque<RelayItem> items;
      items.swap(relay_queue_);
      const uint64_t taken = relay_enqueued_;
      relay_pending_ = 0;
      relay_pending_bytes_ = 0;
      const bool stopping = relay_stopping_;
      l.unlock();
      // Every item of one outbox goes to the broker in one pipelined batch (up to 4096
      // messages), in the order they came: one wait for confirms and one outbox delete per
      // outbox and round. (Batching only runs of consecutive items of one outbox, as before,
      // made batches of one or two messages when commits alternate between shards: the relay
      // fell behind the commits, and entries left unpublished past their lease were claimed
      // and published a second time by other processes' polls: found by the gacha crash
      // matrix's baseline cell.)
      std::vector<core::OutboxBatch> batches;
      const int64_t stale_before = env_->NowMs() - options_.relay.lease_ms * 3 / 4;
      for (RelayItem& item : items) {
        // Near the end of its claim a poll elsewhere may take it: leave it to the polls rather
        // than publish it twice (a backlog behind a slow or absent broker). Not earlier: a
        // skipped entry waits for the rest of its lease (the benchmark's E10 took 10-15 s
        // instead of 3 s to catch up when the cut was at half the lease).
        if (item.enqueued_ms < stale_before) continue;
        auto b = std::find_if(batches.begin(), batches.end(), [&](const auto& x) {
          return x.outbox == item.outbox && x.entries.size() < 4096;
        });
        if (b == batches.end()) b = batches.insert(batches.end(), {item.outbox, {}});
        for (OutboxEntry& e : item.entries) b->entries.push_back(std::move(e));
      }
      // Every outbox's batch in one stream to the broker (one wait for the confirms), at most
      // about 8192 messages per stream.
      for (size_t i = 0; i < batches.size();) {
        size_t j = i, n = 0;
        while (j < batches.size() && (j == i || n + batches[j].entries.size() <= 8192)) {
          n += batches[j++].entries.size();
        }
        std::span<const core::OutboxBatch> group(batches.data() + i, j - i);
        std::vector<core::RelayStats> st = core::RelayBatches(env_, broker_.get(), group, claim_);
        for (size_t k = 0; k < st.size(); ++k) {
          CountRelay(st[k], static_cast<int>(group[k].outbox->index()));
        }
        i = j;
      }
      if (!stopping && env_->NowMs() >= next_poll) {
        std::vector<Participant*> open;
        for (auto& p : owned_) {
          if (p->is_open()) open.push_back(p.get());
        }
        // Rounds while a poll comes back full: a backlog drains at the broker's pace. Every
        // shard is claimed at once and published in one stream; after 8 full rounds the loop
        // turns to this process's own commits and polls again at once, without the interval.
        bool full = false;
        for (int round = 0; round < 8 && !open.empty(); ++round) {
          std::vector<core::RelayStats> st = core::PollOutboxes(
              env_, open, broker_.get(), claim_, options_.relay.lease_ms, options_.relay.batch_txns);
          std::vector<Participant*> again;
          for (size_t k = 0; k < st.size(); ++k) {
            CountRelay(st[k], static_cast<int>(open[k]->index()));
            if (st[k].error.ok() && st[k].retried == 0 &&
                st[k].claimed_txns >= options_.relay.batch_txns) {
              again.push_back(open[k]);
            }
          }
          open = std::move(again);
          full = !open.empty();
        }
        next_poll = env_->NowMs() + (full ? 0 : interval);
      }
      l.lock();
      relay_done_ = std::max(relay_done_, taken);
      relay_drained_cv_.notify_all();
      if (stopping && relay_queue_.empty()) return;
    }
  }

  void ResolverLoop() {
    std::unique_lock<std::mutex> l(mu_);
    while (!stopping_) {
      resolver_cv_.wait_for(l, std::chrono::milliseconds(options_.resolver_interval_ms),
                   [&] { return stopping_; });
      if (stopping_) return;
      l.unlock();
      Recover();
      l.lock();
    }
  }

  // The deadlock detector: looks every poll_ms; reads the shards only while a statement of
  // this process has waited check_after_ms (core::DetectDeadlocks).
  void DetectorLoop() {
    const int64_t poll = std::max<int64_t>(1, options_.deadlock.poll_ms);
    int64_t last_pass = 0;
    int64_t last_error_log = INT64_MIN / 2;
    core::DetectorState state;
    std::unique_lock<std::mutex> l(mu_);
    while (!stopping_) {
      resolver_cv_.wait_for(l, std::chrono::milliseconds(poll), [&] { return stopping_; });
      if (stopping_) return;
      if (env_->NowMs() - last_pass < options_.deadlock.pass_interval_ms) continue;
      l.unlock();
      DeadlockReport r =
          core::DetectDeadlocks(raw_, env_, options_.deadlock, /*force=*/false, true, &state);
      if (r.ran) {
        deadlock_passes_++;
        last_pass = env_->NowMs();
      }
      if (!r.errors.empty() && env_->NowMs() - last_error_log >= 60'000) {
        // Without its tables (a schema set up by an older seigo and opened without
        // prepare_schema) or a shard, the detector cannot work there: say so, once a minute.
        last_error_log = env_->NowMs();
        Log("seigo: deadlock detector: " + r.errors.front().ToString() +
            (r.errors.size() > 1 ? " (and " + std::to_string(r.errors.size() - 1) + " more)" : ""));
      }
      for (const BrokenDeadlock& b : r.broken) {
        (b.cross_shard ? deadlocks_cross_shard_ : deadlocks_local_)++;
        const uint64_t w = static_cast<uint64_t>(b.waited_ms);
        deadlock_wait_ms_total_ += w;
        uint64_t max = deadlock_wait_ms_max_.load();
        while (w > max && !deadlock_wait_ms_max_.compare_exchange_weak(max, w)) {
        }
        Event e;
        e.kind = Event::Kind::kDeadlockBroken;
        e.gid = b.victim;
        e.shard = static_cast<int>(b.shard);
        e.duration_ms = b.waited_ms;
        Emit(e);
      }
      l.lock();
    }
  }

  ShardMap map_;
  std::vector<std::unique_ptr<mariadb::LazyShard>> owned_;
  std::vector<std::unique_ptr<redis::RedisParticipant>> redis_;
  const std::string deployment_;
  std::vector<Participant*> raw_;
  CoordinatorOptions options_;
  Env* env_;
  const std::string claim_;  // this process's relay: its outbox claims (doc/outbox.md)
  core::Protocol protocol_;
  const size_t max_queue_;  // phase-2 items queued at most; beyond, callers do their own

  // The relay thread's work: committed messages of this process, by outbox.
  struct RelayItem {
    Participant* outbox = nullptr;
    std::vector<OutboxEntry> entries;
    int64_t enqueued_ms = 0;
  };
  // Beyond either bound, commits' messages are left to the polls (they are in the outbox).
  static constexpr size_t kMaxRelayQueue = 100'000;                  // messages
  static constexpr size_t kMaxRelayQueueBytes = size_t{64} << 20;    // bodies + 256 each
  std::unique_ptr<amqp::AmqpBroker> broker_;  // used by the relay thread only
  std::mutex relay_mu_;
  std::condition_variable relay_cv_, relay_drained_cv_;
  std::deque<RelayItem> relay_queue_;  // guarded by relay_mu_
  size_t relay_pending_ = 0;           // guarded by relay_mu_: messages in relay_queue_
  size_t relay_pending_bytes_ = 0;     // guarded by relay_mu_: their approximate size
  uint64_t relay_enqueued_ = 0, relay_done_ = 0;  // guarded by relay_mu_
  bool relay_stopping_ = false;        // guarded by relay_mu_
  std::thread relay_;
  std::atomic<uint64_t> messages_confirmed_{0}, messages_dead_{0}, messages_retried_{0};
  std::atomic<uint64_t> relay_errors_{0};

  std::mutex mu_;
  std::condition_variable cv_, drained_cv_, resolver_cv_;
  struct Queued {
    uint64_t seq = 0;
    core::Phase2Item item;
  };
  std::deque<Queued> queue_;            // guarded by mu_
  std::set<uint64_t> in_flight_;        // guarded by mu_: queued or running, by sequence number
  std::vector<core::LostCommit> lost_;  // guarded by mu_; settled by the resolver thread
  uint64_t queued_ = 0;                 // guarded by mu_: the last sequence number handed out
  bool stopping_ = false;               // guarded by mu_
  std::vector<std::thread> phase2_workers_;
  std::thread resolver_;
  std::thread detector_;
  std::mutex resolve_mu_;

  std::atomic<uint64_t> committed_{0}, aborted_{0}, gave_up_{0}, unknown_{0}, attempts_{0};
  std::atomic<uint64_t> phase2_done_{0}, phase2_left_{0}, limbo_{0};
  std::atomic<uint64_t> resolver_passes_{0}, resolver_errors_{0};
  std::atomic<uint64_t> deadlock_passes_{0}, deadlocks_cross_shard_{0}, deadlocks_local_{0};
  std::atomic<uint64_t> deadlock_wait_ms_total_{0}, deadlock_wait_ms_max_{0};
  std::atomic<uint64_t> deadlock_victims_{0};
};

namespace {

// The deployment's record of Redis instance `index`'s data epoch, on shard 0
// (seigo_redis_epoch; RedisParticipant's Config::verify_epoch): recorded the first time,
// compared afterwards. While shard 0 is down the instance is accepted as it is — its own
// process still notices a later change — rather than made unavailable with it.
Status VerifyRedisEpoch(mariadb::LazyShard* shard0, const std::string& deployment,
                        bool prepare_schema, uint32_t index, const std::string& epoch,
                        const std::string& name) {
  if (!shard0->is_open()) return Status::OK();
  Result<mariadb::MariaDbParticipant*> got = shard0->Get();
  if (!got.ok()) return Status::OK();
  mariadb::MariaDbParticipant* s0 = *got;
  if (prepare_schema) {
    Result<QueryResult> c = s0->Query(
        "CREATE TABLE IF NOT EXISTS seigo_redis_epoch (deployment CHAR(16) NOT NULL, "
        "idx INT UNSIGNED NOT NULL, epoch CHAR(16) NOT NULL, PRIMARY KEY (deployment, idx)) "
        "ENGINE=InnoDB");
    if (!c.ok()) return c.status().Annotate("creating seigo_redis_epoch on shard 0");
  }
  const std::vector<Value> key = {deployment, index};
  const std::vector<Value> row = {deployment, index, epoch};
  const char* select = "SELECT epoch FROM seigo_redis_epoch WHERE deployment = ? AND idx = ?";
  Result<QueryResult> r = s0->Query(select, key);
  if (!r.ok()) {
    if (!prepare_schema) return Status::OK();  // an older schema without the table
    return r.status().Annotate("reading seigo_redis_epoch on shard 0");
  }
  if (r->rows.empty()) {
    if (!prepare_schema) return Status::OK();  // changes nothing (`seigo status`)
    Result<QueryResult> ins =
        s0->Query("INSERT IGNORE INTO seigo_redis_epoch VALUES (?, ?, ?)", row);
    if (!ins.ok()) return ins.status().Annotate("recording the epoch of " + name);
    r = s0->Query(select, key);
    if (!r.ok()) return r.status();
  }
  if (!r->rows.empty() && r->rows[0][0].value_or("") != epoch) {
    return Status::Corruption(
        name + " is not the instance this deployment used as participant " +
        std::to_string(index) + ": its data epoch is " + epoch + ", shard 0 recorded " +
        r->rows[0][0].value_or("") + ". It lost its data (restarted without its AOF, "
        "flushed) or was replaced, so intents and commit records on it may be gone. Check "
        "`seigo status`; to accept it as it is, delete its row from seigo_redis_epoch on "
        "shard 0 (doc/redis.md)");
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Coordinator>> Coordinator::Open(const CoordinatorOptions& o) {
  Result<ShardMap> map = ShardMap::Parse(o.shards);
  if (!map.ok()) return map.status();
  if (o.max_connections_per_shard < 0 || o.max_idle_connections < 0) {
    return Status::InvalidArgument(
        "max_connections_per_shard and max_idle_connections must not be negative (0 = the "
        "default)");
  }
  if (o.deadlock.check_after_ms < 0 || o.deadlock.poll_ms < 1 ||
      o.deadlock.pass_interval_ms < 0) {
    return Status::InvalidArgument("deadlock.check_after_ms and deadlock.pass_interval_ms must "
                                   "not be negative, deadlock.poll_ms must be at least 1");
  }
  if (o.lock_wait_timeout_s < 1) {
    return Status::InvalidArgument("lock_wait_timeout_s must be at least 1");
  }
  if (o.protocol.txn_timeout_ms < 100 || o.protocol.txn_timeout_ms > 9'999'999) {
    return Status::InvalidArgument("txn_timeout_ms must be from 100 to 9999999 (it is written "
                                   "into XIDs, doc/xid.md)");
  }
  std::vector<std::unique_ptr<mariadb::LazyShard>> parts;
  // The first shard that opens names the deployment (stored on it at setup); every other shard
  // must belong to the same one. A shard that is down (kUnavailable) does not stop Open unless
  // require_all_shards: its transactions fail with kUnavailable until it is back, and it is
  // opened — and checked like the others — at the first call after that. Any other error (bad
  // credentials, an old server, a foreign database) fails Open: that is configuration.
  std::string deployment;
  Status first_down;
  for (size_t i = 0; i < map->size(); ++i) {
    mariadb::Config c;
    c.url = map->shard(i);
    c.index = static_cast<uint32_t>(i);
    c.lock_wait_timeout_s = o.lock_wait_timeout_s;
    c.connect_timeout_s = o.connect_timeout_s;
    c.read_timeout_s = o.read_timeout_s;
    if (o.max_idle_connections > 0) c.max_idle = static_cast<size_t>(o.max_idle_connections);
    if (o.max_connections_per_shard > 0) {
      c.max_open = static_cast<size_t>(o.max_connections_per_shard);
    }
    auto p = mariadb::MariaDbParticipant::Open(c, o.prepare_schema, &deployment);
    if (p.ok()) {
      parts.push_back(std::make_unique<mariadb::LazyShard>(std::move(*p)));
      continue;
    }
    if (!p.status().Is(Code::kUnavailable) || o.require_all_shards) return p.status();
    if (first_down.ok()) first_down = p.status();
    parts.push_back(std::make_unique<mariadb::LazyShard>(c, o.prepare_schema, p.status()));
  }
  if (deployment.empty()) {
    return first_down.Annotate("no shard is reachable");
  }
  for (auto& p : parts) {
    if (!p->is_open()) p->SetDeployment(deployment);
  }
  // Redis instances: participants map->size() + i, checked (durability gate) and claimed like
  // the shards; one that is down is checked when it is back (unless require_all_shards).
  std::vector<std::unique_ptr<redis::RedisParticipant>> kv;
  if (!o.redis.empty()) {
    size_t i = 0;
    std::string_view list = o.redis;
    while (true) {
      const size_t comma = list.find(',');
      std::string_view one = list.substr(0, comma);
      Result<redis::Url> url = redis::Url::Parse(one);
      if (!url.ok()) return url.status().Annotate("redis instance " + std::to_string(i));
      redis::Config c;
      c.url = *url;
      c.index = static_cast<uint32_t>(map->size() + i);
      c.deployment = deployment;
      c.connect_timeout_ms = o.connect_timeout_s * 1000;
      c.read_timeout_ms = o.read_timeout_s * 1000;
      c.allow_unsafe_durability = o.redis_allow_unsafe_durability;
      // Each instance's data epoch is recorded on shard 0, so that an instance that comes back
      // without its data (or is replaced) is refused by every later process too, not only by
      // the ones that saw it before (doc/redis.md, "Instance restarted without its data").
      mariadb::LazyShard* shard0 = parts[0].get();
      const bool prepare = o.prepare_schema;
      c.verify_epoch = [shard0, deployment, prepare, name = c.url.Redacted()](
                           uint32_t index, const std::string& epoch) {
        return VerifyRedisEpoch(shard0, deployment, prepare, index, epoch, "redis " + name);
      };
      if (o.max_idle_connections > 0) c.max_idle = static_cast<size_t>(o.max_idle_connections);
      Result<std::unique_ptr<redis::RedisParticipant>> p = redis::RedisParticipant::Open(c);
      if (!p.ok()) return p.status();
      if (o.require_all_shards && !(*p)->is_up()) {
        return Status::Unavailable((*p)->name() + " is unreachable (require_all_shards)");
      }
      kv.push_back(std::move(*p));
      ++i;
      if (comma == std::string_view::npos) break;
      list = list.substr(comma + 1);
    }
    if (map->size() + kv.size() > 1000) {
      return Status::InvalidArgument("at most 1000 shards and Redis instances in all");
    }
  }
  // The broker: a bad URL or refused credentials fail Open (configuration); an unreachable
  // broker does not (the outbox holds the messages until it is back).
  std::unique_ptr<amqp::AmqpBroker> broker;
  if (!o.amqp.empty()) {
    Result<amqp::AmqpUrl> url = amqp::AmqpUrl::Parse(o.amqp);
    if (!url.ok()) return url.status();
    if (o.relay.lease_ms < 100 || o.relay.poll_interval_ms < 10 || o.relay.window < 1 ||
        o.relay.batch_txns < 1 || o.relay.timeout_ms < 100) {
      return Status::InvalidArgument("relay options: lease_ms >= 100, poll_interval_ms >= 10, "
                                     "window >= 1, batch_txns >= 1, timeout_ms >= 100");
    }
    // The relay's polls claim with SKIP LOCKED: MariaDB 10.6+ / MySQL 8.0.1+, newer than what
    // the rest of seigo needs. Checked on every shard that is up now (review finding).
    for (auto& p : parts) {
      if (!p->is_open()) continue;
      Result<mariadb::MariaDbParticipant*> m = p->Get();
      if (!m.ok()) continue;
      Result<QueryResult> q =
          (*m)->Query("SELECT id FROM seigo_outbox WHERE 1 = 0 FOR UPDATE SKIP LOCKED");
      // 1064 = a syntax error: the server has no SKIP LOCKED. (A missing table — an older schema
      // opened without prepare_schema — is not this check's business.)
      if (!q.ok() && q.status().server_errno() == 1064) {
        return Status::Unsupported(p->name() + " cannot serve the outbox's polls (SELECT ... FOR "
                                   "UPDATE SKIP LOCKED needs MariaDB 10.6 or MySQL 8.0.1): " +
                                   q.status().ToString());
      }
    }
    broker = std::make_unique<amqp::AmqpBroker>(*url, o.relay.timeout_ms, o.relay.window);
    Status s = broker->connection().Connect();
    if (s.Is(Code::kInvalidArgument)) return s;
    if (!s.ok()) {
      const std::string m = "seigo: " + s.ToString() + " (messages wait in the outbox)";
      if (o.log) o.log(m);
      else std::fprintf(stderr, "%s\n", m.c_str());
    }
  }
  Env* env = o.env != nullptr ? o.env : DefaultEnv();
  auto impl = std::make_unique<Impl>(std::move(*map), std::move(parts), std::move(kv), deployment,
                                     o, env);
  if (broker) impl->SetBroker(std::move(broker));
  if (o.resolver_interval_ms > 0) impl->Recover();  // finish what a crashed predecessor left
  impl->Start();
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;
TxResult Coordinator::Run(const TxFn& fn, const RunOptions& options) {
  return impl_->Run(fn, options);
}
ResolveReport Coordinator::Recover() { return impl_->Recover(); }
InDoubtReport Coordinator::InDoubt() { return impl_->InDoubt(); }
DeadlockReport Coordinator::LockWaits() { return impl_->LockWaits(); }
void Coordinator::DrainPhase2() { impl_->DrainPhase2(); }
const ShardMap& Coordinator::shard_map() const { return impl_->map(); }
size_t Coordinator::redis_instances() const { return impl_->redis_count(); }
size_t Coordinator::RedisInstanceFor(std::string_view key) const {
  return ShardMap::KvInstanceFor(key, static_cast<uint32_t>(impl_->redis_count()));
}

Result<std::optional<std::string>> Coordinator::RedisCommand(
    size_t instance, const std::vector<std::string>& args) {
  if (instance >= impl_->redis_count()) {
    return Status::InvalidArgument("no redis instance " + std::to_string(instance));
  }
  if (args.empty()) return Status::InvalidArgument("empty redis command");
  return impl_->redis(instance)->Command(args);
}
const std::string& Coordinator::deployment() const { return impl_->deployment(); }
std::vector<Result<OutboxStats>> Coordinator::OutboxStatus() { return impl_->OutboxStatus(); }
void Coordinator::DrainRelay() { impl_->DrainRelay(); }
std::vector<Result<std::vector<DeadRecord>>> Coordinator::DeadLetters(size_t limit) {
  return impl_->DeadLetters(limit);
}
Result<size_t> Coordinator::ResendDeadLetters(std::span<const std::string> message_ids, bool all) {
  return impl_->ResendDeadLetters(message_ids, all);
}
Coordinator::Counters Coordinator::counters() const { return impl_->counters(); }

Result<QueryResult> Coordinator::QueryShard(uint32_t shard, std::string_view sql,
                                            std::initializer_list<Value> params) {
  return QueryShard(shard, sql, std::span<const Value>(params.begin(), params.size()));
}

Result<QueryResult> Coordinator::QueryShard(uint32_t shard, std::string_view sql,
                                            std::span<const Value> params) {
  if (shard >= impl_->map().size()) {
    return Status::InvalidArgument("no shard " + std::to_string(shard));
  }
  Result<mariadb::MariaDbParticipant*> p = impl_->shard(shard)->Get();
  if (!p.ok()) return p.status();
  return (*p)->Query(sql, params);
}

}  // namespace seigo
