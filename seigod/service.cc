// seigod's service (doc/seigod.md). Everything that decides anything about a transaction is
// seigo's (the coordinator); this file turns requests into Run() calls and the coordinator's
// reports into JSON, metrics and log lines.
#include "seigod/service.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <sys/random.h>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "seigod/plan.h"

namespace seigod {

extern const char* const kStatusPage;  // seigod/page.html, compiled in

namespace {

using seigo::Code;
using seigo::Coordinator;
using seigo::Status;
using seigo::TxResult;
using seigo::TxState;
using seigo::Value;
using Clock = std::chrono::steady_clock;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Reply JsonReply(int status, const json& j) {
  Reply r;
  r.status = status;
  r.body = Dump(j);
  return r;
}

// `text` safe for one log line or one table cell: control characters (newlines: forged log
// lines) become spaces.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return text;
}

int64_t ToInt(const std::optional<std::string>& cell) {
  return cell ? std::strtoll(cell->c_str(), nullptr, 10) : 0;
}

// The retry cause of one failed attempt, for seigo_retries_total.
const char* RetryCause(const Status& s) {
  if (s.server_errno() == 1213) return "deadlock";
  if (s.server_errno() == 1205) return "lock_wait_timeout";
  if (s.Is(Code::kConflict)) return "conflict";
  if (s.Is(Code::kUnavailable)) return "unavailable";
  return "other";
}

constexpr const char* kCreateRequestTable =
    "CREATE TABLE IF NOT EXISTS seigo_request ("
    " idem_key VARBINARY(200) NOT NULL PRIMARY KEY,"
    " body_hash CHAR(32) NOT NULL,"
    " state VARCHAR(16) NOT NULL,"
    " response MEDIUMBLOB NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " KEY by_time (created_ms)) ENGINE=InnoDB";
// The server's clock in unix ms, as the participant computes it (kServerNowMs in
// src/mariadb/mariadb_participant.cc): UTC_TIMESTAMP and TIMESTAMPDIFF on DATETIME do no zone
// conversion. UNIX_TIMESTAMP(NOW()) does, through the session zone: on a DST host it is an hour
// off in the repeated hour, which made a record look an hour old at birth — collected at once
// with the minimum retention, and then a resend would run the transaction again.
constexpr const char* kServerNowMs =
    "(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)";

}  // namespace

// ---- Metrics -----------------------------------------------------------------------------

struct Metrics {
  std::shared_ptr<prometheus::Registry> reg = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& tx =
      prometheus::BuildCounter().Name("seigo_transactions_total")
          .Help("Transactions ended, by outcome").Register(*reg);
  prometheus::Counter& attempts = prometheus::BuildCounter().Name("seigo_attempts_total")
          .Help("Closure runs (attempts) of every transaction").Register(*reg).Add({});
  prometheus::Family<prometheus::Counter>& retries =
      prometheus::BuildCounter().Name("seigo_retries_total")
          .Help("Attempts that failed and were retried, by cause").Register(*reg);
  prometheus::Family<prometheus::Histogram>& duration =
      prometheus::BuildHistogram().Name("seigo_transaction_duration_seconds")
          .Help("Time from request to outcome").Register(*reg);
  prometheus::Family<prometheus::Counter>& http =
      prometheus::BuildCounter().Name("seigo_http_requests_total")
          .Help("HTTP requests, by route and status").Register(*reg);
  prometheus::Gauge& in_doubt = prometheus::BuildGauge().Name("seigo_in_doubt")
          .Help("Transactions with a prepared branch (last monitor pass)").Register(*reg).Add({});
  prometheus::Gauge& in_doubt_oldest = prometheus::BuildGauge()
          .Name("seigo_in_doubt_oldest_age_seconds")
          .Help("Age of the oldest in-doubt transaction").Register(*reg).Add({});
  prometheus::Gauge& hung = prometheus::BuildGauge().Name("seigo_hung_transactions")
          .Help("Transactions in doubt or blocked longer than hung_threshold_s")
          .Register(*reg).Add({});
  prometheus::Gauge& phase2_backlog = prometheus::BuildGauge().Name("seigo_phase2_backlog")
          .Help("In-doubt transactions whose decision is made (phase 2 left to do)")
          .Register(*reg).Add({});
  prometheus::Gauge& outbox_pending = prometheus::BuildGauge().Name("seigo_outbox_pending")
          .Help("Committed messages not yet confirmed by the broker").Register(*reg).Add({});
  prometheus::Gauge& outbox_oldest = prometheus::BuildGauge()
          .Name("seigo_outbox_oldest_age_seconds")
          .Help("Age of the oldest unpublished committed message").Register(*reg).Add({});
  prometheus::Gauge& outbox_dead = prometheus::BuildGauge().Name("seigo_outbox_dead")
          .Help("Dead-letter records in the outboxes").Register(*reg).Add({});
  prometheus::Counter& resolver_passes = prometheus::BuildCounter()
          .Name("seigo_resolver_passes_total").Help("Resolver passes of this process")
          .Register(*reg).Add({});
  prometheus::Counter& resolver_errors = prometheus::BuildCounter()
          .Name("seigo_resolver_errors_total").Help("Resolver passes that could not do all")
          .Register(*reg).Add({});
  prometheus::Gauge& resolver_age = prometheus::BuildGauge()
          .Name("seigo_resolver_last_pass_age_seconds")
          .Help("Seconds since this process's resolver last completed a pass")
          .Register(*reg).Add({});
  prometheus::Family<prometheus::Counter>& deadlocks =
      prometheus::BuildCounter().Name("seigo_deadlocks_broken_total")
          .Help("Deadlocks this process's detector broke, by kind").Register(*reg);
  prometheus::Family<prometheus::Counter>& messages =
      prometheus::BuildCounter().Name("seigo_messages_total")
          .Help("Relay results, by kind").Register(*reg);
  prometheus::Family<prometheus::Gauge>& store_up =
      prometheus::BuildGauge().Name("seigo_store_up")
          .Help("1 if the store answered the last monitor pass").Register(*reg);

  // Counters mirrored from Coordinator::counters(): the increase since the last sync is added.
  std::mutex mu;
  std::map<prometheus::Counter*, uint64_t> last;
  void Sync(prometheus::Counter& c, uint64_t now) {
    // Callers read counters() before taking `mu`: a sync may see an older value than the last
    // one, which must neither go back nor count the difference twice.
    uint64_t& l = last[&c];
    if (now > l) {
      c.Increment(static_cast<double>(now - l));
      l = now;
    }
  }
  void SyncAll(const Coordinator::Counters& k) {
    std::lock_guard<std::mutex> g(mu);
    Sync(tx.Add({{"outcome", "committed"}}), k.committed);
    Sync(tx.Add({{"outcome", "aborted"}}), k.aborted);
    Sync(tx.Add({{"outcome", "gave_up"}}), k.gave_up);
    Sync(tx.Add({{"outcome", "outcome_unknown"}}), k.unknown);
    Sync(attempts, k.attempts);
    Sync(resolver_passes, k.resolver_passes);
    Sync(resolver_errors, k.resolver_errors);
    Sync(deadlocks.Add({{"kind", "cross_shard"}}), k.deadlocks_cross_shard);
    Sync(deadlocks.Add({{"kind", "local"}}), k.deadlocks_local);
    Sync(messages.Add({{"result", "confirmed"}}), k.messages_confirmed);
    Sync(messages.Add({{"result", "dead"}}), k.messages_dead);
    Sync(messages.Add({{"result", "retried"}}), k.messages_retried);
  }
  prometheus::Histogram& Duration(const char* kind) {
    static const prometheus::Histogram::BucketBoundaries kBuckets = {
        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30};
    return duration.Add({{"kind", kind}}, kBuckets);
  }
};

// ---- Interactive sessions ----------------------------------------------------------------

// One interactive transaction: a thread inside Coordinator::Run whose closure waits for the
// client's requests (doc/seigod.md, "Interactive transactions").
struct Session {
  struct Command {
    enum class Kind { kSteps, kCommit, kAbort } kind;
    Plan plan;
    std::promise<Reply> reply;
  };
  std::string id;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Command>> queue;
  bool done = false;
  std::thread thread;
  std::atomic<bool> finished{false};  // RunSession returned: the thread may be joined
  bool read_only = false;
  // The session thread's own: the command being run, and the one whose answer is the outcome
  // (commit, abort, a failed step). RunSession answers them if the body throws.
  std::shared_ptr<Command> current, pending;
};

// ---- The service -------------------------------------------------------------------------

class Service::Impl {
 public:
  Impl(Config config) : config_(std::move(config)), started_(Clock::now()) {}
  // The coordinator first: its threads (the resolver's on_event) use members declared after it.
  ~Impl() { coord_.reset(); }

  Config config_;
  std::unique_ptr<Coordinator> coord_;
  Metrics metrics_;
  Clock::time_point started_;
  std::atomic<bool> stopping_{false};

  // What the monitor saw last (guarded by mu_).
  std::mutex mu_;
  std::condition_variable monitor_cv_;
  std::thread monitor_;
  json snapshot_ = json::object();  // in_doubt, hung, lock_waits, outbox, stores
  bool ready_ = false;
  std::string not_ready_;
  // What the hung report has logged, and when it was last seen hung: a line is logged once,
  // and again only if its subject was gone for kForgetHungMs (a retried waiter is not news).
  std::map<std::string, int64_t> reported_hung_;
  static constexpr int64_t kForgetHungMs = 10 * 60 * 1000;
  std::vector<bool> table_ok_;
  int64_t last_gc_ms_ = 0;
  struct Sample {
    int64_t t_ms;
    uint64_t committed, aborted, failed, retries;
  };
  std::deque<Sample> samples_;
  std::atomic<uint64_t> retries_total_{0};
  std::atomic<int64_t> last_pass_ms_{0};
  std::mutex err_mu_;
  std::string last_resolver_error_;

  std::mutex sessions_mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  std::vector<std::shared_ptr<Session>> session_threads_;  // joined when finished, and at Stop
  std::atomic<bool> draining_{false};  // SIGTERM: no new work, readiness fails
  std::atomic<uint64_t> session_seq_{0};

  void Log(const std::string& line) {
    std::string s = Scrub(line, config_.secrets);
    std::fprintf(stderr, "seigod: %s\n", s.c_str());
    std::fflush(stderr);
  }

  Reply Error(int status, const std::string& code, const std::string& message, int step = -1,
              json extra = json::object()) {
    json e = {{"code", code}, {"message", Scrub(message, config_.secrets)}};
    if (step >= 0) e["step"] = step;
    extra["error"] = std::move(e);
    Reply r = JsonReply(status, extra);
    if (status == 503) r.retry_after_s = 1;
    return r;
  }

  PlanContext Context() const {
    PlanContext c;
    c.config = &config_;
    c.shards = &coord_->shard_map();
    c.redis_instances = coord_->redis_instances();
    c.have_broker = !config_.amqp_url.empty();
    return c;
  }

  void EnsureTables() {
    const size_t n = coord_->shard_map().size();
    table_ok_.resize(n, false);
    for (size_t i = 0; i < n; ++i) {
      if (table_ok_[i]) continue;
      seigo::Result<seigo::QueryResult> r =
          coord_->QueryShard(static_cast<uint32_t>(i), kCreateRequestTable);
      table_ok_[i] = r.ok();
    }
  }

  // The reply for a Run's result. `results` are the steps' results when it committed.
  Reply OutcomeReply(const TxResult& r, const std::vector<json>& results, int failed_step,
                     json* committed_body) {
    json base = {{"outcome", seigo::TxStateName(r.state)}, {"gid", r.gid},
                 {"attempts", r.attempts}};
    if (r.committed()) {
      base["replayed"] = false;
      base["results"] = results;
      if (committed_body) *committed_body = base;
      base["pending_visibility"] = r.pending_visibility;
      return JsonReply(200, base);
    }
    const Status& s = r.status;
    if (s.server_errno() != 0) base["server_errno"] = s.server_errno();
    if (s.shard() >= 0) base["shard"] = s.shard();
    switch (r.state) {
      case TxState::kGaveUp:
        return Error(503, s.Is(Code::kDeadlineExceeded) ? "deadline_exceeded" : "gave_up",
                     s.ToString(), failed_step, base);
      case TxState::kOutcomeUnknown:
        return Error(504, "outcome_unknown",
                     "the commit's reply was lost; resend with the same idempotency key, or look "
                     "the key up: " + s.ToString(),
                     failed_step, base);
      default: break;
    }
    switch (s.code()) {
      case Code::kGuardFailed: return Error(422, "guard_failed", s.message(), failed_step, base);
      case Code::kQueryFailed: return Error(422, "query_failed", s.ToString(), failed_step, base);
      case Code::kInvalidArgument:
        return Error(400, "bad_request", s.ToString(), failed_step, base);
      case Code::kDeadlineExceeded:
        return Error(503, "deadline_exceeded", s.ToString(), failed_step, base);
      default: return Error(422, "aborted", s.ToString(), failed_step, base);
    }
  }

  void CountRun(const TxResult& r, const char* kind, Clock::time_point t0) {
    for (size_t i = 0; i + 1 < r.history.size(); ++i) {
      metrics_.retries.Add({{"cause", RetryCause(r.history[i].status)}}).Increment();
      retries_total_++;
    }
    metrics_.Duration(kind).Observe(
        std::chrono::duration<double>(Clock::now() - t0).count());
  }

  // The idempotency record of `key`, if any: (body_hash, state, response).
  // A locking read: a record that a transaction still running or in doubt holds makes it wait
  // (and fail with 1205 after the lock-wait timeout) instead of answering "none".
  seigo::Result<std::optional<std::array<std::string, 3>>> ReadRecord(const std::string& key) {
    uint32_t home = coord_->shard_map().ShardForString(key);
    seigo::Result<seigo::QueryResult> q = coord_->QueryShard(
        home,
        "SELECT body_hash, state, response FROM seigo_request WHERE idem_key = ? "
        "LOCK IN SHARE MODE",
        {Value::Bytes(key)});
    if (!q.ok()) return q.status();
    if (q->rows.empty()) return std::optional<std::array<std::string, 3>>();
    const auto& row = q->rows[0];
    return std::optional<std::array<std::string, 3>>(
        std::array<std::string, 3>{row[0].value_or(""), row[1].value_or(""), row[2].value_or("")});
  }

  Reply Replay(const Plan& plan, const std::array<std::string, 3>& rec) {
    if (rec[0] != plan.body_hash) {
      return Error(409, "idempotency_key_mismatch",
                   "idempotency key '" + plan.idempotency_key.substr(0, 64) +
                       "' was used before with a different request; nothing was run");
    }
    json j = json::parse(rec[2], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Error(500, "internal", "unreadable idempotency record");
    int status = j.value("http_status", 200);
    j.erase("http_status");
    j["replayed"] = true;
    Reply r = JsonReply(status, j);
    return r;
  }

  // One declarative transaction. With an idempotency key its record is written inside the
  // transaction (claimed first, filled last), so it is durable exactly when the transaction is.
  // seigod killed at any point: before the commit point nothing of it, record included, commits
  // (the resolver rolls prepared branches back after their deadline) and a resend runs it;
  // after it, the record commits with the rest (phase 2 or the resolver) and a resend replays
  // it — waiting on the record's lock, or answered key_in_flight, while it is in doubt. Killed
  // while recording a guard's refusal: no record, and a resend runs again (and is refused
  // again, or commits if the state changed: either answer is the resend's own).
  Reply Transact(const std::string& body) {
    Clock::time_point t0 = Clock::now();
    json j;
    std::string perr;
    if (!ParseJson(body, &j, &perr)) return Error(400, "bad_request", perr);
    Plan plan;
    if (auto e = ParsePlan(j, Context(), /*declarative=*/true, &plan)) {
      return Error(400, "bad_request", e->message, e->step);
    }
    const std::string& key = plan.idempotency_key;
    const uint32_t home = key.empty() ? 0 : coord_->shard_map().ShardForString(key);
    std::vector<json> results;
    int failed_step = -1;
    bool duplicate = false, key_busy = false, table_missing = false;
    std::string recorded_gid;  // the gid the idempotency record holds (what a replay shows)
    seigo::RunOptions ro;
    ro.timeout_ms = plan.timeout_ms;
    ro.read_only = plan.read_only;
    TxResult r = coord_->Run(
        [&](seigo::Tx& tx) -> Status {
          results.clear();
          failed_step = -1;
          duplicate = key_busy = table_missing = false;
          if (!key.empty()) {
            // The claim comes first: a resend of a request still running or in doubt waits
            // here on the row lock, then sees the committed record (1062) or runs alone.
            seigo::Result<seigo::QueryResult> ins = tx.ExecOn(
                home,
                std::string("INSERT INTO seigo_request (idem_key, body_hash, state, response, "
                            "created_ms) VALUES (?, ?, 'running', '', ") + kServerNowMs + ")",
                {Value::Bytes(key), plan.body_hash});
            if (!ins.ok()) {
              duplicate = ins.status().server_errno() == 1062;
              table_missing = ins.status().server_errno() == 1146;
              // The claim could not be made: it waited for the record's lock (1205; or the
              // deadline cut that wait, a lost connection), or the record's shard is away. A
              // request with this key may be running or in doubt: the outcome is not known.
              const Status& cs = ins.status();
              key_busy = cs.server_errno() == 1205 || cs.Is(Code::kConflict) ||
                         cs.Is(Code::kDeadlineExceeded) || cs.Is(Code::kUnavailable);
              return ins.status();
            }
          }
          SEIGO_RETURN_IF_ERROR(RunSteps(tx, plan, &results, &failed_step));
          if (!key.empty()) {
            recorded_gid = tx.gid();
            json rec = {{"outcome", "committed"}, {"gid", tx.gid()}, {"attempts", tx.attempt()},
                        {"results", results}};
            seigo::Result<seigo::QueryResult> up = tx.ExecOn(
                home,
                // created_ms = the commit: retention counts from when the record became
                // visible, not from when a long or in-doubt attempt began.
                std::string("UPDATE seigo_request SET state = 'committed', response = ?, "
                            "created_ms = ") + kServerNowMs + " WHERE idem_key = ?",
                {Value::Bytes(Dump(rec)), Value::Bytes(key)});
            if (!up.ok()) return up.status();
          }
          return Status::OK();
        },
        ro);
    CountRun(r, "declarative", t0);
    if (duplicate) {
      seigo::Result<std::optional<std::array<std::string, 3>>> rec = ReadRecord(key);
      if (!rec.ok()) {
        return Error(503, rec.status().server_errno() == 1205 ? "key_in_flight" : "unavailable",
                     "the idempotency record exists but cannot be read: " + rec.status().ToString());
      }
      if (rec->has_value()) return Replay(plan, **rec);
      return Error(503, "gave_up", "the idempotency record vanished; send it again");
    }
    if (!r.committed() && key_busy) {
      return Error(503, "key_in_flight",
                   "a request with idempotency key '" + key.substr(0, 64) +
                       "' is still running or in doubt: its outcome is not known yet; send it "
                       "again later (it will replay the first outcome or run once)");
    }
    if (!r.committed() && table_missing) {
      coord_->QueryShard(home, kCreateRequestTable);
      return Error(503, "unavailable", "seigo_request was missing on shard " +
                                           std::to_string(home) + "; created: send it again");
    }
    TxResult shown = r;
    // A one-shard commit reports gid "" (TxResult::gid), but its record holds the attempt's
    // gid: show that one, so that the first answer and its replays are the same.
    if (r.committed() && !key.empty()) shown.gid = recorded_gid;
    Reply reply = OutcomeReply(shown, results, failed_step, nullptr);
    if (!key.empty() && r.state == TxState::kAborted && r.status.Is(Code::kGuardFailed)) {
      // A guard's refusal is the request's answer: record it (outside the transaction, which
      // left nothing), so that the resend gets the same answer. If a resend committed
      // meanwhile, IGNORE keeps that. Other failures (a query refused by a read-only server
      // during a failover, a full disk) may pass: they are not recorded, a resend runs again.
      json rec = json::parse(reply.body);
      rec["http_status"] = reply.status;
      seigo::Result<seigo::QueryResult> ins = coord_->QueryShard(
          home,
          std::string("INSERT IGNORE INTO seigo_request (idem_key, body_hash, state, response, "
                      "created_ms) VALUES (?, ?, 'aborted', ?, ") + kServerNowMs + ")",
          {Value::Bytes(key), plan.body_hash, Value::Bytes(Dump(rec))});
      // Not recorded: another send of this key (the client's resend while this one ran) got
      // there first and may have committed: its record is the answer, not this refusal.
      if (!ins.ok()) {
        return Error(503, "key_in_flight",
                     "another request with idempotency key '" + key.substr(0, 64) +
                         "' is running or in doubt: its outcome is not known yet");
      }
      if (ins->affected_rows == 0) {
        seigo::Result<std::optional<std::array<std::string, 3>>> first = ReadRecord(key);
        if (first.ok() && first->has_value()) return Replay(plan, **first);
        return Error(503, "key_in_flight", "another request with idempotency key '" +
                                               key.substr(0, 64) + "' answered first; ask again");
      }
    }
    return reply;
  }

  Reply GetRecord(const std::string& key) {
    if (key.empty() || key.size() > 200) return Error(400, "bad_request", "bad idempotency key");
    seigo::Result<std::optional<std::array<std::string, 3>>> rec = ReadRecord(key);
    if (!rec.ok()) {
      if (rec.status().server_errno() == 1205) {
        return Error(503, "key_in_flight", "a transaction with idempotency key '" +
                                               key.substr(0, 64) +
                                               "' is running or in doubt: ask again later");
      }
      return Error(503, "unavailable", rec.status().ToString());
    }
    if (!rec->has_value()) {
      return Error(404, "not_found",
                   "no transaction with idempotency key '" + key.substr(0, 64) +
                       "' is committed, running or in doubt now (a request still on its way may "
                       "yet run; or it is older than the retention)");
    }
    json j = json::parse((**rec)[2], nullptr, false);
    if (j.is_discarded()) return Error(500, "internal", "unreadable idempotency record");
    j["http_status"] = j.value("http_status", 200);
    j["state"] = (**rec)[1];
    return JsonReply(200, j);
  }

  // ---- Monitor ----

  json InDoubtJson(const seigo::InDoubtReport& rep, const seigo::DeadlockReport& waits,
                   int* hung, int* backlog, int64_t* oldest_ms, std::vector<std::string>* new_hung,
                   std::set<std::string> now_hung) {
    json txs = json::array();
    for (const seigo::InDoubtTx& t : rep.txs) {
      bool is_hung = t.age_ms > config_.hung_threshold_ms;
      json b = json::array();
      std::set<uint32_t> prepared(t.prepared_on.begin(), t.prepared_on.end());
      std::set<uint32_t> all = prepared;
      if (t.decision) all.insert(t.decision->shards.begin(), t.decision->shards.end());
      all.insert(t.decider);
      for (uint32_t s : all) {
        const char* state = prepared.count(s) ? "prepared"
                            : t.decision && t.decision->outcome == seigo::Outcome::kCommit
                                ? "committed"
                                : "not prepared";
        bool waiting = false;
        for (const seigo::WaitEdge& e : waits.waits) {
          if (e.shard == s && e.waiter == t.gid) waiting = true;
        }
        b.push_back({{"shard", s}, {"state", waiting ? "waiting" : state}});
      }
      json blocks = json::array();
      for (const seigo::WaitEdge& e : waits.waits) {
        if (e.holder == t.gid || e.waiter == t.gid) {
          blocks.push_back({{"shard", e.shard}, {"waiter", e.waiter}, {"holder", e.holder},
                            {"waiter_thread", e.waiter_thread}, {"holder_thread", e.holder_thread},
                            {"waited_ms", e.waited_ms}});
        }
      }
      json d = nullptr;
      if (t.decision) d = seigo::OutcomeName(t.decision->outcome);
      txs.push_back({{"gid", t.gid}, {"decider", t.decider}, {"age_ms", t.age_ms},
                     {"overdue_ms", t.overdue_ms}, {"decision", d}, {"branches", b},
                     {"lock_waits", blocks}, {"hung", is_hung},
                     {"decision_error", t.decision_error.ok()
                                            ? ""
                                            : Scrub(t.decision_error.ToString(), config_.secrets)}});
      *oldest_ms = std::max(*oldest_ms, t.age_ms);
      if (t.decision) ++*backlog;
      if (is_hung) {
        ++*hung;
        now_hung.insert(t.gid);
        if (!reported_hung_.count(t.gid)) {
          std::string m = "INFO: transaction " + t.gid + " in doubt for more than " +
                          std::to_string(config_.hung_threshold_ms / 1000) + " seconds.\n";
          m += "seigod:       age " + std::to_string(t.age_ms / 1000.0).substr(0, 8) +
               " s, decider shard " + std::to_string(t.decider) + ", decision: " +
               (t.decision ? seigo::OutcomeName(t.decision->outcome) : "none") +
               (t.overdue_ms > 0 ? ", deadline passed " + std::to_string(t.overdue_ms) + " ms ago"
                                 : ", deadline in " + std::to_string(-t.overdue_ms) + " ms");
          for (const json& br : b) {
            m += "\nseigod:       shard " + std::to_string(br["shard"].get<uint32_t>()) + ": " +
                 br["state"].get<std::string>();
          }
          for (const json& w : blocks) {
            m += "\nseigod:       lock wait on shard " + std::to_string(w["shard"].get<uint32_t>()) +
                 ": " + w["waiter"].get<std::string>() + " (thread " +
                 std::to_string(w["waiter_thread"].get<uint64_t>()) + ") waits " +
                 std::to_string(w["waited_ms"].get<int64_t>()) + " ms for " +
                 w["holder"].get<std::string>() + " (thread " +
                 std::to_string(w["holder_thread"].get<uint64_t>()) + ")";
          }
          new_hung->push_back(m);
        }
      }
    }
    // Blocked lock waits of transactions not in doubt (still running): hung past the threshold.
    for (const seigo::WaitEdge& e : waits.waits) {
      if (e.waited_ms <= config_.hung_threshold_ms) continue;
      std::string id = "wait:" + e.waiter + ":" + std::to_string(e.shard);
      ++*hung;
      now_hung.insert(id);
      if (!reported_hung_.count(id)) {
        new_hung->push_back("INFO: transaction " + e.waiter + " blocked for more than " +
                            std::to_string(config_.hung_threshold_ms / 1000) + " seconds.\n" +
                            "seigod:       lock wait on shard " + std::to_string(e.shard) +
                            ": thread " + std::to_string(e.waiter_thread) + " waits " +
                            std::to_string(e.waited_ms) + " ms for " + e.holder + " (thread " +
                            std::to_string(e.holder_thread) + ")");
      }
    }
    const int64_t now = WallMs();
    for (const std::string& id : now_hung) reported_hung_[id] = now;
    for (auto it = reported_hung_.begin(); it != reported_hung_.end();) {
      it = now - it->second > kForgetHungMs ? reported_hung_.erase(it) : std::next(it);
    }
    return txs;
  }

  // Transactions of any client — seigo's, another application's, a prepared branch whose
  // session is gone (thread 0) — holding row locks on a shard for longer than the threshold,
  // with the threads they block, from information_schema (PROCESS privilege, which seigo needs
  // anyway). trx_started is in the server's zone, as NOW() is in a recovery session's.
  json LongHolders(int* hung, std::vector<std::string>* new_hung, std::set<std::string>* now_hung) {
    json out = json::array();
    const std::string sql =
        "SELECT b.trx_id, b.trx_mysql_thread_id, TIMESTAMPDIFF(SECOND, b.trx_started, NOW()),"
        " b.trx_state, b.trx_rows_locked, LEFT(COALESCE(b.trx_query, ''), 200),"
        " (SELECT GROUP_CONCAT(CONCAT(r.trx_mysql_thread_id, ' for ',"
        "   TIMESTAMPDIFF(SECOND, r.trx_wait_started, NOW()), ' s') SEPARATOR ', ')"
        "  FROM information_schema.INNODB_LOCK_WAITS w"
        "  JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"
        "  WHERE w.blocking_trx_id = b.trx_id)"
        " FROM information_schema.INNODB_TRX b"
        " WHERE b.trx_started < NOW() - INTERVAL ? SECOND AND b.trx_lock_structs > 0"
        // A waiter is the blocked one, not a holder — unless it blocks others in turn.
        " AND (b.trx_state <> 'LOCK WAIT' OR EXISTS (SELECT 1 FROM"
        "  information_schema.INNODB_LOCK_WAITS w2 WHERE w2.blocking_trx_id = b.trx_id))"
        " ORDER BY b.trx_started LIMIT 20";
    for (size_t i = 0; i < coord_->shard_map().size(); ++i) {
      seigo::Result<seigo::QueryResult> q = coord_->QueryShard(
          static_cast<uint32_t>(i), sql,
          {static_cast<long long>(config_.hung_threshold_ms / 1000)});
      if (!q.ok()) continue;  // the in-doubt scan reports the store's trouble
      for (const auto& row : q->rows) {
        if (row.size() < 7) continue;
        std::string trx = row[0].value_or("?"), thread = row[1].value_or("0");
        std::string blocked = row[6].value_or("");
        std::string query = OneLine(row[5].value_or(""));
        json h = {{"shard", i}, {"trx", trx}, {"thread", ToInt(row[1])},
                  {"age_s", ToInt(row[2])}, {"state", row[3].value_or("")},
                  {"rows_locked", ToInt(row[4])}, {"query", query}, {"blocked", blocked}};
        out.push_back(h);
        // Hung (counted, reported): a holder that blocks someone. A prepared branch without a
        // session (thread 0) is the in-doubt report's; one that blocks nobody is only listed.
        if (blocked.empty() || thread == "0") continue;
        ++*hung;
        std::string id = "trx:" + std::to_string(i) + ":" + trx;
        now_hung->insert(id);
        if (!reported_hung_.count(id)) {
          std::string m = "INFO: shard " + std::to_string(i) + ": server thread " + thread +
                          (thread == "0" ? " (no session: a prepared XA branch)" : "") +
                          " has held row locks for more than " +
                          std::to_string(config_.hung_threshold_ms / 1000) + " seconds.\n" +
                          "seigod:       transaction " + trx + ", " + row[3].value_or("") +
                          ", " + row[4].value_or("0") + " row(s) locked, started " +
                          row[2].value_or("?") + " s ago";
          if (!query.empty()) m += "\nseigod:       running: " + query;
          m += "\nseigod:       blocking: " + (blocked.empty() ? std::string("nobody") : "thread " + blocked);
          new_hung->push_back(m);
        }
      }
    }
    return out;
  }

  void MonitorPass() {
    seigo::InDoubtReport rep = coord_->InDoubt();
    seigo::DeadlockReport waits = coord_->LockWaits();
    int hung = 0, backlog = 0;
    int64_t oldest = 0;
    std::vector<std::string> new_hung;
    json stores = json::array();
    std::set<int> down;
    std::string why;
    bool unattributed = false;
    for (const Status& e : rep.errors) {
      if (e.shard() >= 0) down.insert(e.shard());
      else unattributed = true;
      if (why.empty()) why = e.ToString();
    }
    const size_t nshards = coord_->shard_map().size();
    if (unattributed) {
      // The scan's error names no store index: ask each store, rather than call all down.
      for (size_t i = 0; i < nshards; ++i) {
        if (!coord_->QueryShard(static_cast<uint32_t>(i), "SELECT 1").ok()) down.insert(i);
      }
      for (size_t i = 0; i < coord_->redis_instances(); ++i) {
        if (!coord_->RedisCommand(i, {"PING"}).ok()) down.insert(static_cast<int>(nshards + i));
      }
    }
    for (size_t i = 0; i < nshards + coord_->redis_instances(); ++i) {
      bool up = !down.count(static_cast<int>(i));
      std::string name = i < nshards ? "shard" + std::to_string(i)
                                     : "redis" + std::to_string(i - nshards);
      std::string url = i < nshards ? config_.redacted_shards[i]
                                    : config_.redacted_redis[i - nshards];
      stores.push_back({{"store", name}, {"url", url}, {"up", up}});
      metrics_.store_up.Add({{"store", name}}).Set(up ? 1 : 0);
    }
    json outbox = {{"pending", 0}, {"oldest_age_ms", 0}, {"dead", 0}, {"errors", json::array()}};
    if (!config_.amqp_url.empty()) {
      uint64_t pending = 0, dead = 0;
      int64_t oldest_msg = 0;
      for (auto& o : coord_->OutboxStatus()) {
        if (!o.ok()) {
          outbox["errors"].push_back(Scrub(o.status().ToString(), config_.secrets));
          continue;
        }
        pending += o->pending;
        dead += o->dead;
        oldest_msg = std::max(oldest_msg, o->oldest_age_ms);
      }
      outbox = {{"pending", pending}, {"oldest_age_ms", oldest_msg}, {"dead", dead},
                {"errors", outbox["errors"]}};
      metrics_.outbox_pending.Set(static_cast<double>(pending));
      metrics_.outbox_oldest.Set(oldest_msg / 1000.0);
      metrics_.outbox_dead.Set(static_cast<double>(dead));
    }
    json waits_j = json::array();
    for (const seigo::WaitEdge& e : waits.waits) {
      waits_j.push_back({{"shard", e.shard}, {"waiter", e.waiter}, {"holder", e.holder},
                         {"waited_ms", e.waited_ms},
                         {"hung", e.waited_ms > config_.hung_threshold_ms}});
    }
    seigo::Coordinator::Counters k = coord_->counters();
    metrics_.SyncAll(k);
    // Everything is read before mu_ is taken (a frozen shard must not block /v1/status,
    // /readyz or the page); reported_hung_ is the monitor thread's own.
    std::set<std::string> holders_hung;
    json holders = LongHolders(&hung, &new_hung, &holders_hung);
    json txs = InDoubtJson(rep, waits, &hung, &backlog, &oldest, &new_hung, holders_hung);
    for (const std::string& m : new_hung) Log(m);
    std::lock_guard<std::mutex> g(mu_);
    metrics_.in_doubt.Set(static_cast<double>(rep.txs.size()));
    metrics_.in_doubt_oldest.Set(oldest / 1000.0);
    metrics_.hung.Set(hung);
    metrics_.phase2_backlog.Set(backlog);
    json errors = json::array();
    for (const Status& e : rep.errors) errors.push_back(Scrub(e.ToString(), config_.secrets));
    snapshot_ = {{"in_doubt", {{"count", rep.txs.size()}, {"oldest_age_ms", oldest},
                               {"phase2_backlog", backlog}, {"hung", hung}, {"txs", txs},
                               {"errors", errors}}},
                 {"lock_waits", waits_j},
                 {"long_lock_holders", holders},
                 {"outbox", outbox},
                 {"stores", stores},
                 {"monitor_ms", WallMs()}};
    ready_ = rep.errors.empty();
    not_ready_ = why;
    samples_.push_back({WallMs(), k.committed, k.aborted, k.gave_up + k.unknown,
                        retries_total_.load()});
    while (samples_.size() > 2 &&
           samples_.back().t_ms - samples_.front().t_ms > 15 * 60 * 1000) {
      samples_.pop_front();
    }
  }

  // Deletes expired idempotency records, 1000 per statement, until a shard has none left or
  // 5 s of this pass are spent on it (a backlog is caught up over the next passes).
  void CollectRecords() {
    const size_t n = coord_->shard_map().size();
    for (size_t i = 0; i < n && !stopping_; ++i) {
      const Clock::time_point until = Clock::now() + std::chrono::seconds(5);
      while (!stopping_ && Clock::now() < until) {
        // The expired keys first, skipping rows a prepared branch holds (a DELETE would wait
        // on them and fail the whole statement), then those keys.
        seigo::Result<seigo::QueryResult> q = coord_->QueryShard(
            static_cast<uint32_t>(i),
            std::string("SELECT idem_key FROM seigo_request WHERE created_ms < ") + kServerNowMs +
                " - ? LIMIT 1000 FOR UPDATE SKIP LOCKED",
            {static_cast<long long>(config_.idempotency_retention_ms)});
        if (!q.ok() || q->rows.empty()) break;
        std::string sql = "DELETE FROM seigo_request WHERE idem_key IN (";
        std::vector<Value> keys;
        for (const auto& row : q->rows) {
          sql += keys.empty() ? "?" : ",?";
          keys.push_back(Value::Bytes(row[0].value_or("")));
        }
        sql += std::string(") AND created_ms < ") + kServerNowMs + " - ?";
        keys.emplace_back(static_cast<long long>(config_.idempotency_retention_ms));
        seigo::Result<seigo::QueryResult> d =
            coord_->QueryShard(static_cast<uint32_t>(i), sql, std::span<const Value>(keys));
        if (!d.ok() || q->rows.size() < 1000) break;
      }
    }
  }

  void MonitorLoop() {
    while (!stopping_) {
      try {
        EnsureTables();
        MonitorPass();
      } catch (const std::exception& e) {
        Log(std::string("monitor pass failed: ") + e.what());
      }
      if (WallMs() - last_gc_ms_ > 60'000) {
        try {
          CollectRecords();
        } catch (const std::exception& e) {
          Log(std::string("collecting idempotency records failed: ") + e.what());
        }
        last_gc_ms_ = WallMs();
      }
      std::unique_lock<std::mutex> l(mu_);
      monitor_cv_.wait_for(l, std::chrono::milliseconds(config_.monitor_interval_ms),
                           [&] { return stopping_.load(); });
    }
  }

  json StatusJson() {
    seigo::Coordinator::Counters k = coord_->counters();
    json j;
    {
      std::lock_guard<std::mutex> g(mu_);
      j = snapshot_;
      json samples = json::array();
      for (const Sample& s : samples_) {
        samples.push_back({s.t_ms, s.committed, s.aborted, s.failed, s.retries});
      }
      j["samples"] = {{"columns", {"t_ms", "committed", "aborted", "failed", "retries"}},
                      {"rows", samples}};
      j["ready"] = ready_ && !draining_;
    }
    int64_t last = last_pass_ms_.load();
    std::string err;
    {
      std::lock_guard<std::mutex> g(err_mu_);
      err = last_resolver_error_;
    }
    j["resolver"] = {{"last_pass_age_ms", last == 0 ? -1 : WallMs() - last},
                     {"passes", k.resolver_passes}, {"errors", k.resolver_errors},
                     {"last_error", err}};
    j["counters"] = {{"committed", k.committed}, {"aborted", k.aborted},
                     {"gave_up", k.gave_up}, {"outcome_unknown", k.unknown},
                     {"attempts", k.attempts}, {"retries", retries_total_.load()},
                     {"phase2_left", k.phase2_left}, {"limbo", k.limbo},
                     {"messages_confirmed", k.messages_confirmed},
                     {"messages_dead", k.messages_dead}};
    j["deployment"] = coord_->deployment();
    j["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count();
    j["hung_threshold_ms"] = config_.hung_threshold_ms;
    j["now_ms"] = WallMs();
    {
      std::lock_guard<std::mutex> g(sessions_mu_);
      j["sessions"] = sessions_.size();
    }
    return j;
  }

  // ---- Sessions ----

  Reply BeginSession(const std::string& body) {
    if (stopping_ || draining_) return Error(503, "stopping", "seigod is stopping");
    json j;
    std::string perr;
    if (!ParseJson(body.empty() ? "{}" : body, &j, &perr)) return Error(400, "bad_request", perr);
    if (!j.is_object()) return Error(400, "bad_request", "the request must be a JSON object");
    int64_t timeout = config_.default_timeout_ms;
    bool read_only = false;
    for (const auto& [k, v] : j.items()) {
      if (k == "timeout_ms") {
        if (!v.is_number_integer() || v.get<int64_t>() <= 0) {
          return Error(400, "bad_request", "'timeout_ms' must be a positive integer");
        }
        timeout = std::min(v.get<int64_t>(), config_.max_timeout_ms);
      } else if (k == "read_only") {
        if (!v.is_boolean()) return Error(400, "bad_request", "'read_only' must be true or false");
        read_only = v.get<bool>();
      } else {
        return Error(400, "bad_request", "unknown field '" + k.substr(0, 64) + "'");
      }
    }
    auto s = std::make_shared<Session>();
    {
      std::lock_guard<std::mutex> g(sessions_mu_);
      // Stop() sets stopping_ under this mutex: a session started here is joined by it.
      if (stopping_) return Error(503, "stopping", "seigod is stopping");
      if (sessions_.size() >= static_cast<size_t>(config_.max_sessions)) {
        return Error(503, "too_many_sessions", "too many open sessions (server.max_sessions)");
      }
      // Unguessable (the kernel's generator): whoever holds the id can commit or abort it.
      uint64_t r[2] = {0, 0};
      if (getrandom(r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
        return Error(503, "unavailable", "no random bytes for a session id");
      }
      char buf[48];
      std::snprintf(buf, sizeof buf, "s-%016llx%016llx", static_cast<unsigned long long>(r[0]),
                    static_cast<unsigned long long>(r[1]));
      s->id = buf;
      s->read_only = read_only;
      // Threads of ended sessions are joined here, the rest at Stop().
      for (auto it = session_threads_.begin(); it != session_threads_.end();) {
        if ((*it)->finished) {
          (*it)->thread.join();
          it = session_threads_.erase(it);
        } else {
          ++it;
        }
      }
      try {
        s->thread = std::thread([this, s, timeout, read_only] { RunSession(s, timeout, read_only); });
      } catch (const std::system_error& e) {
        return Error(503, "unavailable", std::string("cannot start a session thread: ") + e.what());
      }
      sessions_[s->id] = s;
      session_threads_.push_back(s);
    }
    return JsonReply(201, {{"session", s->id}, {"timeout_ms", timeout}});
  }

  void RunSession(std::shared_ptr<Session> s, int64_t timeout, bool read_only) {
    try {
      RunSessionBody(s, timeout, read_only);
    } catch (const std::exception& e) {
      // Whatever happened, nobody is left waiting on a promise.
      Log("session " + s->id + ": internal error: " + e.what());
      std::deque<std::shared_ptr<Session::Command>> rest;
      {
        std::lock_guard<std::mutex> g(s->mu);
        s->done = true;
        rest.swap(s->queue);
      }
      for (auto& c : rest) {
        try {
          c->reply.set_value(Error(500, "internal", "the session failed; it did not commit"));
        } catch (const std::future_error&) {
        }
      }
      for (auto* c : {&s->current, &s->pending}) {
        if (!*c) continue;
        try {
          (*c)->reply.set_value(
              (*c)->kind == Session::Command::Kind::kCommit
                  ? Error(504, "outcome_unknown", "the session failed during its commit")
                  : Error(500, "internal", "the session failed; it did not commit"));
        } catch (const std::future_error&) {  // it had its answer
        }
      }
      std::lock_guard<std::mutex> g(sessions_mu_);
      sessions_.erase(s->id);
    }
    s->finished = true;
  }

  void RunSessionBody(std::shared_ptr<Session> s, int64_t timeout, bool read_only) {
    Clock::time_point t0 = Clock::now();
    std::shared_ptr<Session::Command> pending;  // the command whose reply is the outcome
    bool conflict = false, idle = false, client_abort = false;
    seigo::RunOptions ro;
    ro.timeout_ms = timeout;
    ro.read_only = read_only;
    const Clock::time_point deadline = t0 + std::chrono::milliseconds(timeout);
    TxResult r = coord_->Run(
        [&](seigo::Tx& tx) -> Status {
          if (tx.attempt() > 1) {
            // The first attempt hit a conflict; the client's function must run again.
            conflict = true;
            return Status::Aborted("conflict: a deadlock or lock-wait timeout rolled the "
                                   "session back; run the whole transaction again");
          }
          for (;;) {
            std::shared_ptr<Session::Command> c;
            {
              std::unique_lock<std::mutex> l(s->mu);
              Clock::time_point until =
                  std::min(deadline, Clock::now() + std::chrono::milliseconds(config_.session_idle_ms));
              s->cv.wait_until(l, until, [&] { return !s->queue.empty() || stopping_.load(); });
              if (stopping_) return Status::Aborted("seigod is stopping");
              if (s->queue.empty()) {
                idle = true;
                return Clock::now() >= deadline
                           ? Status(Code::kDeadlineExceeded, "the session's deadline passed")
                           : Status::Aborted("no request for session_idle_ms: rolled back");
              }
              c = s->queue.front();
              s->queue.pop_front();
              s->current = c;
            }
            if (c->kind == Session::Command::Kind::kCommit) {
              pending = s->pending = c;
              return Status::OK();
            }
            if (c->kind == Session::Command::Kind::kAbort) {
              pending = s->pending = c;
              client_abort = true;
              return Status::Aborted("aborted by the client");
            }
            std::vector<json> results;
            int failed = -1;
            Status st = RunSteps(tx, c->plan, &results, &failed);
            if (!st.ok()) {
              pending = s->pending = c;
              if (st.Is(Code::kConflict)) conflict = true;
              return st;
            }
            c->reply.set_value(JsonReply(200, {{"results", results}}));
            s->current.reset();
          }
        },
        ro);
    CountRun(r, "interactive", t0);
    std::deque<std::shared_ptr<Session::Command>> rest;
    {
      std::lock_guard<std::mutex> g(s->mu);
      s->done = true;
      rest.swap(s->queue);
    }
    Reply out;
    if (conflict && !r.committed()) {
      out = Error(409, "conflict", "a deadlock or lock-wait timeout rolled the session back: run "
                                   "the whole transaction again", -1,
                  {{"outcome", "aborted"}, {"gid", r.gid}});
    } else if (client_abort) {
      out = JsonReply(200, {{"outcome", "aborted"}, {"gid", r.gid}});
    } else {
      out = OutcomeReply(r, {}, -1, nullptr);
    }
    if (idle && !r.committed()) {
      Log("session " + s->id + " rolled back: " + r.status.ToString());
    }
    if (pending) {
      try {
        pending->reply.set_value(out);
      } catch (const std::future_error&) {  // it already had its answer
      }
    }
    for (auto& c : rest) c->reply.set_value(Error(404, "not_found", "the session has ended"));
    std::lock_guard<std::mutex> g(sessions_mu_);
    sessions_.erase(s->id);  // last: Stop() waits for this before the coordinator closes
  }

  std::shared_ptr<Session> FindSession(const std::string& id) {
    std::lock_guard<std::mutex> g(sessions_mu_);
    auto it = sessions_.find(id);
    return it == sessions_.end() ? nullptr : it->second;
  }

  Reply Submit(const std::string& id, std::shared_ptr<Session::Command> c) {
    std::shared_ptr<Session> s = FindSession(id);
    if (!s) return Error(404, "not_found", "no open session '" + id.substr(0, 64) + "'");
    std::future<Reply> f = c->reply.get_future();
    {
      std::lock_guard<std::mutex> g(s->mu);
      if (s->done) return Error(404, "not_found", "the session has ended");
      s->queue.push_back(c);
    }
    s->cv.notify_all();
    return f.get();
  }

  Reply SessionSteps(const std::string& id, const std::string& body) {
    std::shared_ptr<Session> s = FindSession(id);
    if (!s) return Error(404, "not_found", "no open session '" + id.substr(0, 64) + "'");
    json j;
    std::string perr;
    std::optional<PlanError> e;
    auto c = std::make_shared<Session::Command>();
    c->kind = Session::Command::Kind::kSteps;
    if (!ParseJson(body, &j, &perr)) {
      e = PlanError{perr, -1};
    } else {
      PlanContext ctx = Context();
      ctx.session_read_only = s->read_only;
      e = ParsePlan(j, ctx, /*declarative=*/false, &c->plan);
    }
    if (e) {
      // A bad step ends the session like a failed one: nothing of it commits, and its locks
      // are not held until the idle timeout.
      EndSession(id, /*commit=*/false);
      return Error(400, "bad_request", e->message + " (the session was rolled back)", e->step,
                   {{"outcome", "aborted"}});
    }
    return Submit(id, c);
  }

  Reply EndSession(const std::string& id, bool commit) {
    auto c = std::make_shared<Session::Command>();
    c->kind = commit ? Session::Command::Kind::kCommit : Session::Command::Kind::kAbort;
    return Submit(id, c);
  }

  void Stop() {
    draining_ = true;
    {
      std::lock_guard<std::mutex> g(sessions_mu_);
      if (stopping_.exchange(true)) return;
    }
    // Each waiter's mutex is taken once after stopping_ is set: none can have checked its
    // predicate before and be about to wait (a lost wakeup).
    { std::lock_guard<std::mutex> g(mu_); }
    monitor_cv_.notify_all();
    if (monitor_.joinable()) monitor_.join();
    std::vector<std::shared_ptr<Session>> threads;
    {
      std::lock_guard<std::mutex> g(sessions_mu_);
      threads.swap(session_threads_);
    }
    for (auto& s : threads) {
      { std::lock_guard<std::mutex> g(s->mu); }
      s->cv.notify_all();
    }
    // Every session ends within its Run: rolled back at once, or bounded by its deadline if a
    // statement is still running. The coordinator is closed only after.
    for (auto& s : threads) s->thread.join();
  }
};

// ---- Service ------------------------------------------------------------------------------

seigo::Result<std::unique_ptr<Service>> Service::Start(const Config& config) {
  auto impl = std::make_unique<Impl>(config);
  Impl* raw = impl.get();
  seigo::CoordinatorOptions o;
  for (size_t i = 0; i < config.shard_urls.size(); ++i) {
    o.shards += (i ? "," : "") + config.shard_urls[i];
  }
  for (size_t i = 0; i < config.redis_urls.size(); ++i) {
    o.redis += (i ? "," : "") + config.redis_urls[i];
  }
  o.amqp = config.amqp_url;
  // An attempt's deadline is the earlier of start + txn_timeout_ms and the request's own
  // timeout_ms: let the request's (capped by max_timeout_ms) decide.
  o.protocol.txn_timeout_ms = std::max<int64_t>(o.protocol.txn_timeout_ms, config.max_timeout_ms);
  o.lock_wait_timeout_s = config.lock_wait_timeout_s;
  o.max_connections_per_shard = config.max_connections_per_shard;
  o.log = [raw](std::string_view line) { raw->Log(std::string(line)); };
  o.on_event = [raw](const seigo::Event& e) {
    if (e.kind == seigo::Event::Kind::kResolverPass) {
      raw->last_pass_ms_ = WallMs();
    } else if (e.kind == seigo::Event::Kind::kResolverError) {
      std::lock_guard<std::mutex> g(raw->err_mu_);
      raw->last_resolver_error_ = Scrub(e.status.ToString(), raw->config_.secrets);
    }
  };
  seigo::Result<std::unique_ptr<Coordinator>> c = Coordinator::Open(o);
  if (!c.ok()) return Status(c.status().code(), Scrub(c.status().message(), config.secrets));
  raw->coord_ = std::move(*c);
  try {
    raw->EnsureTables();
    raw->MonitorPass();
  } catch (const std::exception& e) {
    raw->Log(std::string("first monitor pass failed: ") + e.what());
  }
  raw->monitor_ = std::thread([raw] { raw->MonitorLoop(); });
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Service::~Service() {
  Stop();
  if (impl_->coord_) {
    impl_->coord_->DrainPhase2();
    if (!impl_->config_.amqp_url.empty()) impl_->coord_->DrainRelay();
  }
}

void Service::Stop() { impl_->Stop(); }
void Service::BeginStop() { impl_->draining_ = true; }
Reply Service::Transact(const std::string& body) {
  if (impl_->draining_) return impl_->Error(503, "stopping", "seigod is stopping");
  return impl_->Transact(body);
}
Reply Service::GetRecord(const std::string& key) { return impl_->GetRecord(key); }

Reply Service::InDoubt() {
  json s = impl_->StatusJson();
  return JsonReply(200, {{"in_doubt", s["in_doubt"]}, {"lock_waits", s["lock_waits"]},
                         {"long_lock_holders", s["long_lock_holders"]},
                         {"hung_threshold_ms", s["hung_threshold_ms"]}});
}

Reply Service::Resolve(const std::string& gid, const std::string& authorization) {
  const std::string& token = impl_->config_.admin_token;
  if (authorization.empty()) {
    return impl_->Error(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <admin token>'");
  }
  const std::string prefix = "Bearer ";
  std::string given = authorization.rfind(prefix, 0) == 0 ? authorization.substr(prefix.size()) : "";
  // Compared in constant time; an unset token refuses everyone.
  bool ok = !token.empty() && given.size() == token.size();
  unsigned char diff = 0;
  for (size_t i = 0; ok && i < token.size(); ++i) diff |= given[i] ^ token[i];
  if (!ok || diff != 0) return impl_->Error(403, "forbidden", "wrong admin token");
  seigo::ResolveReport rep = impl_->coord_->Recover();
  json applied = json::array(), pending = json::array(), limbo = json::array();
  bool fenced = false;
  for (const auto& a : rep.applied) {
    if (a.gid == gid) applied.push_back({{"shard", a.shard}, {"outcome", seigo::OutcomeName(a.outcome)}});
  }
  for (const auto& p : rep.pending) {
    if (p.gid == gid) {
      pending.push_back({{"shards", p.shards}, {"reason", Scrub(p.reason, impl_->config_.secrets)}});
    }
  }
  for (const auto& l : rep.limbo) {
    if (l.gid == gid) {
      limbo.push_back({{"shard", l.shard}, {"message", Scrub(l.message, impl_->config_.secrets)}});
    }
  }
  for (const auto& f : rep.fenced) fenced = fenced || f == gid;
  seigo::InDoubtReport now = impl_->coord_->InDoubt();
  bool still = false;
  for (const auto& t : now.txs) still = still || t.gid == gid;
  if (applied.empty() && pending.empty() && limbo.empty() && !fenced && !still) {
    return impl_->Error(404, "not_found", "gid '" + gid.substr(0, 80) + "' is not in doubt");
  }
  json errors = json::array();
  for (const Status& e : rep.errors) errors.push_back(Scrub(e.ToString(), impl_->config_.secrets));
  return JsonReply(200, {{"gid", gid}, {"applied", applied}, {"pending", pending},
                         {"limbo", limbo}, {"fenced", fenced}, {"in_doubt", still},
                         {"errors", errors}});
}

Reply Service::GetStatus() { return JsonReply(200, impl_->StatusJson()); }

Reply Service::GetMetrics() {
  impl_->metrics_.SyncAll(impl_->coord_->counters());
  int64_t last = impl_->last_pass_ms_.load();
  impl_->metrics_.resolver_age.Set(last == 0 ? -1 : (WallMs() - last) / 1000.0);
  Reply r;
  r.body = prometheus::TextSerializer().Serialize(impl_->metrics_.reg->Collect());
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return r;
}

Reply Service::Ready() {
  std::lock_guard<std::mutex> g(impl_->mu_);
  if (impl_->draining_) return impl_->Error(503, "stopping", "seigod is stopping");
  if (!impl_->ready_) {
    return impl_->Error(503, "not_ready", "a store did not answer: " +
                                              Scrub(impl_->not_ready_, impl_->config_.secrets));
  }
  return JsonReply(200, {{"ready", true}});
}

Reply Service::Page() {
  Reply r;
  r.body = kStatusPage;
  r.content_type = "text/html; charset=utf-8";
  return r;
}

Reply Service::BeginSession(const std::string& body) { return impl_->BeginSession(body); }
Reply Service::SessionSteps(const std::string& id, const std::string& body) {
  return impl_->SessionSteps(id, body);
}
Reply Service::EndSession(const std::string& id, bool commit) {
  return impl_->EndSession(id, commit);
}
Reply Service::Error(int status, const std::string& code, const std::string& message) {
  return impl_->Error(status, code, message);
}
void Service::CountRequest(const std::string& route, int status) {
  impl_->metrics_.http.Add({{"path", route}, {"code", std::to_string(status)}}).Increment();
}
void Service::Log(const std::string& line) { impl_->Log(line); }

}  // namespace seigod
