// The Redis participant (doc/redis.md). Protocol steps are the functions of seigo.lua; this
// file stages a branch's work, encodes it for those functions and maps their replies.
#include "redis/redis_participant.h"

#include "seigo/env.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>

namespace seigo::redis {

extern const char* const kFunctionLibrary;  // seigo.lua (redis_functions.cc, generated)

namespace {

// Deadlines are unix ms by DefaultEnv's clock (Session::SetDeadline).
int64_t UnixMs() { return DefaultEnv()->NowMs(); }

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

timeval Tv(int64_t ms) {
  ms = std::max<int64_t>(ms, 1);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string I(int64_t v) { return std::to_string(v); }

std::string Join(const std::vector<uint32_t>& v) {
  std::string s;
  for (uint32_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

std::vector<uint32_t> SplitShards(const std::string& s) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    uint32_t v = 0;
    std::from_chars(s.data() + i, s.data() + j, v);
    out.push_back(v);
    i = j + 1;
  }
  return out;
}

int64_t ToInt(const std::string& s) {
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

}  // namespace

// ---- One connection ----

struct Reply {
  enum Type { kNil, kString, kInteger, kArray, kError, kStatus };
  Type type = kNil;
  std::string str;
  long long integer = 0;
  std::vector<Reply> elems;

  static Reply From(const redisReply* r) {
    Reply out;
    switch (r->type) {
      case REDIS_REPLY_STRING: out.type = kString; out.str.assign(r->str, r->len); break;
      case REDIS_REPLY_STATUS: out.type = kStatus; out.str.assign(r->str, r->len); break;
      case REDIS_REPLY_ERROR: out.type = kError; out.str.assign(r->str, r->len); break;
      case REDIS_REPLY_INTEGER: out.type = kInteger; out.integer = r->integer; break;
      case REDIS_REPLY_ARRAY:
        out.type = kArray;
        for (size_t i = 0; i < r->elements; ++i) out.elems.push_back(From(r->element[i]));
        break;
      default: out.type = kNil; break;
    }
    return out;
  }
  // Text of a string, status or integer reply; nullopt for nil.
  std::optional<std::string> Text() const {
    if (type == kNil) return std::nullopt;
    if (type == kInteger) return std::to_string(integer);
    return str;
  }
};

class Conn {
 public:
  Conn(redisContext* c, int read_timeout_ms) : c_(c), read_timeout_ms_(read_timeout_ms) {}
  ~Conn() {
    if (c_ != nullptr) redisFree(c_);
  }
  bool broken() const { return broken_; }
  // Broken because a call was not sent (the Run's deadline had passed), not because the
  // connection failed: says nothing about the instance.
  bool cut() const { return cut_; }
  // Broken for a reason that may concern the instance (it restarted, it lost its data).
  bool lost() const { return broken_ && !cut_; }

  // One command. kUnavailable when the connection fails (then broken()): the command's effect
  // is unknown. A server error reply is returned as a Reply of type kError, not as a Status.
  // `deadline_ms` (unix ms, 0 = none) bounds the wait for the reply.
  Result<Reply> Call(const std::vector<std::string>& args, int64_t deadline_ms = 0) {
    if (broken_) return Status::Unavailable("connection already lost");
    int64_t wait = read_timeout_ms_;
    if (deadline_ms > 0) {
      const int64_t left = deadline_ms - UnixMs();
      if (left <= 0) {
        // Nothing sent: not a lost reply. The connection is dropped, since the session's
        // transaction is over.
        broken_ = true;
        cut_ = true;
        return Status(Code::kDeadlineExceeded, "the Run's deadline passed before the call");
      }
      wait = std::min(wait, left);
    }
    if (wait != timeout_set_) {
      redisSetTimeout(c_, Tv(wait));
      timeout_set_ = wait;
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    void* raw = redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data());
    if (raw == nullptr) {
      broken_ = true;
      return Status::Unavailable(std::string("connection lost: ") +
                                 (c_->errstr[0] ? c_->errstr : "no reply"));
    }
    Reply r = Reply::From(static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    return r;
  }

 private:
  redisContext* c_;
  const int read_timeout_ms_;
  int64_t timeout_set_ = -1;
  bool broken_ = false;
  bool cut_ = false;
};

struct Pool {
  std::mutex mu;
  std::vector<std::unique_ptr<Conn>> idle;  // guarded by mu
  size_t max_idle = 64;
  void Give(std::unique_ptr<Conn> c) {
    if (!c || c->broken()) return;
    std::lock_guard<std::mutex> l(mu);
    if (idle.size() < max_idle) idle.push_back(std::move(c));
  }
};

namespace {

// A server error reply as a Status. `refused` is the code for SEIGO_REFUSED (what a refusal
// means depends on the step).
Status MapError(const std::string& err, Code refused) {
  auto rest = [&](size_t n) { return err.size() > n ? err.substr(n) : std::string(); };
  if (err.rfind("SEIGO_CONFLICT ", 0) == 0) return Status::Conflict(rest(15));
  if (err.rfind("SEIGO_GUARD ", 0) == 0) return Status(Code::kGuardFailed, rest(12));
  if (err.rfind("SEIGO_REFUSED ", 0) == 0) return Status(refused, rest(14));
  if (err.rfind("SEIGO_TYPE ", 0) == 0) return Status::QueryFailed(rest(11));
  if (err.rfind("SEIGO_ROLLEDBACK ", 0) == 0 || err.rfind("SEIGO_COMMITTED ", 0) == 0) {
    return Status::Corruption(err);
  }
  if (err.rfind("LOADING", 0) == 0 || err.rfind("BUSY", 0) == 0 ||
      err.rfind("MASTERDOWN", 0) == 0) {
    return Status::Unavailable(err);  // not run; the instance cannot take it now
  }
  if (err.rfind("READONLY", 0) == 0) {
    return Status::Unsupported(err + " (seigo needs a primary, not a replica)");
  }
  return Status::QueryFailed(err);
}

// What seigo2_commit's reply means: OK / DONE (committed, now or before), PARTIAL n (committed,
// but n writes failed because another client changed a locked key's type), LOST (no trace).
Status CommitReply(const std::string& name, const std::string& gid, const std::string& reply) {
  if (reply == "OK" || reply == "DONE") return Status::OK();
  if (reply == "LOST") {
    return Status::Corruption(name + ": the prepared intent of " + gid + " is gone without a "
                              "trace (the instance lost data: was it run without appendfsync "
                              "always?); its writes are NOT applied");
  }
  return Status::Corruption(name + ": transaction " + gid + " committed, but " +
                            reply.substr(std::min<size_t>(reply.size(), 8)) + " of its writes "
                            "failed: another client changed the type of a key seigo had "
                            "locked (doc/redis.md, \"Other clients\")");
}

std::string Digits(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

}  // namespace

// ---- URL ----

Result<Url> Url::Parse(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("redis URL must start with redis:// (got '" +
                                   std::string(url.substr(0, 40)) + "')");
  }
  std::string_view rest = url.substr(kScheme.size());
  Url u;
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view cred = rest.substr(0, at);
    if (!cred.empty() && cred[0] == ':') cred.remove_prefix(1);
    u.password = std::string(cred);
    rest = rest.substr(at + 1);
  }
  std::string_view hostport = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      auto [p, ec] = std::from_chars(db.data(), db.data() + db.size(), u.db);
      if (ec != std::errc() || p != db.data() + db.size() || u.db < 0) {
        return Status::InvalidArgument("redis URL: bad database number '" + std::string(db) +
                                       "'");
      }
    }
  }
  if (size_t colon = hostport.rfind(':'); colon != std::string_view::npos) {
    std::string_view port = hostport.substr(colon + 1);
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      return Status::InvalidArgument("redis URL: bad port '" + std::string(port) + "'");
    }
    u.port = static_cast<uint16_t>(v);
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) return Status::InvalidArgument("redis URL: no host");
  u.host = std::string(hostport);
  return u;
}

std::string Url::Redacted() const {
  return "redis://" + std::string(password.empty() ? "" : "***@") + host + ":" +
         std::to_string(port) + "/" + std::to_string(db);
}

// ---- The session: one branch ----

class RedisSession final : public Session {
 public:
  RedisSession(RedisParticipant* p, std::unique_ptr<Conn> c) : p_(p), conn_(std::move(c)) {}
  // A lost connection (also one dropped without Release, after a lost reply): check the
  // instance again before the next use — did it come back with its data?
  ~RedisSession() override {
    if (conn_ && conn_->lost()) p_->Invalidate();
  }

  std::unique_ptr<Conn> TakeConn() { return std::move(conn_); }

  Status BeginLocal() override {
    Reset();
    return Status::OK();
  }
  Status BeginReadOnly() override {
    Reset();
    read_only_ = true;
    return Status::OK();
  }
  Status BeginBranch(const Xid& xid) override {
    (void)xid;
    Reset();
    return Status::OK();
  }
  Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) override {
    (void)params;
    return Status::InvalidArgument(p_->name() + " is a Redis instance: use tx.kv(), not SQL (" +
                                   std::string(sql.substr(0, 60)) + ")");
  }

  Result<KvReply> Kv(const KvOp& op) override;
  Status Prepare(const Xid& xid) override;
  Status CommitLocal() override {
    return Status::Internal("a Redis branch commits through CommitWithDecision");
  }
  Status CommitWithDecision(const Decision& d) override;
  Status CommitPrepared(const Xid& xid) override;
  Status RollbackAll(const Xid* xid, bool prepared) override;
  bool Broken() const override { return !conn_ || conn_->broken(); }
  void SetDeadline(int64_t unix_ms) override { deadline_ms_ = unix_ms; }

 private:
  enum class Type { kNone, kString, kHash, kZset };
  // What this transaction has staged for one key, for read-your-writes.
  struct Staged {
    Type type = Type::kNone;
    bool replaced = false;  // SET or DEL: the server's value no longer matters
    std::optional<std::string> str;  // the staged string (replaced && type == kString)
    std::map<std::string, std::optional<std::string>> fields;  // hash: field -> value / gone
    std::map<std::string, std::optional<double>> members;      // zset: member -> score / gone
  };
  struct Read {
    std::string op, key, arg, digest;
  };
  struct Write {
    std::string op, key, a, b;
  };
  struct Incr {
    int64_t delta = 0, min = 0, max = 0;
    std::string reason;
  };

  void Reset() {
    read_only_ = false;
    prepared_ = false;
    maybe_prepared_ = false;
    reads_.clear();
    writes_.clear();
    incrs_.clear();
    staged_.clear();
  }
  // One call of a seigo function on this session's connection.
  Result<Reply> Fcall(const std::string& fn, std::vector<std::string> args) {
    if (!conn_) return Status::Unavailable(p_->name() + ": no connection");
    std::vector<std::string> argv = {"FCALL", fn, "0"};
    argv.reserve(args.size() + 3);
    for (std::string& a : args) argv.push_back(std::move(a));
    Result<Reply> r = conn_->Call(argv, deadline_ms_);
    if (r.ok() && r->type == Reply::kError && r->str.find("Function not found") !=
                                                   std::string::npos) {
      p_->Invalidate();  // functions gone (an instance that lost its data): load them again
      return Status::Unavailable(p_->name() + ": seigo's functions are missing (the instance "
                                 "lost its data?); reloading them: " + r->str);
    }
    return r;
  }
  // A read at the server: the value and its digest, recorded for validation.
  Result<Reply> ServerRead(const std::string& op, const std::string& key, const std::string& arg);
  void AppendBody(std::vector<std::string>* a) const;
  Status StepStatus(const Result<Reply>& r, Code refused, const char* step) const;
  Status StageWrite(const KvOp& op);

  RedisParticipant* const p_;
  std::unique_ptr<Conn> conn_;
  int64_t deadline_ms_ = 0;
  bool read_only_ = false;
  bool prepared_ = false;        // the intent is stored
  bool maybe_prepared_ = false;  // the prepare was sent and its reply lost
  Xid xid_;
  std::vector<Read> reads_;
  std::vector<Write> writes_;
  std::map<std::string, Incr> incrs_;
  std::map<std::string, Staged> staged_;
};

Status RedisSession::StepStatus(const Result<Reply>& r, Code refused, const char* step) const {
  if (!r.ok()) return r.status().Annotate(p_->name() + ": " + step);
  if (r->type == Reply::kError) return MapError(r->str, refused);
  return Status::OK();
}

Result<Reply> RedisSession::ServerRead(const std::string& op, const std::string& key,
                                       const std::string& arg) {
  Result<Reply> r = Fcall("seigo2_read", {p_->prefix(), op, key, arg});
  Status s = StepStatus(r, Code::kQueryFailed, "read");
  if (!s.ok()) return s;
  if (r->type != Reply::kArray || r->elems.size() != 2) {
    return Status::Internal(p_->name() + ": malformed read reply");
  }
  reads_.push_back({op, key, arg, r->elems[1].str});
  return std::move(r->elems[0]);
}

Result<KvReply> RedisSession::Kv(const KvOp& op) {
  using K = KvOp::Kind;
  KvReply out;
  if (op.key.rfind("seigo:", 0) == 0) {
    return Status::InvalidArgument("keys starting with \"seigo:\" are seigo's own bookkeeping");
  }
  if (KvOpReads(op.kind)) {
    auto st = staged_.find(op.key);
    const Staged* sg = st == staged_.end() ? nullptr : &st->second;
    switch (op.kind) {
      case K::kGet: {
        if (sg != nullptr && sg->replaced) {
          if (sg->type != Type::kString && sg->type != Type::kNone) {
            return Status::QueryFailed("WRONGTYPE " + op.key + " is staged as another type");
          }
          out.value = sg->str;
          return out;
        }
        if (sg != nullptr && sg->type != Type::kNone) {
          return Status::QueryFailed("WRONGTYPE " + op.key + " is not a string");
        }
        Result<Reply> r = ServerRead("get", op.key, "");
        if (!r.ok()) return r.status();
        out.value = r->Text();
        if (auto inc = incrs_.find(op.key); inc != incrs_.end()) {
          // Read-your-writes over a pending bounded increment: the server's value plus ours.
          int64_t base = 0;
          if (out.value) {
            auto [p, ec] = std::from_chars(out.value->data(),
                                           out.value->data() + out.value->size(), base);
            if (ec != std::errc() || p != out.value->data() + out.value->size()) {
              return Status::QueryFailed(op.key + " is not an integer");
            }
          }
          out.value = std::to_string(base + inc->second.delta);
        }
        return out;
      }
      case K::kHGet: {
        if (sg != nullptr) {
          if (sg->type != Type::kHash && sg->type != Type::kNone) {
            return Status::QueryFailed("WRONGTYPE " + op.key + " is staged as another type");
          }
          if (auto f = sg->fields.find(op.field); f != sg->fields.end()) {
            out.value = f->second;
            return out;
          }
          if (sg->replaced) return out;  // deleted whole in this transaction
        }
        Result<Reply> r = ServerRead("hget", op.key, op.field);
        if (!r.ok()) return r.status();
        out.value = r->Text();
        return out;
      }
      case K::kZScore: {
        if (sg != nullptr) {
          if (sg->type != Type::kZset && sg->type != Type::kNone) {
            return Status::QueryFailed("WRONGTYPE " + op.key + " is staged as another type");
          }
          if (auto m = sg->members.find(op.field); m != sg->members.end()) {
            if (m->second) out.value = Digits(*m->second);
            return out;
          }
          if (sg->replaced) return out;
        }
        Result<Reply> r = ServerRead("zscore", op.key, op.field);
        if (!r.ok()) return r.status();
        out.value = r->Text();
        return out;
      }
      case K::kZTop: {
        if (op.count < 1 || op.count > 100'000) {
          return Status::InvalidArgument("ZTop count must be from 1 to 100000");
        }
        if (sg != nullptr || incrs_.count(op.key)) {
          return Status::InvalidArgument("ZTop of " + op.key + " after a write of it in the same "
                                         "transaction is not supported");
        }
        Result<Reply> r = ServerRead("ztop", op.key, I(op.count));
        if (!r.ok()) return r.status();
        for (size_t i = 0; i + 1 < r->elems.size(); i += 2) {
          out.members.push_back({r->elems[i].str, std::strtod(r->elems[i + 1].str.c_str(),
                                                              nullptr)});
        }
        return out;
      }
      default:
        break;
    }
  }
  if (read_only_) return Status::InvalidArgument("a read-only transaction cannot write");
  Status s = StageWrite(op);
  if (!s.ok()) return s;
  return out;
}

Status RedisSession::StageWrite(const KvOp& op) {
  using K = KvOp::Kind;
  Staged& sg = staged_[op.key];
  auto want = [&](Type t, const char* name) -> Status {
    if (sg.type != Type::kNone && sg.type != t) {
      return Status::InvalidArgument("key " + op.key + " is written as two types in one "
                                     "transaction (now as a " + name + ")");
    }
    if (incrs_.count(op.key) && t != Type::kString) {
      return Status::InvalidArgument("key " + op.key + " has a bounded increment in this "
                                     "transaction; it cannot be written as a " + name);
    }
    sg.type = t;
    return Status::OK();
  };
  switch (op.kind) {
    case K::kSet:
      sg = Staged{};
      sg.type = Type::kString;
      sg.replaced = true;
      sg.str = op.value;
      incrs_.erase(op.key);  // replaced: the increment no longer matters
      writes_.push_back({"set", op.key, op.value, ""});
      return Status::OK();
    case K::kDel:
      sg = Staged{};
      sg.replaced = true;
      incrs_.erase(op.key);
      writes_.push_back({"del", op.key, "", ""});
      return Status::OK();
    case K::kHSet:
    case K::kHDel: {
      Status s = want(Type::kHash, "hash");
      if (!s.ok()) return s;
      const bool set = op.kind == K::kHSet;
      sg.fields[op.field] = set ? std::optional<std::string>(op.value) : std::nullopt;
      writes_.push_back({set ? "hset" : "hdel", op.key, op.field, op.value});
      return Status::OK();
    }
    case K::kZAdd:
    case K::kZRem: {
      Status s = want(Type::kZset, "sorted set");
      if (!s.ok()) return s;
      const bool add = op.kind == K::kZAdd;
      if (add && !std::isfinite(op.score)) {
        return Status::InvalidArgument("ZAdd score must be finite");
      }
      sg.members[op.field] = add ? std::optional<double>(op.score) : std::nullopt;
      writes_.push_back({add ? "zadd" : "zrem", op.key, op.field, add ? Digits(op.score) : ""});
      return Status::OK();
    }
    case K::kIncr: {
      if (op.min > op.max) return Status::InvalidArgument("Incr: min > max for " + op.key);
      // Bounds beyond +-2^53 are clamped to it: no value can get there anyway.
      const int64_t lo = std::max(op.min, -kKvMaxExactInteger);
      const int64_t hi = std::min(op.max, kKvMaxExactInteger);
      if (op.delta > kKvMaxExactInteger || op.delta < -kKvMaxExactInteger) {
        return Status::InvalidArgument("Incr: delta beyond +-2^52 for " + op.key);
      }
      const std::string reason = op.reason.empty() ? "bound crossed" : op.reason;
      if (sg.type != Type::kNone && sg.type != Type::kString) {
        return Status::InvalidArgument("Incr of " + op.key + ", written as another type in "
                                       "this transaction");
      }
      if (sg.replaced) {
        // The value is this transaction's own (SET or DEL earlier): plain arithmetic, checked
        // now, and staged as a SET.
        int64_t cur = 0;
        if (sg.str) {
          auto [p, ec] = std::from_chars(sg.str->data(), sg.str->data() + sg.str->size(), cur);
          if (ec != std::errc() || p != sg.str->data() + sg.str->size()) {
            return Status::QueryFailed(op.key + " holds a non-integer in this transaction");
          }
        }
        const int64_t next = cur + op.delta;
        if (next < lo || next > hi) {
          return Status(Code::kGuardFailed, reason + " (" + op.key + " would be " +
                                                std::to_string(next) + ")");
        }
        KvOp set;
        set.kind = K::kSet;
        set.key = op.key;
        set.value = std::to_string(next);
        return StageWrite(set);
      }
      staged_.erase(op.key);  // nothing staged but the increment (no read-your-writes entry)
      Incr& inc = incrs_[op.key];
      if (inc.reason.empty()) {
        inc = Incr{op.delta, lo, hi, reason};
      } else {
        // Several increments of one key: one reservation of their sum, within every bound.
        inc.delta += op.delta;
        if (inc.delta > kKvMaxExactInteger || inc.delta < -kKvMaxExactInteger) {
          return Status::InvalidArgument("Incr: the increments of " + op.key +
                                         " sum beyond +-2^52");
        }
        inc.min = std::max(inc.min, lo);
        inc.max = std::min(inc.max, hi);
        if (inc.min > inc.max) return Status::InvalidArgument("Incr: bounds exclude each other");
      }
      return Status::OK();
    }
    default:
      return Status::InvalidArgument("unknown key-value operation");
  }
}

void RedisSession::AppendBody(std::vector<std::string>* a) const {
  a->push_back(I(static_cast<int64_t>(reads_.size())));
  a->push_back(I(static_cast<int64_t>(writes_.size())));
  a->push_back(I(static_cast<int64_t>(incrs_.size())));
  for (const Read& r : reads_) {
    a->insert(a->end(), {r.op, r.key, r.arg, r.digest});
  }
  for (const Write& w : writes_) {
    a->insert(a->end(), {w.op, w.key, w.a, w.b});
  }
  for (const auto& [key, inc] : incrs_) {
    a->insert(a->end(), {key, I(inc.delta), I(inc.min), I(inc.max), inc.reason});
  }
}

Status RedisSession::Prepare(const Xid& xid) {
  xid_ = xid;
  std::vector<std::string> a = {p_->prefix(), xid.gid, xid.Gtrid(), xid.Bqual(),
                                I(xid.deadline_ms)};
  AppendBody(&a);
  maybe_prepared_ = true;
  Result<Reply> r = Fcall("seigo2_prepare", std::move(a));
  if (!r.ok()) return r.status().Annotate(p_->name() + ": prepare");  // maybe prepared
  maybe_prepared_ = false;
  // A refusal here (rolled back already, past the deadline) means this attempt cannot
  // commit; another attempt may.
  Status s = StepStatus(r, Code::kConflict, "prepare");
  if (s.ok()) prepared_ = true;
  return s;
}

Status RedisSession::CommitWithDecision(const Decision& d) {
  xid_.gid = d.gid;
  xid_.deadline_ms = d.deadline_ms;
  xid_.deployment = p_->deployment();
  std::vector<std::string> a = {p_->prefix(), d.gid, I(d.deadline_ms), Join(d.shards),
                                d.shards.size() <= 1 ? "1" : "0", I(kMinDecisionRetentionMs)};
  AppendBody(&a);
  Result<Reply> r = Fcall("seigo2_decide", std::move(a));
  if (!r.ok()) return r.status().Annotate(p_->name() + ": commit");  // outcome unknown
  if (r->type == Reply::kError && r->str.rfind("SEIGO_", 0) != 0 &&
      r->str.rfind("LOADING", 0) != 0 && r->str.rfind("BUSY", 0) != 0) {
    // Not one of the function's own refusals (which it makes before its first write): the
    // commit point's outcome is not ours to assume. The fence tells.
    return Status::OutcomeUnknown(p_->name() + ": the commit failed: " + r->str);
  }
  return StepStatus(r, Code::kAborted, "commit");
}

Status RedisSession::CommitPrepared(const Xid& xid) {
  Result<Reply> r = Fcall("seigo2_commit", {p_->prefix(), xid.gid});
  Status s = StepStatus(r, Code::kCorruption, "commit");
  if (!s.ok()) return s;
  prepared_ = false;
  return CommitReply(p_->name(), xid.gid, r->str);
}

Status RedisSession::RollbackAll(const Xid* xid, bool prepared) {
  (void)prepared;
  Status s;
  if (read_only_) {
    // The end of a read-only transaction: every read must still hold, all at once, or the
    // reads of different keys (and of the other stores) were not one consistent view.
    if (!reads_.empty()) {
      std::vector<std::string> a = {p_->prefix(), "0", "0", "0"};
      a[1] = I(static_cast<int64_t>(reads_.size()));
      for (const Read& r : reads_) a.insert(a.end(), {r.op, r.key, r.arg, r.digest});
      s = StepStatus(Fcall("seigo2_validate", std::move(a)), Code::kConflict, "validate reads");
    }
  } else if (prepared_ || maybe_prepared_) {
    // The intent is (or may be) stored: roll it back by XID, which also leaves the tombstone
    // that refuses a prepare of this gid arriving late.
    const Xid& x = xid != nullptr && !xid->gid.empty() ? *xid : xid_;
    s = p_->Finish(x, /*commit=*/false);
  }
  Reset();
  return s;
}

// ---- The participant ----

RedisParticipant::RedisParticipant(const Config& config)
    : config_(config),
      name_("redis " + std::to_string(config.index) + " (" + config.url.host + ":" +
            std::to_string(config.url.port) + "/" + std::to_string(config.url.db) + ")"),
      prefix_("seigo:" + config.deployment + ":"),
      pool_(std::make_shared<Pool>()) {
  pool_->max_idle = config.max_idle;
}

RedisParticipant::~RedisParticipant() = default;

Result<std::unique_ptr<RedisParticipant>> RedisParticipant::Open(const Config& config) {
  if (!Xid::IsDeploymentId(config.deployment)) {
    return Status::InvalidArgument("redis participant: bad deployment id");
  }
  std::unique_ptr<RedisParticipant> p(new RedisParticipant(config));
  Status s = p->EnsureReady();
  if (!s.ok() && !s.Is(Code::kUnavailable)) return s;
  return p;
}

std::string RedisParticipant::epoch() const {
  std::lock_guard<std::mutex> l(mu_);
  return epoch_;
}

void RedisParticipant::Invalidate() {
  std::lock_guard<std::mutex> l(mu_);
  ready_ = false;
  last_try_ms_ = -1;
  // Callers that arrive while another thread re-checks must not take the old OK for it.
  if (lost_.ok()) last_error_ = Status::Unavailable(name_ + ": being checked again");
}

bool RedisParticipant::is_up() const {
  std::lock_guard<std::mutex> l(mu_);
  return ready_;
}

Status RedisParticipant::EnsureReady() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!lost_.ok()) return lost_;
    if (ready_) return Status::OK();
    const int64_t now = SteadyMs();
    if (last_try_ms_ >= 0 && now - last_try_ms_ < 250) return last_error_;
    last_try_ms_ = now;
  }
  Status s;
  redisContext* c = redisConnectWithTimeout(config_.url.host.c_str(), config_.url.port,
                                            Tv(config_.connect_timeout_ms));
  if (c == nullptr || c->err) {
    s = Status::Unavailable(name_ + ": cannot connect: " +
                            (c != nullptr ? std::string(c->errstr) : std::string("no memory")));
    if (c != nullptr) redisFree(c);
  } else {
    Conn conn(c, config_.read_timeout_ms);
    s = CheckAndLoad(&conn);
  }
  std::lock_guard<std::mutex> l(mu_);
  ready_ = s.ok();
  last_error_ = s;
  return s;
}

Status RedisParticipant::CheckAndLoad(Conn* c) {
  auto call = [&](const std::vector<std::string>& args) -> Result<Reply> {
    Result<Reply> r = c->Call(args);
    if (!r.ok()) return r.status().Annotate(name_);
    if (r->type == Reply::kError) return MapError(r->str, Code::kQueryFailed).Annotate(name_ + ": " + args[0]);
    return r;
  };
  if (!config_.url.password.empty()) {
    Result<Reply> r = call({"AUTH", config_.url.password});
    if (!r.ok()) return Status::InvalidArgument(name_ + ": AUTH failed: " + r.status().message());
  }
  if (config_.url.db != 0) {
    Result<Reply> r = call({"SELECT", std::to_string(config_.url.db)});
    if (!r.ok()) return r.status();
  }
  Result<Reply> info = call({"INFO", "server"});
  if (!info.ok()) return info.status();
  int major = 0;
  if (size_t at = info->str.find("redis_version:"); at != std::string::npos) {
    major = std::atoi(info->str.c_str() + at + 14);
  }
  if (major < 7) {
    return Status::Unsupported(name_ + ": Redis 7.0 or later is needed (functions); this is " +
                               std::to_string(major) + ".x");
  }
  if (!config_.allow_unsafe_durability) {
    // A reply must mean "on disk": with appendfsync always, Redis fsyncs the AOF before it
    // writes replies (doc/redis.md, "Durability gate").
    const std::pair<const char*, const char*> want[] = {{"appendonly", "yes"},
                                                        {"appendfsync", "always"},
                                                        {"no-appendfsync-on-rewrite", "no"},
                                                        {"maxmemory-policy", "noeviction"}};
    std::string bad;
    for (const auto& [key, value] : want) {
      Result<Reply> r = c->Call({"CONFIG", "GET", key});
      if (!r.ok()) return r.status().Annotate(name_);
      if (r->type != Reply::kArray || r->elems.size() != 2) {
        return Status::Unsupported(name_ + ": cannot verify durability (CONFIG GET " + key +
                                   " refused" + (r->type == Reply::kError ? ": " + r->str : "") +
                                   ")");
      }
      if (r->elems[1].str != value) {
        bad += std::string(bad.empty() ? "" : ", ") + key + " is " + r->elems[1].str +
               " (needs " + value + ")";
      }
    }
    if (!bad.empty()) {
      return Status::Unsupported(name_ + " is not durable enough for transactions: " + bad +
                                 ". A reply would not mean the write is on disk, so a crash "
                                 "could lose a committed transaction's part here. Fix the "
                                 "configuration (doc/redis.md), or for development only allow "
                                 "it explicitly (redis_allow_unsafe_durability / "
                                 "--redis-unsafe-durability)");
    }
  }
  Result<Reply> load = call({"FUNCTION", "LOAD", "REPLACE", kFunctionLibrary});
  if (!load.ok()) return load.status().Annotate("loading seigo's functions");
  std::random_device rd;
  char fresh[17];
  std::snprintf(fresh, sizeof fresh, "%08x%08x", rd(), rd());
  Result<Reply> claim =
      call({"FCALL", "seigo2_claim", "0", prefix_, std::to_string(config_.index), fresh});
  if (!claim.ok()) return claim.status();
  if (claim->type != Reply::kArray || claim->elems.size() != 2) {
    return Status::Internal(name_ + ": malformed claim reply");
  }
  const std::string index = claim->elems[0].str, epoch = claim->elems[1].str;
  bool first = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (epoch_.empty()) {
      first = true;
    } else if (epoch_ != epoch) {
      lost_ = Status::Corruption(
          name_ + " lost its data: it was epoch " + epoch_ + " and is now " + epoch +
          " (restarted without its AOF, flushed, or replaced). Prepared intents and commit "
          "records on it may be gone, so seigo stops using it: check `seigo status`, then "
          "restart this process (doc/redis.md, \"Instance restarted without its data\")");
      return lost_;
    }
  }
  if (first) {
    // The first contact of this process: what does the deployment's record say (shard 0,
    // Config::verify_epoch)? Checked before the instance is used at all.
    if (config_.verify_epoch) {
      Status v = config_.verify_epoch(config_.index, epoch);
      if (v.Is(Code::kCorruption)) {
        std::lock_guard<std::mutex> l(mu_);
        lost_ = v;
        return v;
      }
      if (!v.ok()) return v;  // cannot tell yet (shard 0 down): try again later
    }
    std::lock_guard<std::mutex> l(mu_);
    epoch_ = epoch;
  }
  if (index != std::to_string(config_.index)) {
    return Status::InvalidArgument(name_ + " is participant " + index + " of deployment " +
                                   config_.deployment + ", not " +
                                   std::to_string(config_.index) + ": the redis list may only "
                                   "grow at the end, never be reordered (doc/redis.md)");
  }
  return Status::OK();
}

Result<std::unique_ptr<Conn>> RedisParticipant::Take(int64_t deadline_ms) {
  Status ready = EnsureReady();
  if (!ready.ok()) return ready;
  {
    std::lock_guard<std::mutex> l(pool_->mu);
    if (!pool_->idle.empty()) {
      std::unique_ptr<Conn> c = std::move(pool_->idle.back());
      pool_->idle.pop_back();
      return c;
    }
  }
  int64_t wait = config_.connect_timeout_ms;
  if (deadline_ms > 0) {
    wait = std::min<int64_t>(wait, deadline_ms - UnixMs());
    if (wait <= 0) return Status::Unavailable(name_ + ": the Run's deadline passed");
  }
  redisContext* c = redisConnectWithTimeout(config_.url.host.c_str(), config_.url.port, Tv(wait));
  if (c == nullptr || c->err) {
    Status s = Status::Unavailable(name_ + ": cannot connect: " +
                                   (c != nullptr ? std::string(c->errstr) : "no memory"));
    if (c != nullptr) redisFree(c);
    std::lock_guard<std::mutex> l(mu_);
    ready_ = false;  // check it again when it is back (it may have restarted without its data)
    last_error_ = s;
    last_try_ms_ = SteadyMs();
    return s;
  }
  auto conn = std::make_unique<Conn>(c, config_.read_timeout_ms);
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"AUTH", config_.url.password},
        std::vector<std::string>{"SELECT", std::to_string(config_.url.db)}}) {
    if (cmd[0] == "AUTH" && config_.url.password.empty()) continue;
    if (cmd[0] == "SELECT" && config_.url.db == 0) continue;
    Result<Reply> r = conn->Call(cmd);
    if (!r.ok()) return r.status().Annotate(name_);
    if (r->type == Reply::kError) return Status::QueryFailed(name_ + ": " + cmd[0] + ": " + r->str);
  }
  return conn;
}

void RedisParticipant::Give(std::unique_ptr<Conn> c) { pool_->Give(std::move(c)); }

Result<std::unique_ptr<Session>> RedisParticipant::Acquire(int64_t deadline_ms) {
  Result<std::unique_ptr<Conn>> c = Take(deadline_ms);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Session>(new RedisSession(this, std::move(*c)));
}

void RedisParticipant::Release(std::unique_ptr<Session> session) {
  if (!session) return;
  auto* s = static_cast<RedisSession*>(session.get());
  if (s->Broken()) {
    std::unique_ptr<Conn> c = s->TakeConn();
    if (c && !c->lost()) return;  // cut at the deadline: nothing wrong with the instance
    // A lost connection usually means the instance restarted: every idle one is stale too,
    // and the instance is checked again (its epoch: did it come back with its data?).
    {
      std::lock_guard<std::mutex> l(pool_->mu);
      pool_->idle.clear();
    }
    Invalidate();
    return;
  }
  Give(s->TakeConn());
}

template <typename F>
auto RedisParticipant::WithConn(F&& f) -> decltype(f(std::declval<Conn*>())) {
  Result<std::unique_ptr<Conn>> c = Take(0);
  if (!c.ok()) return c.status();
  auto out = f(c->get());
  if ((*c)->lost()) Invalidate();
  Give(std::move(*c));
  return out;
}

namespace {
// FCALL fn 0 prefix args... on `c`; server errors mapped with `refused`.
Result<Reply> Fcall(Conn* c, const std::string& name, const std::string& fn,
                    const std::string& prefix, const std::vector<std::string>& args,
                    Code refused = Code::kQueryFailed) {
  std::vector<std::string> argv = {"FCALL", fn, "0", prefix};
  argv.insert(argv.end(), args.begin(), args.end());
  Result<Reply> r = c->Call(argv);
  if (!r.ok()) return r.status().Annotate(name + ": " + fn);
  if (r->type == Reply::kError) return MapError(r->str, refused).Annotate(name + ": " + fn);
  return r;
}
}  // namespace

Status RedisParticipant::Finish(const Xid& xid, bool commit) {
  return WithConn([&](Conn* c) -> Status {
    if (commit) {
      Result<Reply> r = Fcall(c, name_, "seigo2_commit", prefix_, {xid.gid});
      if (!r.ok()) return r.status();
      return CommitReply(name_, xid.gid, r->str);
    }
    // The tombstone outlives every request of the gid that could still arrive: a prepare is
    // refused after the deadline anyway (by this server's clock), the tombstone covers clock
    // differences of up to a minute and a half.
    const int64_t until = xid.deadline_ms + kFenceWindowMs + 60'000;
    return Fcall(c, name_, "seigo2_rollback", prefix_, {xid.gid, I(until)}).status();
  });
}

Status RedisParticipant::CommitXid(const Xid& xid) { return Finish(xid, true); }
Status RedisParticipant::RollbackXid(const Xid& xid) { return Finish(xid, false); }

Result<std::vector<Xid>> RedisParticipant::RecoverPrepared() {
  return WithConn([&](Conn* c) -> Result<std::vector<Xid>> {
    Result<Reply> r = Fcall(c, name_, "seigo2_recover", prefix_, {});
    if (!r.ok()) return r.status();
    std::vector<Xid> out;
    for (size_t i = 0; i + 1 < r->elems.size(); i += 2) {
      Result<Xid> x = Xid::Parse(Xid::kFormatId, r->elems[i].str, r->elems[i + 1].str);
      if (!x.ok()) continue;  // not ours to judge (the prefix already names our deployment)
      if (x->deployment != config_.deployment) continue;
      out.push_back(std::move(*x));
    }
    return out;
  });
}

Result<std::vector<BranchTrace>> RedisParticipant::ProbeBranches(
    std::span<const std::string> gids) {
  if (gids.empty()) return std::vector<BranchTrace>{};
  return WithConn([&](Conn* c) -> Result<std::vector<BranchTrace>> {
    Result<Reply> r =
        Fcall(c, name_, "seigo2_probe", prefix_, std::vector<std::string>(gids.begin(), gids.end()));
    if (!r.ok()) return r.status();
    std::vector<BranchTrace> out;
    for (const Reply& e : r->elems) {
      out.push_back(e.str == "O"   ? BranchTrace::kOpen
                    : e.str == "C" ? BranchTrace::kCommitted
                                   : BranchTrace::kNone);
    }
    return out;
  });
}

Status RedisParticipant::ForgetBranches(std::span<const std::string> gids) {
  if (gids.empty()) return Status::OK();
  return WithConn([&](Conn* c) -> Status {
    return Fcall(c, name_, "seigo2_forget_branches", prefix_,
                 std::vector<std::string>(gids.begin(), gids.end()))
        .status();
  });
}

namespace {
std::optional<Decision> DecisionFrom(const std::string& gid, const Reply* f) {
  if (f[0].type == Reply::kNil || f[0].str.empty()) return std::nullopt;
  Decision d;
  d.gid = gid;
  d.outcome = f[0].str == "C" ? Outcome::kCommit : Outcome::kAbort;
  d.shards = SplitShards(f[1].str);
  d.deadline_ms = ToInt(f[2].str);
  d.decided_at_ms = ToInt(f[3].str);
  return d;
}
}  // namespace

Result<std::vector<std::optional<Decision>>> RedisParticipant::ReadDecisions(
    std::span<const std::string> gids) {
  if (gids.empty()) return std::vector<std::optional<Decision>>{};
  return WithConn([&](Conn* c) -> Result<std::vector<std::optional<Decision>>> {
    Result<Reply> r = Fcall(c, name_, "seigo2_decisions", prefix_,
                            std::vector<std::string>(gids.begin(), gids.end()));
    if (!r.ok()) return r.status();
    if (r->elems.size() != gids.size() * 4) return Status::Internal(name_ + ": short decisions");
    std::vector<std::optional<Decision>> out;
    for (size_t i = 0; i < gids.size(); ++i) out.push_back(DecisionFrom(gids[i], &r->elems[i * 4]));
    return out;
  });
}

Result<std::optional<Decision>> RedisParticipant::ReadDecision(std::string_view gid) {
  std::string g(gid);
  Result<std::vector<std::optional<Decision>>> r = ReadDecisions(std::span<const std::string>(&g, 1));
  if (!r.ok()) return r.status();
  return std::move((*r)[0]);
}

Result<Outcome> RedisParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  return WithConn([&](Conn* c) -> Result<Outcome> {
    Result<Reply> r = Fcall(c, name_, "seigo2_fence", prefix_,
                            {d.gid, I(d.deadline_ms), Join(d.shards), by_coordinator ? "1" : "0",
                             I(kFenceWindowMs)});
    if (!r.ok()) return r.status();
    if (r->str == "C") return Outcome::kCommit;
    if (r->str == "A") return Outcome::kAbort;
    return Status::Busy(name_ + ": " + d.gid + " cannot be fenced now (" +
                        (by_coordinator ? "past the fence window" : "before its deadline") + ")");
  });
}

Result<std::vector<Decision>> RedisParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                    size_t limit) {
  return WithConn([&](Conn* c) -> Result<std::vector<Decision>> {
    Result<Reply> r = Fcall(c, name_, "seigo2_expired", prefix_,
                            {I(retention_ms), I(static_cast<int64_t>(limit))});
    if (!r.ok()) return r.status();
    std::vector<Decision> out;
    for (size_t i = 0; i + 4 < r->elems.size(); i += 5) {
      std::optional<Decision> d = DecisionFrom(r->elems[i].str, &r->elems[i + 1]);
      if (d) out.push_back(std::move(*d));
    }
    return out;
  });
}

Status RedisParticipant::ForgetDecisions(std::span<const std::string> gids) {
  if (gids.empty()) return Status::OK();
  return WithConn([&](Conn* c) -> Status {
    return Fcall(c, name_, "seigo2_forget", prefix_,
                 std::vector<std::string>(gids.begin(), gids.end()))
        .status();
  });
}

Result<std::optional<std::string>> RedisParticipant::Command(
    const std::vector<std::string>& args) {
  return WithConn([&](Conn* c) -> Result<std::optional<std::string>> {
    Result<Reply> r = c->Call(args);
    if (!r.ok()) return r.status().Annotate(name_);
    if (r->type == Reply::kError) return Status::QueryFailed(name_ + ": " + r->str);
    if (r->type == Reply::kArray) return Status::InvalidArgument("array reply");
    return r->Text();
  });
}

}  // namespace seigo::redis
