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

#include <map>
#include <memory>
#include <mutex>
#include <string>
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
  size_t max_idle = 64;  // pooled idle connections kept
};

class MariaDbParticipant final : public Participant {
 public:
  // Connects once and checks that the server can run seigo: MariaDB >= 10.5 or MySQL >= 5.7.7
  // (older servers lose prepared branches when the client disconnects: MySQL bug #12161).
  // With `prepare_schema`, creates seigo's tables if missing and claims the database as shard
  // `index` (or checks that it was claimed as that index before).
  static Result<std::unique_ptr<MariaDbParticipant>> Open(const Config& config,
                                                          bool prepare_schema);
  ~MariaDbParticipant() override;

  uint32_t index() const override { return config_.index; }
  std::string name() const override { return name_; }
  Result<std::unique_ptr<Session>> Acquire() override;
  void Release(std::unique_ptr<Session> session) override;
  Result<std::vector<Xid>> RecoverPrepared() override;
  Status CommitXid(const Xid& xid) override;
  Status RollbackXid(const Xid& xid) override;
  Result<std::optional<Decision>> ReadDecision(std::string_view gid) override;
  Result<Outcome> FenceAbort(const Decision& d, bool by_coordinator) override;
  Result<std::vector<Decision>> ListExpiredDecisions(int64_t retention_ms, size_t limit) override;
  Status ForgetDecisions(std::span<const std::string> gids) override;
  Result<std::optional<int64_t>> OldestTransactionStartMs() override;

  // Runs one text statement on a pooled connection (for tools: schema setup, audits).
  Result<QueryResult> Query(std::string_view sql, std::span<const Value> params = {});

  const Config& config() const { return config_; }

 private:
  explicit MariaDbParticipant(const Config& config);

  class PooledSession;  // RAII: a recovery session, released on scope exit
  // Branches whose owning connection this process closed while they may have been prepared
  // (see OwnerGone in the .cc): the server thread id that owned `xid`, if any.
  std::optional<unsigned long> OrphanOwner(const Xid& xid);
  void ForgetOrphan(const Xid& xid);
  Result<std::unique_ptr<Session>> AcquireFrom(std::vector<std::unique_ptr<Session>>* pool,
                                               bool autocommit);
  void ReleaseTo(std::vector<std::unique_ptr<Session>>* pool, std::unique_ptr<Session> session);

  Config config_;
  std::string name_;
  std::mutex mu_;
  // Two pools: transaction sessions run with autocommit=0 (no START TRANSACTION round trip);
  // recovery and tool sessions with autocommit=1 (each statement its own transaction).
  std::vector<std::unique_ptr<Session>> idle_;           // guarded by mu_
  std::vector<std::unique_ptr<Session>> idle_recovery_;  // guarded by mu_
  // Branches whose owning connection this process closed: XID key -> server thread id.
  std::map<std::string, unsigned long> orphans_;          // guarded by mu_
};

// The SQL of seigo's tables on every shard (doc/decision-table.md).
extern const char* const kSchemaSql;

}  // namespace seigo::mariadb

#endif  // SEIGO_MARIADB_PARTICIPANT_H_
