// The Redis participant: a standalone Redis (>= 7.0) instance behind the participant
// interface, over hiredis (doc/redis.md).
//
// A Redis instance has no XA, so seigo builds the two-phase contract out of server-side
// functions (src/redis/seigo.lua, loaded at open): a branch's reads record what they saw, its
// writes and bounded increments are staged in the session, and the branch reaches the server
// in one function call that validates everything first and then either stores an intent that
// locks the written keys and reserves the increments (Prepare), or — when this instance is the
// decider — applies the work and records the decision at once (CommitWithDecision). This file
// is the I/O edge: it turns replies into Status codes and decides nothing.
//
// Durability gate: an instance is refused unless appendonly yes, appendfsync always,
// no-appendfsync-on-rewrite no and maxmemory-policy noeviction (then a reply means the write is
// fsynced). Config::allow_unsafe_durability skips it — for development only.
//
// Thread-safety: RedisParticipant is thread-safe; a session belongs to one thread at a time.
#ifndef SEIGO_REDIS_PARTICIPANT_H_
#define SEIGO_REDIS_PARTICIPANT_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "seigo/participant.h"

namespace seigo::redis {

struct Url {
  std::string host;
  uint16_t port = 6379;
  int db = 0;
  std::string password;
  // redis://[:password@]host[:port][/db]. Errors never echo the password.
  static Result<Url> Parse(std::string_view url);
  std::string Redacted() const;  // "redis://host:port/db"
};

struct Config {
  Url url;
  uint32_t index = 0;         // participant index (after the SQL shards)
  std::string deployment;     // 16 hex digits, named by the SQL shards
  int connect_timeout_ms = 3'000;
  int read_timeout_ms = 30'000;
  size_t max_idle = 64;
  bool allow_unsafe_durability = false;  // DEVELOPMENT ONLY: see the file comment
  // Called once, when this process first reaches the instance, with its index and data epoch:
  // compares them with the deployment's record (shard 0). kCorruption = the instance lost its
  // data (refused for good); another error = cannot tell now (the check is tried again).
  std::function<Status(uint32_t index, const std::string& epoch)> verify_epoch;
};

class Conn;
struct Pool;

class RedisParticipant final : public Participant {
 public:
  // Checks the instance (version, durability gate), loads seigo's functions and claims the
  // instance as participant `index` of the deployment. An unreachable instance is not an error
  // here: the checks then run at the first call that reaches it (calls fail with kUnavailable
  // until then). Any other failure is: kUnsupported (too old, not durable), kInvalidArgument
  // (claimed by another index of this deployment).
  static Result<std::unique_ptr<RedisParticipant>> Open(const Config& config);
  ~RedisParticipant() override;

  uint32_t index() const override { return config_.index; }
  std::string name() const override { return name_; }
  const std::string& deployment() const override { return config_.deployment; }
  StoreKind kind() const override { return StoreKind::kKv; }
  bool records_single_commits() const override { return true; }
  bool is_up() const;  // checked and reachable at the last try
  // The epoch of the instance's data (random, set on the instance when seigo first claims it),
  // "" until it was first reached. A different epoch later means the instance lost its data:
  // every call then fails with kCorruption (doc/redis.md, "Instance restarted without its
  // data").
  std::string epoch() const;

  Result<std::unique_ptr<Session>> Acquire() override { return Acquire(0); }
  Result<std::unique_ptr<Session>> Acquire(int64_t deadline_ms) override;
  void Release(std::unique_ptr<Session> session) override;

  Result<std::vector<Xid>> RecoverPrepared() override;
  Status CommitXid(const Xid& xid) override;
  Status RollbackXid(const Xid& xid) override;
  Result<std::vector<BranchTrace>> ProbeBranches(std::span<const std::string> gids) override;
  Status ForgetBranches(std::span<const std::string> gids) override;
  Result<std::optional<Decision>> ReadDecision(std::string_view gid) override;
  Result<std::vector<std::optional<Decision>>> ReadDecisions(
      std::span<const std::string> gids) override;
  Result<Outcome> FenceAbort(const Decision& d, bool by_coordinator) override;
  Result<std::vector<Decision>> ListExpiredDecisions(int64_t retention_ms, size_t limit) override;
  Status ForgetDecisions(std::span<const std::string> gids) override;

  // For tools and tests: one command outside any transaction (e.g. {"GET", "k"}), the reply as
  // text (integers in decimal, nil as nullopt; arrays are refused).
  Result<std::optional<std::string>> Command(const std::vector<std::string>& args);

  // Key prefix of this deployment's own keys: "seigo:<deployment>:".
  const std::string& prefix() const { return prefix_; }

 private:
  friend class RedisSession;
  explicit RedisParticipant(const Config& config);
  Status EnsureReady();                     // the checks of Open, at most every 250 ms
  void Invalidate();                        // check again at the next call (functions gone)
  Status CheckAndLoad(Conn* c);             // version, gate, functions, claim
  Result<std::unique_ptr<Conn>> Take(int64_t deadline_ms);  // a checked connection
  void Give(std::unique_ptr<Conn> c);
  // One function call on a pooled connection: FCALL name 0 args...
  template <typename F>
  auto WithConn(F&& f) -> decltype(f(std::declval<Conn*>()));
  Status Finish(const Xid& xid, bool commit);

  const Config config_;
  const std::string name_;
  const std::string prefix_;
  std::shared_ptr<Pool> pool_;
  mutable std::mutex mu_;
  bool ready_ = false;          // guarded by mu_
  int64_t last_try_ms_ = -1;    // guarded by mu_ (steady clock)
  Status last_error_;           // guarded by mu_
  std::string epoch_;           // guarded by mu_
  Status lost_;                 // guarded by mu_: set for good once the epoch changed
};

}  // namespace seigo::redis

#endif  // SEIGO_REDIS_PARTICIPANT_H_
