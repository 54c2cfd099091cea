// The simulated store: a MariaDB 10.11 server per shard (SimShard), and the client side that
// seigo's protocol code talks to (SimParticipant, SimSession: the Participant and Session
// interfaces of include/seigo/participant.h).
//
// SimShard models exactly the server behaviour the protocol relies on or must survive — each
// modelled behaviour is commented where it is implemented, in sim_participant.cc:
//   * a key-value table with exclusive row locks held until the transaction ends; lock waits
//     time out after innodb_lock_wait_timeout (1205: only the statement is rolled back); a wait
//     that would close a cycle is a deadlock (1213: the whole transaction is rolled back — and a
//     local transaction's session is then back in autocommit mode, as in InnoDB);
//   * local transactions (START TRANSACTION .. COMMIT / ROLLBACK; START TRANSACTION inside an
//     open one commits it implicitly);
//   * XA branches: XA START, XA END + PREPARE (durable: survives a crash, keeps its row locks),
//     XA COMMIT / XA ROLLBACK. While the connection that prepared a branch is alive (including a
//     connection whose client is gone but which the server has not noticed yet), XA COMMIT or
//     XA ROLLBACK from any other connection gets XAER_NOTA (kNotFound), exactly like a branch
//     that no longer exists; XA RECOVER lists it all the same. When the server notices the
//     disconnect, the prepared branch detaches and any connection may finish it. The owning
//     connection can run nothing but XA COMMIT / ROLLBACK (XAER_RMFAIL);
//   * the seigo_decision table with the semantics of CommitWithDecision, FenceAbort,
//     ReadDecision, ListExpiredDecisions and ForgetDecisions documented in participant.h, all
//     judged by this server's clock; an uncommitted decision insert holds the row lock, so a
//     fence waits for it (then kBusy after the lock-wait timeout);
//   * crash + restart: every connection dropped, uncommitted work rolled back, prepared branches
//     and committed rows (data and decisions) kept, prepared branches' locks re-taken;
//   * disconnects noticed late, and requests executed after the client gave up on them.
//
// The statement language (SimSession::Execute) is tiny; parameters are bound to '?' in order:
//   "ADD ? ? ? ?"  key, delta, min, tag: row key += delta if the result is >= min (affected_rows
//                  1; else 0, the row stays locked as InnoDB does); tag names the attempt
//   "GET ?"        key: one row with the value (a consistent read, no lock)
//
// Thread-safety: none; everything runs on the simulation's one thread, in fibers and events.
#ifndef SEIGO_SIM_SIM_PARTICIPANT_H_
#define SEIGO_SIM_SIM_PARTICIPANT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "seigo/participant.h"
#include "sim/buggify.h"
#include "sim/checker.h"
#include "sim/common.h"
#include "sim/scheduler.h"

namespace seigo::sim {

// What happens around a round trip between a simulated process and a shard: delays, lost
// messages, process faults. Implemented by the Simulation, which knows the processes.
class Network {
 public:
  enum class Delivery {
    kNormal,
    kLostBefore,  // the request never reaches the server
    kLostAfter,   // the server runs it, the reply is lost
    kLate,        // the client times out; the server runs it later (when it notices the client
                  // is gone), or part of it now and the rest later
  };
  virtual ~Network() = default;
  // In the calling fiber, before a round trip of `process` to `shard`. May kill the process
  // (throws ProcessKilled), stall it, crash the shard, step clocks.
  virtual void BeforeRoundTrip(int process, uint32_t shard) = 0;
  // After the reply arrived. May kill the process (throws ProcessKilled).
  virtual void AfterRoundTrip(int process) = 0;
  virtual void OneWayDelay() = 0;  // blocks the calling fiber for a network hop (maybe 0 ms)
  virtual Delivery PickDelivery() = 0;
  // How long until a server notices that a client is gone. `clean_close`: the client closed the
  // socket (the server sees the FIN at once); otherwise the link broke (maybe a partition).
  virtual int64_t NoticeDelayMs(bool clean_close) = 0;
  virtual void ClientReadTimeout() = 0;  // blocks: the client waiting for a reply in vain
  // What the server does with a late "INSERT; COMMIT" batch (the decider's commit point).
  enum class LateBatch { kInsertNowCommitLater, kInsertNowCut, kAllLater };
  virtual LateBatch LateBatchShape() = 0;
};

struct ShardContext {
  Scheduler* sched = nullptr;
  Buggify* faults = nullptr;
  Checker* checker = nullptr;
  Tracer* tracer = nullptr;
  Variant variant = Variant::kCorrect;
  int64_t lock_wait_timeout_ms = 1000;
  uint64_t* next_id = nullptr;  // connection and transaction ids: unique across shards, restarts
  Coverage* coverage = nullptr;
};

// One simulated MariaDB server (one shard). All statement methods take the server-side
// connection id; they may block the calling fiber on a row lock (never when run from a timed
// event: then a lock held by someone else is an immediate lock-wait timeout).
class SimShard {
 public:
  SimShard(uint32_t index, const ShardContext& ctx);
  SimShard(const SimShard&) = delete;
  SimShard& operator=(const SimShard&) = delete;

  uint32_t index() const { return index_; }
  const std::string& name() const { return name_; }
  bool up() const { return up_; }
  int64_t NowMs() const;  // this server's clock, NOW(6)
  Coverage* coverage() const { return ctx_.coverage; }
  Variant variant() const { return ctx_.variant; }

  void LoadRow(int64_t key, int64_t value) { rows_[key] = value; }

  // ---- Connections ----
  Result<uint64_t> Connect(int process);
  // The server still has this connection (possibly one whose client is gone, not yet noticed).
  bool Alive(uint64_t conn) const;
  // The client closed or lost `conn`. The server notices after `notice_after_ms`; then it first
  // runs `late` (a request that was still in flight), then drops the connection: it rolls back
  // any open transaction and detaches a prepared branch.
  void ClientGone(uint64_t conn, int64_t notice_after_ms, std::function<void()> late = nullptr);
  std::vector<uint64_t> ConnectionsOf(int process) const;
  // Runs `fn` with lock waits disabled (a lock held by another transaction fails at once).
  void RunWithoutWaiting(const std::function<void()>& fn);

  // ---- Statements of a session ----
  Status BeginLocal(uint64_t conn);                   // START TRANSACTION
  Status BeginBranch(uint64_t conn, const Xid& xid);  // XA START
  Result<QueryResult> Execute(uint64_t conn, const std::string& sql,
                              const std::vector<Value>& params);
  Status XaEndPrepare(uint64_t conn, const Xid& xid);             // XA END; XA PREPARE
  Status Commit(uint64_t conn);                                   // COMMIT
  Status InsertCommitDecision(uint64_t conn, const Decision& d);  // the commit-point INSERT
  Status XaCommit(uint64_t conn, const Xid& xid);                 // XA COMMIT (any connection)
  Status XaRollback(uint64_t conn, const Xid& xid);               // XA ROLLBACK (any connection)
  Status Rollback(uint64_t conn);  // whatever the connection has open

  // ---- Statements of recovery ----
  Result<std::vector<Xid>> XaRecover(uint64_t conn);
  Result<std::optional<Decision>> SelectDecision(uint64_t conn, const std::string& gid);
  Result<Outcome> FenceInsert(uint64_t conn, const Decision& d, bool by_coordinator);
  Result<std::vector<Decision>> SelectExpired(uint64_t conn, int64_t retention_ms, size_t limit);
  // seigo_branch markers (written inside a branch by its PREPARE): ProbeBranches semantics.
  Result<std::vector<BranchTrace>> SelectMarkers(uint64_t conn,
                                                 const std::vector<std::string>& gids);
  Status DeleteMarkers(uint64_t conn, const std::vector<std::string>& gids);
  Status DeleteDecisions(uint64_t conn, const std::vector<std::string>& gids);

  // ---- Faults ----
  void Crash();  // kill -9: see the header comment
  void Restart();
  void StepClock(int64_t delta_ms);  // never more than 1 s behind the latest reading

  // ---- Inspection (checker, quiescent phase) ----
  ShardFinalState FinalState() const;
  bool IsCommittedOrGone(const Xid& xid) const { return xa_index_.count(XidKey(xid)) == 0; }
  size_t prepared_count() const;
  size_t lingering_connections() const;  // client gone, not yet noticed by the server

  static std::string XidKey(const Xid& x) { return x.Gtrid() + "," + x.Bqual(); }

 private:
  enum class XaState { kActive, kPrepared, kRollbackOnly };
  struct Trx {
    uint64_t id = 0;
    bool xa = false;
    Xid xid;              // XA only
    std::string xid_key;  // XA only
    XaState xa_state = XaState::kActive;
    uint64_t conn = 0;  // owning connection; 0 = none (a detached prepared branch)
    std::vector<Effect> effects;
    bool effects_applied = false;  // Variant::kCommitBeforeDecision: applied at PREPARE
    std::vector<std::string> locks;
    std::vector<std::string> inserted_decisions;  // uncommitted decision rows of this trx
    uint64_t waits_for = 0;  // the transaction whose lock this one waits for (deadlocks)
    int64_t started_ms = 0;  // this server's clock (INNODB_TRX.trx_started)
  };
  struct DecisionRow {
    Decision d;
    uint64_t inserted_by = 0;  // 0 = committed; else the inserting transaction (row locked)
    const char* how = "";
  };
  struct Conn {
    int process = 0;
    uint64_t trx = 0;
    bool client_gone = false;
  };
  struct Statement {
    enum class Op { kAdd, kGet } op = Op::kGet;
    int64_t key = 0, delta = 0, min = 0, tag = 0;
  };
  class WaitEdge;

  Conn* FindConn(uint64_t conn);
  Trx* FindTrx(uint64_t id);
  Trx* TrxOf(const Conn& c);
  Trx& NewTrx(uint64_t conn, bool xa);
  void CommitTrx(uint64_t id, const char* why);
  void RollbackTrx(uint64_t id, const char* why);
  void EndTrx(uint64_t id);
  void DeadlockVictim(uint64_t id);
  Status Lock(uint64_t trx, const std::string& name);
  bool CanWait() const;
  bool WouldDeadlock(uint64_t requester, uint64_t holder) const;
  int64_t ReadValue(const Trx& t, int64_t key) const;
  Result<QueryResult> RunStatement(uint64_t trx, const Statement& st);
  void NoticeDisconnect(uint64_t conn);
  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  const uint32_t index_;
  const std::string name_;
  ShardContext ctx_;
  bool up_ = true;
  uint64_t generation_ = 0;  // bumped by every crash: events and waits from before are void
  int64_t clock_offset_ = 0;
  int64_t clock_max_seen_ = 0;
  bool no_wait_ = false;

  std::map<int64_t, int64_t> rows_;               // committed data
  std::map<std::string, DecisionRow> decisions_;  // seigo_decision, by gid
  std::set<std::string> committed_markers_;        // seigo_branch rows of committed branches
  std::map<uint64_t, Trx> trxs_;
  std::map<std::string, uint64_t> xa_index_;  // XID -> trx, for every XA branch
  std::map<uint64_t, Conn> conns_;
  std::map<std::string, uint64_t> locks_;  // row lock -> holding trx
  WaitQueue lock_released_;
};

// The client side of one connection (Session). Every call is one round trip through Network.
class SimSession final : public Session {
 public:
  SimSession(SimShard* shard, Network* net, int process, uint64_t conn)
      : shard_(shard), net_(net), coverage_(shard->coverage()), process_(process), conn_(conn) {}
  // Closes the connection: the server notices soon and discards the non-prepared work.
  ~SimSession() override;

  Status BeginLocal() override;
  Status BeginBranch(const Xid& xid) override;
  Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) override;
  Status Prepare(const Xid& xid) override;
  Status CommitLocal() override;
  Status CommitWithDecision(const Decision& d) override;
  Status CommitPrepared(const Xid& xid) override;
  Status RollbackAll(const Xid* xid, bool prepared) override;
  bool Broken() const override { return broken_; }

  bool clean() const { return !broken_ && !in_tx_; }

  // One round trip running `f(shard, conn)` on the server. If the request is late, the server
  // runs `late_now` at once and `late_at_notice` when it notices the client is gone (default:
  // the whole request, at notice time).
  template <typename F>
  auto Call(F f, std::function<void()> late_now = nullptr,
            std::function<void()> late_at_notice = nullptr)
      -> decltype(f(static_cast<SimShard*>(nullptr), uint64_t{0}));

 private:
  void Break();

  SimShard* shard_;
  Network* net_;
  Coverage* coverage_;
  int process_;
  uint64_t conn_;
  bool broken_ = false;
  bool in_tx_ = false;  // client-side, like the real participant: cleared by COMMIT/ROLLBACK
};

// One process's handle on one shard (Participant): a small connection pool plus the recovery
// calls, each on a pooled connection.
class SimParticipant final : public Participant {
 public:
  static constexpr size_t kMaxIdle = 4;

  static constexpr const char* kDeployment = "5e1905e1905e1905";

  SimParticipant(SimShard* shard, Network* net, int process)
      : shard_(shard), net_(net), process_(process) {}
  ~SimParticipant() override = default;  // pooled sessions close

  uint32_t index() const override { return shard_->index(); }
  std::string name() const override { return shard_->name(); }
  const std::string& deployment() const override { return deployment_; }
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
  template <typename F>
  auto OnPooledSession(F f) -> decltype(f(std::declval<SimSession&>()));

  SimShard* shard_;
  Network* net_;
  int process_;
  std::string deployment_ = kDeployment;
  std::vector<std::unique_ptr<SimSession>> idle_;
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_SIM_PARTICIPANT_H_
