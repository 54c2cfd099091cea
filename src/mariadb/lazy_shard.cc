#include "mariadb/lazy_shard.h"

#include <chrono>

namespace seigo::mariadb {
namespace {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LazyShard::LazyShard(std::unique_ptr<MariaDbParticipant> open)
    : config_(open->config()), name_(open->name()), owned_(std::move(open)) {
  deployment_ = owned_->deployment();
  open_.store(owned_.get());
}

LazyShard::LazyShard(const Config& config, bool prepare_schema, Status why)
    : config_(config), name_(MariaDbParticipant::NameOf(config)), prepare_schema_(prepare_schema),
      last_error_(std::move(why)), last_try_ms_(SteadyMs()) {}

LazyShard::~LazyShard() = default;

void LazyShard::SetDeployment(const std::string& deployment) {
  std::lock_guard<std::mutex> l(mu_);
  deployment_ = deployment;
}

const std::string& LazyShard::deployment() const {
  if (MariaDbParticipant* p = open_.load()) return p->deployment();
  return deployment_;  // set before any call (Coordinator::Open), never changed after
}

Result<MariaDbParticipant*> LazyShard::Get() {
  if (MariaDbParticipant* p = open_.load()) return p;
  std::string deployment;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (MariaDbParticipant* p = open_.load()) return p;
    const int64_t now = SteadyMs();
    if (opening_ || now - last_try_ms_ < kRetryMs) {
      // last_error_ names the shard already.
      return Status(Code::kUnavailable,
                    last_error_.message() + " (down; seigo tries it again at most once a second)",
                    last_error_.server_errno());
    }
    opening_ = true;
    last_try_ms_ = now;
    deployment = deployment_;
  }
  // Crash window: none; opening writes only the shard's own claim (idempotent).
  Result<std::unique_ptr<MariaDbParticipant>> p =
      MariaDbParticipant::Open(config_, prepare_schema_, &deployment);
  std::lock_guard<std::mutex> l(mu_);
  opening_ = false;
  if (!p.ok()) {
    last_error_ = p.status();
    return p.status().Is(Code::kUnavailable)
               ? p.status()
               : Status(p.status().code(), name_ + " came back but cannot be used: " +
                                               p.status().message(),
                        p.status().server_errno());
  }
  owned_ = std::move(*p);
  open_.store(owned_.get());
  return owned_.get();
}

Result<std::unique_ptr<Session>> LazyShard::Acquire() {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->Acquire();
}

Result<std::unique_ptr<Session>> LazyShard::Acquire(int64_t deadline_ms) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->Acquire(deadline_ms);
}

void LazyShard::Release(std::unique_ptr<Session> session) {
  // A session exists only if the shard was opened.
  if (MariaDbParticipant* p = open_.load()) p->Release(std::move(session));
}

Result<std::vector<Xid>> LazyShard::RecoverPrepared() {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->RecoverPrepared();
}

Status LazyShard::CommitXid(const Xid& xid) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->CommitXid(xid) : p.status();
}

Status LazyShard::RollbackXid(const Xid& xid) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->RollbackXid(xid) : p.status();
}

std::vector<Status> LazyShard::CommitXids(std::span<const Xid> xids) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return std::vector<Status>(xids.size(), p.status());
  return (*p)->CommitXids(xids);
}

std::vector<Status> LazyShard::RollbackXids(std::span<const Xid> xids) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return std::vector<Status>(xids.size(), p.status());
  return (*p)->RollbackXids(xids);
}

Result<std::vector<BranchTrace>> LazyShard::ProbeBranches(std::span<const std::string> gids) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ProbeBranches(gids);
}

Status LazyShard::ForgetBranches(std::span<const std::string> gids) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->ForgetBranches(gids) : p.status();
}

Result<std::optional<Decision>> LazyShard::ReadDecision(std::string_view gid) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ReadDecision(gid);
}

Result<std::vector<std::optional<Decision>>> LazyShard::ReadDecisions(
    std::span<const std::string> gids) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ReadDecisions(gids);
}

Result<Outcome> LazyShard::FenceAbort(const Decision& d, bool by_coordinator) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->FenceAbort(d, by_coordinator);
}

Result<std::vector<Decision>> LazyShard::ListExpiredDecisions(int64_t retention_ms,
                                                              size_t limit) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ListExpiredDecisions(retention_ms, limit);
}

Status LazyShard::ForgetDecisions(std::span<const std::string> gids) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->ForgetDecisions(gids) : p.status();
}

Result<std::vector<OutboxEntry>> LazyShard::ClaimOutbox(const std::string& claim,
                                                        int64_t lease_ms, size_t max_txns) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ClaimOutbox(claim, lease_ms, max_txns);
}

Status LazyShard::FinishOutbox(std::span<const std::string> gids,
                               std::span<const DeadLetter> dead) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->FinishOutbox(gids, dead) : p.status();
}

Status LazyShard::ReleaseOutbox(std::span<const std::string> gids, const std::string& claim,
                                int64_t retry_ms, const std::string& error) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->ReleaseOutbox(gids, claim, retry_ms, error) : p.status();
}

Result<OutboxStats> LazyShard::ReadOutboxStats() {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ReadOutboxStats();
}

Result<std::vector<DeadRecord>> LazyShard::ListDeadLetters(size_t limit) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ListDeadLetters(limit);
}

Result<size_t> LazyShard::ResendDeadLetters(std::span<const DeadLetter> which,
                                            const std::string& new_gid) {
  Result<MariaDbParticipant*> p = Get();
  if (!p.ok()) return p.status();
  return (*p)->ResendDeadLetters(which, new_gid);
}

std::string LazyShard::store_id() const {
  MariaDbParticipant* p = open_.load();
  return p != nullptr ? p->store_id() : std::string();
}

std::vector<LocalWait> LazyShard::LongStatements(int64_t before_ms) {
  MariaDbParticipant* p = open_.load();
  return p != nullptr ? p->LongStatements(before_ms) : std::vector<LocalWait>();
}

Status LazyShard::ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->ReadLockWaits(mine, out) : p.status();
}

Status LazyShard::BreakWait(uint64_t thread, uint64_t query) {
  Result<MariaDbParticipant*> p = Get();
  return p.ok() ? (*p)->BreakWait(thread, query) : p.status();
}

}  // namespace seigo::mariadb
