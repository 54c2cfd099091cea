// LazyShard: a shard that may be down when the coordinator opens (issue 13, "availability").
//
// It is a Participant that holds a MariaDbParticipant once the shard could be opened — at
// Coordinator::Open if it was up, else at the first call after it came back. Until then every
// call fails with kUnavailable naming the shard and the last error, without a connection attempt
// more often than once a second (a transaction touching the shard fails fast; others do not
// notice). Opening later does everything MariaDbParticipant::Open does (version, privileges,
// schema, the shard's claim) against the deployment the other shards named.
//
// Thread-safety: thread-safe. The open happens outside the lock: while one thread opens, the
// others get kUnavailable at once.
#ifndef SEIGO_MARIADB_LAZY_SHARD_H_
#define SEIGO_MARIADB_LAZY_SHARD_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "mariadb/mariadb_participant.h"

namespace seigo::mariadb {

class LazyShard final : public Participant {
 public:
  // An open shard.
  explicit LazyShard(std::unique_ptr<MariaDbParticipant> open);
  // A shard that could not be opened (`why`); `deployment` is filled in later (SetDeployment)
  // when another shard names it.
  LazyShard(const Config& config, bool prepare_schema, Status why);
  ~LazyShard() override;

  // The deployment this shard must belong to, once known (before the first call that opens).
  void SetDeployment(const std::string& deployment);
  // Up (opened) now? Does not try to open.
  bool is_open() const { return open_.load() != nullptr; }
  // The open participant, opening it now if it is time to try again.
  Result<MariaDbParticipant*> Get();

  uint32_t index() const override { return config_.index; }
  std::string name() const override { return name_; }
  const std::string& deployment() const override;
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
  // Deadlock detection sees a shard only once it is open (it has no waits before).
  std::string store_id() const override;
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

 private:
  static constexpr int64_t kRetryMs = 1'000;

  Config config_;
  std::string name_;
  bool prepare_schema_ = false;
  std::unique_ptr<MariaDbParticipant> owned_;  // set once; read through open_
  std::atomic<MariaDbParticipant*> open_{nullptr};
  std::mutex mu_;
  std::string deployment_;  // guarded by mu_ until open
  Status last_error_;       // guarded by mu_
  int64_t last_try_ms_ = 0;  // guarded by mu_ (steady clock)
  bool opening_ = false;     // guarded by mu_
};

}  // namespace seigo::mariadb

#endif  // SEIGO_MARIADB_LAZY_SHARD_H_
