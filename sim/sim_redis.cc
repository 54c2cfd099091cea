// The simulated Redis instance: every function as seigo.lua runs it (doc/redis.md).
#include "sim/sim_redis.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace seigo::sim {
namespace {

Status Lost() { return Status::Unavailable("redis: connection lost (no reply)"); }

// "k<id>": the simulated workload's Redis keys.
Result<int64_t> KeyId(const std::string& key) {
  if (key.size() < 2 || key[0] != 'k') return Status::InvalidArgument("sim redis key " + key);
  return std::stoll(key.substr(1));
}

// The distinct keys a body read.
std::set<int64_t> ReadKeys(const RedisBody& body) {
  std::set<int64_t> out;
  for (const auto& r : body.reads) out.insert(r.key);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

SimRedisServer::SimRedisServer(uint32_t index, const ShardContext& ctx,
                               std::function<int64_t(const std::string&)> tag_of)
    : index_(index), ctx_(ctx), tag_of_(std::move(tag_of)) {}

int64_t SimRedisServer::NowMs() const { return ctx_.sched->now() + clock_offset_; }

void SimRedisServer::Trace(const char* fmt, ...) {
  if (!ctx_.tracer->on()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx_.tracer->Log("redis%u: %s", index_, buf);
}

void SimRedisServer::Crash() {
  if (!up_) return;
  // appendfsync always: everything a function did is in the AOF before its reply; the
  // connections die.
  up_ = false;
  generation_++;
  ctx_.coverage->Add(Cov::kRedisCrash);
  Trace("crash (kill -9)");
}

void SimRedisServer::Restart() {
  if (up_) return;
  up_ = true;
  Trace("restart: AOF replayed");
}

void SimRedisServer::AddDeployment(const std::string& deployment, uint32_t participant) {
  dbs_[deployment].participant = participant;
}

void SimRedisServer::LoadValue(const std::string& deployment, int64_t key, int64_t value) {
  dbs_[deployment].values[key] = value;
}

std::string SimRedisServer::Taken(const Db& db, int64_t key, const std::string& gid,
                                  char what) const {
  if (auto l = locks_.find(key); l != locks_.end() && l->second != gid) {
    bool expired = false;
    if (ctx_.variant == Variant::kRedisLocksExpire) {
      // The planted bug: a lock that times out on its own (a TTL), whatever was decided.
      auto in = db.intents.find(l->second);
      expired = in != db.intents.end() && NowMs() - in->second.prepared_ms > 100;
    }
    if (!expired) return "locked by " + l->second.substr(0, 8);
  }
  if (what != 'r') {
    if (auto r = rlocks_.find(key); r != rlocks_.end() && r->second > 0) {
      return "is read by a transaction that is committing";
    }
  }
  if (what == 'i') return "";
  auto lo = lo_.find(key);
  auto hi = hi_.find(key);
  if ((lo != lo_.end() && lo->second != 0) || (hi != hi_.end() && hi->second != 0)) {
    return "has pending increments";
  }
  return "";
}

Status SimRedisServer::CheckBody(const Db& db, const std::string& gid,
                                 const RedisBody& body) const {
  for (const RedisBody::Read& r : body.reads) {
    if (ctx_.variant == Variant::kRedisNoReadValidation) break;
    if (std::string why = Taken(db, r.key, gid, 'r'); !why.empty()) {
      ctx_.coverage->Add(Cov::kRedisReadConflict);
      return Status::Conflict("k" + std::to_string(r.key) + " (read) " + why);
    }
    auto v = db.values.find(r.key);
    std::optional<int64_t> now = v == db.values.end() ? std::nullopt : std::optional(v->second);
    if (now != r.seen) {
      ctx_.coverage->Add(Cov::kRedisReadConflict);
      return Status::Conflict("k" + std::to_string(r.key) + " changed since it was read");
    }
  }
  for (const RedisBody::Set& s : body.sets) {
    if (std::string why = Taken(db, s.key, gid, 'w'); !why.empty()) {
      ctx_.coverage->Add(Cov::kRedisLockConflict);
      return Status::Conflict("k" + std::to_string(s.key) + " " + why);
    }
  }
  for (const RedisBody::Incr& i : body.incrs) {
    if (std::string why = Taken(db, i.key, gid, 'i'); !why.empty()) {
      ctx_.coverage->Add(Cov::kRedisLockConflict);
      return Status::Conflict("k" + std::to_string(i.key) + " " + why);
    }
    auto v = db.values.find(i.key);
    const int64_t cur = v == db.values.end() ? 0 : v->second;
    if (cur + i.delta < i.min || cur + i.delta > i.max) {
      ctx_.coverage->Add(Cov::kRedisGuard);
      return Status(Code::kGuardFailed, "bound crossed");
    }
    if (ctx_.variant == Variant::kRedisEscrowIgnoresPending) continue;
    auto lo = lo_.find(i.key);
    auto hi = hi_.find(i.key);
    const int64_t l = lo == lo_.end() ? 0 : lo->second, h = hi == hi_.end() ? 0 : hi->second;
    if (cur + l + std::min<int64_t>(i.delta, 0) < i.min ||
        cur + h + std::max<int64_t>(i.delta, 0) > i.max) {
      ctx_.coverage->Add(Cov::kRedisEscrowConflict);
      return Status::Conflict("k" + std::to_string(i.key) + ": pending increments");
    }
  }
  return Status::OK();
}

// Applies a body's writes and increments (commit of an intent, or a decider's commit).
void SimRedisServer::Apply(Db& db, const std::string& gid, const RedisBody& body) {
  std::vector<Effect> effects;
  const int64_t tag = tag_of_(gid);
  for (const RedisBody::Set& s : body.sets) {
    db.values[s.key] = s.value;
    effects.push_back({s.key, s.delta, tag});
  }
  for (const RedisBody::Incr& i : body.incrs) {
    db.values[i.key] += i.delta;
    effects.push_back({i.key, i.delta, tag});
  }
  if (!effects.empty()) ctx_.checker->OnEffects(db.participant, effects, true);
}

void SimRedisServer::Release(std::map<int64_t, int64_t>& m, int64_t key, int64_t by) {
  if (by == 0) return;
  auto it = m.find(key);
  const int64_t before = it == m.end() ? 0 : it->second;
  const int64_t after = before - by;
  // A reservation or read lock released more than it was taken would silently cancel
  // another transaction's (seigo.lua's counter() keeps the count; it must never cross 0).
  if (before == 0 || (before > 0 && after < 0) || (before < 0 && after > 0)) {
    ctx_.checker->Violation("redis" + std::to_string(index_) + ": a lock or reservation count "
                            "of k" + std::to_string(key) + " released past zero");
  }
  if (after == 0) {
    if (it != m.end()) m.erase(it);
  } else {
    m[key] = after;
  }
}

bool SimRedisServer::Committed(const Db& db, const std::string& gid) const {
  auto c = db.committed.find(gid);
  return c != db.committed.end() && (c->second == 0 || c->second > NowMs());
}

void SimRedisServer::Finish(Db& db, const std::string& dep, const std::string& gid, bool commit) {
  auto it = db.intents.find(gid);
  Intent in = std::move(it->second);
  db.intents.erase(it);
  if (commit) {
    Apply(db, gid, in.body);
  } else {
    std::vector<Effect> effects;
    const int64_t tag = tag_of_(gid);
    for (const auto& s : in.body.sets) effects.push_back({s.key, s.delta, tag});
    for (const auto& i : in.body.incrs) effects.push_back({i.key, i.delta, tag});
    if (!effects.empty()) ctx_.checker->OnEffects(db.participant, effects, false);
  }
  for (const auto& s : in.body.sets) {
    if (auto l = locks_.find(s.key); l != locks_.end() && l->second == gid) locks_.erase(l);
  }
  for (const auto& i : in.body.incrs) Release(i.delta < 0 ? lo_ : hi_, i.key, i.delta);
  if (ctx_.variant != Variant::kRedisNoReadLocks) {
    for (int64_t key : ReadKeys(in.body)) Release(rlocks_, key, 1);
  }
  (void)dep;
  ctx_.checker->OnBranchEnded(db.participant, in.xid, commit, /*was_prepared=*/true,
                              commit ? "redis commit" : "redis rollback");
}

Result<std::optional<int64_t>> SimRedisServer::Read(const std::string& dep, int64_t key) {
  const Db& db = DbOf(dep);
  if (ctx_.variant != Variant::kRedisNoReadValidation) {
    if (std::string why = Taken(db, key, "", 'r'); !why.empty()) {
      ctx_.coverage->Add(Cov::kRedisReadConflict);
      return Status::Conflict("k" + std::to_string(key) + " " + why);
    }
  }
  auto v = db.values.find(key);
  return v == db.values.end() ? std::nullopt : std::optional<int64_t>(v->second);
}

Status SimRedisServer::Validate(const std::string& dep, const std::vector<RedisBody::Read>& reads) {
  RedisBody body;
  body.reads = reads;
  return CheckBody(DbOf(dep), "", body);
}

Status SimRedisServer::Prepare(const std::string& dep, const Xid& xid, const RedisBody& body) {
  Db& db = DbOf(dep);
  if (db.intents.count(xid.gid)) return Status::OK();  // a repeated request
  if (auto t = db.tombs.find(xid.gid); t != db.tombs.end() && t->second > NowMs()) {
    ctx_.coverage->Add(Cov::kRedisLatePrepareRefused);
    Trace("prepare %.8s refused: tombstone", xid.gid.c_str());
    return Status::Conflict("rolled back here");
  }
  if (NowMs() > xid.deadline_ms) return Status::Conflict("past its deadline");
  Status s = CheckBody(db, xid.gid, body);
  if (!s.ok()) return s;
  for (const auto& w : body.sets) locks_[w.key] = xid.gid;
  // Every key it read stays read-locked until the decision (seigo.lua: write skew across
  // instances). Variant::kRedisNoReadLocks plants the old code, which locked written keys only.
  if (ctx_.variant != Variant::kRedisNoReadLocks) {
    for (int64_t key : ReadKeys(body)) rlocks_[key]++;
  }
  for (const auto& i : body.incrs) {
    if (i.delta != 0) (i.delta < 0 ? lo_ : hi_)[i.key] += i.delta;
  }
  db.intents[xid.gid] = Intent{xid, body, NowMs()};
  ctx_.checker->OnBranchStarted(db.participant, xid);
  ctx_.checker->OnBranchPrepared(db.participant, xid);
  ctx_.coverage->Add(Cov::kRedisPrepared);
  Trace("prepared %.8s", xid.gid.c_str());
  return Status::OK();
}

void SimRedisServer::WriteDecision(Db& db, const std::string& dep, const Decision& d,
                                   const char* how, int64_t expires_ms) {
  DecisionRec rec{d, expires_ms};
  rec.d.decided_at_ms = NowMs();
  db.decisions[d.gid] = rec;
  ctx_.checker->OnDecisionWritten(dep, db.participant, rec.d, how);
}

Status SimRedisServer::Decide(const std::string& dep, const Decision& d, const RedisBody& body) {
  Db& db = DbOf(dep);
  if (auto r = db.decisions.find(d.gid);
      r != db.decisions.end() && (r->second.expires_ms == 0 || r->second.expires_ms > NowMs())) {
    return Status::Aborted("already has a decision (fenced)");
  }
  if (NowMs() > d.deadline_ms) return Status::Aborted("past its deadline");
  Status s = CheckBody(db, d.gid, body);
  if (!s.ok()) return s;
  // The decision first (the checker requires a commit decision before any commit effect).
  const bool single = d.shards.size() <= 1;
  WriteDecision(db, dep, d, "redis commit point",
                single ? d.deadline_ms + kMinDecisionRetentionMs : 0);
  Apply(db, d.gid, body);
  ctx_.coverage->Add(Cov::kRedisDecided);
  Trace("decided %.8s (commit)", d.gid.c_str());
  return Status::OK();
}

Result<std::string> SimRedisServer::Commit(const std::string& dep, const std::string& gid) {
  Db& db = DbOf(dep);
  if (db.intents.count(gid)) {
    Finish(db, dep, gid, true);
    db.committed[gid] = 0;
    ctx_.coverage->Add(Cov::kRedisCommitted);
    return std::string("OK");
  }
  if (Committed(db, gid)) return std::string("DONE");
  if (auto t = db.tombs.find(gid); t != db.tombs.end() && t->second > NowMs()) {
    return Status::Corruption("redis: " + gid + " was rolled back here");
  }
  return std::string("LOST");
}

Status SimRedisServer::Rollback(const std::string& dep, const std::string& gid,
                                int64_t tomb_until_ms) {
  Db& db = DbOf(dep);
  if (Committed(db, gid)) return Status::Corruption("redis: " + gid + " had committed");
  if (db.intents.count(gid)) {
    Finish(db, dep, gid, false);
    ctx_.coverage->Add(Cov::kRedisRolledBack);
  }
  db.tombs[gid] = std::max(tomb_until_ms, NowMs() + 1000);
  return Status::OK();
}

Result<Outcome> SimRedisServer::Fence(const std::string& dep, const Decision& d,
                                      bool by_coordinator) {
  Db& db = DbOf(dep);
  const int64_t now = NowMs();
  if (auto r = db.decisions.find(d.gid);
      r != db.decisions.end() && (r->second.expires_ms == 0 || r->second.expires_ms > now)) {
    return r->second.d.outcome;
  }
  if (by_coordinator) {
    if (now >= d.deadline_ms + kFenceWindowMs) return Status::Busy("past the fence window");
  } else {
    if (now < d.deadline_ms) return Status::Busy("before its deadline");
    if (now >= d.deadline_ms + kFenceWindowMs) return Outcome::kAbort;
  }
  Decision abort = d;
  abort.outcome = Outcome::kAbort;
  WriteDecision(db, dep, abort, by_coordinator ? "redis fence (coordinator)" : "redis fence", 0);
  return Outcome::kAbort;
}

std::optional<Decision> SimRedisServer::ReadDecision(const std::string& dep,
                                                     const std::string& gid) {
  Db& db = DbOf(dep);
  auto r = db.decisions.find(gid);
  if (r == db.decisions.end() || (r->second.expires_ms != 0 && r->second.expires_ms <= NowMs())) {
    return std::nullopt;
  }
  return r->second.d;
}

std::vector<Decision> SimRedisServer::Expired(const std::string& dep, int64_t retention_ms,
                                              size_t limit) {
  std::vector<Decision> out;
  for (const auto& [gid, r] : DbOf(dep).decisions) {
    if (out.size() >= limit) break;
    if (r.expires_ms == 0 && r.d.deadline_ms + retention_ms < NowMs()) out.push_back(r.d);
  }
  return out;
}

void SimRedisServer::Forget(const std::string& dep, const std::vector<std::string>& gids) {
  Db& db = DbOf(dep);
  for (const std::string& g : gids) {
    if (db.decisions.erase(g)) ctx_.checker->OnDecisionForgotten(dep, db.participant, g);
  }
}

void SimRedisServer::ForgetMarkers(const std::string& dep, const std::vector<std::string>& gids) {
  Db& db = DbOf(dep);
  // As seigo.lua: the marker expires in an hour, so that a stalled call still learns DONE.
  for (const std::string& g : gids) {
    if (auto c = db.committed.find(g); c != db.committed.end() && c->second == 0) {
      c->second = NowMs() + 3'600'000;
    }
  }
}

std::vector<Xid> SimRedisServer::Recover(const std::string& dep) {
  std::vector<Xid> out;
  for (const auto& [gid, in] : DbOf(dep).intents) out.push_back(in.xid);
  return out;
}

std::vector<BranchTrace> SimRedisServer::Probe(const std::string& dep,
                                               const std::vector<std::string>& gids) {
  const Db& db = DbOf(dep);
  std::vector<BranchTrace> out;
  for (const std::string& g : gids) {
    out.push_back(db.intents.count(g)  ? BranchTrace::kOpen
                  : Committed(db, g) ? BranchTrace::kCommitted
                                     : BranchTrace::kNone);
  }
  return out;
}

std::vector<DbFinalState> SimRedisServer::DbFinalStates() const {
  std::vector<DbFinalState> out;
  for (const auto& [dep, db] : dbs_) {
    DbFinalState s;
    s.deployment = dep;
    s.shard = db.participant;
    s.server = net_id();
    s.rows = db.values;
    for (const auto& [gid, r] : db.decisions) {
      if (r.expires_ms == 0 || r.expires_ms > NowMs()) s.decisions[gid] = r.d;
    }
    out.push_back(std::move(s));
  }
  return out;
}

ServerFinalState SimRedisServer::FinalState() const {
  ServerFinalState s;
  s.index = net_id();
  for (const auto& [dep, db] : dbs_) {
    for (const auto& [gid, in] : db.intents) s.prepared.push_back(in.xid);
  }
  s.locks_held = locks_.size() + rlocks_.size() + lo_.size() + hi_.size();
  return s;
}

size_t SimRedisServer::prepared_count() const {
  size_t n = 0;
  for (const auto& [dep, db] : dbs_) n += db.intents.size();
  return n;
}

// ---------------------------------------------------------------------------------------------
// Session

template <typename F>
auto SimRedisSession::Call(F f) -> decltype(f()) {
  using R = decltype(f());
  net_->BeforeRoundTrip(process_, server_->net_id());
  if (broken_) return R(Lost());
  net_->OneWayDelay();
  if (!server_->up() || server_->generation() != generation_) {
    broken_ = true;
    return R(Lost());
  }
  switch (net_->PickDelivery()) {
    case Network::Delivery::kNormal:
      break;
    case Network::Delivery::kLostBefore:
      broken_ = true;
      server_->coverage()->Add(Cov::kRequestLost);
      return R(Lost());
    case Network::Delivery::kLostAfter: {
      R ignored = f();
      (void)ignored;
      broken_ = true;
      server_->coverage()->Add(Cov::kRequestLost);
      return R(Lost());
    }
    case Network::Delivery::kLate: {
      // The client gives up; the request is still in the instance's socket buffer and runs
      // later — unless the instance dies first.
      broken_ = true;
      SimRedisServer* server = server_;
      const uint64_t gen = generation_;
      Scheduler* sched = server_->sched();
      sched->At(sched->now() + net_->NoticeDelayMs(false), [server, gen, f]() mutable {
        if (!server->up() || server->generation() != gen) return;
        server->coverage()->Add(Cov::kRequestLate);
        R ignored = f();
        (void)ignored;
      });
      net_->ClientReadTimeout();
      return R(Lost());
    }
  }
  R r = f();
  net_->OneWayDelay();
  if (!server_->up() || server_->generation() != generation_) {
    broken_ = true;
    return R(Lost());
  }
  net_->AfterRoundTrip(process_);
  return r;
}

void SimRedisSession::Reset() {
  read_only_ = false;
  prepared_ = maybe_prepared_ = false;
  body_ = RedisBody{};
  staged_.clear();
  incr_of_.clear();
}

Status SimRedisSession::BeginLocal() {
  Reset();
  return Status::OK();
}

Status SimRedisSession::BeginReadOnly() {
  Reset();
  read_only_ = true;
  return Status::OK();
}

Status SimRedisSession::BeginBranch(const Xid& xid) {
  (void)xid;
  Reset();
  return Status::OK();
}

Result<QueryResult> SimRedisSession::Execute(std::string_view sql, std::span<const Value> params) {
  (void)params;
  return Status::InvalidArgument("SQL on a Redis instance: " + std::string(sql));
}

Result<KvReply> SimRedisSession::Kv(const KvOp& op) {
  Result<int64_t> key = KeyId(op.key);
  if (!key.ok()) return key.status();
  KvReply out;
  switch (op.kind) {
    case KvOp::Kind::kGet: {
      if (auto s = staged_.find(*key); s != staged_.end()) {
        out.value = std::to_string(s->second);
        return out;
      }
      const std::string dep = deployment_;
      SimRedisServer* server = server_;
      const int64_t k = *key;
      Result<std::optional<int64_t>> r = Call([server, dep, k] { return server->Read(dep, k); });
      if (!r.ok()) return r.status();
      body_.reads.push_back({*key, *r});
      int64_t v = r->value_or(0);
      if (auto i = incr_of_.find(*key); i != incr_of_.end()) v += body_.incrs[i->second].delta;
      if (r->has_value() || incr_of_.count(*key)) out.value = std::to_string(v);
      return out;
    }
    case KvOp::Kind::kSet: {
      if (read_only_) return Status::InvalidArgument("read-only");
      if (incr_of_.count(*key)) return Status::InvalidArgument("sim: Set after Incr");
      const int64_t value = std::stoll(op.value);
      // The write's effect for the checker: relative to the value this transaction read.
      int64_t base = 0;
      for (const auto& r : body_.reads) {
        if (r.key == *key) base = r.seen.value_or(0);
      }
      if (auto s = staged_.find(*key); s != staged_.end()) base = s->second;
      bool merged = false;
      for (auto& s : body_.sets) {
        if (s.key == *key) {
          s.delta += value - base;
          s.value = value;
          merged = true;
        }
      }
      if (!merged) body_.sets.push_back({*key, value, value - base});
      staged_[*key] = value;
      return out;
    }
    case KvOp::Kind::kIncr: {
      if (read_only_) return Status::InvalidArgument("read-only");
      if (staged_.count(*key)) return Status::InvalidArgument("sim: Incr after Set");
      if (auto i = incr_of_.find(*key); i != incr_of_.end()) {
        RedisBody::Incr& inc = body_.incrs[i->second];
        inc.delta += op.delta;
        inc.min = std::max(inc.min, op.min);
        inc.max = std::min(inc.max, op.max);
      } else {
        incr_of_[*key] = body_.incrs.size();
        body_.incrs.push_back({*key, op.delta, op.min, op.max});
      }
      return out;
    }
    default:
      return Status::InvalidArgument("sim redis: unsupported operation");
  }
}

Status SimRedisSession::Prepare(const Xid& xid) {
  xid_ = xid;
  maybe_prepared_ = true;
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const RedisBody body = body_;
  Status s = Call([server, dep, xid, body] { return server->Prepare(dep, xid, body); });
  if (s.Is(Code::kUnavailable)) return s;  // maybe prepared
  maybe_prepared_ = false;
  prepared_ = s.ok();
  return s;
}

Status SimRedisSession::CommitWithDecision(const Decision& d) {
  xid_.gid = d.gid;
  xid_.deadline_ms = d.deadline_ms;
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const RedisBody body = body_;
  return Call([server, dep, d, body] { return server->Decide(dep, d, body); });
}

Status SimRedisSession::CommitPrepared(const Xid& xid) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const std::string gid = xid.gid;
  Result<std::string> r = Call([server, dep, gid] { return server->Commit(dep, gid); });
  if (!r.ok()) return r.status();
  if (*r == "LOST") return Status::Corruption("redis: the intent of " + gid + " is gone");
  prepared_ = false;
  return Status::OK();
}

Status SimRedisSession::RollbackAll(const Xid* xid, bool prepared) {
  (void)prepared;
  Status s;
  if (read_only_) {
    if (!body_.reads.empty()) {
      SimRedisServer* server = server_;
      const std::string dep = deployment_;
      const std::vector<RedisBody::Read> reads = body_.reads;
      s = Call([server, dep, reads] { return server->Validate(dep, reads); });
    }
  } else if (prepared_ || maybe_prepared_) {
    const Xid& x = xid != nullptr && !xid->gid.empty() ? *xid : xid_;
    s = owner_->RollbackXid(x);
  }
  Reset();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Participant

Result<std::unique_ptr<Session>> SimRedisParticipant::Acquire() {
  while (!idle_.empty()) {
    std::unique_ptr<SimRedisSession> s = std::move(idle_.back());
    idle_.pop_back();
    if (s->generation() == server_->generation() && server_->up()) return std::unique_ptr<Session>(std::move(s));
  }
  if (!server_->up()) return Status::Unavailable(name_ + ": connection refused");
  return std::unique_ptr<Session>(
      std::make_unique<SimRedisSession>(server_, net_, process_, deployment_, this));
}

void SimRedisParticipant::Release(std::unique_ptr<Session> session) {
  auto* s = static_cast<SimRedisSession*>(session.get());
  if (s->Broken()) {
    idle_.clear();  // as the adapter: a lost connection means the idle ones are stale too
    return;
  }
  if (idle_.size() < kMaxIdle) {
    session.release();
    idle_.push_back(std::unique_ptr<SimRedisSession>(s));
  }
}

template <typename F>
auto SimRedisParticipant::Recovery(F f) -> decltype(f()) {
  using R = decltype(f());
  if (!server_->up()) return R(Status::Unavailable(name_ + ": connection refused"));
  SimRedisSession s(server_, net_, process_, deployment_, this);
  return s.Call(f);
}

Result<std::vector<Xid>> SimRedisParticipant::RecoverPrepared() {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  return Recovery([server, dep]() -> Result<std::vector<Xid>> { return server->Recover(dep); });
}

Status SimRedisParticipant::CommitXid(const Xid& xid) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const std::string gid = xid.gid;
  Result<std::string> r = Recovery([server, dep, gid] { return server->Commit(dep, gid); });
  if (!r.ok()) return r.status();
  if (*r == "LOST") return Status::Corruption("redis: the intent of " + gid + " is gone");
  return Status::OK();
}

Status SimRedisParticipant::RollbackXid(const Xid& xid) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const std::string gid = xid.gid;
  const int64_t until = xid.deadline_ms + kFenceWindowMs + 60'000;
  return Recovery([server, dep, gid, until] { return server->Rollback(dep, gid, until); });
}

Result<std::vector<BranchTrace>> SimRedisParticipant::ProbeBranches(
    std::span<const std::string> gids) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  std::vector<std::string> g(gids.begin(), gids.end());
  return Recovery(
      [server, dep, g]() -> Result<std::vector<BranchTrace>> { return server->Probe(dep, g); });
}

Status SimRedisParticipant::ForgetBranches(std::span<const std::string> gids) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  std::vector<std::string> g(gids.begin(), gids.end());
  return Recovery([server, dep, g] {
    server->ForgetMarkers(dep, g);
    return Status::OK();
  });
}

Result<std::optional<Decision>> SimRedisParticipant::ReadDecision(std::string_view gid) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  const std::string g(gid);
  return Recovery([server, dep, g]() -> Result<std::optional<Decision>> {
    return server->ReadDecision(dep, g);
  });
}

Result<Outcome> SimRedisParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  return Recovery([server, dep, d, by_coordinator] { return server->Fence(dep, d, by_coordinator); });
}

Result<std::vector<Decision>> SimRedisParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                       size_t limit) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  return Recovery([server, dep, retention_ms, limit]() -> Result<std::vector<Decision>> {
    return server->Expired(dep, retention_ms, limit);
  });
}

Status SimRedisParticipant::ForgetDecisions(std::span<const std::string> gids) {
  SimRedisServer* server = server_;
  const std::string dep = deployment_;
  std::vector<std::string> g(gids.begin(), gids.end());
  return Recovery([server, dep, g] {
    server->Forget(dep, g);
    return Status::OK();
  });
}

}  // namespace seigo::sim
