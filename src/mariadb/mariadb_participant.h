// The MariaDB/MySQL participant: Participant and Session over MariaDB Connector/C.
//
// This is the I/O edge: it turns driver errors into Status codes (the table is in
// doc/protocol.md, "Error mapping") and knows the SQL of each protocol step. It decides nothing;
// src/core/ decides.
//
// Thread-safety: MariaDbParticipant is thread-safe (its connection pool has a mutex). A
// session belongs to one thread at a time.
#ifndef SEIGO_MARIADB_PARTICIPANT_H_
#define SEIGO_MARIADB_PARTICIPANT_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "seigo/participant.h"
#include "seigo/shard_map.h"

namespace seigo::mariadb {

struct Config {
  ShardUrl url;
  uint32_t index = 0;
  // innodb_lock_wait_timeout for seigo's connections, in whole seconds (MariaDB's unit). Short,
  // so that a cross-shard deadlock (which no server can see) becomes a retry, not a stall.
  int lock_wait_timeout_s = 2;
  int connect_timeout_s = 3;
  int read_timeout_s = 30;
  size_t max_idle = 64;  // pooled idle connections kept (per pool: transactions, recovery)
  // Transaction connections open at once (idle or in use), 0 = no cap. At the cap, Acquire
  // waits up to connect_timeout_s for one to come back, then fails with kUnavailable.
  size_t max_open = 0;
};

// The open transaction connections of one participant, shared with its sessions (a session may
// outlive the participant's pool briefly, e.g. in a phase-2 queue being drained).
struct OpenCount {
  std::mutex mu;
  std::condition_variable cv;
  size_t open = 0;  // guarded by mu
  void Closed() {
    {
      std::lock_guard<std::mutex> l(mu);
      --open;
    }
    cv.notify_one();
  }
};

// One transaction session as the deadlock detector sees it: its server thread, the Run it
// works for, and since when its current closure statement runs (0 = none). Written by the
// session's thread; `since_ms` is atomic (set around every statement: the only per-statement
// cost of detection), `tag` is guarded by InFlight::mu (set once per attempt).
struct SessionSlot {
  uint64_t thread = 0;  // guarded by InFlight::mu, like tag
  std::shared_ptr<WaitTag> tag;
  std::atomic<int64_t> since_ms{0};
};

// The transaction sessions of one participant, for Participant::LongStatements; shared with
// the sessions like OpenCount (a session may outlive its participant's pool briefly).
struct InFlight {
  std::mutex mu;
  std::unordered_map<const void*, SessionSlot*> sessions;  // guarded by mu
};

class MariaDbParticipant final : public Participant {
 public:
  // Connects once and checks that the server can run seigo: MariaDB >= 10.5 or MySQL >= 5.7.7
  // (older servers lose prepared branches when the client disconnects: MySQL bug #12161).
  // With `prepare_schema`, creates (or upgrades) seigo's tables and claims the database as shard
  // `index` of a deployment; without it, changes nothing and requires an earlier claim.
  // `*deployment`: empty for the first shard of a list (the shard's deployment, or a new one,
  // is stored there); for the others, the deployment they must belong to (a mismatch is
  // kInvalidArgument: the list mixes two deployments' databases).
  static Result<std::unique_ptr<MariaDbParticipant>> Open(const Config& config,
                                                          bool prepare_schema,
                                                          std::string* deployment);
  ~MariaDbParticipant() override;
  // "shard 1 (127.0.0.1:3307/game)": how messages name the shard of `config`.
  static std::string NameOf(const Config& config);

  uint32_t index() const override { return config_.index; }
  std::string name() const override { return name_; }
  const std::string& deployment() const override { return deployment_; }
  Result<std::unique_ptr<Session>> Acquire() override;
  Result<std::unique_ptr<Session>> Acquire(int64_t deadline_ms) override;
  void Release(std::unique_ptr<Session> session) override;
  Result<std::vector<Xid>> RecoverPrepared() override;
  Status CommitXid(const Xid& xid) override;
  Status RollbackXid(const Xid& xid) override;
  std::vector<Status> CommitXids(std::span<const Xid> xids) override;
  std::vector<Status> RollbackXids(std::span<const Xid> xids) override;
  Result<std::vector<BranchTrace>> ProbeBranches(std::span<const std::string> gids) override;
  Status ForgetBranches(std::span<const std::string> gids) override;
  Result<std::optional<Decision>> ReadDecision(std::string_view gid) override;
  Result<std::vector<std::optional<Decision>>> ReadDecisions(
      std::span<const std::string> gids) override;
  Result<Outcome> FenceAbort(const Decision& d, bool by_coordinator) override;
  Result<std::vector<Decision>> ListExpiredDecisions(int64_t retention_ms, size_t limit) override;
  Status ForgetDecisions(std::span<const std::string> gids) override;
  std::string store_id() const override { return store_id_; }
  std::vector<LocalWait> LongStatements(int64_t before_ms) override;
  Status ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) override;
  Status BreakWait(uint64_t thread, uint64_t query) override;
  bool has_outbox() const override { return true; }
  Result<std::vector<OutboxEntry>> ClaimOutbox(const std::string& claim, int64_t lease_ms,
                                               size_t max_txns) override;
  Status FinishOutbox(std::span<const std::string> gids,
                      std::span<const DeadLetter> dead) override;
  Status ReleaseOutbox(std::span<const std::string> gids, const std::string& claim,
                       int64_t retry_ms, const std::string& error) override;
  Result<OutboxStats> ReadOutboxStats() override;
  Result<std::vector<DeadRecord>> ListDeadLetters(size_t limit) override;
  Result<size_t> ResendDeadLetters(std::span<const DeadLetter> which,
                                   const std::string& new_gid) override;

  // Runs one statement on a pooled connection (for tools: schema setup, audits). A statement
  // that changes session state closes that connection afterwards instead of pooling it.
  Result<QueryResult> Query(std::string_view sql, std::span<const Value> params = {});
  // This server's clock (unix ms) as seigo reads it: independent of time zones.
  Result<int64_t> ServerNowMs();

  const Config& config() const { return config_; }

 private:
  explicit MariaDbParticipant(const Config& config);

  class PooledSession;  // RAII: a recovery session, released on scope exit
  template <typename Fn>
  auto WithSession(Fn fn) -> decltype(fn(std::declval<PooledSession&>()));
  // `reused` (may be null) tells whether the session came from the pool.
  // `deadline_ms` (unix ms, 0 = none): give up opening a new connection then.
  Result<std::unique_ptr<Session>> AcquireFrom(std::vector<std::unique_ptr<Session>>* pool,
                                               bool transactional, bool* reused,
                                               int64_t deadline_ms = 0);
  void ReleaseTo(std::vector<std::unique_ptr<Session>>* pool, std::unique_ptr<Session> session);
  std::vector<Status> ApplyXids(std::span<const Xid> xids, bool commit);
  Status ApplyChunk(PooledSession& ps, std::span<const Xid> xids, std::span<Status> out,
                    bool commit);
  // DELETE FROM `table` WHERE gid IN (...), in batches.
  Status DeleteGids(const char* table, std::span<const std::string> gids);

  Config config_;
  std::string name_;
  std::string deployment_;
  bool mysql_ = false;  // the server is MySQL, not MariaDB (a few statements differ)
  std::mutex mu_;
  // Bumped whenever a connection is found dead: idle connections made before are dropped
  // instead of reused (after a server restart every one of them is dead).
  std::atomic<uint64_t> generation_{0};
  // Two pools: transaction sessions (autocommit=0: their first statement opens the transaction,
  // no START TRANSACTION round trip); recovery and tool sessions (autocommit=1, time zone
  // SYSTEM: each statement its own transaction).
  std::vector<std::unique_ptr<Session>> idle_;           // guarded by mu_
  std::vector<std::unique_ptr<Session>> idle_recovery_;  // guarded by mu_
  std::shared_ptr<OpenCount> open_ = std::make_shared<OpenCount>();  // transaction connections
  // A hash of "hostname:port/database", the server's own names (MariaDB only; "" = no
  // deadlock detection).
  std::string store_id_;
  std::shared_ptr<InFlight> inflight_ = std::make_shared<InFlight>();
};

// The SQL of seigo's tables on every shard (doc/decision-table.md).
extern const char* const kSchemaSql;
// The SQL expression seigo reads the server's clock with (unix ms, time-zone independent).
const char* ServerNowMsSql();

}  // namespace seigo::mariadb

#endif  // SEIGO_MARIADB_PARTICIPANT_H_
