#include "sim/sim_participant.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace seigo::sim {
namespace {

// Server errors, worded like MariaDB's, mapped to Status as src/mariadb does (doc/protocol.md,
// "Error mapping").
Status Lost() { return Status::Unavailable("Lost connection to server during query (2013)"); }
Status Nota() { return Status::NotFound("XAER_NOTA: Unknown XID (1397)"); }
Status RmFail() {
  return Status::QueryFailed(
      "XAER_RMFAIL: The command cannot be executed when global transaction is in the ACTIVE or "
      "PREPARED state (1399)");
}
Status Deadlock() {
  return Status::Conflict(
      "Deadlock found when trying to get lock; try restarting transaction "
      "(1213)");
}
Status LockWaitTimeout() {
  return Status::Conflict("Lock wait timeout exceeded; try restarting transaction (1205)");
}
Status RbDeadlock() {
  return Status::Conflict(
      "XA_RBDEADLOCK: Transaction branch was rolled back: deadlock was "
      "detected (1614)");
}

std::string RowLock(int64_t key) { return "row:" + std::to_string(key); }
std::string DecisionLock(const std::string& gid) { return "decision:" + gid; }

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

}  // namespace

// Clears a transaction's waits-for edge when its lock wait ends, however it ends (a killed
// process's fiber unwinds through here).
class SimShard::WaitEdge {
 public:
  WaitEdge(SimShard* shard, uint64_t trx, uint64_t holder) : shard_(shard), trx_(trx) {
    if (Trx* t = shard_->FindTrx(trx_)) t->waits_for = holder;
  }
  ~WaitEdge() {
    if (Trx* t = shard_->FindTrx(trx_)) t->waits_for = 0;
  }

 private:
  SimShard* shard_;
  uint64_t trx_;
};

SimShard::SimShard(uint32_t index, const ShardContext& ctx)
    : index_(index), name_("shard " + std::to_string(index) + " (sim)"), ctx_(ctx) {}

void SimShard::Trace(const char* fmt, ...) {
  if (!ctx_.tracer->on()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx_.tracer->Log("shard%u: %s", index_, buf);
}

int64_t SimShard::NowMs() const { return ctx_.sched->now() + clock_offset_; }

void SimShard::StepClock(int64_t delta_ms) {
  // NTP may step a server's clock. Forward steps are free; a backward step is limited so that the
  // clock never reads more than 1 s below its highest reading: the protocol assumes the decider's
  // clock does not run back by anything near kFenceWindowMs (doc/protocol.md, GC).
  clock_max_seen_ = std::max(clock_max_seen_, NowMs());
  clock_offset_ += delta_ms;
  const int64_t floor = clock_max_seen_ - 1000;
  if (NowMs() < floor) clock_offset_ += floor - NowMs();
  Trace("clock step %+lld ms", static_cast<long long>(delta_ms));
}

// ---------------------------------------------------------------------------------------------
// Connections

SimShard::Conn* SimShard::FindConn(uint64_t conn) {
  if (!up_) return nullptr;
  auto it = conns_.find(conn);
  return it == conns_.end() ? nullptr : &it->second;
}

bool SimShard::Alive(uint64_t conn) const { return up_ && conns_.count(conn) != 0; }

Result<uint64_t> SimShard::Connect(int process) {
  if (!up_) return Status::Unavailable("Can't connect to server on '" + name_ + "' (2003)");
  const uint64_t id = ++*ctx_.next_id;
  conns_[id].process = process;
  return id;
}

std::vector<uint64_t> SimShard::ConnectionsOf(int process) const {
  std::vector<uint64_t> out;
  for (const auto& [id, c] : conns_) {
    if (c.process == process && !c.client_gone) out.push_back(id);
  }
  return out;
}

void SimShard::RunWithoutWaiting(const std::function<void()>& fn) {
  const bool saved = no_wait_;
  no_wait_ = true;
  fn();
  no_wait_ = saved;
}

void SimShard::ClientGone(uint64_t conn, int64_t notice_after_ms, std::function<void()> late) {
  auto it = conns_.find(conn);
  if (!up_ || it == conns_.end() || it->second.client_gone) return;
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

void SimShard::NoticeDisconnect(uint64_t conn) {
  auto it = conns_.find(conn);
  if (it == conns_.end()) return;
  if (Trx* t = TrxOf(it->second)) {
    if (t->xa && t->xa_state == XaState::kPrepared) {
      // MariaDB >= 10.5: a prepared branch survives its connection. It keeps its row locks and
      // is now detached: any connection may XA COMMIT / XA ROLLBACK it.
      t->conn = 0;
      ctx_.coverage->Add(Cov::kBranchDetached);
      Trace("conn %llu gone: branch %s detached", static_cast<unsigned long long>(conn),
            t->xid.gid.substr(0, 8).c_str());
    } else {
      RollbackTrx(t->id, "client disconnected");
    }
  }
  conns_.erase(conn);
}

// ---------------------------------------------------------------------------------------------
// Transactions and locks

SimShard::Trx* SimShard::FindTrx(uint64_t id) {
  auto it = trxs_.find(id);
  return it == trxs_.end() ? nullptr : &it->second;
}

SimShard::Trx* SimShard::TrxOf(const Conn& c) { return c.trx == 0 ? nullptr : FindTrx(c.trx); }

SimShard::Trx& SimShard::NewTrx(uint64_t conn, bool xa) {
  const uint64_t id = ++*ctx_.next_id;
  Trx& t = trxs_[id];
  t.id = id;
  t.xa = xa;
  t.conn = conn;
  t.started_ms = NowMs();
  if (Conn* c = FindConn(conn)) c->trx = id;
  return t;
}

void SimShard::CommitTrx(uint64_t id, const char* why) {
  Trx& t = trxs_.at(id);
  for (const std::string& gid : t.inserted_decisions) {
    auto it = decisions_.find(gid);
    if (it != decisions_.end() && it->second.inserted_by == id) {
      it->second.inserted_by = 0;
      it->second.d.decided_at_ms = NowMs();
      Trace("decision %s %s committed (%s)", gid.substr(0, 8).c_str(),
            OutcomeName(it->second.d.outcome), it->second.how);
      ctx_.checker->OnDecisionWritten(index_, it->second.d, it->second.how);
    }
  }
  if (!t.effects_applied && !t.effects.empty()) {
    for (const Effect& e : t.effects) rows_[e.key] += e.delta;
    ctx_.checker->OnEffects(index_, t.effects, /*committed=*/true);
  }
  if (t.xa) {
    // The branch's marker (inserted by its PREPARE batch) commits with it.
    if (t.xa_state == XaState::kPrepared) committed_markers_.insert(t.xid.gid);
    Trace("branch %s committed (%s)", t.xid.gid.substr(0, 8).c_str(), why);
    ctx_.checker->OnBranchEnded(index_, t.xid, true, t.xa_state == XaState::kPrepared, why);
  }
  EndTrx(id);
}

void SimShard::RollbackTrx(uint64_t id, const char* why) {
  Trx& t = trxs_.at(id);
  for (const std::string& gid : t.inserted_decisions) {
    auto it = decisions_.find(gid);
    if (it != decisions_.end() && it->second.inserted_by == id) decisions_.erase(it);
  }
  // Variant::kCommitBeforeDecision: writes made permanent at PREPARE stay — the planted flaw.
  if (!t.effects_applied && !t.effects.empty()) {
    ctx_.checker->OnEffects(index_, t.effects, /*committed=*/false);
  }
  if (t.xa) {
    Trace("branch %s rolled back (%s)", t.xid.gid.substr(0, 8).c_str(), why);
    ctx_.checker->OnBranchEnded(index_, t.xid, false, t.xa_state == XaState::kPrepared, why);
  }
  EndTrx(id);
}

void SimShard::EndTrx(uint64_t id) {
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
  if (t.xa) xa_index_.erase(t.xid_key);
  trxs_.erase(id);
}

void SimShard::DeadlockVictim(uint64_t id) {
  ctx_.coverage->Add(Cov::kDeadlock);
  Trx& t = trxs_.at(id);
  if (!t.xa) {
    // InnoDB rolls back the victim's whole transaction. The session is then outside any
    // transaction: its next statements autocommit one by one (a trap the protocol's "poisoned
    // attempt" rule avoids).
    RollbackTrx(id, "deadlock victim");
    return;
  }
  // An XA branch is rolled back too, but stays attached in a rollback-only state: its
  // statements and XA END / PREPARE now fail with XA_RBDEADLOCK until XA ROLLBACK.
  if (!t.effects.empty()) ctx_.checker->OnEffects(index_, t.effects, /*committed=*/false);
  t.effects.clear();
  for (const std::string& l : t.locks) {
    auto it = locks_.find(l);
    if (it != locks_.end() && it->second == id) locks_.erase(it);
  }
  t.locks.clear();
  t.xa_state = XaState::kRollbackOnly;
  ctx_.sched->NotifyAll(&lock_released_);
}

bool SimShard::CanWait() const { return ctx_.sched->in_fiber() && !no_wait_; }

bool SimShard::WouldDeadlock(uint64_t requester, uint64_t holder) const {
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

Status SimShard::Lock(uint64_t trx, const std::string& name) {
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
    if (name.rfind("decision:", 0) == 0) ctx_.coverage->Add(Cov::kFenceWaitedForLock);
    WaitEdge edge(this, trx, it->second);
    ctx_.sched->Wait(&lock_released_, left);
  }
}

int64_t SimShard::ReadValue(const Trx& t, int64_t key) const {
  auto it = rows_.find(key);
  int64_t v = it == rows_.end() ? 0 : it->second;
  if (!t.effects_applied) {
    for (const Effect& e : t.effects) {
      if (e.key == key) v += e.delta;
    }
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Statements of a session

Status SimShard::BeginLocal(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  if (Trx* t = TrxOf(*c)) {
    if (t->xa) return RmFail();
    // START TRANSACTION inside an open transaction first commits it (implicit commit).
    CommitTrx(t->id, "implicit commit by START TRANSACTION");
  }
  NewTrx(conn, false);
  return Status::OK();
}

Status SimShard::BeginBranch(uint64_t conn, const Xid& xid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  if (TrxOf(*c) != nullptr) {
    return Status::QueryFailed(
        "XAER_OUTSIDE: Some work is done outside global transaction "
        "(1400)");
  }
  const std::string key = XidKey(xid);
  if (xa_index_.count(key)) return Status::QueryFailed("XAER_DUPID: The XID already exists (1440)");
  Trx& t = NewTrx(conn, true);
  t.xid = xid;
  t.xid_key = key;
  xa_index_[key] = t.id;
  ctx_.checker->OnBranchStarted(index_, xid);
  return Status::OK();
}

Result<QueryResult> SimShard::Execute(uint64_t conn, const std::string& sql,
                                      const std::vector<Value>& params) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t != nullptr && t->xa && t->xa_state == XaState::kPrepared) return RmFail();
  if (t != nullptr && t->xa && t->xa_state == XaState::kRollbackOnly) return RbDeadlock();

  Statement st;
  bool ok = false;
  if (sql == "ADD ? ? ? ?") {
    st.op = Statement::Op::kAdd;
    ok = IntParam(params, 0, &st.key) && IntParam(params, 1, &st.delta) &&
         IntParam(params, 2, &st.min) && IntParam(params, 3, &st.tag) && params.size() == 4;
  } else if (sql == "GET ?") {
    st.op = Statement::Op::kGet;
    ok = IntParam(params, 0, &st.key) && params.size() == 1;
  }
  if (!ok) {
    return Status::QueryFailed("You have an error in your SQL syntax near '" + sql + "' (1064)");
  }

  // Outside a transaction (autocommit mode) a statement is its own transaction. Invariant 6: seigo
  // never means to do that; it happens only if the protocol kept using a session whose
  // transaction the server had already rolled back (a deadlock), which the "poisoned attempt"
  // rule forbids.
  const bool autocommit = t == nullptr;
  if (autocommit) {
    ctx_.checker->Violation("a statement ran outside any transaction (autocommit) on " + name_ +
                            ": " + sql);
  }
  const uint64_t trx = autocommit ? NewTrx(conn, false).id : t->id;
  Result<QueryResult> r = RunStatement(trx, st);
  if (autocommit && FindTrx(trx) != nullptr) {
    if (r.ok()) {
      CommitTrx(trx, "autocommit");
    } else {
      RollbackTrx(trx, "autocommit statement failed");
    }
  }
  return r;
}

Result<QueryResult> SimShard::RunStatement(uint64_t trx, const Statement& st) {
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
  if (st.op == Statement::Op::kGet) {
    Trx* t = FindTrx(trx);
    if (t == nullptr) return Lost();
    q.columns = {"v"};
    if (rows_.count(st.key)) q.rows.push_back({std::to_string(ReadValue(*t, st.key))});
    q.affected_rows = q.rows.size();
    return q;
  }
  Status s = Lock(trx, RowLock(st.key));
  if (!s.ok()) return s;
  Trx* t = FindTrx(trx);
  if (t == nullptr) return Lost();
  if (rows_.count(st.key) == 0) return q;  // no such row: 0 rows affected
  if (ReadValue(*t, st.key) + st.delta >= st.min) {
    t->effects.push_back(Effect{st.key, st.delta, st.tag});
    q.affected_rows = 1;
  }
  return q;
}

Status SimShard::XaEndPrepare(uint64_t conn, const Xid& xid) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t == nullptr || !t->xa || t->xid_key != XidKey(xid)) return Nota();
  if (t->xa_state == XaState::kRollbackOnly) return RbDeadlock();
  if (t->xa_state == XaState::kPrepared) return RmFail();
  // XA PREPARE: the branch is durable from here on (survives a crash, keeps its locks).
  t->xa_state = XaState::kPrepared;
  if (ctx_.variant == Variant::kCommitBeforeDecision && !t->effects.empty()) {
    for (const Effect& e : t->effects) rows_[e.key] += e.delta;
    ctx_.checker->OnEffects(index_, t->effects, /*committed=*/true);
    t->effects_applied = true;
  }
  ctx_.checker->OnBranchPrepared(index_, t->xid);
  Trace("branch %s prepared", t->xid.gid.substr(0, 8).c_str());
  return Status::OK();
}

Status SimShard::Commit(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t == nullptr) return Status::OK();  // COMMIT outside a transaction does nothing
  if (t->xa) return RmFail();
  CommitTrx(t->id, "COMMIT");
  return Status::OK();
}

Status SimShard::InsertCommitDecision(uint64_t conn, const Decision& d) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  Trx* t = TrxOf(*c);
  if (t != nullptr && t->xa) return RmFail();
  // INSERT ... VALUES (gid, IF(now < deadline, 'C', NULL), ...): past the deadline by THIS
  // server's clock the NULL fails the NOT NULL column (1048) before the row is even looked up.
  if (NowMs() >= d.deadline_ms) {
    ctx_.coverage->Add(Cov::kCommitRefusedDeadline);
    return Status::Aborted(
        "Column 'outcome' cannot be null (1048): the decider's clock is past "
        "the deadline");
  }
  // In autocommit mode (no open transaction, e.g. after a deadlock rolled it back) the INSERT
  // commits on its own and the COMMIT after it does nothing.
  const bool autocommit = t == nullptr;
  if (autocommit) {
    ctx_.checker->Violation("the commit-point insert of gid " + d.gid.substr(0, 8) +
                            " ran outside the decider's transaction (autocommit) on " + name_);
  }
  const uint64_t trx = autocommit ? NewTrx(conn, false).id : t->id;
  Status s = Lock(trx, DecisionLock(d.gid));  // waits for an uncommitted insert of the same gid
  if (!s.ok()) {
    if (autocommit && FindTrx(trx) != nullptr) RollbackTrx(trx, "autocommit statement failed");
    return s;
  }
  Trx* tx = FindTrx(trx);
  if (tx == nullptr) return Lost();
  auto it = decisions_.find(d.gid);
  if (it != decisions_.end() && ctx_.variant != Variant::kIgnoreDeadline) {
    if (autocommit) RollbackTrx(trx, "autocommit statement failed");
    ctx_.coverage->Add(Cov::kCommitRefusedFenced);
    return Status::Aborted("Duplicate entry '" + d.gid +
                           "' for key 'PRIMARY' (1062): gid already "
                           "has a decision (fenced)");
  }
  // Variant::kIgnoreDeadline: the commit insert overwrites an existing row (REPLACE INTO).
  DecisionRow& row = decisions_[d.gid];
  row.d = d;
  row.d.outcome = Outcome::kCommit;
  row.inserted_by = trx;
  row.how = it != decisions_.end() ? "commit point, overwriting a fence" : "commit point";
  tx->inserted_decisions.push_back(d.gid);
  if (autocommit) CommitTrx(trx, "autocommit");
  return Status::OK();
}

Status SimShard::XaCommit(uint64_t conn, const Xid& xid) {
  if (FindConn(conn) == nullptr) return Lost();
  auto it = xa_index_.find(XidKey(xid));
  if (it == xa_index_.end()) return Nota();
  Trx& t = trxs_.at(it->second);
  // The MariaDB trap: a branch owned by another live connection is invisible to XA COMMIT.
  if (t.conn != 0 && t.conn != conn) {
    ctx_.coverage->Add(Cov::kNotaLiveOwner);
    return Nota();
  }
  if (t.xa_state != XaState::kPrepared) return RmFail();
  if (t.conn != conn) ctx_.coverage->Add(Cov::kResolverCommitted);
  CommitTrx(t.id, t.conn == conn ? "XA COMMIT by owner" : "XA COMMIT");
  return Status::OK();
}

Status SimShard::XaRollback(uint64_t conn, const Xid& xid) {
  if (FindConn(conn) == nullptr) return Lost();
  auto it = xa_index_.find(XidKey(xid));
  if (it == xa_index_.end()) return Nota();
  Trx& t = trxs_.at(it->second);
  if (t.conn != 0 && t.conn != conn) {
    ctx_.coverage->Add(Cov::kNotaLiveOwner);
    return Nota();
  }
  if (t.xa_state == XaState::kActive) return RmFail();  // XA END first
  if (t.conn != conn) ctx_.coverage->Add(Cov::kResolverRolledBack);
  RollbackTrx(t.id, t.conn == conn ? "XA ROLLBACK by owner" : "XA ROLLBACK");
  return Status::OK();
}

Status SimShard::Rollback(uint64_t conn) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  if (Trx* t = TrxOf(*c)) RollbackTrx(t->id, t->xa ? "XA ROLLBACK by owner" : "ROLLBACK");
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Statements of recovery

Result<std::vector<Xid>> SimShard::XaRecover(uint64_t conn) {
  if (FindConn(conn) == nullptr) return Lost();
  std::vector<Xid> out;
  for (const auto& [id, t] : trxs_) {
    if (!t.xa || t.xa_state != XaState::kPrepared) continue;
    // XA RECOVER lists every prepared branch, owned by a live connection or not ...
    // ... except in Variant::kNotaIsDone, where owned branches are hidden.
    if (ctx_.variant == Variant::kNotaIsDone && t.conn != 0) continue;
    // The wire format round trip: what a real XA RECOVER row would parse to.
    Result<Xid> x = Xid::Parse(Xid::kFormatId, t.xid.Gtrid(), t.xid.Bqual());
    if (x.ok()) out.push_back(std::move(*x));
  }
  return out;
}

Result<std::optional<Decision>> SimShard::SelectDecision(uint64_t conn, const std::string& gid) {
  if (FindConn(conn) == nullptr) return Lost();
  auto it = decisions_.find(gid);
  // A consistent read: an uncommitted insert is invisible (and does not block).
  if (it == decisions_.end() || it->second.inserted_by != 0) return std::optional<Decision>();
  return std::optional<Decision>(it->second.d);
}

Result<Outcome> SimShard::FenceInsert(uint64_t conn, const Decision& d, bool by_coordinator) {
  Conn* c = FindConn(conn);
  if (c == nullptr) return Lost();
  // The time condition is evaluated by this server's clock (participant.h, FenceAbort):
  //   coordinator: only until deadline + kFenceWindowMs (rows may be GC'd after);
  //   resolver: writes only in [deadline, deadline + kFenceWindowMs). Outside it the real
  //   participant fails the insert (1048) and does a locking read instead, which waits for an
  //   uncommitted insert like the insert would: so the lock path below is the same.
  const int64_t now = NowMs();
  if (by_coordinator && now >= d.deadline_ms + kFenceWindowMs) {
    ctx_.coverage->Add(Cov::kFenceBusy);
    return Status::Busy("too long after the deadline to fence");
  }
  const bool past_deadline = now >= d.deadline_ms || ctx_.variant == Variant::kIgnoreDeadline;
  const bool may_write = by_coordinator || (past_deadline && now < d.deadline_ms + kFenceWindowMs);
  if (TrxOf(*c) != nullptr) return RmFail();
  const uint64_t trx = NewTrx(conn, false).id;  // an autocommit INSERT
  // An uncommitted insert of the same gid (a live decider at its commit point) holds the row
  // lock: wait for it to commit (then: duplicate key) or roll back (then: our row goes in).
  Status s = Lock(trx, DecisionLock(d.gid));
  if (!s.ok()) {
    if (FindTrx(trx) != nullptr) RollbackTrx(trx, "fence failed");
    if (s.Is(Code::kConflict)) {
      ctx_.coverage->Add(Cov::kFenceBusy);
      return Status::Busy("a live decider holds the decision row lock (commit in progress)");
    }
    return s;
  }
  auto it = decisions_.find(d.gid);
  if (it != decisions_.end()) {
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
  DecisionRow& row = decisions_[d.gid];
  row.d = d;
  row.d.outcome = Outcome::kAbort;
  row.inserted_by = trx;
  row.how = by_coordinator ? "coordinator fence" : "resolver fence";
  ctx_.coverage->Add(by_coordinator ? Cov::kFenceCoordinator : Cov::kFenceResolver);
  trxs_.at(trx).inserted_decisions.push_back(d.gid);
  CommitTrx(trx, "autocommit");
  return Outcome::kAbort;
}

Result<std::vector<BranchTrace>> SimShard::SelectMarkers(uint64_t conn,
                                                         const std::vector<std::string>& gids) {
  if (FindConn(conn) == nullptr) return Lost();
  std::vector<BranchTrace> out;
  for (const std::string& g : gids) {
    BranchTrace tr = committed_markers_.count(g) ? BranchTrace::kCommitted : BranchTrace::kNone;
    for (const auto& [id, t] : trxs_) {
      // A marker exists from the PREPARE on: an open prepared branch holds an uncommitted one.
      if (t.xa && t.xid.gid == g && t.xa_state == XaState::kPrepared) tr = BranchTrace::kOpen;
    }
    out.push_back(tr);
  }
  return out;
}

Status SimShard::DeleteMarkers(uint64_t conn, const std::vector<std::string>& gids) {
  if (FindConn(conn) == nullptr) return Lost();
  for (const std::string& g : gids) committed_markers_.erase(g);
  return Status::OK();
}

Result<std::vector<Decision>> SimShard::SelectExpired(uint64_t conn, int64_t retention_ms,
                                                      size_t limit) {
  if (FindConn(conn) == nullptr) return Lost();
  const int64_t now = NowMs();
  std::vector<Decision> out;
  for (const auto& [gid, row] : decisions_) {
    if (row.inserted_by == 0 && row.d.deadline_ms + retention_ms < now) out.push_back(row.d);
  }
  std::sort(out.begin(), out.end(), [](const Decision& a, const Decision& b) {
    return std::tie(a.deadline_ms, a.gid) < std::tie(b.deadline_ms, b.gid);
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

Status SimShard::DeleteDecisions(uint64_t conn, const std::vector<std::string>& gids) {
  if (FindConn(conn) == nullptr) return Lost();
  for (const std::string& gid : gids) {
    auto it = decisions_.find(gid);
    if (it == decisions_.end() || it->second.inserted_by != 0) continue;
    decisions_.erase(it);
    ctx_.coverage->Add(Cov::kDecisionCollected);
    Trace("decision %s forgotten", gid.substr(0, 8).c_str());
    ctx_.checker->OnDecisionForgotten(index_, gid);
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Faults and inspection

void SimShard::Crash() {
  if (!up_) return;
  Trace("CRASH");
  // kill -9. With innodb_flush_log_at_trx_commit=1 and sync_binlog=1, what was committed or
  // prepared is on disk; everything else is gone.
  up_ = false;
  ++generation_;
  std::vector<uint64_t> ids;
  for (const auto& [id, t] : trxs_) ids.push_back(id);
  for (uint64_t id : ids) {
    Trx& t = trxs_.at(id);
    if (t.xa && t.xa_state == XaState::kPrepared) {
      // Crash recovery finds the prepared branch ("Found 1 prepared XA transactions"), re-takes
      // its locks, and leaves it for anyone to XA COMMIT / ROLLBACK.
      t.conn = 0;
      t.waits_for = 0;
      ctx_.coverage->Add(Cov::kPreparedSurvivedCrash);
    } else {
      RollbackTrx(id, "shard crash");
    }
  }
  conns_.clear();
  ctx_.sched->NotifyAll(&lock_released_);  // waiters wake and see the generation change
}

void SimShard::Restart() {
  if (up_) return;
  Trace("restarted");
  up_ = true;
}

size_t SimShard::prepared_count() const {
  size_t n = 0;
  for (const auto& [id, t] : trxs_) n += t.xa && t.xa_state == XaState::kPrepared;
  return n;
}

size_t SimShard::lingering_connections() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += c.client_gone;
  return n;
}

ShardFinalState SimShard::FinalState() const {
  ShardFinalState s;
  s.index = index_;
  s.rows = rows_;
  for (const auto& [id, t] : trxs_) {
    if (t.xa && t.xa_state == XaState::kPrepared) s.prepared.push_back(t.xid);
  }
  s.locks_held = locks_.size();
  s.connections = conns_.size();
  for (const auto& [gid, row] : decisions_) {
    if (row.inserted_by == 0) s.decisions[gid] = row.d.outcome;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// SimSession: the client side

SimSession::~SimSession() {
  if (!broken_) shard_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/true));
}

void SimSession::Break() {
  broken_ = true;
  shard_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/false));
}

template <typename F>
auto SimSession::Call(F f, std::function<void()> late_now, std::function<void()> late_at_notice)
    -> decltype(f(static_cast<SimShard*>(nullptr), uint64_t{0})) {
  using R = decltype(f(static_cast<SimShard*>(nullptr), uint64_t{0}));
  SimShard* shard = shard_;
  const uint64_t conn = conn_;
  // Captures only values and the shard (which outlives every session): a late request may run
  // after this session object is gone.
  auto op = [f, shard, conn]() mutable -> R { return f(shard, conn); };

  net_->BeforeRoundTrip(process_, shard_->index());
  if (broken_) return R(Status::Unavailable("MySQL server has gone away (2006)"));
  net_->OneWayDelay();  // the request travels
  if (!shard_->Alive(conn_)) {
    broken_ = true;  // the server restarted: this connection no longer exists there
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
      if (!shard_->Alive(conn_)) {
        broken_ = true;
      } else {
        Break();
      }
      return R(Lost());
    }
    case Network::Delivery::kLate: {
      broken_ = true;
      if (late_now) shard_->RunWithoutWaiting(late_now);
      std::function<void()> later = late_at_notice;
      if (!later) later = [op]() mutable { (void)op(); };
      shard_->ClientGone(conn_, net_->NoticeDelayMs(/*clean_close=*/false), std::move(later));
      net_->ClientReadTimeout();
      return R(Status::Unavailable("read timeout: Lost connection to server during query (2013)"));
    }
  }
  R r = op();
  net_->OneWayDelay();  // the reply travels
  if (!shard_->Alive(conn_)) {
    broken_ = true;  // the server crashed before the reply left: whatever it did stays done
    return R(Lost());
  }
  net_->AfterRoundTrip(process_);
  return r;
}

Status SimSession::BeginLocal() {
  Status s = Call([](SimShard* sh, uint64_t c) { return sh->BeginLocal(c); });
  if (s.ok()) in_tx_ = true;
  return s;
}

Status SimSession::BeginBranch(const Xid& xid) {
  Status s = Call([xid](SimShard* sh, uint64_t c) { return sh->BeginBranch(c, xid); });
  if (s.ok()) in_tx_ = true;
  return s;
}

Result<QueryResult> SimSession::Execute(std::string_view sql, std::span<const Value> params) {
  std::string q(sql);
  std::vector<Value> p(params.begin(), params.end());
  return Call([q, p](SimShard* sh, uint64_t c) { return sh->Execute(c, q, p); });
}

Status SimSession::Prepare(const Xid& xid) {
  return Call([xid](SimShard* sh, uint64_t c) { return sh->XaEndPrepare(c, xid); });
}

Status SimSession::CommitLocal() {
  Status s = Call([](SimShard* sh, uint64_t c) { return sh->Commit(c); });
  if (s.ok()) in_tx_ = false;
  return s;
}

Status SimSession::CommitWithDecision(const Decision& d) {
  // One batch: "INSERT INTO seigo_decision ...; COMMIT". The server stops the batch at the first
  // error, so a refused INSERT never reaches COMMIT (the caller then rolls back). If the client
  // gives up while the batch is in flight, either the server has run the INSERT already (it holds
  // the row lock, uncommitted) and gets to the COMMIT later — or the batch is cut when it
  // notices the disconnect, and the INSERT is rolled back — or the whole batch reaches the
  // server only later (after the coordinator may have fenced).
  auto batch = [d](SimShard* sh, uint64_t c) -> Status {
    Status st = sh->InsertCommitDecision(c, d);
    if (!st.ok()) return st;
    return sh->Commit(c);
  };
  SimShard* shard = shard_;
  const uint64_t conn = conn_;
  std::function<void()> late_now, late_at_notice;
  switch (net_->LateBatchShape()) {
    case Network::LateBatch::kInsertNowCommitLater: {
      auto inserted = std::make_shared<bool>(false);
      late_now = [shard, conn, d, inserted] {
        *inserted = shard->InsertCommitDecision(conn, d).ok();
      };
      late_at_notice = [shard, conn, inserted] {
        if (*inserted) (void)shard->Commit(conn);
      };
      break;
    }
    case Network::LateBatch::kInsertNowCut:
      late_now = [shard, conn, d] { (void)shard->InsertCommitDecision(conn, d); };
      late_at_notice = [] {};  // cut: the disconnect rolls the INSERT back
      break;
    case Network::LateBatch::kAllLater:
      break;  // the default: the whole batch when the server gets to it
  }
  Status s = Call(batch, late_now, late_at_notice);
  if (s.ok()) in_tx_ = false;
  if (s.Is(Code::kUnavailable)) coverage_->Add(Cov::kCommitReplyLost);
  return s;
}

Status SimSession::CommitPrepared(const Xid& xid) {
  Status s = Call([xid](SimShard* sh, uint64_t c) { return sh->XaCommit(c, xid); });
  if (s.ok()) in_tx_ = false;
  return s;
}

Status SimSession::RollbackAll(const Xid* xid, bool prepared) {
  (void)xid;
  (void)prepared;
  if (!in_tx_) return Status::OK();  // as the real participant: nothing open on our side
  Status s = Call([](SimShard* sh, uint64_t c) { return sh->Rollback(c); });
  if (s.ok()) {
    in_tx_ = false;
  } else if (!broken_) {
    Break();  // unknown state: close it; the server discards what is not prepared
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// SimParticipant

Result<std::unique_ptr<Session>> SimParticipant::Acquire() {
  if (!idle_.empty()) {
    // A pooled connection may be stale (the server restarted): its next call fails with
    // kUnavailable, as a real pooled connection would ("server has gone away").
    std::unique_ptr<Session> s = std::move(idle_.back());
    idle_.pop_back();
    return s;
  }
  net_->BeforeRoundTrip(process_, shard_->index());
  net_->OneWayDelay();
  Result<uint64_t> conn = shard_->Connect(process_);
  net_->OneWayDelay();
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<Session>(new SimSession(shard_, net_, process_, *conn));
}

void SimParticipant::Release(std::unique_ptr<Session> session) {
  auto* s = static_cast<SimSession*>(session.get());
  // Only clean sessions go back (as src/mariadb): closing one that owns a prepared branch is
  // what detaches the branch on the server.
  if (s == nullptr || !s->clean() || idle_.size() >= kMaxIdle) return;
  idle_.push_back(std::unique_ptr<SimSession>(static_cast<SimSession*>(session.release())));
}

template <typename F>
auto SimParticipant::OnPooledSession(F f) -> decltype(f(std::declval<SimSession&>())) {
  using R = decltype(f(std::declval<SimSession&>()));
  Result<std::unique_ptr<Session>> s = Acquire();
  if (!s.ok()) return R(s.status());
  std::unique_ptr<Session> session = std::move(*s);
  R r = f(*static_cast<SimSession*>(session.get()));
  Release(std::move(session));
  return r;
}

Result<std::vector<Xid>> SimParticipant::RecoverPrepared() {
  Result<std::vector<Xid>> all = OnPooledSession([](SimSession& s) {
    return s.Call([](SimShard* sh, uint64_t c) { return sh->XaRecover(c); });
  });
  if (!all.ok()) return all;
  std::erase_if(*all, [&](const Xid& x) { return x.deployment != deployment_; });
  return all;
}

// As src/mariadb: the branch's marker, not the server's answer alone, says what happened.
Status SimParticipant::CommitXid(const Xid& xid) {
  Status s = OnPooledSession([&xid](SimSession& s) {
    return s.Call([xid](SimShard* sh, uint64_t c) { return sh->XaCommit(c, xid); });
  });
  if (!s.Is(Code::kNotFound)) return s;
  // Variant::kNotaIsDone: the planted flaw — XAER_NOTA believed without asking the marker.
  if (shard_->variant() == Variant::kNotaIsDone) return Status::OK();
  std::string g = xid.gid;
  Result<std::vector<BranchTrace>> t = ProbeBranches(std::span<const std::string>(&g, 1));
  if (t.ok() && t->at(0) == BranchTrace::kCommitted) return Status::OK();
  return s;
}

Status SimParticipant::RollbackXid(const Xid& xid) {
  Status s = OnPooledSession([&xid](SimSession& s) {
    return s.Call([xid](SimShard* sh, uint64_t c) { return sh->XaRollback(c, xid); });
  });
  if (!s.Is(Code::kNotFound)) return s;
  std::string g = xid.gid;
  Result<std::vector<BranchTrace>> t = ProbeBranches(std::span<const std::string>(&g, 1));
  if (!t.ok()) return s;
  if (t->at(0) == BranchTrace::kCommitted) {
    return Status::Corruption("asked to roll back a committed branch of " + g);
  }
  // Without a marker the branch never prepared here or has rolled back already. (An active,
  // never-prepared branch has no marker yet: like MariaDB's NOTA for it, nothing to do.)
  return t->at(0) == BranchTrace::kNone ? Status::OK() : s;
}

Result<std::vector<BranchTrace>> SimParticipant::ProbeBranches(std::span<const std::string> gids) {
  std::vector<std::string> v(gids.begin(), gids.end());
  return OnPooledSession([&v](SimSession& s) {
    return s.Call([v](SimShard* sh, uint64_t c) { return sh->SelectMarkers(c, v); });
  });
}

Status SimParticipant::ForgetBranches(std::span<const std::string> gids) {
  std::vector<std::string> v(gids.begin(), gids.end());
  return OnPooledSession([&v](SimSession& s) {
    return s.Call([v](SimShard* sh, uint64_t c) { return sh->DeleteMarkers(c, v); });
  });
}

Result<std::optional<Decision>> SimParticipant::ReadDecision(std::string_view gid) {
  if (!IsGid(gid)) return Status::InvalidArgument("not a gid: " + std::string(gid));
  std::string g(gid);
  return OnPooledSession([&g](SimSession& s) {
    return s.Call([g](SimShard* sh, uint64_t c) { return sh->SelectDecision(c, g); });
  });
}

Result<Outcome> SimParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  if (!IsGid(d.gid)) return Status::InvalidArgument("not a gid: " + d.gid);
  return OnPooledSession([&d, by_coordinator](SimSession& s) {
    return s.Call([d, by_coordinator](SimShard* sh, uint64_t c) {
      return sh->FenceInsert(c, d, by_coordinator);
    });
  });
}

Result<std::vector<Decision>> SimParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                   size_t limit) {
  return OnPooledSession([retention_ms, limit](SimSession& s) {
    return s.Call([retention_ms, limit](SimShard* sh, uint64_t c) {
      return sh->SelectExpired(c, retention_ms, limit);
    });
  });
}

Status SimParticipant::ForgetDecisions(std::span<const std::string> gids) {
  for (const std::string& g : gids) {
    if (!IsGid(g)) return Status::InvalidArgument("not a gid: " + g);
  }
  std::vector<std::string> v(gids.begin(), gids.end());
  return OnPooledSession([&v](SimSession& s) {
    return s.Call([v](SimShard* sh, uint64_t c) { return sh->DeleteDecisions(c, v); });
  });
}

}  // namespace seigo::sim
