// MariaDB/MySQL participant over Connector/C. See mariadb_participant.h.
//
// SQL built here contains only values seigo generated and validated itself (hex gids, decimal
// numbers, shard lists); application values always travel as prepared-statement parameters.

#include "mariadb/mariadb_participant.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <functional>
#include <unordered_map>

namespace seigo::mariadb {

const char* const kSchemaSql =
    "CREATE TABLE IF NOT EXISTS seigo_decision ("
    " gid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
    " outcome CHAR(1) CHARACTER SET ascii NOT NULL,"
    " shards VARCHAR(4000) CHARACTER SET ascii NOT NULL,"
    " deadline_ms BIGINT NOT NULL,"
    " decided_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
    " KEY by_deadline (deadline_ms)"
    ") ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS seigo_shard ("
    " one TINYINT NOT NULL PRIMARY KEY,"
    " shard_index INT NOT NULL,"
    " claimed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
    ") ENGINE=InnoDB";

namespace {

// The server's clock in unix milliseconds, as an SQL expression.
constexpr const char* kServerNowMs = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000 AS SIGNED)";

std::string XidSql(const Xid& x) {
  return "'" + x.Gtrid() + "','" + x.Bqual() + "'," + std::to_string(Xid::kFormatId);
}

std::string ShardList(const std::vector<uint32_t>& shards) {
  std::string s;
  for (uint32_t i : shards) {
    if (!s.empty()) s += ',';
    s += std::to_string(i);
  }
  return s;
}

std::vector<uint32_t> ParseShardList(std::string_view s) {
  std::vector<uint32_t> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) comma = s.size();
    uint32_t v = 0;
    std::from_chars(s.data() + start, s.data() + comma, v);
    out.push_back(v);
    start = comma + 1;
  }
  return out;
}

bool IsGid(std::string_view g) {
  if (g.size() != 32) return false;
  return std::all_of(g.begin(), g.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Driver/server error -> Status. The one table of error meanings (doc/protocol.md).
Status MapError(unsigned int err, const char* msg) {
  std::string m = std::string(msg ? msg : "") + " (" + std::to_string(err) + ")";
  switch (err) {
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_XA_RBDEADLOCK:
    case ER_XA_RBTIMEOUT:
    case ER_XA_RBROLLBACK:
      return Status::Conflict(m);
    case ER_XAER_NOTA:
      return Status::NotFound(m);
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NET_WRITE_INTERRUPTED:
      return Status::Unavailable(m);
    case ER_ACCESS_DENIED_ERROR:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_BAD_DB_ERROR:
      return Status::InvalidArgument(m);
    default:
      break;
  }
  if (err >= 2000 && err < 3000) return Status::Unavailable(m);  // client-side: CR_*
  return Status::QueryFailed(m);
}

// One connection. Not thread-safe.
class Conn {
 public:
  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() {
    if (mysql_ != nullptr) mysql_close(mysql_);
  }

  // `autocommit` false for transaction sessions: their first statement opens the transaction
  // implicitly, which saves the START TRANSACTION round trip (XA START works in this mode as
  // long as nothing ran since the last COMMIT/ROLLBACK, which the pool guarantees).
  Status Connect(const Config& c, bool autocommit) {
    mysql_ = mysql_init(nullptr);
    if (mysql_ == nullptr) return Status::Internal("mysql_init failed (out of memory)");
    unsigned int connect_timeout = static_cast<unsigned>(c.connect_timeout_s);
    unsigned int read_timeout = static_cast<unsigned>(c.read_timeout_s);
    mysql_options(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(mysql_, MYSQL_OPT_READ_TIMEOUT, &read_timeout);
    mysql_options(mysql_, MYSQL_OPT_WRITE_TIMEOUT, &read_timeout);
    my_bool no = 0;
    mysql_options(mysql_, MYSQL_OPT_RECONNECT, &no);  // a silent reconnect would lose XA state
    if (mysql_real_connect(mysql_, c.url.host.c_str(), c.url.user.c_str(),
                           c.url.password.c_str(), c.url.database.c_str(), c.url.port, nullptr,
                           CLIENT_MULTI_STATEMENTS) == nullptr) {
      Status s = MapError(mysql_errno(mysql_), mysql_error(mysql_));
      broken_ = true;
      return s.Annotate("connecting to " + c.url.Redacted());
    }
    // Strict mode: the decision insert relies on NULL-into-NOT-NULL being an error.
    return Run("SET SESSION innodb_lock_wait_timeout=" + std::to_string(c.lock_wait_timeout_s) +
               ", SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', autocommit=" +
               (autocommit ? "1" : "0"));
  }

  // Runs text SQL (possibly several statements); drains every result; returns the first error.
  // The server stops a multi-statement batch at its first error.
  Status Run(const std::string& sql, QueryResult* out = nullptr) {
    if (broken_) return Status::Unavailable("connection already lost");
    if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) return Fail();
    for (;;) {
      MYSQL_RES* res = mysql_store_result(mysql_);
      if (res != nullptr) {
        if (out != nullptr && out->columns.empty()) {
          unsigned n = mysql_num_fields(res);
          MYSQL_FIELD* f = mysql_fetch_fields(res);
          for (unsigned i = 0; i < n; ++i) out->columns.emplace_back(f[i].name);
          while (MYSQL_ROW row = mysql_fetch_row(res)) {
            unsigned long* len = mysql_fetch_lengths(res);
            std::vector<std::optional<std::string>> r;
            for (unsigned i = 0; i < n; ++i) {
              if (row[i] == nullptr) r.emplace_back(std::nullopt);
              else r.emplace_back(std::string(row[i], len[i]));
            }
            out->rows.push_back(std::move(r));
          }
        }
        mysql_free_result(res);
      } else if (mysql_field_count(mysql_) != 0) {
        return Fail();
      } else if (out != nullptr) {
        out->affected_rows = mysql_affected_rows(mysql_);
        out->last_insert_id = mysql_insert_id(mysql_);
      }
      int next = mysql_next_result(mysql_);
      if (next < 0) return Status::OK();
      if (next > 0) return Fail();
    }
  }

  Status Fail() {
    Status s = MapError(mysql_errno(mysql_), mysql_error(mysql_));
    if (s.Is(Code::kUnavailable)) broken_ = true;
    return s;
  }

  MYSQL* mysql() { return mysql_; }
  bool broken() const { return broken_; }
  void set_broken() { broken_ = true; }

 private:
  MYSQL* mysql_ = nullptr;
  bool broken_ = false;
};

// Called when a session is closed while it may own a prepared branch (see OrphanedBranch).
using OrphanHook = std::function<void(const std::string& xid_key, unsigned long thread_id)>;

std::string XidKey(const Xid& x) { return x.Gtrid() + "/" + x.Bqual(); }

class MariaSession final : public Session {
 public:
  MariaSession(bool autocommit, OrphanHook on_orphan)
      : autocommit_(autocommit), on_orphan_(std::move(on_orphan)) {}
  ~MariaSession() override {
    for (auto& [sql, st] : stmts_) mysql_stmt_close(st);
    // Closing the connection detaches a prepared branch it owns. Tell the participant which
    // server thread owned it, so that nobody commits the branch from another connection
    // before that thread is gone (MariaDbParticipant::WaitForOwnerGone).
    if (in_tx_ && branch_ && on_orphan_ && conn_.mysql() != nullptr) {
      on_orphan_(XidKey(*branch_), mysql_thread_id(conn_.mysql()));
    }
  }

  Conn& conn() { return conn_; }
  bool clean() const { return !in_tx_ && !conn_.broken(); }

  Status BeginLocal() override {
    if (autocommit_) return Begin("START TRANSACTION");
    if (conn_.broken()) return Status::Unavailable("connection already lost");
    in_tx_ = true;  // the first statement opens it (autocommit=0): no round trip
    return Status::OK();
  }
  Status BeginBranch(const Xid& xid) override {
    Status s = Begin("XA START " + XidSql(xid));
    if (s.ok()) branch_ = xid;
    return s;
  }

  Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) override;

  Status Prepare(const Xid& xid) override {
    return conn_.Run("XA END " + XidSql(xid) + ";XA PREPARE " + XidSql(xid));
  }

  Status CommitLocal() override {
    Status s = conn_.Run("COMMIT");
    if (s.ok()) in_tx_ = false;
    return s;
  }

  Status CommitWithDecision(const Decision& d) override {
    // One round trip: the insert and the COMMIT. If the insert fails (duplicate gid = fenced,
    // NULL outcome = past the deadline by this server's clock), the server stops the batch and
    // COMMIT never runs; the caller then rolls back.
    std::string sql = "INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms) VALUES ('" +
                      d.gid + "', IF(" + kServerNowMs + " < " + std::to_string(d.deadline_ms) +
                      ", 'C', NULL), '" + ShardList(d.shards) + "', " +
                      std::to_string(d.deadline_ms) + ");COMMIT";
    Status s = conn_.Run(sql);
    if (s.ok()) {
      in_tx_ = false;
      return s;
    }
    if (std::strstr(s.message().c_str(), "(1062)") != nullptr) {
      return Status::Aborted("gid " + d.gid + " already has a decision (fenced by a resolver)");
    }
    if (std::strstr(s.message().c_str(), "(1048)") != nullptr) {
      return Status::Aborted("the decider's clock is past the deadline");
    }
    return s;
  }

  Status CommitPrepared(const Xid& xid) override {
    Status s = conn_.Run("XA COMMIT " + XidSql(xid));
    if (s.ok()) in_tx_ = false;
    return s;
  }

  Status RollbackAll(const Xid* xid, bool prepared) override {
    if (!in_tx_) return Status::OK();
    Status s;
    if (xid == nullptr) {
      s = conn_.Run("ROLLBACK");
    } else {
      // An active branch must be ended first; after a deadlock the server already rolled it
      // back and XA END reports that (XA_RBDEADLOCK), which is fine.
      if (!prepared) conn_.Run("XA END " + XidSql(*xid));
      s = conn_.Run("XA ROLLBACK " + XidSql(*xid));
      if (s.Is(Code::kNotFound)) s = Status::OK();  // nothing was left on the server
    }
    if (s.ok()) {
      in_tx_ = false;
    } else {
      conn_.set_broken();  // unknown state: close it, the server cleans up what is not prepared
    }
    return s;
  }

  bool Broken() const override { return conn_.broken(); }

 private:
  Status Begin(const std::string& sql) {
    Status s = conn_.Run(sql);
    if (s.ok()) in_tx_ = true;
    return s;
  }

  Result<MYSQL_STMT*> Prepared(std::string_view sql);

  Conn conn_;
  const bool autocommit_;
  const OrphanHook on_orphan_;
  bool in_tx_ = false;
  std::optional<Xid> branch_;  // the XA branch of the current transaction, if any
  std::unordered_map<std::string, MYSQL_STMT*> stmts_;
};

Result<MYSQL_STMT*> MariaSession::Prepared(std::string_view sql) {
  auto it = stmts_.find(std::string(sql));
  if (it != stmts_.end()) return it->second;
  if (stmts_.size() >= 256) {  // an application with unbounded distinct SQL: start over
    for (auto& [k, st] : stmts_) mysql_stmt_close(st);
    stmts_.clear();
  }
  MYSQL_STMT* st = mysql_stmt_init(conn_.mysql());
  if (st == nullptr) return Status::Internal("mysql_stmt_init failed");
  my_bool update_max = 1;
  mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max);
  if (mysql_stmt_prepare(st, sql.data(), sql.size()) != 0) {
    Status s = MapError(mysql_stmt_errno(st), mysql_stmt_error(st));
    mysql_stmt_close(st);
    if (s.Is(Code::kUnavailable)) conn_.set_broken();
    return s;
  }
  stmts_.emplace(std::string(sql), st);
  return st;
}

Result<QueryResult> MariaSession::Execute(std::string_view sql, std::span<const Value> params) {
  if (conn_.broken()) return Status::Unavailable("connection already lost");
  Result<MYSQL_STMT*> p = Prepared(sql);
  if (!p.ok()) return p.status();
  MYSQL_STMT* st = *p;
  if (mysql_stmt_param_count(st) != params.size()) {
    return Status::InvalidArgument("statement has " + std::to_string(mysql_stmt_param_count(st)) +
                                   " placeholders but " + std::to_string(params.size()) +
                                   " values were given: " + std::string(sql));
  }
  std::vector<MYSQL_BIND> binds(params.size());
  std::vector<long long> ints(params.size());
  std::vector<double> doubles(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    MYSQL_BIND& b = binds[i];
    std::memset(&b, 0, sizeof b);
    const Value& v = params[i];
    switch (v.kind()) {
      case Value::Kind::kNull:
        b.buffer_type = MYSQL_TYPE_NULL;
        break;
      case Value::Kind::kUint:
        if (v.uint_value() > static_cast<uint64_t>(INT64_MAX)) {
          return Status::InvalidArgument("parameter " + std::to_string(i + 1) +
                                         " is above INT64_MAX");
        }
        ints[i] = static_cast<long long>(v.uint_value());
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &ints[i];
        break;
      case Value::Kind::kInt:
        ints[i] = v.int_value();
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &ints[i];
        break;
      case Value::Kind::kDouble:
        doubles[i] = v.double_value();
        b.buffer_type = MYSQL_TYPE_DOUBLE;
        b.buffer = &doubles[i];
        break;
      case Value::Kind::kString:
        b.buffer_type = MYSQL_TYPE_STRING;
        b.buffer = const_cast<char*>(v.string_value().data());
        b.buffer_length = v.string_value().size();
        break;
    }
  }
  auto fail = [&]() -> Status {
    Status s = MapError(mysql_stmt_errno(st), mysql_stmt_error(st));
    if (s.Is(Code::kUnavailable)) conn_.set_broken();
    return s;
  };
  if (!binds.empty() && mysql_stmt_bind_param(st, binds.data()) != 0) return fail();
  if (mysql_stmt_execute(st) != 0) return fail();

  QueryResult out;
  MYSQL_RES* meta = mysql_stmt_result_metadata(st);
  if (meta == nullptr) {
    out.affected_rows = mysql_stmt_affected_rows(st);
    out.last_insert_id = mysql_stmt_insert_id(st);
    return out;
  }
  if (mysql_stmt_store_result(st) != 0) {
    mysql_free_result(meta);
    return fail();
  }
  unsigned n = mysql_num_fields(meta);
  MYSQL_FIELD* fields = mysql_fetch_fields(meta);
  std::vector<MYSQL_BIND> rb(n);
  std::vector<std::vector<char>> bufs(n);
  std::vector<unsigned long> lens(n);
  std::vector<my_bool> nulls(n);
  for (unsigned i = 0; i < n; ++i) {
    out.columns.emplace_back(fields[i].name);
    bufs[i].resize(std::max<unsigned long>(fields[i].max_length, 64) + 1);
    std::memset(&rb[i], 0, sizeof rb[i]);
    rb[i].buffer_type = MYSQL_TYPE_STRING;
    rb[i].buffer = bufs[i].data();
    rb[i].buffer_length = bufs[i].size();
    rb[i].length = &lens[i];
    rb[i].is_null = &nulls[i];
  }
  mysql_free_result(meta);
  Status err;
  if (mysql_stmt_bind_result(st, rb.data()) != 0) {
    err = fail();
  } else {
    for (;;) {
      int rc = mysql_stmt_fetch(st);
      if (rc == MYSQL_NO_DATA) break;
      if (rc == 1) {
        err = fail();
        break;
      }
      std::vector<std::optional<std::string>> row;
      for (unsigned i = 0; i < n; ++i) {
        if (nulls[i]) {
          row.emplace_back(std::nullopt);
          continue;
        }
        if (lens[i] > bufs[i].size()) {  // MYSQL_DATA_TRUNCATED: fetch the rest
          std::string big(lens[i], '\0');
          MYSQL_BIND b;
          std::memset(&b, 0, sizeof b);
          b.buffer_type = MYSQL_TYPE_STRING;
          b.buffer = big.data();
          b.buffer_length = big.size();
          mysql_stmt_fetch_column(st, &b, i, 0);
          row.emplace_back(std::move(big));
        } else {
          row.emplace_back(std::string(bufs[i].data(), lens[i]));
        }
      }
      out.rows.push_back(std::move(row));
    }
  }
  mysql_stmt_free_result(st);
  if (!err.ok()) return err;
  out.affected_rows = out.rows.size();
  return out;
}

Status CheckServerVersion(MYSQL* m) {
  std::string info = mysql_get_server_info(m);
  if (info.rfind("5.5.5-", 0) == 0) info = info.substr(6);  // old MariaDB handshake prefix
  unsigned major = 0, minor = 0, patch = 0;
  std::sscanf(info.c_str(), "%u.%u.%u", &major, &minor, &patch);
  const bool mariadb = info.find("MariaDB") != std::string::npos;
  const unsigned v = major * 10000 + minor * 100 + patch;
  if (mariadb ? v < 100500 : v < 50707) {
    return Status::Unsupported(
        "server " + info + " is too old for seigo: its prepared XA branches are lost when the "
        "client disconnects (MySQL bug #12161). Needed: MariaDB >= 10.5 or MySQL >= 5.7.7");
  }
  return Status::OK();
}

}  // namespace

// A session borrowed for one recovery call and returned on scope exit.
class MariaDbParticipant::PooledSession {
 public:
  explicit PooledSession(MariaDbParticipant* p) : p_(p) {
    Result<std::unique_ptr<Session>> s = p->AcquireFrom(&p->idle_recovery_, /*autocommit=*/true);
    if (s.ok()) {
      s_ = std::move(*s);
    } else {
      status_ = s.status();
    }
  }
  ~PooledSession() {
    if (s_) p_->ReleaseTo(&p_->idle_recovery_, std::move(s_));
  }
  const Status& status() const { return status_; }
  Conn& conn() { return static_cast<MariaSession*>(s_.get())->conn(); }
  MariaSession* session() { return static_cast<MariaSession*>(s_.get()); }

 private:
  MariaDbParticipant* p_;
  std::unique_ptr<Session> s_;
  Status status_;
};

MariaDbParticipant::MariaDbParticipant(const Config& config)
    : config_(config),
      name_("shard " + std::to_string(config.index) + " (" + config.url.host + ":" +
            std::to_string(config.url.port) + "/" + config.url.database + ")") {}

MariaDbParticipant::~MariaDbParticipant() = default;

Result<std::unique_ptr<MariaDbParticipant>> MariaDbParticipant::Open(const Config& config,
                                                                     bool prepare_schema) {
  std::unique_ptr<MariaDbParticipant> p(new MariaDbParticipant(config));
  auto s = std::make_unique<MariaSession>(/*autocommit=*/true, nullptr);
  SEIGO_RETURN_IF_ERROR(s->conn().Connect(config, true).Annotate(p->name()));
  SEIGO_RETURN_IF_ERROR(CheckServerVersion(s->conn().mysql()).Annotate(p->name()));
  if (prepare_schema) {
    SEIGO_RETURN_IF_ERROR(s->conn().Run(kSchemaSql).Annotate(p->name() + ": creating tables"));
    // Claim the database as shard `index`, or check an earlier claim. A mismatch means the shard
    // list was reordered or two URLs name one database: XIDs would point at the wrong decider.
    std::string idx = std::to_string(config.index);
    SEIGO_RETURN_IF_ERROR(
        s->conn().Run("INSERT IGNORE INTO seigo_shard (one, shard_index) VALUES (1, " + idx + ")"));
    QueryResult r;
    SEIGO_RETURN_IF_ERROR(s->conn().Run("SELECT shard_index FROM seigo_shard WHERE one=1", &r));
    Result<int64_t> claimed = r.Int(0, 0);
    if (!claimed.ok()) return claimed.status().Annotate(p->name() + ": reading seigo_shard");
    if (*claimed != config.index) {
      return Status::InvalidArgument(
          p->name() + " was set up as shard " + std::to_string(*claimed) + ", but the shard "
          "list names it shard " + idx + ". The order of --shards is each shard's identity; "
          "give the list in its original order (new shards only at the end)");
    }
  }
  p->ReleaseTo(&p->idle_recovery_, std::move(s));
  return p;
}

Result<std::unique_ptr<Session>> MariaDbParticipant::AcquireFrom(
    std::vector<std::unique_ptr<Session>>* pool, bool autocommit) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!pool->empty()) {
      std::unique_ptr<Session> s = std::move(pool->back());
      pool->pop_back();
      return s;
    }
  }
  auto s = std::make_unique<MariaSession>(
      autocommit, [this](const std::string& key, unsigned long thread_id) {
        std::lock_guard<std::mutex> l(mu_);
        if (orphans_.size() >= 4096) orphans_.erase(orphans_.begin());  // bounded: see the .h
        orphans_[key] = thread_id;
      });
  SEIGO_RETURN_IF_ERROR(s->conn().Connect(config_, autocommit).Annotate(name_));
  return std::unique_ptr<Session>(std::move(s));
}

void MariaDbParticipant::ReleaseTo(std::vector<std::unique_ptr<Session>>* pool,
                                   std::unique_ptr<Session> session) {
  auto* m = static_cast<MariaSession*>(session.get());
  // Only clean sessions go back: one still inside a transaction (or owning a prepared branch)
  // is closed, and closing is what lets the server detach a prepared branch.
  if (m == nullptr || !m->clean()) return;
  std::lock_guard<std::mutex> l(mu_);
  if (pool->size() < config_.max_idle) pool->push_back(std::move(session));
}

Result<std::unique_ptr<Session>> MariaDbParticipant::Acquire() {
  return AcquireFrom(&idle_, /*autocommit=*/false);
}

void MariaDbParticipant::Release(std::unique_ptr<Session> session) {
  ReleaseTo(&idle_, std::move(session));
}

Result<std::vector<Xid>> MariaDbParticipant::RecoverPrepared() {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  QueryResult r;
  Status s = ps.conn().Run("XA RECOVER", &r);
  if (!s.ok()) {
    if (std::strstr(s.message().c_str(), "(1227)") != nullptr) {
      s = s.Annotate("XA RECOVER needs the XA_RECOVER_ADMIN privilege on MySQL 8");
    }
    return s.Annotate(name_);
  }
  std::vector<Xid> out;
  for (const auto& row : r.rows) {
    if (row.size() < 4 || !row[0] || !row[1] || !row[3]) continue;
    int64_t format = std::strtoll(row[0]->c_str(), nullptr, 10);
    size_t glen = std::strtoul(row[1]->c_str(), nullptr, 10);
    const std::string& data = *row[3];
    if (glen > data.size()) continue;
    Result<Xid> x = Xid::Parse(format, std::string_view(data).substr(0, glen),
                               std::string_view(data).substr(glen));
    if (x.ok()) out.push_back(std::move(*x));  // other applications' XIDs are not ours
  }
  return out;
}

// MariaDB 10.11 trap seen by the crash matrix (crashmatrix/results/limbo-branch-2026-11-26.md):
// an XA COMMIT sent from a new connection while the server is still tearing down the connection
// that owned the prepared branch can be written to the binlog while InnoDB keeps the branch
// prepared and XA RECOVER stops listing it. So a branch whose owner this process closed is
// committed or rolled back from elsewhere only once that server thread is gone.
std::optional<unsigned long> MariaDbParticipant::OrphanOwner(const Xid& xid) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = orphans_.find(XidKey(xid));
  if (it == orphans_.end()) return std::nullopt;
  return it->second;
}

void MariaDbParticipant::ForgetOrphan(const Xid& xid) {
  std::lock_guard<std::mutex> l(mu_);
  orphans_.erase(XidKey(xid));
}

namespace {
// kBusy while server thread `thread_id` still exists.
Status OwnerGone(Conn& conn, unsigned long thread_id) {
  QueryResult r;
  SEIGO_RETURN_IF_ERROR(conn.Run(
      "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = " + std::to_string(thread_id),
      &r));
  Result<int64_t> n = r.Int(0, 0);
  if (!n.ok()) return n.status();
  if (*n > 0) {
    return Status::Busy("the connection that owned the branch (server thread " +
                        std::to_string(thread_id) + ") is still closing");
  }
  return Status::OK();
}
}  // namespace

Status MariaDbParticipant::CommitXid(const Xid& xid) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  if (auto owner = OrphanOwner(xid)) {
    SEIGO_RETURN_IF_ERROR(OwnerGone(ps.conn(), *owner));
    ForgetOrphan(xid);
  }
  return ps.conn().Run("XA COMMIT " + XidSql(xid));
}

Status MariaDbParticipant::RollbackXid(const Xid& xid) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  if (auto owner = OrphanOwner(xid)) {
    SEIGO_RETURN_IF_ERROR(OwnerGone(ps.conn(), *owner));
    ForgetOrphan(xid);
  }
  return ps.conn().Run("XA ROLLBACK " + XidSql(xid));
}

namespace {
Result<std::vector<Decision>> DecisionsFrom(const QueryResult& r) {
  std::vector<Decision> out;
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const auto& row = r.rows[i];
    if (row.size() < 5 || !row[0] || !row[1] || !row[2]) {
      return Status::Corruption("seigo_decision row with NULLs");
    }
    Decision d;
    d.gid = *row[0];
    if (*row[1] == "C") {
      d.outcome = Outcome::kCommit;
    } else if (*row[1] == "A") {
      d.outcome = Outcome::kAbort;
    } else {
      return Status::Corruption("seigo_decision outcome '" + *row[1] + "' for gid " + d.gid);
    }
    d.shards = ParseShardList(*row[2]);
    d.deadline_ms = r.Int(i, 3).ok() ? *r.Int(i, 3) : 0;
    d.decided_at_ms = r.Int(i, 4).ok() ? *r.Int(i, 4) : 0;
    out.push_back(std::move(d));
  }
  return out;
}
constexpr const char* kDecisionColumns =
    "SELECT gid, outcome, shards, deadline_ms, "
    "CAST(UNIX_TIMESTAMP(decided_at) * 1000 AS SIGNED) FROM seigo_decision ";
}  // namespace

Result<std::optional<Decision>> MariaDbParticipant::ReadDecision(std::string_view gid) {
  if (!IsGid(gid)) return Status::InvalidArgument("not a gid: " + std::string(gid));
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  QueryResult r;
  SEIGO_RETURN_IF_ERROR(
      ps.conn().Run(std::string(kDecisionColumns) + "WHERE gid='" + std::string(gid) + "'", &r));
  Result<std::vector<Decision>> ds = DecisionsFrom(r);
  if (!ds.ok()) return ds.status();
  if (ds->empty()) return std::optional<Decision>();
  return std::optional<Decision>(std::move(ds->front()));
}

Result<Outcome> MariaDbParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  if (!IsGid(d.gid)) return Status::InvalidArgument("not a gid: " + d.gid);
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  // The time condition is evaluated by the decider's own clock, the same clock that refuses a
  // late commit (see CommitWithDecision); a false condition inserts NULL and fails (1048).
  const std::string window_end = std::to_string(d.deadline_ms + kFenceWindowMs);
  std::string cond = std::string(kServerNowMs) + " < " + window_end;
  if (!by_coordinator) {
    cond += std::string(" AND ") + kServerNowMs + " >= " + std::to_string(d.deadline_ms);
  }
  std::string sql = "INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms) VALUES ('" +
                    d.gid + "', IF(" + cond + ", 'A', NULL), '" + ShardList(d.shards) + "', " +
                    std::to_string(d.deadline_ms) + ")";
  Status s = ps.conn().Run(sql);
  if (s.ok()) return Outcome::kAbort;
  const std::string& m = s.message();
  const bool exists = m.find("(1062)") != std::string::npos;
  const bool refused = m.find("(1048)") != std::string::npos;
  if (s.Is(Code::kConflict)) {
    return Status::Busy("a live decider holds the decision row lock (commit in progress)");
  }
  if (!exists && !refused) return s;
  if (refused && by_coordinator) return Status::Busy("too long after the deadline to fence");
  // A decision exists (final), or the resolver is outside its window. A locking read waits for
  // an uncommitted insert of the gid (a stalled decider) instead of missing it.
  QueryResult r;
  Status rs = ps.conn().Run("SELECT outcome, " + std::string(kServerNowMs) +
                                " FROM seigo_decision WHERE gid='" + d.gid + "' LOCK IN SHARE MODE",
                            &r);
  if (rs.Is(Code::kConflict)) {
    return Status::Busy("a live decider holds the decision row lock (commit in progress)");
  }
  SEIGO_RETURN_IF_ERROR(rs);
  if (!r.rows.empty() && r.rows[0][0]) return *r.rows[0][0] == "C" ? Outcome::kCommit
                                                                    : Outcome::kAbort;
  if (exists) return Status::Busy("decision row vanished; retry");
  QueryResult now;
  SEIGO_RETURN_IF_ERROR(ps.conn().Run("SELECT " + std::string(kServerNowMs), &now));
  Result<int64_t> now_ms = now.Int(0, 0);
  if (!now_ms.ok()) return now_ms.status();
  if (*now_ms < d.deadline_ms) {
    return Status::Busy("the deadline has not passed by the decider's clock");
  }
  if (*now_ms >= d.deadline_ms + kFenceWindowMs) {
    return Outcome::kAbort;  // no row, and none can be written any more: abort holds
  }
  return Status::Busy("fence refused at the window's edge; retry");
}

Result<std::vector<Decision>> MariaDbParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                      size_t limit) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  QueryResult r;
  // "deadline_ms < now - retention" rather than "deadline_ms + retention < now": the index
  // by_deadline serves it, so a pass reads only the expired rows, not the whole table.
  SEIGO_RETURN_IF_ERROR(ps.conn().Run(std::string(kDecisionColumns) + "WHERE deadline_ms < " +
                                          kServerNowMs + " - " + std::to_string(retention_ms) +
                                          " ORDER BY deadline_ms LIMIT " + std::to_string(limit),
                                      &r));
  return DecisionsFrom(r);
}

Status MariaDbParticipant::ForgetDecisions(std::span<const std::string> gids) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  for (size_t i = 0; i < gids.size(); i += 500) {
    std::string sql = "DELETE FROM seigo_decision WHERE gid IN (";
    for (size_t j = i; j < std::min(gids.size(), i + 500); ++j) {
      if (!IsGid(gids[j])) return Status::InvalidArgument("not a gid: " + gids[j]);
      if (j > i) sql += ',';
      sql += "'" + gids[j] + "'";
    }
    sql += ")";
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(sql));
  }
  return Status::OK();
}

Result<std::optional<int64_t>> MariaDbParticipant::OldestTransactionStartMs() {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  // INNODB_TRX lists every open InnoDB transaction, prepared XA branches included (needs the
  // PROCESS privilege). trx_started has whole seconds: subtract one to stay on the safe side.
  QueryResult r;
  SEIGO_RETURN_IF_ERROR(ps.conn().Run(
      "SELECT CAST(UNIX_TIMESTAMP(MIN(trx_started)) * 1000 AS SIGNED) - 1000 "
      "FROM information_schema.INNODB_TRX",
      &r));
  if (r.rows.empty() || !r.rows[0][0]) return std::optional<int64_t>();
  Result<int64_t> v = r.Int(0, 0);
  if (!v.ok()) return v.status();
  return std::optional<int64_t>(*v);
}

Result<QueryResult> MariaDbParticipant::Query(std::string_view sql,
                                               std::span<const Value> params) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  return ps.session()->Execute(sql, params);
}

}  // namespace seigo::mariadb
