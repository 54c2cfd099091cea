// The simulated store: MariaDB 10.11 servers (SimServer), each hosting several databases, and the
// client side that seigo's protocol code talks to (SimParticipant, SimSession: the Participant
// and Session interfaces of include/seigo/participant.h).
//
// A SimServer is one mariadbd. What is server-wide and what is per database matters, because
// several seigo deployments (and other applications) may share a server (issue 7, case 1):
//   server-wide:  connections and their thread ids (CONNECTION_ID(), PROCESSLIST; thread ids
//                 start again from 1 after a restart), the XA namespace (XA RECOVER lists every
//                 prepared branch of every database and application; XA COMMIT / ROLLBACK by
//                 XID act on any of them), InnoDB transactions and INNODB_TRX, the clock, the
//                 SYSTEM time zone, crashes;
//   per database: the rows, seigo_decision, seigo_branch (markers) — every deployment has its
//                 own database on each server it uses; a connection works in one database.
//
// SimServer models exactly the server behaviour the protocol relies on or must survive — each
// modelled behaviour is commented where it is implemented, in sim_participant.cc:
//   * a key-value table with exclusive row locks held until the transaction ends; lock waits
//     time out after innodb_lock_wait_timeout (1205: only the statement is rolled back); a wait
//     that would close a cycle is a deadlock (1213);
//   * local transactions: the decider's and a one-shard transaction are plain InnoDB
//     transactions on an autocommit=0 session, opened by their first statement; a statement that
//     ends a transaction (COMMIT, BEGIN, SET autocommit=1, DDL, ...) commits the work so far
//     there. A deadlock rolls the whole transaction back (the session is then outside any);
//   * XA branches: XA START, XA END + PREPARE (durable: survives a crash, keeps its row locks),
//     XA COMMIT / ROLLBACK. Inside an XA branch the statements that would end it are refused
//     with XAER_RMFAIL (1399), and a deadlock leaves it rollback-only (XA_RBDEADLOCK);
//   * the owning connection: while the connection that prepared a branch is alive (including a
//     connection whose client is gone but which the server has not noticed yet), XA COMMIT or
//     XA ROLLBACK from any other connection gets XAER_NOTA (kNotFound); XA RECOVER lists it all
//     the same. The owning connection can run nothing but XA COMMIT / ROLLBACK (XAER_RMFAIL);
//   * connection teardown in MariaDB's order (doc/limbo-branch.md): (1) the XID detaches and
//     anyone may take it, (2) the thread leaves PROCESSLIST, (3) InnoDB marks the transaction
//     recovered. An XA COMMIT / ROLLBACK by XID between (1) and (3) returns OK and does nothing:
//     the branch stays prepared, holds its locks and disappears from XA RECOVER until a restart
//     (the limbo branch). INNODB_TRX is served from a cache refreshed only when nobody read it
//     for 100 ms;
//   * the seigo_decision and seigo_branch tables with the semantics of CommitWithDecision,
//     FenceAbort, ReadDecision, ListExpiredDecisions, ForgetDecisions, ProbeBranches and
//     ForgetBranches documented in participant.h, all judged by this server's UTC clock
//     (kServerNowMs of src/mariadb, which follows a session's SET timestamp);
//   * crash + restart: every connection dropped, uncommitted work rolled back, prepared branches
//     (limbo ones too, which XA RECOVER lists again) and committed rows kept;
//   * disconnects noticed late, and requests executed after the client gave up on them;
//   * other clients of the server: a long consistent snapshot on another database (mysqldump
//     --single-transaction) and an XA user whose XIDs are not seigo's.
//
// The statement language (SimSession::Execute) is tiny; parameters are bound to '?' in order:
//   "ADD ? ? ? ?"  key, delta, min, tag: row key += delta if the result is >= min (affected_rows
//                  1; else 0, the row stays locked as InnoDB does); tag names the attempt
//   "GET ?"        key: one row with the value (a consistent read, no lock)
//   "LGET ?"       key: the same as a locking read (SELECT .. FOR UPDATE): takes the row lock
//                  first, waiting (or deadlocking) like a write, and reads the latest value
//   "ENDTX ?"      a statement that ends a transaction: 0 COMMIT, 1 BEGIN, 2 SET autocommit=1,
//                  3 DDL (implicit commit) — which src/mariadb's classifier refuses before they
//                  reach the server — and 4, one it does not recognise: SET STATEMENT .. FOR
//                  COMMIT, IF 1 THEN COMMIT; END IF, SET PASSWORD (all seen to commit a local
//                  transaction on MariaDB 10.11.19; sim/README.md). The server refuses every
//                  kind inside an XA branch (XAER_RMFAIL)
//   "SETTZ ?"      SET time_zone = '+N:00' (session state: the session is never pooled again)
//   "SETTS ?"      SET timestamp = now + N ms (session state; NOW() and UTC_TIMESTAMP() of this
//                  session then read that fixed value)
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

// What happens around a round trip between a simulated process and a server: delays, lost
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
  // In the calling fiber, before a round trip of `process` to `server`. May kill the process
  // (throws ProcessKilled), stall it, crash the server, step clocks.
  virtual void BeforeRoundTrip(int process, uint32_t server) = 0;
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
  // Whether the COMMIT statement of a commit batch (after its INSERT went in) answers with an
  // error, and whether the server had committed anyway (issue 7, case 9).
  enum class CommitFailure { kNone, kErrorButCommitted, kErrorRolledBack };
  virtual CommitFailure PickCommitFailure() = 0;
  // A connection's teardown after the server noticed the disconnect: ms from step (1) to (2),
  // and from (2) to (3) (SimServer::NoticeDisconnect).
  virtual std::pair<int64_t, int64_t> TeardownMs() = 0;
};

struct ShardContext {
  Scheduler* sched = nullptr;
  Buggify* faults = nullptr;
  Checker* checker = nullptr;
  Tracer* tracer = nullptr;
  Network* net = nullptr;
  Variant variant = Variant::kCorrect;
  int64_t lock_wait_timeout_ms = 1000;
  uint64_t* next_id = nullptr;  // connection and transaction ids: unique across servers, restarts
  Coverage* coverage = nullptr;
};

// One XA RECOVER row, before parsing: formatID, gtrid, bqual.
struct RawXid {
  int64_t format = 0;
  std::string gtrid, bqual;
};

// One round trip of the real adapter's ReadMarker (src/mariadb): the branch marker of a gid
// (READ UNCOMMITTED and committed), whether its owner thread is in INNODB_TRX and PROCESSLIST,
// the server's clock and uptime.
struct MarkerRead {
  bool present = false;          // an uncommitted or committed marker row
  bool committed = false;        // a committed marker row
  uint64_t owner = 0;            // server thread id that prepared the branch
  int64_t created_ms = 0;        // the preparing session's clock when it prepared
  bool owner_attached = false;   // INNODB_TRX (cached!) has a transaction of that thread
  bool owner_connected = false;  // that thread is in PROCESSLIST
  int64_t owner_idle_s = -1;     // seconds that thread has been idle (PROCESSLIST TIME), -1 if none
  int64_t now_ms = 0;
  int64_t uptime_s = 0;
  // Simulator bookkeeping, not part of the real read: the connection that prepared the branch
  // is still on this server; another connection in PROCESSLIST has the owner's thread id (it
  // was reused after a restart).
  bool sim_owner_here = false;
  bool sim_owner_id_reused = false;
};

// What the statement reply's status flags say (SERVER_SESSION_STATE_CHANGED,
// SERVER_STATUS_IN_TRANS): the real adapter taints a session whose state a caller changed, and
// refuses to go on when its transaction is no longer open.
struct ReplyFlags {
  bool state_changed = false;
  bool in_transaction = false;
  bool autocommit = false;
};

// One simulated mariadbd. All statement methods take the server-side connection id; they may
// block the calling fiber on a row lock (never when run from a timed event: then a lock held by
// someone else is an immediate lock-wait timeout).
class SimServer {
 public:
  static constexpr int kForeignProcess = -1;  // connections of other applications

  SimServer(uint32_t index, const ShardContext& ctx);
  SimServer(const SimServer&) = delete;
  SimServer& operator=(const SimServer&) = delete;

  uint32_t index() const { return index_; }
  const std::string& name() const { return name_; }
  bool up() const { return up_; }
  int64_t NowMs() const;  // this server's UTC clock (UTC_TIMESTAMP(6); NTP may step it)
  Coverage* coverage() const { return ctx_.coverage; }
  Variant variant() const { return ctx_.variant; }

  // ---- Databases ----
  // A database of seigo deployment `deployment` in which it keeps shard `shard`. Returns its id.
  int AddDatabase(const std::string& deployment, uint32_t shard, const std::string& name);
  const std::string& DbName(int db) const { return dbs_[static_cast<size_t>(db)].name; }
  void LoadRow(int db, int64_t key, int64_t value) {
    dbs_[static_cast<size_t>(db)].rows[key] = value;
  }

  // ---- Connections ----
  Result<uint64_t> Connect(int process, int db, bool autocommit);
  // The server still serves this connection (possibly one whose client is gone, not yet noticed).
  bool Alive(uint64_t conn) const;
  // The connection is gone and its client's socket shows it (the server closed it, or its
  // process died and the kernel sent a FIN): what poll() on an idle connection sees.
  bool ClosedVisibly(uint64_t conn) const { return !Alive(conn) && !silent_dead_.count(conn); }
  // The client closed or lost `conn`. The server notices after `notice_after_ms`; then it first
  // runs `late` (a request that was still in flight), then tears the connection down: it rolls
  // back any open transaction and detaches a prepared branch (NoticeDisconnect).
  void ClientGone(uint64_t conn, int64_t notice_after_ms, std::function<void()> late = nullptr);
  std::vector<uint64_t> ConnectionsOf(int process) const;
  // Runs `fn` with lock waits disabled (a lock held by another transaction fails at once).
  void RunWithoutWaiting(const std::function<void()>& fn);

  // ---- Statements of a session ----
  // Bookkeeping only, no round trip (the real adapter sends nothing: the session runs
  // autocommit=0 and the first statement opens the transaction): `conn` now expects a local
  // transaction, for invariant 6.
  void NoteLocalBegin(uint64_t conn);
  Status BeginBranch(uint64_t conn, const Xid& xid);  // XA START
  Result<QueryResult> Execute(uint64_t conn, const std::string& sql,
                              const std::vector<Value>& params, ReplyFlags* flags);
  // INSERT INTO seigo_branch (the marker); XA END; XA PREPARE.
  Status XaEndPrepare(uint64_t conn, const Xid& xid);
  Status Commit(uint64_t conn);  // COMMIT of the local transaction
  // The commit-point INSERT (after SET @@session.timestamp=DEFAULT, as the real batch does).
  Status InsertCommitDecision(uint64_t conn, const Decision& d);
  // The COMMIT of a commit batch answers an error (1180) after committing, or after rolling
  // the transaction back (Network::CommitFailure).
  Status FailCommit(uint64_t conn, bool committed);
  Status XaCommit(uint64_t conn, const Xid& xid);    // XA COMMIT (by the owner or by XID)
  Status XaRollback(uint64_t conn, const Xid& xid);  // XA ROLLBACK (by the owner or by XID)
  Status Rollback(uint64_t conn);                    // whatever the connection has open

  // ---- Statements of recovery ----
  Result<std::vector<RawXid>> XaRecover(uint64_t conn);
  Result<std::optional<Decision>> SelectDecision(uint64_t conn, const std::string& gid);
  Result<Outcome> FenceInsert(uint64_t conn, const Decision& d, bool by_coordinator);
  Result<std::vector<Decision>> SelectExpired(uint64_t conn, int64_t retention_ms, size_t limit);
  // seigo_branch markers (written inside a branch by its PREPARE): ProbeBranches semantics.
  Result<std::vector<BranchTrace>> SelectMarkers(uint64_t conn,
                                                 const std::vector<std::string>& gids);
  Result<MarkerRead> ReadMarker(uint64_t conn, const std::string& gid);
  // The start (UTC ms) of the oldest open InnoDB transaction on the server, any database: what
  // the old GC read from INNODB_TRX (Variant::kGcOldestTrx).
  Result<std::optional<int64_t>> OldestTrxStartMs(uint64_t conn);
  Status DeleteMarkers(uint64_t conn, const std::vector<std::string>& gids);
  Status DeleteDecisions(uint64_t conn, const std::vector<std::string>& gids);
  // KILL CONNECTION `thread_id`. `gid`: the branch the caller believes that thread owns (only
  // for the simulator's bookkeeping: was the right connection killed?).
  Status KillConnection(uint64_t conn, uint64_t thread_id, const std::string& gid);
  // src/mariadb's ReadLockWaits round trip (doc/deadlocks.md): publishes `mine` in this
  // database's seigo_waiter (each with the query id its thread runs now), takes this database's
  // turn to read the lock waits from the INNODB_TRX cache at most every 110 ms (else the shared
  // old ones), and returns the waits and everything published.
  Result<LockWaits> ReadLockWaits(uint64_t conn, const std::vector<LockWaits::Published>& mine);
  // KILL QUERY ID `query`: the statement, if it still waits for a lock, fails with 1317.
  Status KillQuery(uint64_t conn, uint64_t query);
  uint64_t ThreadIdOf(uint64_t conn) const;

  // ---- Other clients of the server ----
  // A connection to another database with a consistent snapshot open until CloseForeign() (a
  // crash ends it; the dump starts over after the restart).
  void OpenForeignSnapshot();
  // An application with its own XA transactions (formatID 1): prepares one now, commits it by
  // its owner `hold_ms` later.
  void RunForeignXa(int64_t hold_ms);
  void CloseForeign();

  // ---- Faults ----
  // kill -9 (see the header comment). `silent`: the host died with it (power, kernel panic):
  // no FIN reaches the clients, whose idle connections look alive until used.
  void Crash(bool silent = false);
  void Restart();
  void StepClock(int64_t delta_ms);  // never more than 1 s behind the latest reading
  // The host's SYSTEM time zone is in a DST change for `duration_ms`: local time reads
  // `offset_ms` off (+1 h before the autumn change with time_zone=SYSTEM, -1 h in the repeated
  // hour with a named zone). UTC is unaffected; only Variant::kZoneClock reads local time.
  void StartDstWindow(int64_t offset_ms, int64_t duration_ms);

  // ---- Inspection (checker, quiescent phase) ----
  std::vector<DbFinalState> DbFinalStates() const;
  ServerFinalState FinalState() const;
  size_t prepared_count() const;         // seigo and foreign, limbo included
  size_t lingering_connections() const;  // client gone, or teardown not finished

  static std::string XidKey(const Xid& x) { return x.Gtrid() + "," + x.Bqual(); }

 private:
  enum class Kind {
    kLocal,      // a plain local transaction (the decider's, a one-shard one, autocommit ones)
    kBranch,     // a seigo XA branch
    kForeignXa,  // another application's XA transaction
  };
  enum class XaState { kActive, kPrepared, kRollbackOnly };
  struct Marker {
    uint64_t owner = 0;       // thread id of the preparing connection
    uint64_t owner_conn = 0;  // that connection's internal id (bookkeeping only)
    int64_t created_ms = 0;   // the preparing session's clock
  };
  struct Trx {
    uint64_t id = 0;
    int db = 0;
    Kind kind = Kind::kLocal;
    Xid xid;              // kBranch
    std::string xid_key;  // kBranch, kForeignXa
    RawXid raw;           // kBranch, kForeignXa: what XA RECOVER shows
    XaState xa_state = XaState::kActive;
    uint64_t conn = 0;  // owning connection; 0 = none (a detached prepared branch)
    // A prepared branch whose owner connection is in teardown, steps (1)-(3): InnoDB still ties
    // it to that thread. A commit or rollback by XID now puts it in limbo.
    uint64_t dying_owner = 0;
    bool limbo = false;            // "finished" by XID during teardown: prepared, not in XA RECOVER
    std::optional<Marker> marker;  // the uncommitted seigo_branch row of a prepared branch
    std::vector<Effect> effects;
    bool effects_applied = false;  // Variant::kCommitBeforeDecision: applied at PREPARE
    std::vector<std::string> locks;
    std::vector<std::string> inserted_decisions;  // uncommitted decision rows of this trx
    uint64_t waits_for = 0;  // the transaction whose lock this one waits for (deadlocks)
    int64_t started_ms = 0;  // this server's clock (INNODB_TRX.trx_started)
    bool xa() const { return kind != Kind::kLocal; }
  };
  struct DecisionRow {
    Decision d;
    uint64_t inserted_by = 0;  // 0 = committed; else the inserting transaction (row locked)
    const char* how = "";
  };
  struct Db {
    std::string deployment;  // "" for a foreign database
    uint32_t shard = 0;
    std::string name;
    std::map<int64_t, int64_t> rows;               // committed data
    std::map<std::string, DecisionRow> decisions;  // seigo_decision, by gid
    std::map<std::string, Marker> markers;         // committed seigo_branch rows, by gid
    // The MEMORY tables of deadlock detection: empty again after a restart.
    // seigo_waiter by thread, with published_ms (this server's clock).
    std::map<uint64_t, std::pair<LockWaits::Published, int64_t>> waiters;
    int64_t lockwait_clock = INT64_MIN / 2;            // seigo_lockwait_clock.read_ms
    bool lockwait_fresh = false;                       // seigo_lockwait_clock.fresh
    std::vector<LockWaits::Edge> lockwait_edges;       // seigo_lockwait_edge
  };
  struct Conn {
    int process = 0;
    int db = 0;
    uint64_t thread_id = 0;
    uint64_t trx = 0;
    bool client_gone = false;
    bool tearing_down = false;   // after step (1)
    bool in_processlist = true;  // until step (2)
    int64_t last_command_ms = 0;  // this server's clock when the connection last ran something
    uint64_t query_id = 0;        // PROCESSLIST.QUERY_ID of its latest statement
    bool kill_query = false;      // KILL QUERY ID landed while the statement waits
    bool in_execute = false;      // a closure's statement runs (PROCESSLIST COMMAND 'Execute')
    // Session state.
    bool autocommit = false;
    int64_t tz_offset_ms = 0;             // SET time_zone
    std::optional<int64_t> timestamp_ms;  // SET timestamp
    // Bookkeeping for invariant 6 (not server state): seigo began a local transaction here
    // (NoteLocalBegin), a statement has opened it, a closure's statement ended it.
    bool seigo_local = false;
    bool seigo_opened = false;
    bool closure_ended_trx = false;
  };
  struct Statement {
    enum class Op { kAdd, kGet, kLockingGet, kEndTx, kSetTz, kSetTs } op = Op::kGet;
    int64_t key = 0, delta = 0, min = 0, tag = 0;
  };
  class WaitEdge;

  Conn* FindConn(uint64_t conn);  // a connection that still serves requests
  Trx* FindTrx(uint64_t id);
  Trx* TrxOf(const Conn& c);
  Db& DbOf(const Conn& c) { return dbs_[static_cast<size_t>(c.db)]; }
  Trx& NewTrx(uint64_t conn, int db, Kind kind);
  void CommitTrx(uint64_t id, const char* why);
  void RollbackTrx(uint64_t id, const char* why);
  void EndTrx(uint64_t id);
  void DeadlockVictim(uint64_t id);
  Status Lock(uint64_t trx, const std::string& name);
  bool CanWait() const;
  bool WouldDeadlock(uint64_t requester, uint64_t holder) const;
  int64_t ReadValue(const Trx& t, int64_t key) const;
  Result<QueryResult> RunStatement(uint64_t trx, const Statement& st);
  Result<QueryResult> EndTransactionStatement(uint64_t conn, int kind, ReplyFlags* flags);
  Status XaFinishByXid(uint64_t conn, const Xid& xid, bool commit);
  void NoticeDisconnect(uint64_t conn);
  void FreeConnection(uint64_t conn);
  // What kServerNowMs reads on `conn`: UTC, or the session's SET timestamp. Variant::kZoneClock:
  // local time (UNIX_TIMESTAMP(NOW()) through the session's or the SYSTEM zone, as before).
  int64_t SessionClockMs(const Conn& c) const;
  // A statement arrives with no transaction open: opens one (autocommit=0) or runs as its own
  // (autocommit=1). Checks invariant 6. Returns the transaction to run it in.
  uint64_t TrxForStatement(uint64_t conn, const char* what);
  // INNODB_TRX (trx_mysql_thread_id, trx_started in ms of this server's clock), cached.
  std::vector<std::pair<uint64_t, int64_t>> InnodbTrxThreads();
  uint64_t ThreadOfTrx(const Trx& t) const;
  void CheckDeployment(const Conn& c, const Trx& t, const char* what);
  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  std::string RowLock(int db, int64_t key) const;
  std::string DecisionLock(int db, const std::string& gid) const;

  const uint32_t index_;
  const std::string name_;
  ShardContext ctx_;
  bool up_ = true;
  uint64_t generation_ = 0;  // bumped by every crash: events and waits from before are void
  int64_t clock_offset_ = 0;
  int64_t clock_max_seen_ = 0;
  int64_t zone_offset_ms_ = 0;   // SYSTEM time zone during a DST window
  uint64_t dst_window_ = 0;      // which window is current (its end event checks it)
  int64_t start_ms_ = 0;         // this incarnation's start, by its clock (UPTIME)
  uint64_t thread_counter_ = 0;  // CONNECTION_ID(): from 1 again after a restart
  bool no_wait_ = false;
  std::vector<std::pair<uint64_t, int64_t>> trx_cache_;  // the INNODB_TRX cache
  std::vector<LockWaits::Edge> lock_wait_cache_;         // INNODB_LOCK_WAITS, same cache
  uint64_t query_counter_ = 0;
  int64_t trx_cache_last_read_ = INT64_MIN / 2;
  bool keep_foreign_snapshot_ = false;
  int foreign_db_ = -1;

  std::vector<Db> dbs_;
  std::map<uint64_t, Trx> trxs_;
  std::map<std::string, uint64_t> xa_index_;  // XID -> trx, for every XA branch (not limbo)
  std::map<uint64_t, Conn> conns_;
  std::map<std::string, uint64_t> locks_;  // row lock -> holding trx
  std::set<uint64_t> silent_dead_;         // connections lost without a FIN (host crashes)
  WaitQueue lock_released_;
};

// A process's statements running on one participant, for its deadlock detector (as
// src/mariadb's InFlight), and the process clock they are dated by.
struct SimInFlight {
  std::map<const void*, LocalWait> running;
  std::function<int64_t()> clock;
};

// The client side of one connection (Session). Every call is one round trip through Network.
class SimSession final : public Session {
 public:
  SimSession(SimServer* server, Network* net, int process, uint64_t conn, bool transactional,
             uint64_t generation, uint64_t* stale_calls)
      : server_(server),
        stale_calls_(stale_calls),
        net_(net),
        coverage_(server->coverage()),
        process_(process),
        conn_(conn),
        transactional_(transactional),
        generation_(generation) {}
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
  void SetWaitTag(std::shared_ptr<WaitTag> tag) override { tag_ = std::move(tag); }
  uint64_t server_thread() const override { return broken_ ? 0 : server_->ThreadIdOf(conn_); }
  void TrackIn(std::shared_ptr<SimInFlight> f) { inflight_ = std::move(f); }

  // May go back to the pool (as src/mariadb): no transaction open, healthy, and no session
  // state changed by a caller's statement.
  bool clean() const { return !broken_ && !in_tx_ && !tainted_; }
  bool tainted() const { return tainted_; }
  // src/mariadb's IdleAndAlive: poll() on an idle pooled connection shows an EOF when the
  // server closed it (it restarted, or killed it). No round trip.
  bool IdleAndAlive() const;
  uint64_t generation() const { return generation_; }
  bool transactional() const { return transactional_; }

  // One round trip running `f(server, conn)` on the server. If the request is late, the server
  // runs `late_now` at once and `late_at_notice` when it notices the client is gone (default:
  // the whole request, at notice time).
  template <typename F>
  auto Call(F f, std::function<void()> late_now = nullptr,
            std::function<void()> late_at_notice = nullptr)
      -> decltype(f(static_cast<SimServer*>(nullptr), uint64_t{0}));

 private:
  void Break();
  Status CommitBatch(std::function<Status(SimServer*, uint64_t)> insert, bool multi_shard);

  SimServer* server_;
  uint64_t* stale_calls_;  // the participant's count of calls that found their connection gone
  Network* net_;
  Coverage* coverage_;
  int process_;
  uint64_t conn_;
  const bool transactional_;   // a transaction session (autocommit=0), not a recovery session
  const uint64_t generation_;  // the participant's generation when this connection was made
  bool broken_ = false;
  bool in_tx_ = false;   // client-side, like the real participant: cleared by COMMIT/ROLLBACK
  bool local_ = false;   // in_tx_ is the decider's / a one-shard local transaction
  bool opened_ = false;  // local_: the server reported the transaction open after a statement
  bool tainted_ = false;
  std::shared_ptr<WaitTag> tag_;
  std::shared_ptr<SimInFlight> inflight_;
};

// One process's handle on one shard of one deployment (Participant): a database on a server,
// a small connection pool for transactions and one for recovery calls, as src/mariadb.
class SimParticipant final : public Participant {
 public:
  static constexpr size_t kMaxIdle = 4;

  SimParticipant(SimServer* server, int db, uint32_t index, std::string deployment, Network* net,
                 int process)
      : server_(server),
        db_(db),
        index_(index),
        deployment_(std::move(deployment)),
        name_("shard " + std::to_string(index) + " (sim server " + std::to_string(server->index()) +
              "/" + server->DbName(db) + ")"),
        net_(net),
        process_(process) {}
  ~SimParticipant() override = default;  // pooled sessions close

  uint32_t index() const override { return index_; }
  std::string name() const override { return name_; }
  const std::string& deployment() const override { return deployment_; }
  SimServer* server() const { return server_; }
  // Round trips that found their (pooled) connection gone on the server: a restart, or a KILL.
  uint64_t stale_calls() const { return stale_calls_; }
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
  std::string store_id() const override { return server_->name(); }
  std::vector<LocalWait> LongStatements(int64_t before_ms) override;
  Status ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) override;
  Status BreakWait(uint64_t thread, uint64_t query) override;
  // The process clock that dates running statements (the process's Env::NowMs).
  void set_clock(std::function<int64_t()> clock) { inflight_->clock = std::move(clock); }

 private:
  using Pool = std::vector<std::unique_ptr<SimSession>>;
  Result<std::unique_ptr<SimSession>> AcquireFrom(Pool* pool, bool transactional, bool* reused);
  void ReleaseTo(Pool* pool, std::unique_ptr<SimSession> s);
  // A recovery call on a pooled recovery session; retried once on a fresh connection if a
  // reused one turned out dead (the server restarted), as src/mariadb's WithSession.
  template <typename F>
  auto WithSession(F f) -> decltype(f(std::declval<SimSession&>()));
  // src/mariadb's CheckOwner: kBusy while the marker's owner thread still holds the branch.
  Status CheckOwner(SimSession& s, const Xid& xid, const MarkerRead& m);

  SimServer* server_;
  int db_;
  uint32_t index_;
  std::string deployment_;
  std::string name_;
  Network* net_;
  int process_;
  uint64_t generation_ = 0;  // bumped when a broken session comes back (see AcquireFrom)
  uint64_t stale_calls_ = 0;
  Pool idle_;           // transaction sessions
  Pool idle_recovery_;  // recovery sessions
  std::shared_ptr<SimInFlight> inflight_ = std::make_shared<SimInFlight>();
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_SIM_PARTICIPANT_H_
