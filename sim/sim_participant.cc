#include "sim/sim_participant.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace seigo::sim {
namespace {

// Server errors, worded like MariaDB's, mapped to Status as src/mariadb does (doc/protocol.md,
// "Error mapping"), with their error numbers.
constexpr int kErRmFail = 1399;
Status Lost() {
  return Status(Code::kUnavailable, "Lost connection to server during query (2013)", 2013);
}
Status Nota() { return Status(Code::kNotFound, "XAER_NOTA: Unknown XID (1397)", 1397); }
Status RmFail() {
  return Status(Code::kQueryFailed,
                "XAER_RMFAIL: The command cannot be executed when global transaction is in the "
                "ACTIVE or PREPARED state (1399)",
                kErRmFail);
}
Status Deadlock() {
  return Status(Code::kConflict,
                "Deadlock found when trying to get lock; try restarting transaction (1213)", 1213);
}
Status LockWaitTimeout() {
  return Status(Code::kConflict, "Lock wait timeout exceeded; try restarting transaction (1205)",
                1205);
}
Status Interrupted() {
  return Status(Code::kConflict, "Query execution was interrupted (1317)", 1317);
}
Status RbDeadlock() {
  return Status(Code::kConflict,
                "XA_RBDEADLOCK: Transaction branch was rolled back: deadlock was detected (1614)",
                1614);
}

bool IsGid(std::string_view g) {
  if (g.size() != 32) return false;
  return std::all_of(g.begin(), g.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IntParam(const std::vector<Value>& p, size_t i, int64_t* out) {
  if (i >= p.size() || p[i].kind() != Value::Kind::kInt) return false;
  *out = p[i].int_value();
  return true;
}

const char* EndTxName(int kind) {
  switch (kind) {
    case 0:
      return "COMMIT";
    case 1:
      return "BEGIN";
    case 2:
      return "SET autocommit=1";
    case 3:
      return "CREATE TABLE (implicit commit)";
    default:
      return "SET STATEMENT max_statement_time=0 FOR COMMIT";
  }
}

// src/mariadb: a branch whose owner connection is still attached this long after its deadline
// belongs to a hung process, and the resolver closes that connection.
constexpr int64_t kHungOwnerMs = kMinDecisionRetentionMs;
// INNODB_TRX is refreshed only if nobody on the server read it for this long
// (CACHE_MIN_IDLE_TIME_NS, storage/innobase/trx/trx0i_s.cc; doc/limbo-branch.md).
constexpr int64_t kInnodbTrxCacheMs = 100;

}  // namespace

// Clears a transaction's waits-for edge when its lock wait ends, however it ends (a killed
// process's fiber unwinds through here).
class SimServer::WaitEdge {
 public:
  WaitEdge(SimServer* server, uint64_t trx, uint64_t holder) : server_(server), trx_(trx) {
    if (Trx* t = server_->FindTrx(trx_)) t->waits_for = holder;
  }
  ~WaitEdge() {
    if (Trx* t = server_->FindTrx(trx_)) t->waits_for = 0;
  }

 private:
  SimServer* server_;
  uint64_t trx_;
};

SimServer::SimServer(uint32_t index, const ShardContext& ctx)
    : index_(index), name_("server " + std::to_string(index)), ctx_(ctx) {
  start_ms_ = NowMs();
  foreign_db_ = AddDatabase("", 0, "dump");  // another application's database
}

void SimServer::Trace(const char* fmt, ...) {
  if (!ctx_.tracer->on()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx_.tracer->Log("server%u: %s", index_, buf);
}

int SimServer::AddDatabase(const std::string& deployment, uint32_t shard, const std::string& name) {
  Db db;
  db.deployment = deployment;
  db.shard = shard;
  db.name = name;
  dbs_.push_back(std::move(db));
  return static_cast<int>(dbs_.size() - 1);
}

std::string SimServer::RowLock(int db, int64_t key) const {
  return "d" + std::to_string(db) + ":row:" + std::to_string(key);
}
std::string SimServer::DecisionLock(int db, const std::string& gid) const {
  return "d" + std::to_string(db) + ":decision:" + gid;
}

int64_t SimServer::NowMs() const { return ctx_.sched->now() + clock_offset_; }

int64_t SimServer::SessionClockMs(const Conn& c) const {
  // src/mariadb's kServerNowMs: TIMESTAMPDIFF on UTC_TIMESTAMP(6), which does no time zone
  // conversion, but follows the session's SET timestamp.
  const int64_t utc = c.timestamp_ms ? *c.timestamp_ms : NowMs();
  if (ctx_.variant != Variant::kZoneClock) return utc;
  // The planted flaw: UNIX_TIMESTAMP(NOW(6)) converts local time back through the session's
  // zone. With time_zone=SYSTEM it is off by the host's DST error around the change; with a
  // zone a closure SET, by the difference of the two zones.
  return utc + (c.tz_offset_ms != 0 ? c.tz_offset_ms : zone_offset_ms_);
}

void SimServer::StepClock(int64_t delta_ms) {
  // NTP may step a server's clock. Forward steps are free; a backward step is limited so that the
  // clock never reads more than 1 s below its highest reading: the protocol assumes the decider's
  // clock does not run back by anything near kFenceWindowMs (doc/protocol.md, GC).
  clock_max_seen_ = std::max(clock_max_seen_, NowMs());
  clock_offset_ += delta_ms;
  const int64_t floor = clock_max_seen_ - 1000;
  if (NowMs() < floor) clock_offset_ += floor - NowMs();
  Trace("clock step %+lld ms", static_cast<long long>(delta_ms));
}

void SimServer::StartDstWindow(int64_t offset_ms, int64_t duration_ms) {
  if (zone_offset_ms_ != 0) return;  // one change at a time
  zone_offset_ms_ = offset_ms;
  const uint64_t window = ++dst_window_;
  ctx_.coverage->Add(Cov::kDstWindow);
  Trace("DST window: local time reads %+lld s off for %lld ms",
        static_cast<long long>(offset_ms / 1000), static_cast<long long>(duration_ms));
  ctx_.sched->At(ctx_.sched->now() + duration_ms, [this, window] {
    if (dst_window_ == window) zone_offset_ms_ = 0;
  });
}

// ---------------------------------------------------------------------------------------------
// Deadlock detection (src/mariadb's ReadLockWaits and BreakWait)

uint64_t SimServer::ThreadIdOf(uint64_t conn) const {
  auto it = conns_.find(conn);
  return it == conns_.end() ? 0 : it->second.thread_id;
}

Result<LockWaits> SimServer::ReadLockWaits(uint64_t conn,
                                           const std::vector<LockWaits::Published>& mine) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Db& db = DbOf(*c);
  const int64_t now = NowMs();
  for (auto it = db.waiters.begin(); it != db.waiters.end();) {
    it = it->second.second < now - 60'000 ? db.waiters.erase(it) : std::next(it);
  }
  for (LockWaits::Published p : mine) {
    // REPLACE ... SELECT QUERY_ID FROM PROCESSLIST WHERE ID = thread: the statement the thread
    // runs now (maybe a later one than the caller meant).
    for (const auto& [id, other] : conns_) {
      if (other.thread_id == p.thread && other.in_processlist && !other.tearing_down) {
        p.query = other.query_id;
        // ON DUPLICATE KEY UPDATE keeps published_ms while the row is about the same statement.
        auto old = db.waiters.find(p.thread);
        const int64_t first =
            old != db.waiters.end() && old->second.first.query == p.query ? old->second.second
                                                                          : now;
        db.waiters[p.thread] = {p, first};
        break;
      }
    }
  }
  // The turn: this database reads INNODB_LOCK_WAITS at most every 110 ms (the real read is
  // skipped otherwise); the cache has InnoDB's 100 ms rule, shared with every other reader of
  // the server (the resolver's INNODB_TRX reads, another deployment's detectors).
  if (now - db.lockwait_clock >= 110) {
    db.lockwait_clock = now;
    // Refreshes the cache only if nobody read it for 100 ms; the adapter learns which from
    // its own transaction's appearance in it (the freshness canary).
    db.lockwait_fresh = ctx_.sched->now() - trx_cache_last_read_ >= kInnodbTrxCacheMs;
    InnodbTrxThreads();
    db.lockwait_edges = lock_wait_cache_;
  }
  LockWaits out;
  out.edges = db.lockwait_edges;
  out.snapshot_ms = db.lockwait_clock;
  out.snapshot_fresh = db.lockwait_fresh;
  out.now_ms = now;
  for (const auto& [thread, p] : db.waiters) {
    // JOIN PROCESSLIST ON ID = thread AND QUERY_ID = query AND COMMAND = 'Execute': only rows
    // whose closure statement still runs (statements here run only while they wait for a lock).
    bool running = false;
    for (const auto& [id, c] : conns_) {
      if (c.thread_id != p.first.thread || !c.in_processlist || c.query_id != p.first.query) {
        continue;
      }
      const Trx* t = c.trx != 0 ? FindTrx(c.trx) : nullptr;
      running = c.in_execute && t != nullptr && t->waits_for != 0;
      break;
    }
    if (!running) continue;
    LockWaits::Published row = p.first;
    row.published_ms = p.second;
    out.published.push_back(std::move(row));
  }
  return out;
}

Status SimServer::KillQuery(uint64_t conn, uint64_t query) {
  if (FindConn(conn) == nullptr) return Lost();
  for (auto& [id, c] : conns_) {
    if (c.query_id != query || c.tearing_down) continue;
    const Trx* t = c.trx != 0 ? FindTrx(c.trx) : nullptr;
    // Finished (statements only block on locks), or not a closure's statement any more.
    if (t == nullptr || t->waits_for == 0 || !c.in_execute) break;
    c.kill_query = true;
    Trace("KILL QUERY ID %llu (thread %llu)", static_cast<unsigned long long>(query),
          static_cast<unsigned long long>(c.thread_id));
    ctx_.sched->NotifyAll(&lock_released_);
    return Status::OK();
  }
  return Status(Code::kNotFound, "Unknown query id: " + std::to_string(query) + " (1957)", 1957);
}

// ---------------------------------------------------------------------------------------------
// Connections

SimServer::Conn* SimServer::FindConn(uint64_t conn) {
  if (!up_) return nullptr;
  auto it = conns_.find(conn);
  if (it == conns_.end() || it->second.tearing_down) return nullptr;
  it->second.last_command_ms = NowMs();  // every statement of a connection starts here
  return &it->second;
}

bool SimServer::Alive(uint64_t conn) const {
  if (!up_) return false;
  auto it = conns_.find(conn);
  return it != conns_.end() && !it->second.tearing_down;
}

Result<uint64_t> SimServer::Connect(int process, int db, bool autocommit) {
  if (!up_) {
    return Status(Code::kUnavailable, "Can't connect to server on '" + name_ + "' (2003)", 2003);
  }
  const uint64_t id = ++*ctx_.next_id;
  Conn& c = conns_[id];
  c.process = process;
  c.db = db;
  c.thread_id = ++thread_counter_;
  c.autocommit = autocommit;
  return id;
}

std::vector<uint64_t> SimServer::ConnectionsOf(int process) const {
  std::vector<uint64_t> out;
  for (const auto& [id, c] : conns_) {
    if (c.process == process && !c.client_gone && !c.tearing_down) out.push_back(id);
  }
  return out;
}

void SimServer::RunWithoutWaiting(const std::function<void()>& fn) {
  const bool saved = no_wait_;
  no_wait_ = true;
  fn();
  no_wait_ = saved;
}

void SimServer::ClientGone(uint64_t conn, int64_t notice_after_ms, std::function<void()> late) {
  auto it = conns_.find(conn);
  if (!up_ || it == conns_.end() || it->second.client_gone || it->second.tearing_down) return;
  // MariaDB learns that a client is gone only when it next reads from or writes to the socket:
  // at once for a clean close, after net_read_timeout / TCP keepalive when the link just broke.
  // Until then the connection is alive: its transaction keeps its locks and it still OWNS its
  // prepared XA branch (others get XAER_NOTA). A request that was in flight runs first.
  it->second.client_gone = true;
  const uint64_t gen = generation_;
  auto notice = [this, conn, gen, late = std::move(late)]() {
    if (gen != generation_ || conns_.count(conn) == 0) return;  // the server restarted since
    if (late) {
      ctx_.coverage->Add(Cov::kRequestLate);
      RunWithoutWaiting(late);
    }
    NoticeDisconnect(conn);
  };
  if (notice_after_ms <= 0 && !late) {
    notice();
  } else {
    ctx_.sched->At(ctx_.sched->now() + std::max<int64_t>(0, notice_after_ms), std::move(notice));
  }
}

void SimServer::NoticeDisconnect(uint64_t conn) {
  auto it = conns_.find(conn);
  if (it == conns_.end() || it->second.tearing_down) return;
  // unlink_thd() in MariaDB's order (doc/limbo-branch.md):
  //   (1) THD::cleanup: an active transaction is rolled back; a PREPARED XA branch is detached
  //       (trans_xa_detach): from now on any connection can take its XID, XA RECOVER lists it;
  //   (2) the thread leaves PROCESSLIST;
  //   (3) THD::free_connection -> ha_close_connection: only now does InnoDB mark the prepared
  //       trx recovered and untie it from the thread (INNODB_TRX.trx_mysql_thread_id 0).
  // A commit or rollback by XID between (1) and (3) does nothing (XaFinishByXid: limbo).
  Conn& c = it->second;
  c.tearing_down = true;
  if (Trx* t = TrxOf(c)) {
    if (t->xa() && t->xa_state == XaState::kPrepared) {
      // MariaDB >= 10.5: a prepared branch survives its connection, with its row locks.
      t->conn = 0;
      t->dying_owner = conn;
      ctx_.coverage->Add(Cov::kBranchDetached);
      Trace("conn %llu gone: branch %s detached", static_cast<unsigned long long>(conn),
            t->kind == Kind::kBranch ? t->xid.gid.substr(0, 8).c_str() : t->raw.gtrid.c_str());
    } else {
      RollbackTrx(t->id, "client disconnected");
    }
  }
  c.trx = 0;
  const auto [to_step2, to_step3] = ctx_.net->TeardownMs();
  const uint64_t gen = generation_;
  if (to_step2 <= 0) {
    c.in_processlist = false;
  } else {
    ctx_.sched->At(ctx_.sched->now() + to_step2, [this, conn, gen] {
      auto i = conns_.find(conn);
      if (gen == generation_ && i != conns_.end()) i->second.in_processlist = false;
    });
  }
  if (to_step2 + to_step3 <= 0) {
    FreeConnection(conn);
  } else {
    ctx_.sched->At(ctx_.sched->now() + to_step2 + to_step3, [this, conn, gen] {
      if (gen == generation_) FreeConnection(conn);
    });
  }
}

void SimServer::FreeConnection(uint64_t conn) {
  // Step (3): InnoDB marks the connection's prepared trx recovered.
  for (auto& [id, t] : trxs_) {
    if (t.dying_owner == conn) t.dying_owner = 0;
  }
  conns_.erase(conn);
}

Status SimServer::KillConnection(uint64_t conn, uint64_t thread_id, const std::string& gid) {
  if (FindConn(conn) == nullptr) return Lost();
  for (auto& [id, c] : conns_) {
    if (c.thread_id != thread_id || c.tearing_down) continue;
    // Did the caller kill the connection it meant (the one that prepared the branch of `gid`)?
    // Thread ids start from 1 again after a restart: a marker from before it names a thread id
    // that some unrelated connection may have now.
    bool owner = false;
    if (Trx* t = TrxOf(c)) owner = t->kind == Kind::kBranch && t->xid.gid == gid;
    ctx_.coverage->Add(owner ? Cov::kHungOwnerKilled : Cov::kKilledUnrelated);
    Trace("KILL CONNECTION %llu: %s (process %d, database %s)",
          static_cast<unsigned long long>(thread_id),
          owner ? "the owner" : "NOT the owner of the branch", c.process,
          dbs_[static_cast<size_t>(c.db)].name.c_str());
    const uint64_t victim = id;
    c.client_gone = true;
    NoticeDisconnect(victim);
    return Status::OK();
  }
  return Status(Code::kQueryFailed, "Unknown thread id: " + std::to_string(thread_id) + " (1094)",
                1094);
}

// ---------------------------------------------------------------------------------------------
// Transactions and locks

SimServer::Trx* SimServer::FindTrx(uint64_t id) {
  auto it = trxs_.find(id);
  return it == trxs_.end() ? nullptr : &it->second;
}

SimServer::Trx* SimServer::TrxOf(const Conn& c) { return c.trx == 0 ? nullptr : FindTrx(c.trx); }

SimServer::Trx& SimServer::NewTrx(uint64_t conn, int db, Kind kind) {
  const uint64_t id = ++*ctx_.next_id;
  Trx& t = trxs_[id];
  t.id = id;
  t.db = db;
  t.kind = kind;
  t.conn = conn;
  t.started_ms = NowMs();
  if (Conn* c = FindConn(conn)) c->trx = id;
  return t;
}

void SimServer::CommitTrx(uint64_t id, const char* why) {
  Trx& t = trxs_.at(id);
  Db& db = dbs_[static_cast<size_t>(t.db)];
  for (const std::string& gid : t.inserted_decisions) {
    auto it = db.decisions.find(gid);
    if (it != db.decisions.end() && it->second.inserted_by == id) {
      it->second.inserted_by = 0;
      it->second.d.decided_at_ms = NowMs();
      Trace("decision %s %s committed (%s)", gid.substr(0, 8).c_str(),
            OutcomeName(it->second.d.outcome), it->second.how);
      ctx_.checker->OnDecisionWritten(db.deployment, db.shard, it->second.d, it->second.how);
    }
  }
  if (!t.effects_applied && !t.effects.empty()) {
    for (const Effect& e : t.effects) db.rows[e.key] += e.delta;
    ctx_.checker->OnEffects(db.shard, t.effects, /*committed=*/true);
  }
  if (t.kind == Kind::kBranch) {
    // The branch's marker (inserted by its PREPARE batch) commits with it.
    if (t.marker) db.markers[t.xid.gid] = *t.marker;
    Trace("branch %s committed (%s)", t.xid.gid.substr(0, 8).c_str(), why);
    ctx_.checker->OnBranchEnded(db.shard, t.xid, true, t.xa_state == XaState::kPrepared, why);
  }
  EndTrx(id);
}

void SimServer::RollbackTrx(uint64_t id, const char* why) {
  Trx& t = trxs_.at(id);
  Db& db = dbs_[static_cast<size_t>(t.db)];
  for (const std::string& gid : t.inserted_decisions) {
    auto it = db.decisions.find(gid);
    if (it != db.decisions.end() && it->second.inserted_by == id) db.decisions.erase(it);
  }
  // Variant::kCommitBeforeDecision: writes made permanent at PREPARE stay — the planted flaw.
  if (!t.effects_applied && !t.effects.empty()) {
    ctx_.checker->OnEffects(db.shard, t.effects, /*committed=*/false);
  }
  if (t.kind == Kind::kBranch) {
    Trace("branch %s rolled back (%s)", t.xid.gid.substr(0, 8).c_str(), why);
    ctx_.checker->OnBranchEnded(db.shard, t.xid, false, t.xa_state == XaState::kPrepared, why);
  }
  EndTrx(id);
}

void SimServer::EndTrx(uint64_t id) {
  Trx& t = trxs_.at(id);
  for (const std::string& l : t.locks) {
    auto it = locks_.find(l);
    if (it != locks_.end() && it->second == id) locks_.erase(it);
  }
  if (!t.locks.empty()) ctx_.sched->NotifyAll(&lock_released_);
  if (t.conn != 0) {
    auto c = conns_.find(t.conn);
    if (c != conns_.end() && c->second.trx == id) c->second.trx = 0;
  }
  if (!t.xid_key.empty()) {
    auto x = xa_index_.find(t.xid_key);
    if (x != xa_index_.end() && x->second == id) xa_index_.erase(x);
  }
  trxs_.erase(id);
}

void SimServer::DeadlockVictim(uint64_t id) {
  ctx_.coverage->Add(Cov::kDeadlock);
  Trx& t = trxs_.at(id);
  if (!t.xa()) {
    // InnoDB rolls back the victim's whole transaction. A plain transaction's session is then
    // outside any transaction (variants with the old local decider; autocommit statements).
    RollbackTrx(id, "deadlock victim");
    return;
  }
  // An XA transaction is rolled back too, but stays attached in a rollback-only state: its
  // statements, XA END and PREPARE now fail with XA_RBDEADLOCK until XA ROLLBACK.
  if (!t.effects.empty()) {
    ctx_.checker->OnEffects(dbs_[static_cast<size_t>(t.db)].shard, t.effects, false);
  }
  t.effects.clear();
  for (const std::string& l : t.locks) {
    auto it = locks_.find(l);
    if (it != locks_.end() && it->second == id) locks_.erase(it);
  }
  t.locks.clear();
  for (const std::string& gid : t.inserted_decisions) {
    Db& db = dbs_[static_cast<size_t>(t.db)];
    auto it = db.decisions.find(gid);
    if (it != db.decisions.end() && it->second.inserted_by == id) db.decisions.erase(it);
  }
  t.inserted_decisions.clear();
  t.xa_state = XaState::kRollbackOnly;
  ctx_.sched->NotifyAll(&lock_released_);
}

bool SimServer::CanWait() const { return ctx_.sched->in_fiber() && !no_wait_; }

bool SimServer::WouldDeadlock(uint64_t requester, uint64_t holder) const {
  // Every transaction waits for at most one lock, so the waits-for graph is a set of chains.
  uint64_t cur = holder;
  for (int i = 0; i < 1000 && cur != 0; ++i) {
    if (cur == requester) return true;
    auto it = trxs_.find(cur);
    if (it == trxs_.end()) return false;
    cur = it->second.waits_for;
  }
  return false;
}

Status SimServer::Lock(uint64_t trx, const std::string& name) {
  const uint64_t gen = generation_;
  const int64_t give_up_at = ctx_.sched->now() + ctx_.lock_wait_timeout_ms;
  for (;;) {
    if (gen != generation_ || !up_) return Lost();  // the server crashed while we waited
    Trx* t = FindTrx(trx);
    if (t == nullptr) return Lost();
    auto it = locks_.find(name);
    if (it == locks_.end()) {
      locks_.emplace(name, trx);
      t->locks.push_back(name);
      return Status::OK();
    }
    if (it->second == trx) return Status::OK();
    if (auto c = conns_.find(t->conn);
        c != conns_.end() && c->second.kill_query && c->second.in_execute) {
      // KILL QUERY (a deadlock detector): only the statement is rolled back, as after a
      // lock-wait timeout; the transaction keeps its other locks until its client rolls back.
      c->second.kill_query = false;
      ctx_.coverage->Add(Cov::kDeadlockBroken);
      return Interrupted();
    }
    if (WouldDeadlock(trx, it->second)) {
      DeadlockVictim(trx);
      return Deadlock();
    }
    const int64_t left = give_up_at - ctx_.sched->now();
    // innodb_lock_wait_timeout: only the statement is rolled back (innodb_rollback_on_timeout
    // is off); the transaction keeps its other locks.
    if (left <= 0 || !CanWait()) {
      ctx_.coverage->Add(Cov::kLockWaitTimeout);
      return LockWaitTimeout();
    }
    if (name.find(":decision:") != std::string::npos) ctx_.coverage->Add(Cov::kFenceWaitedForLock);
    WaitEdge edge(this, trx, it->second);
    ctx_.sched->Wait(&lock_released_, left);
  }
}

int64_t SimServer::ReadValue(const Trx& t, int64_t key) const {
  const Db& db = dbs_[static_cast<size_t>(t.db)];
  auto it = db.rows.find(key);
  int64_t v = it == db.rows.end() ? 0 : it->second;
  if (!t.effects_applied) {
    for (const Effect& e : t.effects) {
      if (e.key == key) v += e.delta;
    }
  }
  return v;
}

uint64_t SimServer::ThreadOfTrx(const Trx& t) const {
  const uint64_t c = t.conn != 0 ? t.conn : t.dying_owner;
  if (c == 0) return 0;
  auto it = conns_.find(c);
  return it == conns_.end() ? 0 : it->second.thread_id;
}

std::vector<std::pair<uint64_t, int64_t>> SimServer::InnodbTrxThreads() {
  // information_schema.INNODB_TRX comes from a cache that InnoDB refreshes only if nobody on the
  // whole server read it in the last 100 ms: reads spaced closer keep getting the same old
  // snapshot. A snapshot from before a branch existed does not show its owner at all.
  const int64_t now = ctx_.sched->now();
  if (now - trx_cache_last_read_ >= kInnodbTrxCacheMs) {
    trx_cache_.clear();
    lock_wait_cache_.clear();
    for (const auto& [id, t] : trxs_) {
      trx_cache_.push_back({ThreadOfTrx(t), t.started_ms});
      if (t.waits_for == 0) continue;
      auto c = conns_.find(t.conn);
      auto h = trxs_.find(t.waits_for);
      if (c == conns_.end() || h == trxs_.end()) continue;
      lock_wait_cache_.push_back({c->second.thread_id, c->second.query_id, ThreadOfTrx(h->second)});
    }
  } else {
    ctx_.coverage->Add(Cov::kInnodbTrxCached);
  }
  trx_cache_last_read_ = now;
  return trx_cache_;
}

void SimServer::CheckDeployment(const Conn& c, const Trx& t, const char* what) {
  // Issue 7, case 1: XA RECOVER and XA COMMIT / ROLLBACK by XID are server-wide. A resolver of
  // one deployment must never finish another deployment's branch (nor another application's).
  const std::string& mine = DbOf(c).deployment;
  if (t.kind == Kind::kForeignXa) {
    ctx_.checker->Violation(std::string("deployment ") + mine.substr(0, 4) + " ran " + what +
                            " on another application's XA transaction " + t.raw.gtrid + " on " +
                            name_);
  } else if (t.kind == Kind::kBranch && t.xid.deployment != mine) {
    ctx_.checker->Violation(std::string("deployment ") + mine.substr(0, 4) + " ran " + what +
                            " on a branch of deployment " + t.xid.deployment.substr(0, 4) +
                            " (gid " + t.xid.gid.substr(0, 8) + ") on " + name_);
  }
}

// ---------------------------------------------------------------------------------------------
// Statements of a session

void SimServer::NoteLocalBegin(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return;
  c->seigo_local = true;
  c->seigo_opened = TrxOf(*c) != nullptr;
  c->closure_ended_trx = false;
}

uint64_t SimServer::TrxForStatement(uint64_t conn, const char* what) {
  Conn& c = conns_.at(conn);
  // Outside a transaction a statement opens a plain one (autocommit=0, the transaction
  // sessions' setting) or is its own transaction (autocommit=1). Invariant 6: seigo never means
  // a statement of its transaction to run in a transaction other than the one it began. That
  // happens only if the protocol kept using a session whose transaction the server had ended
  // (a deadlock rolls a local transaction back; the "poisoned attempt" rule forbids going on),
  // or if autocommit=1 leaked into a pooled session. After a closure's own transaction-ending
  // statement it is the closure's doing, and the atomicity checks judge the result.
  if (c.seigo_local && !c.closure_ended_trx && (c.seigo_opened || c.autocommit)) {
    ctx_.checker->Violation(std::string(what) + " ran outside the transaction seigo began on " +
                            name_ + "/" + DbOf(c).name +
                            (c.autocommit ? " (autocommit=1, left by an earlier user of the "
                                            "pooled session?)"
                                          : " (its transaction had ended: a deadlock?)"));
  }
  if (c.seigo_local) c.seigo_opened = true;
  return NewTrx(conn, c.db, Kind::kLocal).id;
}

Status SimServer::BeginBranch(uint64_t conn, const Xid& xid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  c->seigo_local = false;
  c->closure_ended_trx = false;
  if (TrxOf(*c) != nullptr) {
    return Status::QueryFailed("XAER_OUTSIDE: Some work is done outside global transaction (1400)");
  }
  const std::string key = XidKey(xid);
  if (xa_index_.count(key)) return Status::QueryFailed("XAER_DUPID: The XID already exists (1440)");
  Trx& t = NewTrx(conn, c->db, Kind::kBranch);
  t.xid = xid;
  t.xid_key = key;
  t.raw = RawXid{Xid::kFormatId, xid.Gtrid(), xid.Bqual()};
  xa_index_[key] = t.id;
  ctx_.checker->OnBranchStarted(DbOf(*c).shard, xid);
  return Status::OK();
}

Result<QueryResult> SimServer::Execute(uint64_t conn, const std::string& sql,
                                       const std::vector<Value>& params, ReplyFlags* flags) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  c->query_id = ++query_counter_;
  c->kill_query = false;
  Statement st;
  bool ok = false;
  if (sql == "ADD ? ? ? ?") {
    st.op = Statement::Op::kAdd;
    ok = IntParam(params, 0, &st.key) && IntParam(params, 1, &st.delta) &&
         IntParam(params, 2, &st.min) && IntParam(params, 3, &st.tag) && params.size() == 4;
  } else if (sql == "GET ?" || sql == "LGET ?") {
    st.op = sql == "GET ?" ? Statement::Op::kGet : Statement::Op::kLockingGet;
    ok = IntParam(params, 0, &st.key) && params.size() == 1;
  } else if (sql == "ENDTX ?") {
    st.op = Statement::Op::kEndTx;
    ok = IntParam(params, 0, &st.key) && params.size() == 1;
  } else if (sql == "SETTZ ?") {
    st.op = Statement::Op::kSetTz;
    ok = IntParam(params, 0, &st.key) && params.size() == 1;
  } else if (sql == "SETTS ?") {
    st.op = Statement::Op::kSetTs;
    ok = IntParam(params, 0, &st.key) && params.size() == 1;
  }
  if (!ok) {
    return Status(Code::kQueryFailed,
                  "You have an error in your SQL syntax near '" + sql + "' (1064)", 1064);
  }
  c->in_execute = true;  // until `done`
  Trx* t = TrxOf(*c);
  auto done = [&](Result<QueryResult> r) {
    if (auto it = conns_.find(conn); it != conns_.end()) it->second.in_execute = false;
    if (flags != nullptr) {
      Conn* cc = FindConn(conn);
      flags->in_transaction = cc != nullptr && TrxOf(*cc) != nullptr;
      flags->autocommit = cc != nullptr && cc->autocommit;
    }
    return r;
  };
  if (st.op == Statement::Op::kEndTx)
    return done(EndTransactionStatement(conn, static_cast<int>(st.key), flags));
  if (st.op == Statement::Op::kSetTz || st.op == Statement::Op::kSetTs) {
    // Session variables: accepted inside any transaction. The reply says the session state
    // changed (session_track_state_change), and the real adapter never pools such a session.
    if (st.op == Statement::Op::kSetTz) {
      c->tz_offset_ms = st.key * 3'600'000;
    } else {
      c->timestamp_ms = NowMs() + st.key;
    }
    if (flags != nullptr) flags->state_changed = true;
    return done(QueryResult{});
  }
  if (t != nullptr && t->xa() && t->xa_state == XaState::kPrepared) return done(RmFail());
  if (t != nullptr && t->xa() && t->xa_state == XaState::kRollbackOnly) return done(RbDeadlock());

  const bool autocommit = t == nullptr && c->autocommit;
  const uint64_t trx = t != nullptr ? t->id : TrxForStatement(conn, "a statement");
  Result<QueryResult> r = RunStatement(trx, st);
  if (autocommit && FindTrx(trx) != nullptr) {
    if (r.ok()) {
      CommitTrx(trx, "autocommit");
    } else {
      RollbackTrx(trx, "autocommit statement failed");
    }
  }
  return done(std::move(r));
}

Result<QueryResult> SimServer::EndTransactionStatement(uint64_t conn, int kind, ReplyFlags* flags) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t != nullptr && t->xa()) {
    // Inside an XA branch MariaDB refuses every statement that would end it: COMMIT, BEGIN,
    // SET autocommit=1 (fix_autocommit -> trans_commit -> trans_check), DDL, SET STATEMENT ..
    // FOR COMMIT, IF .. THEN COMMIT, whatever commits implicitly. Nothing changes.
    ctx_.coverage->Add(Cov::kClosureEndTxRefused);
    return RmFail();
  }
  // A local transaction (the decider's, a one-shard one) or none: the statement commits the
  // work so far.
  if (t != nullptr) {
    ctx_.coverage->Add(Cov::kClosureEndTxCommitted);
    Trace("%s on conn %llu commits its transaction (implicit commit)", EndTxName(kind),
          static_cast<unsigned long long>(conn));
    CommitTrx(t->id, EndTxName(kind));
    c = FindConn(conn);
  }
  c->closure_ended_trx = true;
  if (kind == 1) {
    NewTrx(conn, c->db, Kind::kLocal);  // BEGIN starts the next one
    c->seigo_opened = true;
  }
  if (kind == 2 && !c->autocommit) {
    c->autocommit = true;
    if (flags != nullptr) flags->state_changed = true;
  }
  return QueryResult{};
}

Result<QueryResult> SimServer::RunStatement(uint64_t trx, const Statement& st) {
  if (ctx_.faults->Fire(FaultSite::kDeadlock)) {
    DeadlockVictim(trx);
    return Deadlock();
  }
  if (ctx_.faults->Fire(FaultSite::kLockWaitTimeout)) {
    if (CanWait()) {
      const uint64_t gen = generation_;
      ctx_.sched->Sleep(ctx_.lock_wait_timeout_ms);
      if (gen != generation_ || !up_) return Lost();
    }
    ctx_.coverage->Add(Cov::kLockWaitTimeout);
    return LockWaitTimeout();
  }
  QueryResult q;
  Trx* t = FindTrx(trx);
  if (t == nullptr) return Lost();
  const Db& db = dbs_[static_cast<size_t>(t->db)];
  if (st.op == Statement::Op::kGet) {
    q.columns = {"v"};
    if (db.rows.count(st.key)) q.rows.push_back({std::to_string(ReadValue(*t, st.key))});
    q.affected_rows = q.rows.size();
    return q;
  }
  Status s = Lock(trx, RowLock(t->db, st.key));
  if (!s.ok()) return s;
  t = FindTrx(trx);
  if (t == nullptr) return Lost();
  if (st.op == Statement::Op::kLockingGet) {
    q.columns = {"v"};
    if (dbs_[static_cast<size_t>(t->db)].rows.count(st.key)) {
      q.rows.push_back({std::to_string(ReadValue(*t, st.key))});
    }
    q.affected_rows = q.rows.size();
    return q;
  }
  if (dbs_[static_cast<size_t>(t->db)].rows.count(st.key) == 0) return q;  // no such row
  if (ReadValue(*t, st.key) + st.delta >= st.min) {
    t->effects.push_back(Effect{st.key, st.delta, st.tag});
    q.affected_rows = 1;
  }
  return q;
}

Status SimServer::XaEndPrepare(uint64_t conn, const Xid& xid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t == nullptr || t->kind != Kind::kBranch || t->xid_key != XidKey(xid)) return Nota();
  if (t->xa_state == XaState::kRollbackOnly) return RbDeadlock();
  if (t->xa_state == XaState::kPrepared) return RmFail();
  // The batch "[SET @@session.timestamp=DEFAULT;] INSERT INTO seigo_branch (.., owner,
  // created_ms, ..) VALUES (.., CONNECTION_ID(), <kServerNowMs>, ..); XA END; XA PREPARE": the
  // marker is written inside the branch, so it is prepared, committed or rolled back with it.
  // On a session a closure changed, the session clock is reset first, so a closure's SET
  // timestamp cannot date the marker (it did before the simulator found it: sim/README.md,
  // "Found"); on any other session the reset changes nothing, so it is modelled always.
  c->timestamp_ms.reset();
  const int64_t created = SessionClockMs(*c);
  t->marker = Marker{c->thread_id, conn, created};
  // XA PREPARE: the branch is durable from here on (survives a crash, keeps its locks).
  t->xa_state = XaState::kPrepared;
  if (ctx_.variant == Variant::kCommitBeforeDecision && !t->effects.empty()) {
    for (const Effect& e : t->effects) DbOf(*c).rows[e.key] += e.delta;
    ctx_.checker->OnEffects(DbOf(*c).shard, t->effects, /*committed=*/true);
    t->effects_applied = true;
  }
  ctx_.checker->OnBranchPrepared(DbOf(*c).shard, t->xid);
  Trace("branch %s prepared", t->xid.gid.substr(0, 8).c_str());
  return Status::OK();
}

Status SimServer::Commit(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t == nullptr) return Status::OK();  // COMMIT outside a transaction does nothing
  if (t->kind == Kind::kBranch || t->kind == Kind::kForeignXa) return RmFail();
  CommitTrx(t->id, "COMMIT");
  return Status::OK();
}

Status SimServer::FailCommit(uint64_t conn, bool committed) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t != nullptr && (t->kind == Kind::kBranch || t->kind == Kind::kForeignXa)) return RmFail();
  // The COMMIT statement itself fails (a binlog write or fsync error, a replication ack
  // timeout): the client gets an error, yet whether the engine committed depends on where it
  // failed. Only the decision row, read through the fence, can tell.
  if (t != nullptr) {
    if (committed) {
      CommitTrx(t->id, "COMMIT that answered an error");
    } else {
      RollbackTrx(t->id, "COMMIT failed");
    }
  }
  ctx_.coverage->Add(committed ? Cov::kCommitErrorCommitted : Cov::kCommitErrorRolledBack);
  return Status(Code::kQueryFailed, "Got error 4 \"Interrupted system call\" during COMMIT (1180)",
                1180);
}

Status SimServer::InsertCommitDecision(uint64_t conn, const Decision& d) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  // The batch's SET @@session.timestamp=DEFAULT (the old adapter had none).
  if (ctx_.variant != Variant::kPoolTainted) c->timestamp_ms.reset();
  Trx* t = TrxOf(*c);
  if (t != nullptr && (t->kind == Kind::kBranch || t->kind == Kind::kForeignXa)) return RmFail();
  // INSERT ... VALUES (gid, IF(<kServerNowMs> < deadline, 'C', NULL), ...): past the deadline by
  // THIS server's clock the NULL fails the NOT NULL column (1048) before the row is looked up.
  const int64_t now = SessionClockMs(*c);
  if (zone_offset_ms_ != 0 || c->tz_offset_ms != 0) ctx_.coverage->Add(Cov::kDeciderCheckInDst);
  if (now >= d.deadline_ms) {
    ctx_.coverage->Add(Cov::kCommitRefusedDeadline);
    Trace("decider refused gid %s: its clock %lld >= deadline %lld", d.gid.substr(0, 8).c_str(),
          static_cast<long long>(now), static_cast<long long>(d.deadline_ms));
    return Status(Code::kAborted,
                  "Column 'outcome' cannot be null (1048): the decider's clock is past the "
                  "deadline",
                  1048);
  }
  // Invariant 13 (the deadline rule, by the server's true UTC clock): no commit row goes in
  // once the deadline has passed. Only a clock that is not UTC (Variant::kZoneClock) breaks it.
  if (NowMs() >= d.deadline_ms) {
    ctx_.checker->Violation("commit decision of gid " + d.gid.substr(0, 8) + " inserted on " +
                            name_ + " " + std::to_string(NowMs() - d.deadline_ms) +
                            " ms after its deadline by the server's UTC clock");
  }
  // Outside a transaction (after a closure's COMMIT, a leaked autocommit=1) the INSERT opens
  // a plain transaction or commits on its own.
  const bool autocommit = t == nullptr && c->autocommit;
  const uint64_t trx = t != nullptr ? t->id : TrxForStatement(conn, "the commit-point insert");
  Status s = Lock(trx, DecisionLock(c->db, d.gid));  // waits for an uncommitted insert of the gid
  if (!s.ok()) {
    if (autocommit && FindTrx(trx) != nullptr) RollbackTrx(trx, "autocommit statement failed");
    return s;
  }
  Trx* tx = FindTrx(trx);
  c = FindConn(conn);
  if (tx == nullptr || c == nullptr) return Lost();
  Db& db = DbOf(*c);
  auto it = db.decisions.find(d.gid);
  if (it != db.decisions.end() && ctx_.variant != Variant::kIgnoreDeadline) {
    if (autocommit) RollbackTrx(trx, "autocommit statement failed");
    ctx_.coverage->Add(Cov::kCommitRefusedFenced);
    return Status(Code::kAborted,
                  "Duplicate entry '" + d.gid +
                      "' for key 'PRIMARY' (1062): gid already has a "
                      "decision (fenced)",
                  1062);
  }
  // Variant::kIgnoreDeadline: the commit insert overwrites an existing row (REPLACE INTO).
  DecisionRow& row = db.decisions[d.gid];
  row.d = d;
  row.d.outcome = Outcome::kCommit;
  row.inserted_by = trx;
  row.how = it != db.decisions.end() ? "commit point, overwriting a fence" : "commit point";
  tx->inserted_decisions.push_back(d.gid);
  if (autocommit) CommitTrx(trx, "autocommit");
  return Status::OK();
}

Status SimServer::XaCommit(uint64_t conn, const Xid& xid) { return XaFinishByXid(conn, xid, true); }
Status SimServer::XaRollback(uint64_t conn, const Xid& xid) {
  return XaFinishByXid(conn, xid, false);
}

Status SimServer::XaFinishByXid(uint64_t conn, const Xid& xid, bool commit) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  auto it = xa_index_.find(XidKey(xid));
  if (it == xa_index_.end()) return Nota();
  Trx& t = trxs_.at(it->second);
  // The MariaDB trap: a branch owned by another live connection is invisible to XA COMMIT.
  if (t.conn != 0 && t.conn != conn) {
    ctx_.coverage->Add(Cov::kNotaLiveOwner);
    return Nota();
  }
  if (commit && t.xa_state != XaState::kPrepared) return RmFail();
  if (!commit && t.xa_state == XaState::kActive) return RmFail();  // XA END first
  const bool by_owner = t.conn == conn;
  if (!by_owner) CheckDeployment(*c, t, commit ? "XA COMMIT" : "XA ROLLBACK");
  if (!by_owner && t.dying_owner != 0) {
    // The limbo branch (doc/limbo-branch.md): the owner's teardown has detached the XID, so this
    // connection acquires it, binlogs the commit and deletes the XID, but InnoDB's
    // commit_by_xid only finds recovered trxs and this one is not yet: it does nothing, and the
    // server answers OK anyway. The branch stays prepared with its locks, out of XA RECOVER.
    t.limbo = true;
    xa_index_.erase(it);
    ctx_.coverage->Add(Cov::kLimboCreated);
    Trace(
        "%s of branch %s during its owner's teardown: OK, but the branch stays prepared "
        "(limbo)",
        commit ? "XA COMMIT" : "XA ROLLBACK", t.xid.gid.substr(0, 8).c_str());
    if (t.kind == Kind::kBranch) {
      ctx_.checker->OnBranchLimbo(dbs_[static_cast<size_t>(t.db)].shard, t.xid, commit);
    }
    return Status::OK();
  }
  if (commit) {
    if (!by_owner) ctx_.coverage->Add(Cov::kResolverCommitted);
    CommitTrx(t.id, by_owner ? "XA COMMIT by owner" : "XA COMMIT");
  } else {
    if (!by_owner) ctx_.coverage->Add(Cov::kResolverRolledBack);
    RollbackTrx(t.id, by_owner ? "XA ROLLBACK by owner" : "XA ROLLBACK");
  }
  return Status::OK();
}

Status SimServer::Rollback(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  if (Trx* t = TrxOf(*c)) RollbackTrx(t->id, t->xa() ? "XA ROLLBACK by owner" : "ROLLBACK");
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Statements of recovery

Result<std::vector<RawXid>> SimServer::XaRecover(uint64_t conn) {
  if (FindConn(conn) == nullptr) return Lost();
  std::vector<RawXid> out;
  for (const auto& [id, t] : trxs_) {
    // XA RECOVER is server-wide: every database's and every application's prepared branches,
    // owned by a live connection or not. Not a limbo branch: its XID is gone from the cache.
    if (!t.xa() || t.xa_state != XaState::kPrepared || t.limbo) continue;
    // Variant::kNotaIsDone: owned branches are hidden.
    if (ctx_.variant == Variant::kNotaIsDone && t.conn != 0) continue;
    out.push_back(t.raw);
  }
  return out;
}

Result<std::optional<Decision>> SimServer::SelectDecision(uint64_t conn, const std::string& gid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  const Db& db = DbOf(*c);
  auto it = db.decisions.find(gid);
  // A consistent read: an uncommitted insert is invisible (and does not block).
  if (it == db.decisions.end() || it->second.inserted_by != 0) return std::optional<Decision>();
  return std::optional<Decision>(it->second.d);
}

Result<Outcome> SimServer::FenceInsert(uint64_t conn, const Decision& d, bool by_coordinator) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  // The time condition is evaluated by this server's clock (participant.h, FenceAbort):
  //   coordinator: only until deadline + kFenceWindowMs (rows may be GC'd after);
  //   resolver: writes only in [deadline, deadline + kFenceWindowMs). Outside it the real
  //   participant fails the insert (1048) and does a locking read instead, which waits for an
  //   uncommitted insert like the insert would: so the lock path below is the same.
  // NOW() and UTC_TIMESTAMP() are fixed at the statement's start: the conditions are judged
  // now, the row may go in after a lock wait.
  const int64_t now = SessionClockMs(*c);
  const int64_t utc = NowMs();
  if (zone_offset_ms_ != 0) ctx_.coverage->Add(Cov::kDeciderCheckInDst);
  if (by_coordinator && now >= d.deadline_ms + kFenceWindowMs) {
    ctx_.coverage->Add(Cov::kFenceBusy);
    return Status::Busy("too long after the deadline to fence");
  }
  const bool past_deadline = now >= d.deadline_ms || ctx_.variant == Variant::kIgnoreDeadline;
  const bool may_write = by_coordinator || (past_deadline && now < d.deadline_ms + kFenceWindowMs);
  if (TrxOf(*c) != nullptr) return RmFail();
  const int db_id = c->db;
  const uint64_t trx = NewTrx(conn, db_id, Kind::kLocal).id;  // an autocommit INSERT
  // An uncommitted insert of the same gid (a live decider at its commit point) holds the row
  // lock: wait for it to commit (then: duplicate key) or roll back (then: our row goes in).
  Status s = Lock(trx, DecisionLock(db_id, d.gid));
  if (!s.ok()) {
    if (FindTrx(trx) != nullptr) RollbackTrx(trx, "fence failed");
    if (s.Is(Code::kConflict)) {
      ctx_.coverage->Add(Cov::kFenceBusy);
      return Status::Busy("a live decider holds the decision row lock (commit in progress)");
    }
    return s;
  }
  Db& db = dbs_[static_cast<size_t>(db_id)];
  auto it = db.decisions.find(d.gid);
  if (it != db.decisions.end()) {
    const Outcome o = it->second.d.outcome;  // 1062, then SELECT outcome: the decision is final
    ctx_.coverage->Add(Cov::kFenceFoundDecision);
    RollbackTrx(trx, "fence found a decision");
    return o;
  }
  if (!may_write) {
    RollbackTrx(trx, "fence outside the window");
    if (!past_deadline) {
      ctx_.coverage->Add(Cov::kFenceBusy);
      return Status::Busy("the deadline has not passed by the decider's clock");
    }
    return Outcome::kAbort;  // past the window, no row: none can be written any more
  }
  if (ctx_.variant == Variant::kNoFence) {
    RollbackTrx(trx, "no_fence variant");
    return Outcome::kAbort;  // the planted flaw: "aborted", yet nothing stops a late commit
  }
  // Invariant 13 (the fence rules, by the server's true UTC clock when the statement began): a
  // resolver never fences before the deadline, and nobody writes a row past the fence window.
  if (!by_coordinator && utc < d.deadline_ms && ctx_.variant != Variant::kIgnoreDeadline) {
    ctx_.checker->Violation("a resolver fenced gid " + d.gid.substr(0, 8) + " on " + name_ + " " +
                            std::to_string(d.deadline_ms - utc) +
                            " ms BEFORE its deadline by the server's UTC clock");
  }
  if (utc >= d.deadline_ms + kFenceWindowMs) {
    ctx_.checker->Violation("a fence of gid " + d.gid.substr(0, 8) + " was written on " + name_ +
                            " " + std::to_string(utc - d.deadline_ms - kFenceWindowMs) +
                            " ms after the fence window closed (UTC)");
  }
  DecisionRow& row = db.decisions[d.gid];
  row.d = d;
  row.d.outcome = Outcome::kAbort;
  row.inserted_by = trx;
  row.how = by_coordinator ? "coordinator fence" : "resolver fence";
  ctx_.coverage->Add(by_coordinator ? Cov::kFenceCoordinator : Cov::kFenceResolver);
  trxs_.at(trx).inserted_decisions.push_back(d.gid);
  CommitTrx(trx, "autocommit");
  return Outcome::kAbort;
}

Result<std::vector<BranchTrace>> SimServer::SelectMarkers(uint64_t conn,
                                                          const std::vector<std::string>& gids) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  const int db_id = c->db;
  const Db& db = dbs_[static_cast<size_t>(db_id)];
  std::vector<BranchTrace> out;
  for (const std::string& g : gids) {
    BranchTrace tr = db.markers.count(g) ? BranchTrace::kCommitted : BranchTrace::kNone;
    for (const auto& [id, t] : trxs_) {
      // READ UNCOMMITTED: an open branch of this database with a marker (prepared, or in limbo:
      // XA RECOVER does not list it, but its marker is there) is kOpen.
      if (t.db == db_id && t.kind == Kind::kBranch && t.marker && t.xid.gid == g) {
        tr = BranchTrace::kOpen;
      }
    }
    out.push_back(tr);
  }
  return out;
}

Result<MarkerRead> SimServer::ReadMarker(uint64_t conn, const std::string& gid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  const int db_id = c->db;
  const Db& db = dbs_[static_cast<size_t>(db_id)];
  MarkerRead m;
  std::optional<Marker> mk;
  auto committed = db.markers.find(gid);
  if (committed != db.markers.end()) {
    m.committed = true;
    mk = committed->second;
  } else {
    for (const auto& [id, t] : trxs_) {
      if (t.db == db_id && t.kind == Kind::kBranch && t.marker && t.xid.gid == gid) mk = t.marker;
    }
  }
  if (mk) {
    m.present = true;
    m.owner = mk->owner;
    m.created_ms = mk->created_ms;
    for (const auto& [id, cc] : conns_) {
      if (cc.in_processlist && cc.thread_id == mk->owner && id != mk->owner_conn) {
        m.sim_owner_id_reused = true;
      }
    }
    m.sim_owner_here = conns_.count(mk->owner_conn) != 0;
    // src/mariadb: tied by a transaction that began before the marker (whole seconds, +1 s).
    for (const auto& [th, started] : InnodbTrxThreads()) {
      m.owner_attached |=
          th == mk->owner && th != 0 && started / 1000 <= mk->created_ms / 1000 + 1;
    }
    for (const auto& [id, cc] : conns_) {
      if (!cc.in_processlist || cc.thread_id != mk->owner) continue;
      m.owner_connected = true;
      m.owner_idle_s = std::max(m.owner_idle_s, (NowMs() - cc.last_command_ms) / 1000);
    }
  }
  // src/mariadb reads kServerNowMs and UPTIME (whole seconds) here.
  m.now_ms = SessionClockMs(*c);
  m.uptime_s = std::max<int64_t>(0, NowMs() - start_ms_) / 1000;
  return m;
}

Result<std::optional<int64_t>> SimServer::OldestTrxStartMs(uint64_t conn) {
  if (FindConn(conn) == nullptr) return Lost();
  std::optional<int64_t> oldest;
  for (const auto& [id, t] : trxs_) {
    if (!oldest || t.started_ms < *oldest) oldest = t.started_ms;
  }
  return oldest;
}

Status SimServer::DeleteMarkers(uint64_t conn, const std::vector<std::string>& gids) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  for (const std::string& g : gids) DbOf(*c).markers.erase(g);
  return Status::OK();
}

Result<std::vector<Decision>> SimServer::SelectExpired(uint64_t conn, int64_t retention_ms,
                                                       size_t limit) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  const int64_t now = SessionClockMs(*c);
  std::vector<Decision> out;
  for (const auto& [gid, row] : DbOf(*c).decisions) {
    if (row.inserted_by == 0 && row.d.deadline_ms < now - retention_ms) out.push_back(row.d);
  }
  std::sort(out.begin(), out.end(), [](const Decision& a, const Decision& b) {
    return std::tie(a.deadline_ms, a.gid) < std::tie(b.deadline_ms, b.gid);
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

Status SimServer::DeleteDecisions(uint64_t conn, const std::vector<std::string>& gids) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Db& db = DbOf(*c);
  for (const std::string& gid : gids) {
    auto it = db.decisions.find(gid);
    if (it == db.decisions.end() || it->second.inserted_by != 0) continue;
    // Invariant 13 (retention, by the server's true UTC clock): a row lives at least
    // kMinDecisionRetentionMs past its deadline, so that no write concerning it lands after it
    // is gone (participant.h). A clock running ahead (Variant::kZoneClock) collects too early.
    // (Less 1 s: NTP may step the clock back that much between the list and this delete.)
    const int64_t keep_until = it->second.d.deadline_ms + kMinDecisionRetentionMs - 1000;
    if (NowMs() < keep_until) {
      ctx_.checker->Violation("decision row of gid " + gid.substr(0, 8) + " collected on " + name_ +
                              " " + std::to_string(keep_until - NowMs()) +
                              " ms before its minimum retention ended (UTC)");
    }
    db.decisions.erase(it);
    ctx_.coverage->Add(Cov::kDecisionCollected);
    for (const auto& [id, t] : trxs_) {
      if (t.started_ms < NowMs() - kMinDecisionRetentionMs && t.kind == Kind::kLocal &&
          t.db == foreign_db_) {
        ctx_.coverage->Add(Cov::kGcWithForeignSnapshot);
        break;
      }
    }
    Trace("decision %s forgotten", gid.substr(0, 8).c_str());
    ctx_.checker->OnDecisionForgotten(db.deployment, db.shard, gid);
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Other clients

void SimServer::OpenForeignSnapshot() {
  keep_foreign_snapshot_ = true;
  if (!up_) return;
  // mysqldump --single-transaction of another database: START TRANSACTION WITH CONSISTENT
  // SNAPSHOT, then long reads. An open InnoDB transaction that holds no seigo lock.
  Result<uint64_t> conn = Connect(kForeignProcess, foreign_db_, true);
  if (!conn.ok()) return;
  NewTrx(*conn, foreign_db_, Kind::kLocal);
  Trace("foreign consistent snapshot open (mysqldump --single-transaction)");
}

void SimServer::RunForeignXa(int64_t hold_ms) {
  if (!up_) return;
  Result<uint64_t> conn = Connect(kForeignProcess, foreign_db_, false);
  if (!conn.ok()) return;
  // Another application's XA transaction (formatID 1, its own gtrid): XA RECOVER lists it to
  // every client of the server, seigo's resolvers included, which must leave it alone.
  Trx& t = NewTrx(*conn, foreign_db_, Kind::kForeignXa);
  t.raw = RawXid{1, "app-" + std::to_string(t.id), ""};
  t.xid_key = "foreign:" + t.raw.gtrid;
  t.xa_state = XaState::kPrepared;
  xa_index_[t.xid_key] = t.id;
  const uint64_t c = *conn, trx = t.id, gen = generation_;
  ctx_.sched->At(ctx_.sched->now() + hold_ms, [this, c, trx, gen] {
    if (gen != generation_) return;
    if (FindTrx(trx) != nullptr) EndTrx(trx);  // XA COMMIT by its owner
    auto it = conns_.find(c);
    if (it != conns_.end()) {
      it->second.trx = 0;
      it->second.client_gone = true;
      NoticeDisconnect(c);
    }
  });
}

void SimServer::CloseForeign() {
  keep_foreign_snapshot_ = false;
  std::vector<uint64_t> ids;
  for (const auto& [id, c] : conns_) {
    if (c.process == kForeignProcess && !c.tearing_down) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    Conn& c = conns_.at(id);
    if (Trx* t = TrxOf(c)) {
      if (t->kind == Kind::kForeignXa) {
        EndTrx(t->id);
      } else {
        RollbackTrx(t->id, "foreign client done");
      }
    }
    c.trx = 0;
    c.client_gone = true;
    NoticeDisconnect(id);
  }
}

// ---------------------------------------------------------------------------------------------
// Faults and inspection

void SimServer::Crash(bool silent) {
  if (!up_) return;
  Trace(silent ? "CRASH (host: no FIN to the clients)" : "CRASH");
  if (silent) {
    for (const auto& [id, c] : conns_) silent_dead_.insert(id);
  }
  // kill -9. With innodb_flush_log_at_trx_commit=1 and sync_binlog=1, what was committed or
  // prepared is on disk; everything else is gone.
  up_ = false;
  ++generation_;
  std::vector<uint64_t> ids;
  for (const auto& [id, t] : trxs_) ids.push_back(id);
  for (uint64_t id : ids) {
    Trx& t = trxs_.at(id);
    if (t.kind == Kind::kBranch && t.xa_state == XaState::kPrepared) {
      // Crash recovery finds the prepared branch ("Found 1 prepared XA transactions"), re-takes
      // its locks, and leaves it for anyone to XA COMMIT / ROLLBACK — a limbo branch too: its
      // XID goes back into the XID cache, so XA RECOVER lists it again.
      t.conn = 0;
      t.dying_owner = 0;
      t.waits_for = 0;
      if (t.limbo) {
        t.limbo = false;
        xa_index_[t.xid_key] = id;
        ctx_.coverage->Add(Cov::kLimboRecovered);
        if (t.kind == Kind::kBranch) {
          ctx_.checker->OnLimboRecovered(dbs_[static_cast<size_t>(t.db)].shard, t.xid);
        }
      }
      ctx_.coverage->Add(Cov::kPreparedSurvivedCrash);
    } else if (t.kind == Kind::kForeignXa) {
      EndTrx(id);  // the other application's own recovery finishes it after the restart
    } else {
      RollbackTrx(id, "server crash");
    }
  }
  conns_.clear();
  trx_cache_.clear();
  lock_wait_cache_.clear();
  trx_cache_last_read_ = INT64_MIN / 2;
  for (Db& db : dbs_) {  // MEMORY tables
    db.waiters.clear();
    db.lockwait_clock = INT64_MIN / 2;
    db.lockwait_fresh = false;
    db.lockwait_edges.clear();
  }
  ctx_.sched->NotifyAll(&lock_released_);  // waiters wake and see the generation change
}

void SimServer::Restart() {
  if (up_) return;
  Trace("restarted");
  up_ = true;
  start_ms_ = NowMs();
  thread_counter_ = 0;                                // CONNECTION_ID()s start again from 1
  if (keep_foreign_snapshot_) OpenForeignSnapshot();  // the dump job starts over
}

size_t SimServer::prepared_count() const {
  size_t n = 0;
  for (const auto& [id, t] : trxs_)
    n += t.kind == Kind::kBranch && t.xa_state == XaState::kPrepared;
  return n;
}

size_t SimServer::lingering_connections() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += (c.client_gone || c.tearing_down) ? 1 : 0;
  return n;
}

std::vector<DbFinalState> SimServer::DbFinalStates() const {
  std::vector<DbFinalState> out;
  for (const Db& db : dbs_) {
    if (db.deployment.empty()) continue;
    DbFinalState s;
    s.deployment = db.deployment;
    s.shard = db.shard;
    s.server = index_;
    s.rows = db.rows;
    for (const auto& [gid, row] : db.decisions) {
      if (row.inserted_by == 0) s.decisions[gid] = row.d;
    }
    out.push_back(std::move(s));
  }
  return out;
}

ServerFinalState SimServer::FinalState() const {
  ServerFinalState s;
  s.index = index_;
  for (const auto& [id, t] : trxs_) {
    if (t.kind == Kind::kBranch && t.xa_state == XaState::kPrepared) s.prepared.push_back(t.xid);
    if (t.kind == Kind::kForeignXa) s.foreign_prepared++;
    s.limbo += t.limbo;
  }
  s.locks_held = locks_.size();
  s.connections = conns_.size();
  return s;
}

// ---------------------------------------------------------------------------------------------
// SimSession: the client side

SimSession::~SimSession() {
  if (!broken_) server_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/true));
}

void SimSession::Break() {
  broken_ = true;
  server_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/false));
}

template <typename F>
auto SimSession::Call(F f, std::function<void()> late_now, std::function<void()> late_at_notice)
    -> decltype(f(static_cast<SimServer*>(nullptr), uint64_t{0})) {
  using R = decltype(f(static_cast<SimServer*>(nullptr), uint64_t{0}));
  SimServer* server = server_;
  const uint64_t conn = conn_;
  // Captures only values and the server (which outlives every session): a late request may run
  // after this session object is gone.
  auto op = [f, server, conn]() mutable -> R { return f(server, conn); };

  net_->BeforeRoundTrip(process_, server_->index());
  if (broken_) return R(Status(Code::kUnavailable, "MySQL server has gone away (2006)", 2006));
  net_->OneWayDelay();  // the request travels
  if (!server_->Alive(conn_)) {
    broken_ = true;  // the server restarted (or killed us): this connection no longer exists
    coverage_->Add(Cov::kStaleConnection);
    ++*stale_calls_;
    return R(Lost());
  }
  switch (net_->PickDelivery()) {
    case Network::Delivery::kNormal:
      break;
    case Network::Delivery::kLostBefore:
      Break();
      coverage_->Add(Cov::kRequestLost);
      return R(Lost());
    case Network::Delivery::kLostAfter: {
      R ignored = op();
      (void)ignored;
      coverage_->Add(Cov::kRequestLost);
      if (!server_->Alive(conn_)) {
        broken_ = true;
      } else {
        Break();
      }
      return R(Lost());
    }
    case Network::Delivery::kLate: {
      broken_ = true;
      if (late_now) server_->RunWithoutWaiting(late_now);
      std::function<void()> later = late_at_notice;
      if (!later) later = [op]() mutable { (void)op(); };
      server_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/false), std::move(later));
      net_->ClientReadTimeout();
      return R(Status(Code::kUnavailable,
                      "read timeout: Lost connection to server during query (2013)", 2013));
    }
  }
  R r = op();
  net_->OneWayDelay();  // the reply travels
  if (!server_->Alive(conn_)) {
    broken_ = true;  // the server crashed before the reply left: whatever it did stays done
    return R(Lost());
  }
  net_->AfterRoundTrip(process_);
  return r;
}

bool SimSession::IdleAndAlive() const { return !broken_ && !server_->ClosedVisibly(conn_); }

Status SimSession::BeginLocal() {
  // As src/mariadb: no round trip. The session runs autocommit=0; its first statement opens the
  // transaction.
  if (broken_) return Status::Unavailable("connection already lost");
  server_->NoteLocalBegin(conn_);
  in_tx_ = true;
  local_ = true;
  opened_ = false;
  return Status::OK();
}

Status SimSession::BeginBranch(const Xid& xid) {
  Status s = Call([xid](SimServer* sh, uint64_t c) { return sh->BeginBranch(c, xid); });
  if (s.ok()) {
    in_tx_ = true;
    local_ = false;
  }
  return s;
}

Result<QueryResult> SimSession::Execute(std::string_view sql, std::span<const Value> params) {
  std::string q(sql);
  std::vector<Value> p(params.begin(), params.end());
  const Variant v = server_->variant();
  const bool old_adapter = v == Variant::kPoolTainted;  // no classifier, no flag checks
  if (in_tx_ && q == "ENDTX ?" && !old_adapter && v != Variant::kNoClassifier) {
    // src/mariadb's ForbiddenInTransaction, an allowlist: COMMIT, BEGIN, SET autocommit, DDL
    // (kinds 0-3) and the statements that carry one (kind 4: SET STATEMENT ... FOR COMMIT,
    // IF ... THEN COMMIT; END IF, SET PASSWORD) are refused before they reach the server.
    coverage_->Add(Cov::kClosureEndTxRefused);
    return Status::InvalidArgument(
        "ENDTX is not allowed inside a seigo transaction: it would "
        "end or implicitly commit the transaction");
  }
  auto flags = std::make_shared<ReplyFlags>();
  // Listed for the process's deadlock detector while it runs (src/mariadb's InFlight).
  const bool listed = inflight_ != nullptr && tag_ != nullptr && inflight_->clock;
  if (listed) {
    inflight_->running[this] = LocalWait{server_->ThreadIdOf(conn_), inflight_->clock(), tag_};
  }
  struct Unlist {
    SimInFlight* f;
    const void* key;
    ~Unlist() {
      if (f != nullptr) f->running.erase(key);
    }
  } unlist{listed ? inflight_.get() : nullptr, this};
  Result<QueryResult> r =
      Call([q, p, flags](SimServer* sh, uint64_t c) { return sh->Execute(c, q, p, flags.get()); });
  if (!r.ok()) {
    if (r.status().server_errno() == kErRmFail && in_tx_ && !local_) {
      // As src/mariadb: the server refused, inside the XA branch, a statement that would end
      // it. Nothing was committed; not retryable.
      return Status(Code::kInvalidArgument,
                    "statement not allowed inside a seigo transaction (it would end the "
                    "transaction): " +
                        q + ": " + r.status().message(),
                    r.status().server_errno());
    }
    return r;
  }
  // The reply's status flags (src/mariadb, MariaSession::Execute): changed session state
  // taints the session (never pooled again); a local transaction that was open and is no
  // longer, or autocommit switched on, means a statement ended it behind the classifier's back:
  // the attempt must not go on. The old adapter (Variant::kPoolTainted) did neither.
  if (old_adapter) return r;
  if (flags->state_changed) {
    if (!tainted_) coverage_->Add(Cov::kSessionTainted);
    tainted_ = true;
  }
  if (in_tx_ && local_) {
    if (flags->in_transaction) {
      opened_ = true;
    } else if (opened_ || flags->autocommit) {
      tainted_ = true;
      broken_ = true;
      server_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/true));
      coverage_->Add(Cov::kEndedBehindClassifier);
      return Status::Internal("the transaction was ended by: " + q +
                              " (seigo refuses statements that end a transaction; this one "
                              "slipped through)");
    }
  }
  return r;
}

Status SimSession::Prepare(const Xid& xid) {
  return Call([xid](SimServer* sh, uint64_t c) { return sh->XaEndPrepare(c, xid); });
}

Status SimSession::CommitBatch(std::function<Status(SimServer*, uint64_t)> insert,
                               bool multi_shard) {
  // One batch: "[SET timestamp=DEFAULT; INSERT INTO seigo_decision ...;] COMMIT". The server
  // stops the batch at the first error, so a refused INSERT never reaches the COMMIT (the
  // caller then rolls back). If the client gives up while the batch is in flight, either the
  // server has run the INSERT already (it holds the row lock, uncommitted) and gets to the
  // COMMIT later — or the batch is cut when it notices the disconnect, and the INSERT is rolled
  // back — or the whole batch reaches the server only later (after the coordinator may have
  // fenced). And the COMMIT statement may itself answer an error, committed or not.
  const Network::CommitFailure failure = net_->PickCommitFailure();
  auto batch = [insert, failure](SimServer* sh, uint64_t c) -> Status {
    if (insert) {
      Status st = insert(sh, c);
      if (!st.ok()) return st;
    }
    if (failure != Network::CommitFailure::kNone) {
      return sh->FailCommit(c, failure == Network::CommitFailure::kErrorButCommitted);
    }
    return sh->Commit(c);
  };
  SimServer* server = server_;
  const uint64_t conn = conn_;
  std::function<void()> late_now, late_at_notice;
  if (insert) {
    switch (net_->LateBatchShape()) {
      case Network::LateBatch::kInsertNowCommitLater: {
        auto inserted = std::make_shared<bool>(false);
        late_now = [server, conn, insert, inserted] { *inserted = insert(server, conn).ok(); };
        late_at_notice = [server, conn, inserted] {
          if (*inserted) (void)server->Commit(conn);
        };
        break;
      }
      case Network::LateBatch::kInsertNowCut:
        late_now = [server, conn, insert] { (void)insert(server, conn); };
        late_at_notice = [] {};  // cut: the disconnect rolls the INSERT back
        break;
      case Network::LateBatch::kAllLater:
        break;  // the default: the whole batch when the server gets to it
    }
  }
  Status s = Call(batch, late_now, late_at_notice);
  if (s.ok()) {
    in_tx_ = false;
    local_ = false;
    return s;
  }
  if (s.Is(Code::kUnavailable)) {
    if (multi_shard) coverage_->Add(Cov::kCommitReplyLost);
    return s;
  }
  if (s.server_errno() == 1180) {
    // src/mariadb: the COMMIT itself answered an error, after the INSERT went in. Whether it
    // committed is not ours to assume: kOutcomeUnknown, and the session is dropped.
    // Variant::kCommitErrorIsAbort: the old code took it for "not committed".
    if (server_->variant() == Variant::kCommitErrorIsAbort) return s;
    in_tx_ = false;
    broken_ = true;
    server_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/true));
    return Status(Code::kOutcomeUnknown, "the commit failed: " + s.message(), 1180);
  }
  return s;
}

Status SimSession::CommitLocal() { return CommitBatch(nullptr, /*multi_shard=*/false); }

Status SimSession::CommitWithDecision(const Decision& d) {
  return CommitBatch([d](SimServer* sh, uint64_t c) { return sh->InsertCommitDecision(c, d); },
                     /*multi_shard=*/true);
}

Status SimSession::CommitPrepared(const Xid& xid) {
  Status s = Call([xid](SimServer* sh, uint64_t c) { return sh->XaCommit(c, xid); });
  if (s.ok()) in_tx_ = false;
  return s;
}

Status SimSession::RollbackAll(const Xid* xid, bool prepared) {
  (void)xid;
  (void)prepared;
  if (!in_tx_) return Status::OK();  // as the real participant: nothing open on our side
  Status s = Call([](SimServer* sh, uint64_t c) { return sh->Rollback(c); });
  if (s.ok()) {
    in_tx_ = false;
    local_ = false;
  } else if (!broken_) {
    Break();  // unknown state: close it; the server discards what is not prepared
  }
  // Variant::kReadOnlyIgnoresLostLocks: the rollback's failure is not reported — what the core
  // did with it before (a read-only attempt committed although its locks were gone).
  if (!s.ok() && local_ && server_->variant() == Variant::kReadOnlyIgnoresLostLocks) {
    return Status::OK();
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// SimParticipant (mirrors src/mariadb/mariadb_participant.cc)

Result<std::unique_ptr<SimSession>> SimParticipant::AcquireFrom(Pool* pool, bool transactional,
                                                                bool* reused) {
  while (!pool->empty()) {
    std::unique_ptr<SimSession> s = std::move(pool->back());
    pool->pop_back();
    // Connections made before a connection of this shard was found dead are suspect (the
    // server may have restarted): drop them instead of failing a transaction on each.
    // Variant::kNoPoolFlush: the old pool, which handed out every one of them.
    if (server_->variant() != Variant::kNoPoolFlush) {
      if (s->generation() < generation_) {
        server_->coverage()->Add(Cov::kPoolFlushed);
        continue;  // its destructor closes the connection
      }
      // A connection whose server went away while it sat idle shows an EOF: drop it, and every
      // idle one made before it (the server restarted), before a transaction fails on it.
      if (!s->IdleAndAlive()) {
        server_->coverage()->Add(Cov::kPoolFlushed);
        ++generation_;
        continue;
      }
    }
    if (reused != nullptr) *reused = true;
    return s;
  }
  if (reused != nullptr) *reused = false;
  net_->BeforeRoundTrip(process_, server_->index());
  net_->OneWayDelay();
  Result<uint64_t> conn = server_->Connect(process_, db_, /*autocommit=*/!transactional);
  net_->OneWayDelay();
  if (!conn.ok()) return conn.status();
  auto s = std::make_unique<SimSession>(server_, net_, process_, *conn, transactional,
                                        generation_, &stale_calls_);
  if (transactional) s->TrackIn(inflight_);
  return s;
}

void SimParticipant::ReleaseTo(Pool* pool, std::unique_ptr<SimSession> s) {
  if (s == nullptr) return;
  s->SetWaitTag(nullptr);
  if (s->Broken()) {
    ++generation_;  // see AcquireFrom
    return;
  }
  // Only clean sessions go back: one still inside a transaction (or owning a prepared branch)
  // is closed, and closing is what lets the server detach a prepared branch; one whose session
  // state a caller changed is closed too. (Variant::kPoolTainted: the old adapter never noticed
  // a change, so nothing is tainted and such sessions go back.)
  if (!s->clean()) return;
  if (pool->size() < kMaxIdle) pool->push_back(std::move(s));
}

Result<std::unique_ptr<Session>> SimParticipant::Acquire() {
  Result<std::unique_ptr<SimSession>> s = AcquireFrom(&idle_, /*transactional=*/true, nullptr);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Session>(std::move(*s));
}

void SimParticipant::Release(std::unique_ptr<Session> session) {
  ReleaseTo(&idle_, std::unique_ptr<SimSession>(static_cast<SimSession*>(session.release())));
}

template <typename F>
auto SimParticipant::WithSession(F f) -> decltype(f(std::declval<SimSession&>())) {
  using R = decltype(f(std::declval<SimSession&>()));
  for (int round = 0;; ++round) {
    bool reused = false;
    Result<std::unique_ptr<SimSession>> s = AcquireFrom(&idle_recovery_, false, &reused);
    if (!s.ok()) return R(s.status());
    std::unique_ptr<SimSession> session = std::move(*s);
    R r = f(*session);
    const bool retry =
        round == 0 && reused && r.status().Is(Code::kUnavailable) && session->Broken();
    ReleaseTo(&idle_recovery_, std::move(session));
    if (retry) {
      server_->coverage()->Add(Cov::kRecoveryRetriedFresh);
      continue;
    }
    return r;
  }
}

namespace {
// A Status in the shape of a Result, for WithSession.
struct StatusBox {
  Status s;
  const Status& status() const { return s; }
};
}  // namespace

Result<std::vector<Xid>> SimParticipant::RecoverPrepared() {
  Result<std::vector<RawXid>> raw = WithSession([](SimSession& s) {
    return s.Call([](SimServer* sh, uint64_t c) { return sh->XaRecover(c); });
  });
  if (!raw.ok()) return raw.status();
  std::vector<Xid> out;
  for (const RawXid& r : *raw) {
    Result<Xid> x = Xid::Parse(r.format, r.gtrid, r.bqual);
    // XA RECOVER is server-wide: other applications' XIDs, and other seigo deployments' (another
    // database on the same server), are not ours to touch. Variant::kIgnoreDeployment: every
    // seigo XID is taken, whichever deployment it names.
    if (!x.ok()) {
      server_->coverage()->Add(Cov::kNonSeigoXidSkipped);
      continue;
    }
    if (x->deployment != deployment_) {
      server_->coverage()->Add(Cov::kForeignXidSkipped);
      if (server_->variant() != Variant::kIgnoreDeployment) continue;
    }
    out.push_back(std::move(*x));
  }
  return out;
}

Status SimParticipant::CheckOwner(SimSession& s, const Xid& xid, const MarkerRead& m) {
  // src/mariadb's CheckOwner, SameIncarnation and SurelyTheIdleOwner: thread ids start from 1
  // again after a restart, so a thread with the marker's owner id is the owner only if the
  // marker was written in this incarnation (uptime has whole seconds: 2 s of doubt, on the
  // cautious side for waiting on INNODB_TRX's tie); for a connected thread to count as the live
  // owner it must also have been idle since the marker was written.
  const int64_t server_start_ms = m.now_ms - m.uptime_s * 1000;
  const bool same_incarnation = m.created_ms >= server_start_ms - 2000;
  const bool attached = m.owner_attached;  // by a transaction older than the marker
  const bool idle_owner = m.owner_connected && m.created_ms > server_start_ms + 1000 &&
                          m.owner_idle_s >= 0 &&
                          m.owner_idle_s * 1000 >= m.now_ms - m.created_ms - 1000;
  if (m.present && !m.committed && (m.owner_attached || m.owner_connected)) {
    // Bookkeeping: is the check judging the right connection?
    if (!same_incarnation && m.sim_owner_here) server_->coverage()->Add(Cov::kOwnerCheckSkipped);
    if (same_incarnation && m.sim_owner_id_reused) server_->coverage()->Add(Cov::kOwnerIdReused);
  }
  if (!m.present || m.committed) return Status::OK();
  if (idle_owner && m.now_ms > xid.deadline_ms + kHungOwnerMs) {
    // A decision exists and the process that prepared the branch has held it long past the
    // deadline: it is hung. Closing its connection detaches the branch.
    server_->coverage()->Add(Cov::kOwnerWaitBusy);
    const std::string gid = xid.gid;
    const uint64_t owner = m.owner;
    Status k = s.Call(
        [owner, gid](SimServer* sh, uint64_t c) { return sh->KillConnection(c, owner, gid); });
    return Status::Busy("the connection that owns the branch (server thread " +
                        std::to_string(m.owner) + ") held it long past its deadline; " +
                        (k.ok() ? "closed it" : "closing it failed: " + k.ToString()));
  }
  if (!attached && !idle_owner) return Status::OK();
  server_->coverage()->Add(Cov::kOwnerWaitBusy);
  return Status::Busy("the connection that owns the branch (server thread " +
                      std::to_string(m.owner) + ") is " +
                      (m.owner_connected ? "still open" : "still closing"));
}

namespace {
std::string LimboMessage(const std::string& name, const Xid& xid, const char* what) {
  return std::string("XA ") + what + " of " + xid.Gtrid() + " on " + name +
         " returned OK but the branch is still open inside the server: the MariaDB limbo "
         "branch. Remedy: restart that server, then run `seigo recover`";
}
}  // namespace

// As src/mariadb: the branch's marker, not the server's answer alone, says what happened.
Status SimParticipant::CommitXid(const Xid& xid) {
  if (!IsGid(xid.gid)) return Status::InvalidArgument("not a gid: " + xid.gid);
  const bool trusting = server_->variant() == Variant::kNoOwnerWait;
  if (server_->variant() == Variant::kNotaIsDone) {
    // The planted flaw: no marker, no owner check, and XAER_NOTA believed to mean "finished".
    StatusBox out = WithSession([&](SimSession& s) -> StatusBox {
      Status st = s.Call([xid](SimServer* sh, uint64_t c) { return sh->XaCommit(c, xid); });
      return {st.Is(Code::kNotFound) ? Status::OK() : st};
    });
    return out.s;
  }
  StatusBox out = WithSession([&](SimSession& s) -> StatusBox {
    const std::string gid = xid.gid;
    auto read = [&s, gid]() {
      return s.Call([gid](SimServer* sh, uint64_t c) { return sh->ReadMarker(c, gid); });
    };
    if (!trusting) {
      Result<MarkerRead> m = read();
      if (!m.ok()) return {m.status()};
      if (m->committed) return {Status::OK()};  // committed before (phase 2 or another resolver)
      Status busy = CheckOwner(s, xid, *m);
      if (!busy.ok()) return {busy};
    }
    Status st = s.Call([xid](SimServer* sh, uint64_t c) { return sh->XaCommit(c, xid); });
    if (!st.ok() && !st.Is(Code::kNotFound)) return {st};
    // Variant::kNoOwnerWait: the planted flaw — no owner wait, and the server's OK believed.
    if (trusting && st.ok()) return {st};
    // Whatever the server said, the marker tells what happened.
    Result<MarkerRead> after = read();
    if (!after.ok()) return {after.status()};
    if (after->committed) return {Status::OK()};
    if (st.ok() && after->present) {
      server_->coverage()->Add(Cov::kLimboDetected);
      return {Status::Corruption(LimboMessage(name_, xid, "COMMIT"))};
    }
    if (st.ok()) return {Status::OK()};  // committed, and its marker forgotten at once by GC
    return {st};  // XAER_NOTA: owned by a live connection, or nothing of it here
  });
  return out.s;
}

Status SimParticipant::RollbackXid(const Xid& xid) {
  if (!IsGid(xid.gid)) return Status::InvalidArgument("not a gid: " + xid.gid);
  const bool trusting = server_->variant() == Variant::kNoOwnerWait;
  StatusBox out = WithSession([&](SimSession& s) -> StatusBox {
    const std::string gid = xid.gid;
    auto read = [&s, gid]() {
      return s.Call([gid](SimServer* sh, uint64_t c) { return sh->ReadMarker(c, gid); });
    };
    if (!trusting) {
      Result<MarkerRead> m = read();
      if (!m.ok()) return {m.status()};
      if (m->committed) {
        return {Status::Corruption("asked to roll back " + xid.Gtrid() + " on " + name_ +
                                   ", whose branch has committed")};
      }
      Status busy = CheckOwner(s, xid, *m);
      if (!busy.ok()) return {busy};
    }
    Status st = s.Call([xid](SimServer* sh, uint64_t c) { return sh->XaRollback(c, xid); });
    if (!st.ok() && !st.Is(Code::kNotFound)) return {st};
    if (trusting && st.ok()) return {st};
    Result<MarkerRead> after = read();
    if (!after.ok()) return {after.status()};
    if (!after->present) return {Status::OK()};  // nothing of the branch is left
    if (after->committed) {
      return {Status::Corruption("rolling back " + xid.Gtrid() + " on " + name_ +
                                 ": its branch has committed")};
    }
    if (st.ok()) {
      server_->coverage()->Add(Cov::kLimboDetected);
      return {Status::Corruption(LimboMessage(name_, xid, "ROLLBACK"))};
    }
    return {st};  // XAER_NOTA while the branch is open: a live connection owns it
  });
  return out.s;
}

Result<std::vector<BranchTrace>> SimParticipant::ProbeBranches(std::span<const std::string> gids) {
  std::vector<std::string> v(gids.begin(), gids.end());
  if (server_->variant() == Variant::kGcOldestTrx) {
    // The planted flaw: the old GC's rule (c), "no open InnoDB transaction on the server
    // started before the gid's deadline", which any unrelated long transaction (mysqldump
    // --single-transaction on another database) holds up forever. Candidates are at least
    // kMinDecisionRetentionMs past their deadline.
    Result<std::optional<int64_t>> oldest = WithSession([](SimSession& s) {
      return s.Call([](SimServer* sh, uint64_t c) { return sh->OldestTrxStartMs(c); });
    });
    if (!oldest.ok()) return oldest.status();
    if (*oldest && **oldest < server_->NowMs() - kMinDecisionRetentionMs) {
      return std::vector<BranchTrace>(v.size(), BranchTrace::kOpen);
    }
  }
  return WithSession([&v](SimSession& s) {
    return s.Call([v](SimServer* sh, uint64_t c) { return sh->SelectMarkers(c, v); });
  });
}

Status SimParticipant::ForgetBranches(std::span<const std::string> gids) {
  std::vector<std::string> v(gids.begin(), gids.end());
  StatusBox out = WithSession([&v](SimSession& s) -> StatusBox {
    return {s.Call([v](SimServer* sh, uint64_t c) { return sh->DeleteMarkers(c, v); })};
  });
  return out.s;
}

Result<std::optional<Decision>> SimParticipant::ReadDecision(std::string_view gid) {
  if (!IsGid(gid)) return Status::InvalidArgument("not a gid: " + std::string(gid));
  std::string g(gid);
  return WithSession([&g](SimSession& s) {
    return s.Call([g](SimServer* sh, uint64_t c) { return sh->SelectDecision(c, g); });
  });
}

Result<Outcome> SimParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  if (!IsGid(d.gid)) return Status::InvalidArgument("not a gid: " + d.gid);
  return WithSession([&d, by_coordinator](SimSession& s) {
    return s.Call([d, by_coordinator](SimServer* sh, uint64_t c) {
      return sh->FenceInsert(c, d, by_coordinator);
    });
  });
}

Result<std::vector<Decision>> SimParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                   size_t limit) {
  return WithSession([retention_ms, limit](SimSession& s) {
    return s.Call([retention_ms, limit](SimServer* sh, uint64_t c) {
      return sh->SelectExpired(c, retention_ms, limit);
    });
  });
}

Status SimParticipant::ForgetDecisions(std::span<const std::string> gids) {
  for (const std::string& g : gids) {
    if (!IsGid(g)) return Status::InvalidArgument("not a gid: " + g);
  }
  std::vector<std::string> v(gids.begin(), gids.end());
  StatusBox out = WithSession([&v](SimSession& s) -> StatusBox {
    return {s.Call([v](SimServer* sh, uint64_t c) { return sh->DeleteDecisions(c, v); })};
  });
  return out.s;
}

// Deadlock detection: the same calls as src/mariadb's, one round trip each.

std::vector<LocalWait> SimParticipant::LongStatements(int64_t before_ms) {
  std::vector<LocalWait> out;
  for (const auto& [session, w] : inflight_->running) {
    if (w.since_ms <= before_ms && w.thread != 0) out.push_back(w);
  }
  return out;
}

Status SimParticipant::ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) {
  std::vector<LockWaits::Published> pubs;
  for (const LocalWait& w : mine) {
    if (w.tag == nullptr || w.tag->txn.empty()) continue;
    LockWaits::Published p;
    p.thread = w.thread;
    p.txn = w.tag->txn;
    p.priority_ms = w.tag->priority_ms;
    p.threads = w.tag->threads;
    p.since_ms = w.since_ms;
    pubs.push_back(std::move(p));
  }
  Result<LockWaits> r = WithSession([&pubs](SimSession& s) {
    return s.Call([pubs](SimServer* sh, uint64_t c) { return sh->ReadLockWaits(c, pubs); });
  });
  if (!r.ok()) return r.status();
  *out = std::move(*r);
  if (server_->variant() == Variant::kDeadlockKillsOldest) {
    for (LockWaits::Published& p : out->published) p.priority_ms = -p.priority_ms;
  }
  return Status::OK();
}

Status SimParticipant::BreakWait(uint64_t thread, uint64_t query) {
  (void)thread;
  StatusBox out = WithSession([query](SimSession& s) -> StatusBox {
    return {s.Call([query](SimServer* sh, uint64_t c) { return sh->KillQuery(c, query); })};
  });
  return out.s;
}

}  // namespace seigo::sim
