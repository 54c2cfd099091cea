// The simulated Redis instance (SimRedisServer) and the client side seigo's protocol code talks
// to (SimRedisParticipant, SimRedisSession): the model of src/redis/ and its server-side
// functions (src/redis/seigo.lua; doc/redis.md).
//
// What is modelled, because the protocol relies on it or must survive it:
//   * every seigo function (read, validate, prepare, decide, commit, rollback, fence, recover,
//     probe, the decision reads and GC) runs atomically, as a Redis function does, and
//     validates before it writes: intents, write locks, escrow reservations, tombstones, commit
//     markers and decision records with exactly the rules of seigo.lua;
//   * appendfsync always: a crash keeps everything a function did (a function whose reply the
//     client never saw may or may not have run: Network's lost and late requests); connections
//     die with the instance;
//   * lost requests and replies, and requests the instance runs after the client gave up;
//   * the instance's own clock (deadlines are judged by it), which may be stepped.
// Values are integers (counters): the simulated workload moves tokens between Redis keys by
// bounded increments and by read-modify-writes (GET, then SET).
//
// Thread-safety: none; everything runs on the simulation's one thread.
#ifndef SEIGO_SIM_SIM_REDIS_H_
#define SEIGO_SIM_SIM_REDIS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "seigo/participant.h"
#include "sim/checker.h"
#include "sim/common.h"
#include "sim/sim_participant.h"

namespace seigo::sim {

// Redis instances are told apart from MariaDB servers in Network::BeforeRoundTrip by their id.
inline constexpr uint32_t kRedisNetBase = 1000;

// The staged work of one branch, as the adapter sends it to prepare / decide.
struct RedisBody {
  struct Read {
    int64_t key = 0;
    std::optional<int64_t> seen;
  };
  struct Set {
    int64_t key = 0;
    int64_t value = 0;
    int64_t delta = 0;  // value - the value read (for the checker: the write's effect)
  };
  struct Incr {
    int64_t key = 0, delta = 0, min = 0, max = 0;
  };
  std::vector<Read> reads;
  std::vector<Set> sets;
  std::vector<Incr> incrs;
};

class SimRedisServer {
 public:
  // `tag_of(gid)`: the attempt tag of a gid (for the checker's effects), 0 if unknown.
  SimRedisServer(uint32_t index, const ShardContext& ctx,
                 std::function<int64_t(const std::string&)> tag_of);

  uint32_t net_id() const { return kRedisNetBase + index_; }
  uint32_t index() const { return index_; }
  bool up() const { return up_; }
  uint64_t generation() const { return generation_; }
  int64_t NowMs() const;
  Coverage* coverage() const { return ctx_.coverage; }
  Scheduler* sched() const { return ctx_.sched; }
  void StepClock(int64_t delta_ms) { clock_offset_ += delta_ms; }
  void Crash();
  void Restart();

  // One deployment's keyspace ("seigo:<deployment>:" and its data), as participant `index`.
  void AddDeployment(const std::string& deployment, uint32_t participant);
  void LoadValue(const std::string& deployment, int64_t key, int64_t value);

  // ---- The functions (each atomic) ----
  Result<std::optional<int64_t>> Read(const std::string& dep, int64_t key);
  Status Validate(const std::string& dep, const std::vector<RedisBody::Read>& reads);
  Status Prepare(const std::string& dep, const Xid& xid, const RedisBody& body);
  Status Decide(const std::string& dep, const Decision& d, const RedisBody& body);
  // "OK", "DONE" (committed before) or "LOST" (no trace); kCorruption if rolled back here.
  Result<std::string> Commit(const std::string& dep, const std::string& gid);
  Status Rollback(const std::string& dep, const std::string& gid, int64_t tomb_until_ms);
  Result<Outcome> Fence(const std::string& dep, const Decision& d, bool by_coordinator);
  std::optional<Decision> ReadDecision(const std::string& dep, const std::string& gid);
  std::vector<Decision> Expired(const std::string& dep, int64_t retention_ms, size_t limit);
  void Forget(const std::string& dep, const std::vector<std::string>& gids);
  void ForgetMarkers(const std::string& dep, const std::vector<std::string>& gids);
  std::vector<Xid> Recover(const std::string& dep);
  std::vector<BranchTrace> Probe(const std::string& dep, const std::vector<std::string>& gids);

  // ---- Inspection (checker, quiescent phase) ----
  std::vector<DbFinalState> DbFinalStates() const;
  ServerFinalState FinalState() const;
  size_t prepared_count() const;

 private:
  struct Intent {
    Xid xid;
    RedisBody body;
    int64_t prepared_ms = 0;
  };
  struct DecisionRec {
    Decision d;
    int64_t expires_ms = 0;  // 0 = kept until GC
  };
  struct Db {
    uint32_t participant = 0;
    std::map<int64_t, int64_t> values;
    std::map<std::string, Intent> intents;
    std::map<std::string, int64_t> tombs;      // gid -> expiry
    std::map<std::string, int64_t> committed;  // commit markers: gid -> expiry (0 = none)
    std::map<std::string, DecisionRec> decisions;
  };
  Db& DbOf(const std::string& dep) { return dbs_.at(dep); }
  // Why another transaction stands on `key` for a read or a write (empty: nobody).
  // `what`: 'r' (a read), 'w' (a write), 'i' (a bounded increment); see seigo.lua's taken().
  std::string Taken(const Db& db, int64_t key, const std::string& gid, char what) const;
  Status CheckBody(const Db& db, const std::string& gid, const RedisBody& body) const;
  void Apply(Db& db, const std::string& gid, const RedisBody& body);
  void Finish(Db& db, const std::string& dep, const std::string& gid, bool commit);
  void WriteDecision(Db& db, const std::string& dep, const Decision& d, const char* how,
                     int64_t expires_ms);
  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  const uint32_t index_;
  ShardContext ctx_;
  std::function<int64_t(const std::string&)> tag_of_;
  bool up_ = true;
  uint64_t generation_ = 0;
  int64_t clock_offset_ = 0;
  bool Committed(const Db& db, const std::string& gid) const;
  void Release(std::map<int64_t, int64_t>& m, int64_t key, int64_t by);

  std::map<std::string, Db> dbs_;  // by deployment
  // What guards user keys is shared by every deployment on the instance (seigo.lua's G).
  std::map<int64_t, std::string> locks_;  // key -> gid
  std::map<int64_t, int64_t> rlocks_;     // key -> prepared intents that read it
  std::map<int64_t, int64_t> lo_, hi_;    // pending negative / positive increments
};

// The client side of one connection (Session): staged reads and writes, one round trip per
// function call through Network.
class SimRedisSession final : public Session {
 public:
  SimRedisSession(SimRedisServer* server, Network* net, int process, std::string deployment,
                  class SimRedisParticipant* owner)
      : server_(server),
        net_(net),
        process_(process),
        deployment_(std::move(deployment)),
        owner_(owner),
        generation_(server->generation()) {}

  Status BeginLocal() override;
  Status BeginReadOnly() override;
  Status BeginBranch(const Xid& xid) override;
  Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) override;
  Result<KvReply> Kv(const KvOp& op) override;
  Status Prepare(const Xid& xid) override;
  Status CommitLocal() override { return Status::Internal("Redis commits with a decision"); }
  Status CommitWithDecision(const Decision& d) override;
  Status CommitPrepared(const Xid& xid) override;
  Status RollbackAll(const Xid* xid, bool prepared) override;
  bool Broken() const override { return broken_; }
  uint64_t generation() const { return generation_; }

  // One round trip running `f()` on the server (lost, late, crashes: see sim_redis.cc).
  template <typename F>
  auto Call(F f) -> decltype(f());

 private:
  void Reset();

  SimRedisServer* server_;
  Network* net_;
  int process_;
  std::string deployment_;
  SimRedisParticipant* owner_;
  uint64_t generation_;
  bool broken_ = false;
  bool read_only_ = false;
  bool prepared_ = false, maybe_prepared_ = false;
  Xid xid_;
  RedisBody body_;
  std::map<int64_t, int64_t> staged_;  // read-your-writes: key -> value this txn set
  std::map<int64_t, size_t> incr_of_;  // key -> index in body_.incrs
};

class SimRedisParticipant final : public Participant {
 public:
  static constexpr size_t kMaxIdle = 4;

  SimRedisParticipant(SimRedisServer* server, uint32_t index, std::string deployment,
                      Network* net, int process)
      : server_(server),
        index_(index),
        deployment_(std::move(deployment)),
        name_("redis " + std::to_string(index) + " (sim redis " +
              std::to_string(server->index()) + ")"),
        net_(net),
        process_(process) {}

  uint32_t index() const override { return index_; }
  std::string name() const override { return name_; }
  const std::string& deployment() const override { return deployment_; }
  StoreKind kind() const override { return StoreKind::kKv; }
  bool records_single_commits() const override { return true; }
  Result<std::unique_ptr<Session>> Acquire() override;
  void Release(std::unique_ptr<Session> session) override;

  Result<std::vector<Xid>> RecoverPrepared() override;
  Status CommitXid(const Xid& xid) override;
  Status RollbackXid(const Xid& xid) override;
  Result<std::vector<BranchTrace>> ProbeBranches(std::span<const std::string> gids) override;
  Status ForgetBranches(std::span<const std::string> gids) override;
  Result<std::optional<Decision>> ReadDecision(std::string_view gid) override;
  Result<Outcome> FenceAbort(const Decision& d, bool by_coordinator) override;
  Result<std::vector<Decision>> ListExpiredDecisions(int64_t retention_ms, size_t limit) override;
  Status ForgetDecisions(std::span<const std::string> gids) override;

 private:
  // A recovery call on a fresh connection (one round trip).
  template <typename F>
  auto Recovery(F f) -> decltype(f());

  SimRedisServer* server_;
  uint32_t index_;
  std::string deployment_;
  std::string name_;
  Network* net_;
  int process_;
  std::vector<std::unique_ptr<SimRedisSession>> idle_;
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_SIM_REDIS_H_
