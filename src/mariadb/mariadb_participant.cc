// MariaDB/MySQL participant over Connector/C. See mariadb_participant.h.
//
// SQL built here contains only values seigo generated and validated itself (hex gids and
// deployment ids, decimal numbers, shard lists); application values always travel as
// prepared-statement parameters.
//
// What a closure may run (doc/protocol.md): statements that would end or implicitly commit
// the transaction are refused before they reach the server (ForbiddenInTransaction), and the
// server's status flags after every statement catch anything that slips through. On XA
// branches the server itself refuses them too (XAER_RMFAIL). The decider's (and a one-shard)
// transaction stays a plain local transaction rather than XA ... ONE PHASE: MariaDB 10.11
// recovers a one-phase XA commit that was interrupted by a crash — even one it had already
// acknowledged and binlogged — as a PREPARED branch, because its crash recovery matches only
// its own internal XIDs against the binlog (seen by this repo's tests; doc/limbo-branch.md).

#include "mariadb/mariadb_participant.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>

namespace seigo::mariadb {

// The columns of one outbox message, shared by seigo_outbox and seigo_outbox_dead.
#define SEIGO_OUTBOX_MESSAGE_COLUMNS                                         \
  " gid CHAR(32) CHARACTER SET ascii NOT NULL,"                              \
  " seq INT UNSIGNED NOT NULL,"                                              \
  " exchange VARBINARY(255) NOT NULL,"                                       \
  " routing_key VARBINARY(255) NOT NULL,"                                    \
  " content_type VARBINARY(255) NOT NULL,"                                   \
  " msg_type VARBINARY(255) NOT NULL,"                                       \
  " headers MEDIUMBLOB NOT NULL,"                                            \
  " body MEDIUMBLOB NOT NULL,"                                               \
  " created_ms BIGINT NOT NULL,"

const char* const kSchemaSql =
    "CREATE TABLE IF NOT EXISTS seigo_decision ("
    " gid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
    " outcome CHAR(1) CHARACTER SET ascii NOT NULL,"
    " shards VARCHAR(4000) CHARACTER SET ascii NOT NULL,"
    " deadline_ms BIGINT NOT NULL,"
    " decided_ms BIGINT NOT NULL DEFAULT 0,"
    " KEY by_deadline (deadline_ms)"
    ") ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS seigo_branch ("
    " gid CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
    " decider INT NOT NULL,"
    " owner BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " deadline_ms BIGINT NOT NULL"
    ") ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS seigo_shard ("
    " one TINYINT NOT NULL PRIMARY KEY,"
    " shard_index INT NOT NULL,"
    " deployment CHAR(16) CHARACTER SET ascii NULL,"
    " claimed_ms BIGINT NOT NULL DEFAULT 0"
    ") ENGINE=InnoDB;"
    // What seigo processes publish about their statements waiting for a lock on this server,
    // for the deadlock detectors of every process (doc/deadlocks.md). Not durable on purpose:
    // a restart ends every wait.
    "CREATE TABLE IF NOT EXISTS seigo_waiter ("
    " thread BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " query BIGINT UNSIGNED NOT NULL,"
    " txn CHAR(32) CHARACTER SET ascii NOT NULL,"
    " priority_ms BIGINT NOT NULL,"
    " since_ms BIGINT NOT NULL,"
    " threads VARCHAR(2000) CHARACTER SET ascii NOT NULL,"
    " published_ms BIGINT NOT NULL"
    ") ENGINE=MEMORY;"
    // The server's lock waits as last read from information_schema by any seigo process, and
    // when (ReadLockWaits explains why they are shared).
    "CREATE TABLE IF NOT EXISTS seigo_lockwait_clock ("
    " one TINYINT NOT NULL PRIMARY KEY,"
    " read_ms BIGINT NOT NULL,"          // the last turn taken
    " snapshot_ms BIGINT NOT NULL DEFAULT 0,"  // when seigo_lockwait_edge was last filled
    " fresh TINYINT NOT NULL DEFAULT 0"         // ... from a refreshed cache (ReadLockWaits)
    ") ENGINE=MEMORY;"
    "CREATE TABLE IF NOT EXISTS seigo_lockwait_edge ("
    " waiter BIGINT UNSIGNED NOT NULL,"
    " waiter_query BIGINT UNSIGNED NOT NULL,"
    " holder BIGINT UNSIGNED NOT NULL"
    ") ENGINE=MEMORY;"
    // Committed messages not yet confirmed by the broker, and those that never can be
    // (doc/outbox.md). Written in the commit of the transaction that published them.
    "CREATE TABLE IF NOT EXISTS seigo_outbox ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    SEIGO_OUTBOX_MESSAGE_COLUMNS
    " claim CHAR(16) CHARACTER SET ascii NOT NULL,"
    " claimed_ms BIGINT NOT NULL,"
    " tries INT NOT NULL DEFAULT 0,"
    " last_error VARBINARY(500) NOT NULL DEFAULT '',"
    " UNIQUE KEY by_gid (gid, seq),"
    " KEY by_claim (seq, claimed_ms)"
    ") ENGINE=InnoDB;"
    // Keyed by (gid, seq), not by the outbox's id: MySQL before 8.0 reuses AUTO_INCREMENT
    // values after a restart, and a reused id would make FinishOutbox's INSERT IGNORE drop
    // the new dead letter while the DELETE removes its outbox row: the message would vanish.
    "CREATE TABLE IF NOT EXISTS seigo_outbox_dead ("
    " id BIGINT UNSIGNED NOT NULL,"
    SEIGO_OUTBOX_MESSAGE_COLUMNS
    " dead_ms BIGINT NOT NULL,"
    " reason VARBINARY(1000) NOT NULL,"
    " PRIMARY KEY (gid, seq),"
    " KEY by_id (id)"
    ") ENGINE=InnoDB;"
    // The queues seigo::Consumer instances consume (on shard 0 only), so that `seigo status`
    // can show each one's depth and its dead-letter queue's: AMQP cannot list queues.
    "CREATE TABLE IF NOT EXISTS seigo_queue ("
    " queue VARBINARY(255) NOT NULL PRIMARY KEY,"
    " registered_ms BIGINT NOT NULL"
    ") ENGINE=InnoDB;"
    // Messages a consumer applied (seigo::Consumer, RecordInInbox): written in the handler's
    // transaction, so a redelivery is recognised.
    // Keyed by (message_id, queue): a message fanned out to two queues whose consumers keep
    // their inbox rows on one shard is applied once by EACH (keyed by message_id alone, the
    // second queue's consumer took it for a duplicate and never applied it). by_queue bounds
    // the retention DELETE (ConsumerOptions::inbox_retention_ms) to its own queue's rows.
    "CREATE TABLE IF NOT EXISTS seigo_inbox ("
    " message_id VARBINARY(128) NOT NULL,"
    " queue VARBINARY(255) NOT NULL,"
    " applied_ms BIGINT NOT NULL,"
    " PRIMARY KEY (message_id, queue),"
    " KEY by_time (applied_ms),"
    " KEY by_queue (queue, applied_ms)"
    ") ENGINE=InnoDB";

namespace {

// The server's clock in unix milliseconds, as an SQL expression. Independent of the session
// time zone (UTC_TIMESTAMP and TIMESTAMPDIFF on DATETIME do no zone conversion, so no DST hour
// repeats or vanishes); UNIX_TIMESTAMP(NOW()) is NOT: it converts through the session zone,
// which with time_zone=SYSTEM on a DST host is off by an hour around the change. It does follow
// the session's `timestamp` variable, which a closure could set: the commit batch resets it in
// the same round trip (CommitWithDecision), and sessions whose state a caller changed never go
// back to the pool.
constexpr const char* kServerNowMs =
    "(TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)";
// The server's uptime in seconds: MariaDB keeps GLOBAL_STATUS in information_schema, MySQL 8 in
// performance_schema (5.7 has both, information_schema's disabled by default).
const char* ServerUptimeSql(bool mysql) {
  return mysql ? "(SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM performance_schema.global_status"
                 " WHERE VARIABLE_NAME = 'Uptime')"
               : "(SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS"
                 " WHERE VARIABLE_NAME = 'UPTIME')";
}

// A branch whose owner connection is still attached this long after its deadline belongs to a
// hung process: the resolver closes that connection (KILL) so that the decision can be applied.
constexpr int64_t kHungOwnerMs = kMinDecisionRetentionMs;

constexpr size_t kMaxCachedStatements = 64;

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

// A byte string as an SQL hex literal: X'...' carries any bytes, needs no escaping and no
// character set.
std::string HexLiteral(std::string_view v) {
  static const char* const kDigits = "0123456789abcdef";
  std::string out = "X'";
  out.reserve(v.size() * 2 + 3);
  for (unsigned char c : v) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  out += '\'';
  return out;
}

// Message headers as one column: "<key length>:<key><value length>:<value>" repeated
// (doc/outbox.md, "Format").
std::string EncodeHeaders(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out;
  for (const auto& [k, v] : headers) {
    out += std::to_string(k.size()) + ":" + k + std::to_string(v.size()) + ":" + v;
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> DecodeHeaders(std::string_view s) {
  std::vector<std::pair<std::string, std::string>> out;
  auto field = [&](std::string* dst) -> bool {
    size_t colon = s.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    size_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + colon, n);
    if (ec != std::errc() || p != s.data() + colon || n > s.size() - colon - 1) return false;
    *dst = std::string(s.substr(colon + 1, n));
    s.remove_prefix(colon + 1 + n);
    return true;
  };
  while (!s.empty()) {
    std::string k, v;
    if (!field(&k) || !field(&v)) return Status::Corruption("bad headers in seigo_outbox");
    out.emplace_back(std::move(k), std::move(v));
  }
  return out;
}

bool IsClaim(std::string_view c) {
  return c.size() == 16 && std::all_of(c.begin(), c.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

bool IsGid(std::string_view g) {
  if (g.size() != 32) return false;
  return std::all_of(g.begin(), g.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string RandomHex(int digits) {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  uint64_t a = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  uint64_t b = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ counter.fetch_add(1);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return std::string(buf, static_cast<size_t>(digits));
}

// Driver/server error -> Status. The one table of error meanings (doc/protocol.md).
Status MapError(unsigned int err, const char* msg) {
  std::string m = std::string(msg ? msg : "") + " (" + std::to_string(err) + ")";
  const int e = static_cast<int>(err);
  switch (err) {
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_QUERY_INTERRUPTED:  // KILL QUERY: seigo's deadlock detector (or an operator)
    case ER_XA_RBDEADLOCK:
    case ER_XA_RBTIMEOUT:
    case ER_XA_RBROLLBACK:
      return Status(Code::kConflict, m, e);
    case ER_XAER_NOTA:
      return Status(Code::kNotFound, m, e);
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NET_WRITE_INTERRUPTED:
      return Status(Code::kUnavailable, m, e);
    case ER_ACCESS_DENIED_ERROR:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_BAD_DB_ERROR:
      return Status(Code::kInvalidArgument, m, e);
    case ER_NET_PACKET_TOO_LARGE:  // 1153: resending the same packet cannot succeed
      return Status(Code::kInvalidArgument, m + " — a value is larger than max_allowed_packet", e);
    default:
      break;
  }
  if (err >= 2000 && err < 3000) return Status(Code::kUnavailable, m, e);  // client-side: CR_*
  return Status(Code::kQueryFailed, m, e);
}

// Unix ms by the system clock: the clock of DefaultEnv's NowMs, in which callers' deadlines
// (Session::SetDeadline, Acquire(deadline)) are given.
int64_t UnixNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Cuts connections whose caller's deadline (RunOptions::timeout_ms) passed while a statement
// waits on the server — a frozen or unreachable server answers nothing, and the driver would
// wait read_timeout_s. Cutting = shutdown() of the socket: the waiting call fails at once with a
// lost connection, which the protocol handles like any lost reply (before the commit point:
// roll back; a COMMIT in flight: the fence learns the outcome). One thread per process, started
// at the first deadline.
class Watchdog {
 public:
  static Watchdog& Get() {
    static Watchdog* w = new Watchdog();  // never destroyed: its thread may outlive main's locals
    return *w;
  }
  // Watches `fd` until Unwatch(token); cuts it once the system clock reaches `deadline_ms`.
  // The watchdog holds a dup() of the fd: if the driver closes the socket meanwhile (a lost
  // connection), its number cannot be reused by another connection that a late cut would hit.
  // 0 = not watched (dup failed).
  uint64_t Watch(int fd, int64_t deadline_ms) {
    const int own = ::dup(fd);
    if (own < 0) return 0;
    std::lock_guard<std::mutex> l(mu_);
    if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
    const uint64_t token = ++next_;
    watched_[token] = {own, deadline_ms, false};
    cv_.notify_one();
    return token;
  }
  // Stops watching; true if the connection was cut (it is unusable now).
  bool Unwatch(uint64_t token) {
    int own = -1;
    bool cut = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = watched_.find(token);
      if (it == watched_.end()) return false;
      own = it->second.fd;
      cut = it->second.cut;
      watched_.erase(it);
    }
    ::close(own);
    return cut;
  }

 private:
  struct Entry {
    int fd;
    int64_t deadline_ms;
    bool cut;
  };
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      int64_t next = INT64_MAX;
      const int64_t now = UnixNowMs();
      for (auto& [token, e] : watched_) {
        if (e.cut) continue;
        if (e.deadline_ms <= now) {
          ::shutdown(e.fd, SHUT_RDWR);  // the fd stays open (and ours) until Unwatch
          e.cut = true;
        } else {
          next = std::min(next, e.deadline_ms);
        }
      }
      if (next == INT64_MAX) {
        cv_.wait(l);
      } else {
        cv_.wait_for(l, std::chrono::milliseconds(next - now));
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> watched_;  // guarded by mu_
  uint64_t next_ = 0;                  // guarded by mu_
  std::thread thread_;
};

// Receives streamed rows (Session::ExecuteEach): a QueryResult with the columns and one row.
using RowSink = std::function<Status(const QueryResult&)>;

// One connection. Not thread-safe.
class Conn {
 public:
  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() {
    if (mysql_ != nullptr) mysql_close(mysql_);
  }

  // `autocommit` false for transaction sessions (they run inside XA transactions; autocommit=0
  // keeps a statement that slips out of one from committing on its own).
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
    // Transaction sessions count rows MATCHED by an UPDATE (CLIENT_FOUND_ROWS): a guard
    // (Tx::ExecExpect) on "UPDATE .. SET gold = gold - ?" must not fail because the price was 0.
    const unsigned long flags =
        CLIENT_MULTI_STATEMENTS | (autocommit ? 0UL : static_cast<unsigned long>(CLIENT_FOUND_ROWS));
    if (mysql_real_connect(mysql_, c.url.host.c_str(), c.url.user.c_str(),
                           c.url.password.c_str(), c.url.database.c_str(), c.url.port, nullptr,
                           flags) == nullptr) {
      Status s = MapError(mysql_errno(mysql_), mysql_error(mysql_));
      broken_ = true;
      return s.Annotate("connecting to " + c.url.Redacted());
    }
    // Strict mode on top of the server's own sql_mode: the decision insert relies on
    // NULL-into-NOT-NULL being an error. session_track_state_change makes the server flag every
    // reply after which the session's state (variables, time zone, schema, temporary tables,
    // ...) differs: such a session is never pooled (SessionChanged).
    // Recovery sessions (autocommit) read INNODB_TRX.trx_started, which is in the server's
    // SYSTEM zone: their session zone is made the same. Transaction sessions keep the server's
    // default zone for the application's own NOW().
    QueryResult packet;
    SEIGO_RETURN_IF_ERROR(
        Run("SET SESSION innodb_lock_wait_timeout=" + std::to_string(c.lock_wait_timeout_s) +
                ", SESSION sql_mode=CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')"
                ", SESSION session_track_state_change=ON, autocommit=" +
                (autocommit ? "1, SESSION time_zone='SYSTEM'" : "0") +
                ";SELECT @@max_allowed_packet",
            &packet));
    Result<int64_t> max = packet.Int(0, 0);
    if (max.ok() && *max > 0) max_allowed_packet_ = static_cast<uint64_t>(*max);
    thread_id_ = mysql_thread_id(mysql_);
    return Status::OK();
  }

  // The server's max_allowed_packet (bytes): a statement larger than this cannot be sent.
  uint64_t max_allowed_packet() const { return max_allowed_packet_; }

  // Unix ms after which a call waiting on the server is cut (Watchdog); 0 = none.
  void set_deadline(int64_t unix_ms) { deadline_ms_ = unix_ms; }
  // Broken because the watchdog cut it (a caller's deadline), not because the server went away.
  bool cut() const { return cut_; }
  // RAII around one blocking call: watched while a deadline is set; a cut connection is broken.
  class Watched {
   public:
    explicit Watched(Conn& c) : c_(c) {
      if (c.deadline_ms_ > 0 && c.mysql_ != nullptr && !c.broken_) {
        token_ = Watchdog::Get().Watch(static_cast<int>(mysql_get_socket(c.mysql_)),
                                       c.deadline_ms_);
      }
    }
    ~Watched() {
      if (token_ != 0 && Watchdog::Get().Unwatch(token_)) {
        c_.broken_ = true;
        c_.cut_ = true;
      }
    }
    Watched(const Watched&) = delete;
    Watched& operator=(const Watched&) = delete;

   private:
    Conn& c_;
    uint64_t token_ = 0;
  };

  // Runs text SQL (possibly several statements); drains every result; returns the first error
  // and records which statement (0-based) failed in failed_at(). The server stops a
  // multi-statement batch at its first error. `out` receives the first result set; `more`, if
  // given, every further one (every one if `out` is null).
  Status Run(const std::string& sql, QueryResult* out = nullptr,
             std::vector<QueryResult>* more = nullptr) {
    failed_at_ = 0;
    if (broken_) return Status::Unavailable("connection already lost");
    Watched watched(*this);
    if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) return Fail();
    bool first = true;
    for (;;) {
      MYSQL_RES* res = mysql_store_result(mysql_);
      if (res != nullptr) {
        QueryResult* dst = nullptr;
        if (first && out != nullptr) {
          dst = out;
        } else if (more != nullptr) {
          dst = &more->emplace_back();
        }
        first = false;
        if (dst != nullptr) {
          unsigned n = mysql_num_fields(res);
          MYSQL_FIELD* f = mysql_fetch_fields(res);
          for (unsigned i = 0; i < n; ++i) dst->columns.emplace_back(f[i].name);
          while (MYSQL_ROW row = mysql_fetch_row(res)) {
            unsigned long* len = mysql_fetch_lengths(res);
            std::vector<std::optional<std::string>> r;
            for (unsigned i = 0; i < n; ++i) {
              if (row[i] == nullptr) r.emplace_back(std::nullopt);
              else r.emplace_back(std::string(row[i], len[i]));
            }
            dst->rows.push_back(std::move(r));
          }
        }
        mysql_free_result(res);
      } else if (mysql_field_count(mysql_) != 0) {
        return Fail();
      } else if (out != nullptr && first) {
        out->affected_rows = mysql_affected_rows(mysql_);
        out->last_insert_id = mysql_insert_id(mysql_);
      }
      int next = mysql_next_result(mysql_);
      if (next < 0) return Status::OK();
      ++failed_at_;
      if (next > 0) return Fail();
    }
  }

  Status Fail() {
    Status s = MapError(mysql_errno(mysql_), mysql_error(mysql_));
    if (s.Is(Code::kUnavailable)) broken_ = true;
    return s;
  }

  // After a successful statement: the server's status flags of its reply.
  bool InTransaction() const { return (mysql_->server_status & SERVER_STATUS_IN_TRANS) != 0; }
  bool SessionChanged() const {
    return (mysql_->server_status & SERVER_SESSION_STATE_CHANGED) != 0;
  }
  bool Autocommit() const { return (mysql_->server_status & SERVER_STATUS_AUTOCOMMIT) != 0; }

  // For a pooled connection: true unless the server closed it while it was idle (its socket
  // then has an EOF or error waiting). No round trip.
  bool IdleAndAlive() {
    if (broken_) return false;
    pollfd p{};
    p.fd = static_cast<int>(mysql_get_socket(mysql_));
    p.events = POLLIN | POLLRDHUP;
    if (p.fd < 0) return false;
    int n = ::poll(&p, 1, 0);
    if (n == 0) return true;
    broken_ = true;
    return false;
  }

  MYSQL* mysql() { return mysql_; }
  uint64_t thread_id() const { return thread_id_; }  // the server's CONNECTION_ID()
  bool broken() const { return broken_; }
  void set_broken() { broken_ = true; }
  int failed_at() const { return failed_at_; }

 private:
  int64_t deadline_ms_ = 0;  // Watched: 0 = no deadline
  uint64_t thread_id_ = 0;
  bool cut_ = false;         // Watched: the watchdog cut this connection
  uint64_t max_allowed_packet_ = 16 << 20;
  MYSQL* mysql_ = nullptr;
  bool broken_ = false;
  int failed_at_ = 0;
};

// The words of a statement, upper-cased, with comments dropped and executable comments
// (/*! ... */, /*M! ... */) opened: their text runs. Stops at `limit` words.
std::vector<std::string> Words(std::string_view sql, size_t limit) {
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (size_t i = 0; i < sql.size() && words.size() < limit;) {
    const char ch = sql[i];
    if (sql.compare(i, 2, "--") == 0 || ch == '#') {
      flush();
      while (i < sql.size() && sql[i] != '\n') ++i;
      continue;
    }
    if (sql.compare(i, 2, "/*") == 0) {
      flush();
      size_t j = i + 2;
      if (j < sql.size() && sql[j] == 'M') ++j;
      if (j < sql.size() && sql[j] == '!') {  // executable comment: its text runs
        ++j;
        while (j < sql.size() && std::isdigit(static_cast<unsigned char>(sql[j]))) ++j;
        i = j;
        continue;
      }
      size_t end = sql.find("*/", i + 2);
      i = end == std::string_view::npos ? sql.size() : end + 2;
      continue;
    }
    if (sql.compare(i, 2, "*/") == 0) {
      flush();
      i += 2;
      continue;
    }
    if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '@' || ch == '$') {
      word += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    } else {
      flush();
      if (ch == '\'' || ch == '"' || ch == '`') {  // a quoted string or name is one "word"
        size_t end = sql.find(ch, i + 1);
        words.push_back(std::string(1, ch));
        i = end == std::string_view::npos ? sql.size() : end + 1;
        continue;
      }
      if (!std::isspace(static_cast<unsigned char>(ch))) words.push_back(std::string(1, ch));
    }
    ++i;
  }
  flush();
  return words;
}

// Statements a closure may run inside a seigo transaction: an allowlist, because the ways to
// end a transaction are many (COMMIT, ROLLBACK, BEGIN, SET autocommit, XA, LOCK TABLES, every
// statement that commits implicitly — DDL, GRANT, SET PASSWORD, FLUSH, ANALYZE TABLE, ... —
// and statements that can carry one: SET STATEMENT ... FOR, compound statements such as
// IF ... THEN COMMIT; END IF, SQL-level PREPARE/EXECUTE). Refused before they reach the server;
// doc/protocol.md, "What a closure may run". `local`: the decider's (or a one-shard) local
// transaction, where CALL is refused too (a procedure could COMMIT; on an XA branch the server
// refuses that itself). Returns the refused statement's leading words, or "".
// Whether `sql` only reads (RunOptions::read_only): a SELECT (not INTO a file), WITH, VALUES,
// TABLE, SHOW, EXPLAIN or DESCRIBE. Empty = a read; else the word that makes it not one. A
// function called from a SELECT could still write: the read-only transaction is rolled back,
// so such a write never commits.
std::string NotARead(std::string_view sql) {
  std::vector<std::string> w = Words(sql, 64);
  size_t at = 0;
  while (at < w.size() && w[at] == "(") ++at;
  if (at >= w.size()) return "";
  static const char* const kReads[] = {"SELECT", "WITH", "VALUES", "TABLE",
                                       "SHOW",   "EXPLAIN", "DESCRIBE", "DESC"};
  bool read = false;
  for (const char* r : kReads) read = read || w[at] == r;
  if (!read) return w[at];
  for (size_t k = at; k + 1 < w.size(); ++k) {
    if (w[k] == "INTO" && (w[k + 1] == "OUTFILE" || w[k + 1] == "DUMPFILE")) return "INTO " + w[k + 1];
  }
  return "";
}

std::string ForbiddenInTransaction(std::string_view sql, bool local) {
  // Three words decide, except for SET (and a parenthesised first statement): read on then.
  std::vector<std::string> w = Words(sql, 3);
  if (!w.empty() && (w[0] == "SET" || w[0] == "(")) w = Words(sql, 64);
  size_t at = 0;
  while (at < w.size() && w[at] == "(") ++at;  // (SELECT ...) UNION ...
  if (at >= w.size()) return "";
  const std::string& first = w[at];
  const std::string second = at + 1 < w.size() ? w[at + 1] : "";
  auto has = [&](const char* word) {
    for (size_t k = at; k < w.size(); ++k) {
      if (w[k] == word) return true;
    }
    return false;
  };
  static const char* const kAllowed[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE",
                                         "WITH",   "VALUES", "TABLE",  "DO",     "SAVEPOINT",
                                         "RELEASE", "SHOW",  "EXPLAIN", "DESCRIBE", "DESC"};
  for (const char* a : kAllowed) {
    if (first == a) return "";
  }
  if (first == "ROLLBACK" &&
      (second == "TO" || (second == "WORK" && at + 2 < w.size() && w[at + 2] == "TO"))) {
    return "";
  }
  if ((first == "CREATE" || first == "DROP") && second == "TEMPORARY") return "";
  if (first == "LOAD" && (second == "DATA" || second == "XML")) return "";
  if (first == "CALL") return local ? "CALL" : "";
  if (first == "SET") {
    // Variables, names, the time zone... but not what changes how the transaction ends, nor
    // what commits implicitly, nor a statement run FOR another one.
    // (Words() splits "@@session.autocommit" into "@@SESSION", ".", "AUTOCOMMIT".)
    if (second == "STATEMENT" || second == "PASSWORD" || second == "DEFAULT" ||
        second == "ROLE" || has("AUTOCOMMIT") || has("@@AUTOCOMMIT") ||
        has("COMPLETION_TYPE") || has("@@COMPLETION_TYPE") || has("TRANSACTION")) {
      return "SET " + second;
    }
    return "";
  }
  return second.empty() ? first : first + " " + second;
}

class MariaSession final : public Session {
 public:
  explicit MariaSession(uint64_t generation) : generation_(generation) {}
  ~MariaSession() override {
    if (inflight_ != nullptr) {
      std::lock_guard<std::mutex> l(inflight_->mu);
      inflight_->sessions.erase(this);
    }
    for (auto& [sql, st] : stmts_) mysql_stmt_close(st);
    if (counted_) counted_->Closed();
    // Closing the connection rolls back an open transaction and detaches a prepared branch;
    // whoever commits or rolls back a detached branch later first waits until the server has
    // finished tearing this connection down (CheckOwner, below).
  }

  Conn& conn() { return conn_; }
  uint64_t generation() const { return generation_; }
  void SetDeadline(int64_t unix_ms) override { conn_.set_deadline(unix_ms); }
  // This session counts against its participant's cap (Config::max_open) until destroyed.
  void CountIn(std::shared_ptr<OpenCount> c) { counted_ = std::move(c); }
  // User statements of this session are listed in `f` while they run (with a wait tag).
  void TrackIn(std::shared_ptr<InFlight> f) {
    inflight_ = std::move(f);
    std::lock_guard<std::mutex> l(inflight_->mu);
    inflight_->sessions[this] = &slot_;
  }
  void SetWaitTag(std::shared_ptr<WaitTag> tag) override {
    if (inflight_ == nullptr) return;
    std::lock_guard<std::mutex> l(inflight_->mu);
    slot_.thread = conn_.thread_id();  // connected by now (the pool hands out connected ones)
    slot_.tag = std::move(tag);
  }
  uint64_t server_thread() const override {
    return conn_.broken() ? 0 : conn_.thread_id();
  }
  // May go back to the pool: no transaction of ours open, the connection healthy, and no
  // session state changed by a caller's statement.
  bool clean() const { return state_ == State::kNone && !conn_.broken() && !tainted_; }

  Status BeginReadOnly() override {
    Status s = BeginLocal();
    read_only_ = s.ok();
    return s;
  }

  Status BeginLocal() override {
    if (conn_.broken()) return Status::Unavailable("connection already lost");
    if (state_ != State::kNone) return Status::Internal("BeginLocal on a busy session");
    read_only_ = false;
    // Transaction sessions run with autocommit=0: the first statement opens the transaction,
    // no START TRANSACTION round trip (which the pool guarantees: nothing ran since the last
    // COMMIT/ROLLBACK).
    state_ = State::kLocal;
    opened_ = false;
    return Status::OK();
  }

  Status BeginBranch(const Xid& xid) override {
    if (conn_.broken()) return Status::Unavailable("connection already lost");
    if (state_ != State::kNone) return Status::Internal("BeginBranch on a busy session");
    Status s = conn_.Run("XA START " + XidSql(xid));
    if (!s.ok()) return s;
    read_only_ = false;
    state_ = State::kBranch;
    branch_ = xid;
    return s;
  }

  Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) override {
    return ExecuteWith(sql, params, nullptr, nullptr);
  }
  Result<uint64_t> ExecuteEach(std::string_view sql, std::span<const Value> params,
                               const RowSink& row) override {
    Status from_row;
    Result<QueryResult> r = ExecuteWith(sql, params, &row, &from_row);
    if (!from_row.ok()) return from_row;
    if (!r.ok()) return r.status();
    return r->affected_rows;
  }

  Status Prepare(const Xid& xid) override {
    // The marker goes in inside the branch, before XA END: it is prepared, committed or rolled
    // back with the branch, so it shows what became of the branch (ProbeBranches), names the
    // owner's server thread for CheckOwner, and reveals a commit by XID that did not take
    // effect (CommitXid).
    // The session clock is reset first if a caller changed the session (a closure's SET
    // timestamp must not date the marker; SERVER_SESSION_STATE_CHANGED told us, see Execute).
    Status s = conn_.Run(
        std::string(tainted_ ? "SET @@session.timestamp=DEFAULT;" : "") +
        "INSERT INTO seigo_branch (gid, decider, owner, created_ms, deadline_ms) VALUES ('" +
        xid.gid + "', " + std::to_string(xid.decider) + ", CONNECTION_ID(), " + kServerNowMs +
        ", " + std::to_string(xid.deadline_ms) + ");XA END " + XidSql(xid) + ";XA PREPARE " +
        XidSql(xid));
    if (s.ok()) state_ = State::kPrepared;
    return s;
  }

  Status StageMessages(const std::string& gid, std::span<const Message> messages,
                       const std::string& claim, int64_t lease_ms) override {
    if (state_ != State::kLocal) return Status::Internal("StageMessages outside a local transaction");
    if (!IsGid(gid) || !IsClaim(claim) || lease_ms < 0) {
      return Status::InvalidArgument("StageMessages: bad gid, claim or lease");
    }
    std::string sql =
        "INSERT INTO seigo_outbox (gid, seq, exchange, routing_key, content_type, msg_type, "
        "headers, body, created_ms, claim, claimed_ms) VALUES ";
    for (size_t i = 0; i < messages.size(); ++i) {
      const Message& m = messages[i];
      if (i > 0) sql += ',';
      sql += "('" + gid + "'," + std::to_string(i) + "," + HexLiteral(m.exchange) + "," +
             HexLiteral(m.routing_key) + "," + HexLiteral(m.content_type) + "," +
             HexLiteral(m.type) + "," + HexLiteral(EncodeHeaders(m.headers)) + "," +
             HexLiteral(m.body) + "," + kServerNowMs + ",'" + claim + "'," + kServerNowMs +
             " + " + std::to_string(lease_ms) + ")";
    }
    if (sql.size() + 4096 > conn_.max_allowed_packet()) {
      return Status::InvalidArgument(
          "the transaction's messages need " + std::to_string(sql.size()) + " bytes of SQL, "
          "more than the shard's max_allowed_packet (" +
          std::to_string(conn_.max_allowed_packet()) + ")");
    }
    staged_ = std::move(sql);
    return Status::OK();
  }

  Status CommitLocal() override {
    if (!staged_.empty()) return CommitLocalWithOutbox();
    Status s = conn_.Run("COMMIT");
    if (s.ok()) state_ = State::kNone;
    else if (!s.Is(Code::kUnavailable)) conn_.set_broken();
    if (!s.ok() && !s.Is(Code::kUnavailable)) {
      // The COMMIT itself answered with an error: whether it committed is not ours to assume.
      return Status(Code::kOutcomeUnknown, "the COMMIT failed: " + s.message(), s.server_errno());
    }
    return s;
  }

  Status CommitWithDecision(const Decision& d) override {
    // One round trip: reset the session clock (a closure may have SET timestamp), insert the
    // commit row, COMMIT. If the insert fails (duplicate gid = fenced; NULL outcome = past the
    // deadline by this server's clock) the server stops the batch and COMMIT never runs.
    // Messages (StageMessages) go into the outbox in the same batch, before the decision row.
    const int reset = (tainted_ ? 1 : 0) + (staged_.empty() ? 0 : 1);
    std::string sql = std::string(tainted_ ? "SET @@session.timestamp=DEFAULT;" : "") +
                      (staged_.empty() ? std::string() : staged_ + ";") +
                      "INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms, decided_ms) "
                      "VALUES ('" + d.gid + "', IF(" + kServerNowMs + " < " +
                      std::to_string(d.deadline_ms) + ", 'C', NULL), '" + ShardList(d.shards) +
                      "', " + std::to_string(d.deadline_ms) + ", " + kServerNowMs + ");COMMIT";
    staged_.clear();
    Status s = conn_.Run(sql);
    if (s.ok()) {
      state_ = State::kNone;
      return s;
    }
    if (s.Is(Code::kUnavailable)) return s;  // outcome unknown; the session is broken
    if (conn_.failed_at() == 1 + reset) {
      // The COMMIT answered with an error after the insert went in: not ours to assume either
      // way (doc/protocol.md, crash window 4). The caller learns the outcome through the fence.
      conn_.set_broken();
      return Status(Code::kOutcomeUnknown, "the COMMIT failed: " + s.message(), s.server_errno());
    }
    if (s.server_errno() == ER_DUP_ENTRY) {
      return Status(Code::kAborted, "gid " + d.gid + " already has a decision (fenced by a "
                    "resolver)", s.server_errno());
    }
    if (s.server_errno() == ER_BAD_NULL_ERROR) {
      return Status(Code::kAborted, "the decider's clock is past the deadline", s.server_errno());
    }
    return s;  // the insert (or the SET) failed: nothing committed
  }

  Status CommitPrepared(const Xid& xid) override {
    Status s = conn_.Run("XA COMMIT " + XidSql(xid));
    if (s.ok()) state_ = State::kNone;
    return s;
  }

  Status RollbackAll(const Xid* xid, bool prepared) override {
    (void)prepared;
    staged_.clear();
    Status s;
    switch (state_) {
      case State::kNone:
        return Status::OK();
      case State::kLocal:
        s = conn_.Run("ROLLBACK");
        break;
      case State::kBranch:
        // After a deadlock the server already rolled the branch back and XA END reports that
        // (XA_RB*), which is fine.
        conn_.Run("XA END " + XidSql(xid ? *xid : branch_));
        s = conn_.Run("XA ROLLBACK " + XidSql(xid ? *xid : branch_));
        break;
      case State::kPrepared:
        s = conn_.Run("XA ROLLBACK " + XidSql(xid ? *xid : branch_));
        break;
    }
    if (s.Is(Code::kNotFound)) s = Status::OK();  // nothing was left on the server
    if (s.ok()) {
      state_ = State::kNone;
    } else {
      conn_.set_broken();  // unknown state: close it, the server cleans up what is not prepared
    }
    return s;
  }

  bool Broken() const override { return conn_.broken(); }

 private:
  // The one-shard COMMIT with messages: the outbox rows and COMMIT in one round trip. If the
  // INSERT fails the server stops the batch before the COMMIT: nothing is committed and the
  // transaction is still open for the caller's rollback.
  Status CommitLocalWithOutbox() {
    const int reset = tainted_ ? 1 : 0;
    std::string sql = std::string(reset ? "SET @@session.timestamp=DEFAULT;" : "") + staged_ +
                      ";COMMIT";
    staged_.clear();
    Status s = conn_.Run(sql);
    if (s.ok()) {
      state_ = State::kNone;
      return s;
    }
    if (s.Is(Code::kUnavailable)) return s;  // outcome unknown; the session is broken
    if (conn_.failed_at() <= reset) return s.Annotate("writing the outbox");
    conn_.set_broken();
    return Status(Code::kOutcomeUnknown, "the COMMIT failed: " + s.message(), s.server_errno());
  }

  enum class State {
    kNone,      // no transaction of ours open (recovery/tool sessions are always here)
    kLocal,     // the decider's (or the only shard's) local transaction
    kBranch,    // an active XA branch
    kPrepared,  // that branch is prepared
  };

  Result<MYSQL_STMT*> Prepared(std::string_view sql);
  // Execute, or with `sink` ExecuteEach (the first result set's rows streamed).
  Result<QueryResult> ExecuteWith(std::string_view sql, std::span<const Value> params,
                                  const RowSink* sink, Status* sink_status);
  // `sink`/`sink_status`: stream the first result set's rows (ExecuteEach).
  Result<QueryResult> ExecuteOnce(MYSQL_STMT* st, std::span<const Value> params,
                                  const RowSink* sink = nullptr, Status* sink_status = nullptr);

  Conn conn_;
  const uint64_t generation_;
  State state_ = State::kNone;
  bool opened_ = false;   // kLocal: the server reported the transaction open after a statement
  bool tainted_ = false;  // a caller's statement changed the session's state
  std::string staged_;    // StageMessages: the outbox INSERT for the commit batch
  bool read_only_ = false;  // kLocal: BeginReadOnly (statements must be reads)
  std::shared_ptr<OpenCount> counted_;  // set for transaction sessions of a capped pool
  std::shared_ptr<InFlight> inflight_;  // set for transaction sessions (TrackIn)
  SessionSlot slot_;                    // what the deadlock detector reads of this session
  Xid branch_;            // kBranch, kPrepared
  std::unordered_map<std::string, MYSQL_STMT*> stmts_;
};

Result<MYSQL_STMT*> MariaSession::Prepared(std::string_view sql) {
  auto it = stmts_.find(std::string(sql));
  if (it != stmts_.end()) return it->second;
  // Bounded per connection: statements x connections x processes must stay well below the
  // server's max_prepared_stmt_count (default 16382).
  auto drop_all = [this] {
    for (auto& [k, st] : stmts_) mysql_stmt_close(st);
    stmts_.clear();
  };
  if (stmts_.size() >= kMaxCachedStatements) drop_all();
  for (int round = 0;; ++round) {
    MYSQL_STMT* st = mysql_stmt_init(conn_.mysql());
    if (st == nullptr) return Status::Internal("mysql_stmt_init failed");
    my_bool update_max = 1;
    mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max);
    if (mysql_stmt_prepare(st, sql.data(), sql.size()) == 0) {
      stmts_.emplace(std::string(sql), st);
      return st;
    }
    Status s = MapError(mysql_stmt_errno(st), mysql_stmt_error(st));
    mysql_stmt_close(st);
    if (s.Is(Code::kUnavailable)) conn_.set_broken();
    if (s.server_errno() == ER_MAX_PREPARED_STMT_COUNT_REACHED && round == 0 && !stmts_.empty()) {
      drop_all();  // give ours back and try once more
      continue;
    }
    if (s.server_errno() == ER_MAX_PREPARED_STMT_COUNT_REACHED) {
      return Status(Code::kUnavailable, s.message() + " — the server's max_prepared_stmt_count "
                    "is exhausted by all its clients; raise it", s.server_errno());
    }
    return s;
  }
}

// Reads the current result set of `st` into `out` (rows as text). With `sink`, rows are not
// kept: each is handed to `sink` as it arrives (unbuffered: nothing is stored on the client),
// and `*sink_status` receives the first error `sink` returned; the rest is still read (the
// connection cannot be used before the result is drained) but not converted or handed over.
Status FetchRows(MYSQL_STMT* st, MYSQL_RES* meta, QueryResult* out,
                 const std::function<Status()>& fail, const RowSink* sink = nullptr,
                 Status* sink_status = nullptr) {
  if (sink == nullptr && mysql_stmt_store_result(st) != 0) return fail();
  unsigned n = mysql_num_fields(meta);
  MYSQL_FIELD* fields = mysql_fetch_fields(meta);
  std::vector<MYSQL_BIND> rb(n);
  std::vector<std::vector<char>> bufs(n);
  std::vector<unsigned long> lens(n);
  std::vector<my_bool> nulls(n);
  for (unsigned i = 0; i < n; ++i) {
    out->columns.emplace_back(fields[i].name);
    bufs[i].resize(std::max<unsigned long>(fields[i].max_length, 64) + 1);
    std::memset(&rb[i], 0, sizeof rb[i]);
    rb[i].buffer_type = MYSQL_TYPE_STRING;
    rb[i].buffer = bufs[i].data();
    rb[i].buffer_length = bufs[i].size();
    rb[i].length = &lens[i];
    rb[i].is_null = &nulls[i];
  }
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
      if (sink != nullptr && !sink_status->ok()) continue;  // stopped: drain, drop
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
      if (sink != nullptr) {
        out->rows.assign(1, std::move(row));
        ++out->affected_rows;
        *sink_status = (*sink)(*out);
        continue;
      }
      out->rows.push_back(std::move(row));
    }
  }
  mysql_stmt_free_result(st);
  if (sink != nullptr) {
    out->rows.clear();
    return err;
  }
  if (err.ok()) out->affected_rows = out->rows.size();
  return err;
}

Result<QueryResult> MariaSession::ExecuteWith(std::string_view sql, std::span<const Value> params,
                                              const RowSink* sink, Status* sink_status) {
  if (conn_.broken()) return Status::Unavailable("connection already lost");
  const bool in_tx = state_ == State::kLocal || state_ == State::kBranch;
  if (in_tx && read_only_) {
    const std::string w = NotARead(sql);
    if (!w.empty()) {
      return Status::InvalidArgument(w + " is not a read: a read-only transaction "
                                     "(RunOptions::read_only) may only run SELECT, WITH, VALUES, "
                                     "TABLE, SHOW, EXPLAIN and DESCRIBE: " +
                                     std::string(sql.substr(0, 200)));
    }
  }
  if (in_tx) {
    const std::string bad = ForbiddenInTransaction(sql, state_ == State::kLocal);
    if (!bad.empty()) {
      // Not retryable: the closure is wrong. Nothing reached the server.
      return Status::InvalidArgument(
          bad + " is not allowed inside a seigo transaction" +
          (bad == "CALL" ? std::string(" on the shard whose local transaction decides it (the "
                                       "first shard touched): a procedure could COMMIT it. "
                                       "CALL works on the other shards of a transaction")
                         : std::string(": only statements that cannot end or implicitly "
                                       "commit it may run there (DML, SAVEPOINT, SET of "
                                       "variables, temporary tables, ...)")) +
          " (doc/protocol.md, \"What a closure may run\"): " + std::string(sql));
    }
  }
  Conn::Watched watched(conn_);
  Result<MYSQL_STMT*> p = Prepared(sql);
  if (!p.ok()) return p.status();
  // Dated for the deadlock detector while it runs: a clock read and two atomic stores, the
  // only cost of detection while nothing waits.
  if (inflight_ != nullptr) slot_.since_ms.store(UnixNowMs(), std::memory_order_relaxed);
  Result<QueryResult> r = ExecuteOnce(*p, params, sink, sink_status);
  if (inflight_ != nullptr) slot_.since_ms.store(0, std::memory_order_relaxed);
  if (!r.ok()) {
    if (r.status().server_errno() == ER_XAER_RMFAIL && state_ == State::kBranch) {
      // The server refused, inside the XA branch, a statement that would end it (e.g. a
      // procedure that commits). Nothing was committed.
      return Status(Code::kInvalidArgument,
                    "statement not allowed inside a seigo transaction (it would end the "
                    "transaction; doc/protocol.md, \"What a closure may run\"): " +
                        std::string(sql) + ": " + r.status().message(),
                    r.status().server_errno());
    }
    return r;
  }
  // The reply's status flags. A statement that changed session state (a variable, the time
  // zone, USE, temporary tables, ...) taints the session: it never goes back to the pool, so
  // nothing leaks into a later transaction. A local transaction that the server reported open
  // and that is no longer open, or autocommit switched on, means a statement ended it behind
  // the classifier's back: the attempt must not go on.
  if (conn_.SessionChanged()) tainted_ = true;
  if (state_ == State::kLocal) {
    if (conn_.InTransaction()) {
      opened_ = true;
    } else if (opened_ || conn_.Autocommit()) {
      tainted_ = true;
      conn_.set_broken();
      return Status::Internal("the transaction was ended by: " + std::string(sql) +
                              " (seigo refuses statements that end a transaction; this one "
                              "slipped through: please report it)");
    }
  } else if (state_ == State::kNone && conn_.InTransaction()) {
    tainted_ = true;  // a tool session left inside a transaction
  }
  return r;
}

Result<QueryResult> MariaSession::ExecuteOnce(MYSQL_STMT* st, std::span<const Value> params,
                                              const RowSink* sink, Status* sink_status) {
  if (mysql_stmt_param_count(st) != params.size()) {
    return Status::InvalidArgument("statement has " + std::to_string(mysql_stmt_param_count(st)) +
                                   " placeholders but " + std::to_string(params.size()) +
                                   " values were given");
  }
  // A statement over the server's max_allowed_packet makes the server drop the connection
  // (2006), which looks like a transient failure: refuse it here, once, with the reason.
  uint64_t bytes = 64;
  for (const Value& v : params) bytes += 16 + v.string_value().size();
  if (bytes > conn_.max_allowed_packet()) {
    return Status::InvalidArgument("statement parameters of " + std::to_string(bytes) +
                                   " bytes exceed the server's max_allowed_packet (" +
                                   std::to_string(conn_.max_allowed_packet()) + " bytes)");
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
        ints[i] = static_cast<long long>(v.uint_value());  // the same 64 bits
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &ints[i];
        b.is_unsigned = 1;
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
      case Value::Kind::kBytes:
        b.buffer_type = v.kind() == Value::Kind::kBytes ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
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

  // The first result set is the statement's; a CALL may return more and always ends with a
  // status-only result, all of which must be read before the connection can be used again.
  QueryResult out;
  bool have_rows = false;
  for (;;) {
    MYSQL_RES* meta = mysql_stmt_result_metadata(st);
    if (meta != nullptr) {
      QueryResult scratch;
      Status fs = have_rows ? FetchRows(st, meta, &scratch, fail)
                            : FetchRows(st, meta, &out, fail, sink, sink_status);
      mysql_free_result(meta);
      SEIGO_RETURN_IF_ERROR(fs);
      have_rows = true;
    } else if (!have_rows) {
      out.affected_rows = mysql_stmt_affected_rows(st);
      out.last_insert_id = mysql_stmt_insert_id(st);
    }
    int next = mysql_stmt_next_result(st);
    if (next < 0) break;
    if (next > 0) return fail();
  }
  return out;
}

Status CheckServerVersion(MYSQL* m, bool* is_mysql) {
  std::string info = mysql_get_server_info(m);
  if (info.rfind("5.5.5-", 0) == 0) info = info.substr(6);  // old MariaDB handshake prefix
  unsigned major = 0, minor = 0, patch = 0;
  std::sscanf(info.c_str(), "%u.%u.%u", &major, &minor, &patch);
  const bool mariadb = info.find("MariaDB") != std::string::npos;
  *is_mysql = !mariadb;
  const unsigned v = major * 10000 + minor * 100 + patch;
  if (mariadb ? v < 100500 : v < 50707) {
    return Status::Unsupported(
        "server " + info + " is too old for seigo: its prepared XA branches are lost when the "
        "client disconnects (MySQL bug #12161). Needed: MariaDB >= 10.5 or MySQL >= 5.7.7");
  }
  return Status::OK();
}

}  // namespace

// A recovery/tool session borrowed for one call and returned on scope exit.
class MariaDbParticipant::PooledSession {
 public:
  explicit PooledSession(MariaDbParticipant* p) : p_(p) {
    Result<std::unique_ptr<Session>> s = p->AcquireFrom(&p->idle_recovery_, false, &reused_);
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
  // True if the connection came from the pool (it may have died while idle).
  bool reused() const { return reused_; }

 private:
  MariaDbParticipant* p_;
  std::unique_ptr<Session> s_;
  Status status_;
  bool reused_ = false;
};

namespace {
const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) { return r.status(); }
}  // namespace

// Every recovery call is idempotent, so one that failed only because its pooled connection had
// died while idle (the server restarted) is run once more on a fresh connection.
template <typename Fn>
auto MariaDbParticipant::WithSession(Fn fn) -> decltype(fn(std::declval<PooledSession&>())) {
  for (int round = 0;; ++round) {
    PooledSession ps(this);
    if (!ps.status().ok()) return ps.status();
    auto r = fn(ps);
    if (round == 0 && ps.reused() && StatusOf(r).Is(Code::kUnavailable) &&
        ps.conn().broken()) {
      continue;
    }
    return r;
  }
}

MariaDbParticipant::MariaDbParticipant(const Config& config)
    : config_(config),
      name_(NameOf(config)) {}

std::string MariaDbParticipant::NameOf(const Config& c) {
  return "shard " + std::to_string(c.index) + " (" + c.url.host + ":" + std::to_string(c.url.port) +
         "/" + c.url.database + ")";
}

MariaDbParticipant::~MariaDbParticipant() = default;

namespace {

// Tables made by seigo 0.1: add what is missing, drop the TIMESTAMP columns (they stop working
// in 2038). Each ALTER runs only if needed, so a normal start runs none.
Status MigrateSchema(Conn& c) {
  struct Step {
    const char* table;
    const char* column;
    bool want;        // the column should exist
    const char* sql;  // run if it does not (want) / does (!want)
  };
  static const Step kSteps[] = {
      {"seigo_decision", "decided_ms", true,
       "ALTER TABLE seigo_decision ADD COLUMN decided_ms BIGINT NOT NULL DEFAULT 0"},
      {"seigo_decision", "decided_at", false, "ALTER TABLE seigo_decision DROP COLUMN decided_at"},
      {"seigo_shard", "deployment", true,
       "ALTER TABLE seigo_shard ADD COLUMN deployment CHAR(16) CHARACTER SET ascii NULL"},
      {"seigo_shard", "claimed_ms", true,
       "ALTER TABLE seigo_shard ADD COLUMN claimed_ms BIGINT NOT NULL DEFAULT 0"},
      {"seigo_shard", "claimed_at", false, "ALTER TABLE seigo_shard DROP COLUMN claimed_at"},
  };
  // One read of seigo's columns, then only the ALTERs that are needed (a normal start runs none).
  QueryResult cols;
  SEIGO_RETURN_IF_ERROR(c.Run("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                              "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN "
                              "('seigo_decision', 'seigo_shard')",
                              &cols));
  auto has = [&](const char* table, const char* column) {
    for (const auto& row : cols.rows) {
      if (row.size() >= 2 && row[0] && row[1] && *row[0] == table && *row[1] == column) {
        return true;
      }
    }
    return false;
  };
  for (const Step& st : kSteps) {
    if (has(st.table, st.column) != st.want) SEIGO_RETURN_IF_ERROR(c.Run(st.sql));
  }
  // Keys of tables made by session 6: seigo_outbox_dead had PRIMARY KEY (id), seigo_inbox
  // PRIMARY KEY (message_id) and no by_queue. One read; each ALTER only if needed. Two
  // processes upgrading at once: the loser's ALTER fails with a duplicate key name (1061) or
  // a second primary key (1068): the work is done, so that is success.
  QueryResult keys;
  SEIGO_RETURN_IF_ERROR(c.Run(
      "SELECT TABLE_NAME, INDEX_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM "
      "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN "
      "('seigo_outbox_dead', 'seigo_inbox') GROUP BY TABLE_NAME, INDEX_NAME",
      &keys));
  auto key = [&](const char* table, const char* index) -> std::string {
    for (const auto& row : keys.rows) {
      if (row.size() >= 3 && row[0] && row[1] && *row[0] == table && *row[1] == index) {
        return row[2].value_or("");
      }
    }
    return "";
  };
  auto alter = [&](const std::string& sql) -> Status {
    Status s = c.Run(sql);
    if (s.server_errno() == 1061 || s.server_errno() == 1068) return Status::OK();
    return s;
  };
  if (key("seigo_outbox_dead", "PRIMARY") == "id") {
    SEIGO_RETURN_IF_ERROR(alter("ALTER TABLE seigo_outbox_dead DROP PRIMARY KEY, "
                                "ADD PRIMARY KEY (gid, seq), ADD KEY by_id (id)"));
  }
  if (key("seigo_inbox", "PRIMARY") == "message_id") {
    SEIGO_RETURN_IF_ERROR(alter("ALTER TABLE seigo_inbox DROP PRIMARY KEY, "
                                "ADD PRIMARY KEY (message_id, queue)"));
  }
  if (key("seigo_inbox", "by_queue").empty()) {
    SEIGO_RETURN_IF_ERROR(alter("ALTER TABLE seigo_inbox ADD KEY by_queue (queue, applied_ms)"));
  }
  return Status::OK();
}

struct Claim {
  bool exists = false;
  int64_t index = 0;
  std::string deployment;  // "" if the row predates deployments
};

Result<Claim> ReadClaim(Conn& c) {
  QueryResult r;
  Status s = c.Run("SELECT shard_index, deployment FROM seigo_shard WHERE one = 1", &r);
  if (s.server_errno() == ER_NO_SUCH_TABLE) return Claim{};
  if (s.server_errno() == ER_BAD_FIELD_ERROR) {  // seigo 0.1's table: no deployment yet
    Claim old;
    old.exists = true;
    old.index = -1;
    return old;
  }
  SEIGO_RETURN_IF_ERROR(s);
  Claim claim;
  if (r.rows.empty()) return claim;
  claim.exists = true;
  Result<int64_t> idx = r.Int(0, 0);
  if (!idx.ok()) return idx.status();
  claim.index = *idx;
  if (r.rows[0].size() > 1 && r.rows[0][1]) claim.deployment = *r.rows[0][1];
  return claim;
}

}  // namespace

Result<std::unique_ptr<MariaDbParticipant>> MariaDbParticipant::Open(const Config& config,
                                                                     bool prepare_schema,
                                                                     std::string* deployment) {
  std::unique_ptr<MariaDbParticipant> p(new MariaDbParticipant(config));
  auto s = std::make_unique<MariaSession>(0);
  SEIGO_RETURN_IF_ERROR(s->conn().Connect(config, true).Annotate(p->name()));
  SEIGO_RETURN_IF_ERROR(CheckServerVersion(s->conn().mysql(), &p->mysql_).Annotate(p->name()));
  Conn& c = s->conn();
  // Committing a branch from a connection that does not own it (phase 2 after a lost
  // connection, every resolver pass) reads INNODB_TRX, which needs PROCESS. Without it
  // recovery would fail in the background on every pass: say so now.
  // (Not "WHERE 1 = 0": the server skips an impossible read, and its privilege check with it.)
  Status process = c.Run("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE "
                         "trx_mysql_thread_id = CONNECTION_ID()");
  if (process.server_errno() == ER_SPECIFIC_ACCESS_DENIED_ERROR) {
    return Status(Code::kInvalidArgument,
                  p->name() + ": the user lacks the PROCESS privilege, which seigo needs to "
                  "commit or roll back a branch safely from another connection (recovery; "
                  "doc/library.md, \"Privileges\"; scripts/grants.sh prints the grants)",
                  process.server_errno());
  }
  SEIGO_RETURN_IF_ERROR(process.Annotate(p->name()));
  if (!p->mysql_) {
    // The server's own name for itself: every client of it gets the same, whichever address
    // it connected to (deadlock detectors of different processes must agree on it).
    QueryResult self;
    SEIGO_RETURN_IF_ERROR(c.Run("SELECT @@hostname, @@port", &self).Annotate(p->name()));
    if (!self.rows.empty() && self.rows[0].size() == 2 && self.rows[0][0] && self.rows[0][1]) {
      // With the database: two shards of one deployment may be two databases of one server.
      // Hashed (FNV-1a, 64 bits, as hex): the same in every process and build, and only
      // characters that need no quoting in seigo_waiter.threads.
      const std::string name = *self.rows[0][0] + ":" + *self.rows[0][1] + "/" +
                               config.url.database;
      uint64_t h = 14695981039346656037ULL;
      for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ULL;
      char buf[17];
      std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
      p->store_id_ = buf;
    }
  }
  if (prepare_schema) {
    SEIGO_RETURN_IF_ERROR(c.Run(kSchemaSql).Annotate(p->name() + ": creating tables"));
    SEIGO_RETURN_IF_ERROR(MigrateSchema(c).Annotate(p->name() + ": upgrading seigo's tables"));
  }
  // The shard's claim: its index (the order of the shard list is each shard's identity: XIDs
  // name deciders by index) and its deployment (XIDs name it, so that resolvers of two
  // deployments sharing a server never touch each other's branches).
  const std::string want = deployment->empty() ? RandomHex(16) : *deployment;
  Result<Claim> claim = ReadClaim(c);
  if (!claim.ok()) return claim.status().Annotate(p->name() + ": reading seigo_shard");
  if (prepare_schema && (!claim->exists || claim->deployment.empty())) {
    const std::string idx = std::to_string(config.index);
    SEIGO_RETURN_IF_ERROR(c.Run("INSERT IGNORE INTO seigo_shard (one, shard_index, deployment, "
                                "claimed_ms) VALUES (1, " + idx + ", '" + want + "', " +
                                kServerNowMs + ")"));
    SEIGO_RETURN_IF_ERROR(c.Run("UPDATE seigo_shard SET deployment = '" + want +
                                "' WHERE one = 1 AND deployment IS NULL"));
    claim = ReadClaim(c);
    if (!claim.ok()) return claim.status().Annotate(p->name() + ": reading seigo_shard");
  }
  if (!claim->exists || claim->deployment.empty()) {
    return Status::InvalidArgument(
        p->name() + (claim->exists ? " has seigo tables of an older version (no deployment in "
                                     "seigo_shard)"
                                   : " is not set up as a seigo shard") +
        ": open it once with prepare_schema, e.g. by the application or `seigo recover`, "
        "which creates or upgrades seigo's tables");
  }
  if (claim->index != config.index) {
    return Status::InvalidArgument(
        p->name() + " was set up as shard " + std::to_string(claim->index) + ", but the shard "
        "list names it shard " + std::to_string(config.index) + ". The order of --shards is "
        "each shard's identity; give the list in its original order (new shards only at the "
        "end)");
  }
  if (!Xid::IsDeploymentId(claim->deployment)) {
    return Status::Corruption(p->name() + ": seigo_shard.deployment '" + claim->deployment +
                              "' is not 16 hex digits");
  }
  if (!deployment->empty() && claim->deployment != *deployment) {
    return Status::InvalidArgument(
        p->name() + " belongs to seigo deployment " + claim->deployment + ", but shard 0 of "
        "this list to deployment " + *deployment + ": the list mixes the databases of two "
        "deployments");
  }
  *deployment = claim->deployment;
  p->deployment_ = claim->deployment;
  p->ReleaseTo(&p->idle_recovery_, std::move(s));
  return p;
}

Result<std::unique_ptr<Session>> MariaDbParticipant::AcquireFrom(
    std::vector<std::unique_ptr<Session>>* pool, bool transactional, bool* reused,
    int64_t deadline_ms) {
  // Lock order: open_->mu before mu_. Sessions are never destroyed while mu_ is held (their
  // destructor takes open_->mu): dropped ones are collected and destroyed after.
  const bool capped = transactional && config_.max_open > 0;
  auto give_up_at = std::chrono::steady_clock::now() +
                    std::chrono::seconds(std::max(1, config_.connect_timeout_s));
  if (deadline_ms > 0) {  // the caller's deadline (system clock) as a steady-clock time
    const int64_t left_ms = deadline_ms - UnixNowMs();
    give_up_at = std::min(give_up_at, std::chrono::steady_clock::now() +
                                          std::chrono::milliseconds(std::max<int64_t>(0, left_ms)));
  }
  std::vector<std::unique_ptr<Session>> dropped;
  auto take_idle = [&]() -> std::unique_ptr<Session> {
    std::lock_guard<std::mutex> l(mu_);
    while (!pool->empty()) {
      std::unique_ptr<Session> s = std::move(pool->back());
      pool->pop_back();
      // Connections made before a connection of this shard was found dead are suspect (the
      // server may have restarted): drop them instead of failing a transaction on each.
      auto* m = static_cast<MariaSession*>(s.get());
      if (m->generation() < generation_) {
        dropped.push_back(std::move(s));
        continue;
      }
      // A connection whose server went away while it sat idle has its socket readable (EOF):
      // drop it, and every other idle one made before (the server restarted), without a round
      // trip and before a transaction fails on it.
      if (!m->conn().IdleAndAlive()) {
        generation_.fetch_add(1);
        dropped.push_back(std::move(s));
        continue;
      }
      return s;
    }
    return nullptr;
  };
  if (!capped) {
    if (std::unique_ptr<Session> s = take_idle()) {
      if (reused != nullptr) *reused = true;
      return s;
    }
  } else {
    // At the cap (Config::max_open): wait until a connection is closed or comes back idle.
    std::unique_lock<std::mutex> l(open_->mu);
    for (;;) {
      if (std::unique_ptr<Session> s = take_idle()) {
        if (reused != nullptr) *reused = true;
        l.unlock();
        dropped.clear();
        return s;
      }
      if (!dropped.empty()) {  // their destructors give slots back (and take open_->mu)
        l.unlock();
        dropped.clear();
        l.lock();
        continue;
      }
      if (open_->open < config_.max_open) {
        ++open_->open;
        break;
      }
      if (open_->cv.wait_until(l, give_up_at) == std::cv_status::timeout) {
        return Status::Unavailable(name_ + ": all " + std::to_string(config_.max_open) +
                                   " transaction connections are in use "
                                   "(CoordinatorOptions::max_connections_per_shard)");
      }
    }
  }
  dropped.clear();
  if (reused != nullptr) *reused = false;
  auto s = std::make_unique<MariaSession>(generation_.load());
  if (capped) s->CountIn(open_);  // counted above; the destructor gives the slot back
  if (transactional) s->TrackIn(inflight_);
  if (deadline_ms <= 0) {
    SEIGO_RETURN_IF_ERROR(
        s->conn().Connect(config_, /*autocommit=*/!transactional).Annotate(name_));
    return std::unique_ptr<Session>(std::move(s));
  }
  // Under a caller's deadline (a frozen server accepts the TCP connection and then answers
  // nothing until connect_timeout_s): connect on a thread of its own and wait at most until the
  // deadline. A connect given up on finishes there and is closed; the caller gets kUnavailable.
  struct Pending {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
    std::unique_ptr<MariaSession> session;
  };
  if (UnixNowMs() >= deadline_ms) {
    return Status::Unavailable(name_ + ": no connection free and the Run's deadline has passed");
  }
  auto pending = std::make_shared<Pending>();
  pending->session = std::move(s);
  // The session setup after the handshake is watched too, so the thread ends by the deadline.
  pending->session->conn().set_deadline(deadline_ms);
  std::thread([pending, config = config_, transactional] {
    Status st = pending->session->conn().Connect(config, /*autocommit=*/!transactional);
    {
      std::lock_guard<std::mutex> l(pending->mu);
      pending->status = st;
      pending->done = true;
    }
    pending->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> l(pending->mu);
  const auto until = std::chrono::system_clock::time_point(std::chrono::milliseconds(deadline_ms));
  if (!pending->cv.wait_until(l, until, [&] { return pending->done; })) {
    return Status::Unavailable(name_ + ": opening a connection did not finish before the Run's "
                               "deadline");
  }
  SEIGO_RETURN_IF_ERROR(pending->status.Annotate(name_));
  return std::unique_ptr<Session>(std::move(pending->session));
}

void MariaDbParticipant::ReleaseTo(std::vector<std::unique_ptr<Session>>* pool,
                                   std::unique_ptr<Session> session) {
  auto* m = static_cast<MariaSession*>(session.get());
  if (m == nullptr) return;
  if (m->conn().broken()) {
    // See AcquireFrom. A connection the watchdog cut says nothing about the server.
    if (!m->conn().cut()) generation_.fetch_add(1);
    return;
  }
  // Only clean sessions go back: one still inside a transaction (or owning a prepared branch)
  // is closed, and closing is what lets the server detach a prepared branch; one whose session
  // state a caller changed is closed too.
  if (!m->clean()) return;
  m->SetDeadline(0);  // the next user sets its own
  m->SetWaitTag(nullptr);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (pool->size() >= config_.max_idle) return;  // destroyed after the lock (see AcquireFrom)
    pool->push_back(std::move(session));
  }
  if (pool == &idle_ && config_.max_open > 0) {
    // A waiter at the cap may take it. Taking open_->mu first means the waiter is either
    // before its look at the pool (and finds this session) or already waiting (and wakes).
    { std::lock_guard<std::mutex> l(open_->mu); }
    open_->cv.notify_one();
  }
}

Result<std::unique_ptr<Session>> MariaDbParticipant::Acquire() {
  return AcquireFrom(&idle_, /*transactional=*/true, nullptr);
}

Result<std::unique_ptr<Session>> MariaDbParticipant::Acquire(int64_t deadline_ms) {
  return AcquireFrom(&idle_, /*transactional=*/true, nullptr, deadline_ms);
}

void MariaDbParticipant::Release(std::unique_ptr<Session> session) {
  ReleaseTo(&idle_, std::move(session));
}

Result<std::vector<Xid>> MariaDbParticipant::RecoverPrepared() {
  return WithSession([&](PooledSession& ps) -> Result<std::vector<Xid>> {
    QueryResult r;
    Status s = ps.conn().Run("XA RECOVER", &r);
    if (!s.ok()) {
      if (s.server_errno() == ER_SPECIFIC_ACCESS_DENIED_ERROR) {
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
      // XA RECOVER is server-wide: other applications' XIDs, and other seigo deployments'
      // (another database on the same server), are not ours to touch.
      if (x.ok() && x->deployment == deployment_) out.push_back(std::move(*x));
    }
    return out;
  });
}

namespace {

// What the marker of one gid says, read in one round trip.
struct MarkerState {
  bool present = false;    // an uncommitted or committed marker row (READ UNCOMMITTED)
  bool committed = false;  // a committed marker row (consistent read)
  uint64_t owner = 0;      // server thread that prepared the branch
  int64_t created_ms = 0;  // this server's clock when the branch prepared
  bool owner_attached = false;  // InnoDB still ties the branch to that thread
  bool owner_connected = false;  // that thread is in PROCESSLIST
  int64_t owner_idle_s = -1;     // seconds that thread has been idle (Sleep), -1 if it is not
  int64_t now_ms = 0;
  int64_t server_start_ms = 0;  // now - uptime, +-1 s
};

// The markers of `gids` (at most a few hundred): one round trip for the markers, and with
// `with_owners` a second one for their owner threads in INNODB_TRX and PROCESSLIST — one read
// of each for the whole batch (a correlated subquery per marker re-read INNODB_TRX for every
// row: with 10,000 prepared branches that took a minute). A gid without any marker row gets a
// MarkerState with present = committed = false.
Result<std::map<std::string, MarkerState>> ReadMarkers(Conn& c,
                                                       const std::vector<std::string>& gids,
                                                       bool mysql, bool with_owners = true) {
  std::string list;
  for (const std::string& g : gids) list += (list.empty() ? "'" : ",'") + g + "'";
  // SET TRANSACTION applies to the next statement only (autocommit): the first SELECT reads
  // uncommitted rows — a prepared branch's marker — the second only committed ones.
  std::vector<QueryResult> more;
  SEIGO_RETURN_IF_ERROR(c.Run(
      "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;"
      "SELECT gid, owner, created_ms FROM seigo_branch WHERE gid IN (" + list + ");"
      "SELECT gid FROM seigo_branch WHERE gid IN (" + list + ");"
      "SELECT " + std::string(kServerNowMs) + ", " + ServerUptimeSql(mysql),
      nullptr, &more));
  if (more.size() != 3) {
    return Status::Internal("marker read returned " + std::to_string(more.size()) +
                            " result sets");
  }
  Result<int64_t> now = more[2].Int(0, 0), up = more[2].Int(0, 1);
  if (!now.ok() || !up.ok()) return Status::Internal("marker read: bad clock row");
  std::map<std::string, MarkerState> out;
  for (const std::string& g : gids) {
    MarkerState& m = out[g];
    m.now_ms = *now;
    m.server_start_ms = *now - *up * 1000;
  }
  const QueryResult& u = more[0];
  for (size_t r = 0; r < u.rows.size(); ++r) {
    if (!u.rows[r][0]) continue;
    MarkerState& m = out[*u.rows[r][0]];
    Result<int64_t> owner = u.Int(r, 1), created = u.Int(r, 2);
    if (!owner.ok() || !created.ok()) return Status::Internal("marker read: bad row");
    m.present = true;
    m.owner = static_cast<uint64_t>(*owner);
    m.created_ms = *created;
  }
  for (const auto& row : more[1].rows) {
    if (row[0]) out[*row[0]].committed = true;
  }
  if (!with_owners) return out;
  std::string owners;
  for (const auto& [g, m] : out) {
    if (m.present && !m.committed) owners += (owners.empty() ? "" : ",") + std::to_string(m.owner);
  }
  if (owners.empty()) return out;
  // trx_started is in the server's SYSTEM zone, which recovery sessions use.
  std::vector<QueryResult> own;
  SEIGO_RETURN_IF_ERROR(c.Run(
      "SELECT trx_mysql_thread_id, UNIX_TIMESTAMP(trx_started) FROM information_schema.INNODB_TRX"
      " WHERE trx_mysql_thread_id IN (" + owners + ");"
      "SELECT ID, COMMAND, TIME FROM information_schema.PROCESSLIST WHERE ID IN (" + owners + ")",
      nullptr, &own));
  if (own.size() != 2) return Status::Internal("owner read returned a wrong number of results");
  std::multimap<uint64_t, int64_t> trx_started_s;  // thread -> start of a transaction of it
  for (size_t r = 0; r < own[0].rows.size(); ++r) {
    Result<int64_t> th = own[0].Int(r, 0), st = own[0].Int(r, 1);
    if (th.ok() && st.ok()) trx_started_s.emplace(static_cast<uint64_t>(*th), *st);
  }
  std::map<uint64_t, int64_t> idle_s;  // thread in PROCESSLIST -> seconds idle (-1 if busy)
  for (size_t r = 0; r < own[1].rows.size(); ++r) {
    Result<int64_t> id = own[1].Int(r, 0), t = own[1].Int(r, 2);
    if (!id.ok()) continue;
    const bool sleeping = own[1].rows[r][1] && *own[1].rows[r][1] == "Sleep";
    idle_s[static_cast<uint64_t>(*id)] = sleeping && t.ok() ? *t : -1;
  }
  for (auto& [g, m] : out) {
    if (!m.present || m.committed) continue;
    // Tied to the owner thread by a transaction that began before the marker was written (a
    // later incarnation's thread with the same id has younger transactions); whole seconds.
    auto range = trx_started_s.equal_range(m.owner);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second <= m.created_ms / 1000 + 1) m.owner_attached = true;
    }
    auto p = idle_s.find(m.owner);
    if (p != idle_s.end()) {
      m.owner_connected = true;
      m.owner_idle_s = p->second;
    }
  }
  return out;
}

// Whether the owner thread is surely still the branch's owner, alive: the marker was written
// well after the server started (so the thread id is of this incarnation), and the thread has
// been idle at least since the marker was written (an owner sends nothing after its PREPARE
// but its XA COMMIT/ROLLBACK). A thread of a later incarnation that got the same id cannot pass
// both: its idle time is below the server's uptime, which is below the marker's age.
bool SurelyTheIdleOwner(const MarkerState& m) {
  return m.owner_connected && m.created_ms > m.server_start_ms + 1000 && m.owner_idle_s >= 0 &&
         m.owner_idle_s * 1000 >= m.now_ms - m.created_ms - 1000;
}

// Before committing or rolling back a branch by XID from a connection that does not own it.
// MariaDB's limbo race (doc/limbo-branch.md): while the owner's connection is being torn down,
// the XID is already free but InnoDB still ties the transaction to the dying thread; an
// XA COMMIT or XA ROLLBACK landing then returns OK, is binlogged, and InnoDB keeps the branch
// prepared and hidden from XA RECOVER until a restart. INNODB_TRX shows that tie
// (trx_mysql_thread_id = the owner) until the engine has taken the branch over: we wait while
// it is there. INNODB_TRX is served from a cache that may be stale under frequent reads, so this
// narrows the window rather than closing it; the marker check after the XA statement is what
// detects the rest. A live owner that is idle (hung) is waited for too, and closed once it has
// held a decided branch past its deadline + kHungOwnerMs. A connected thread that is not surely
// the owner (busy, or maybe a later incarnation's thread with the same id) is not waited for:
// if it is the live owner, the XA statement gets XAER_NOTA and nothing happens.
Status CheckOwner(Conn& c, const Xid& xid, const MarkerState& m) {
  if (!m.present || m.committed) return Status::OK();
  const bool attached = m.owner_attached;  // by a transaction older than the marker
  const bool idle_owner = SurelyTheIdleOwner(m);
  if (idle_owner && m.now_ms > xid.deadline_ms + kHungOwnerMs) {
    // A decision exists (only then is this called) and the process that prepared the branch
    // has held it long past the deadline: it is hung. Closing its connection detaches the
    // branch; a later call commits or rolls it back once the teardown is over.
    Status k = c.Run("KILL CONNECTION " + std::to_string(m.owner));
    return Status::Busy("the connection that owns the branch (server thread " +
                        std::to_string(m.owner) + ") held it " +
                        std::to_string((m.now_ms - xid.deadline_ms) / 1000) +
                        " s past its deadline; " +
                        (k.ok() ? "closed it" : "closing it failed: " + k.ToString()));
  }
  if (!attached && !idle_owner) return Status::OK();
  return Status::Busy(std::string("the connection that owns the branch (server thread ") +
                      std::to_string(m.owner) + ") is " +
                      (m.owner_connected ? "still open" : "still closing"));
}

std::string LimboMessage(const std::string& name, const Xid& xid, const char* what) {
  return std::string("XA ") + what + " of " + xid.Gtrid() + " on " + name +
         " returned OK but the branch is still open inside the server: the MariaDB limbo "
         "branch (doc/limbo-branch.md). Its locks stay held and XA RECOVER does not list it "
         "until the server restarts. Remedy: restart that mariadbd, then run `seigo recover`; "
         "seigo keeps the decision until then";
}

}  // namespace

Status MariaDbParticipant::CommitXid(const Xid& xid) {
  return ApplyXids(std::span<const Xid>(&xid, 1), /*commit=*/true)[0];
}
Status MariaDbParticipant::RollbackXid(const Xid& xid) {
  return ApplyXids(std::span<const Xid>(&xid, 1), /*commit=*/false)[0];
}
std::vector<Status> MariaDbParticipant::CommitXids(std::span<const Xid> xids) {
  return ApplyXids(xids, /*commit=*/true);
}
std::vector<Status> MariaDbParticipant::RollbackXids(std::span<const Xid> xids) {
  return ApplyXids(xids, /*commit=*/false);
}

// XA COMMIT (or ROLLBACK) of branches that this connection does not own, in a few round trips
// per chunk: the markers before (already done? owner still there?), the XA statements in
// multi-statement batches, the markers after (did it take effect?). Whatever the server
// answered, the marker says what happened.
//
// A big batch (a resolver pass after a coordinator crash) is split over up to kConnections
// connections at once: each XA COMMIT is a durable write (binlog and redo fsync), and one
// connection does them one after another, while concurrent ones share an fsync in the server's
// group commit. Chunks are independent (distinct XIDs), so their order does not matter.
std::vector<Status> MariaDbParticipant::ApplyXids(std::span<const Xid> xids, bool commit) {
  constexpr size_t kMaxChunk = 200, kMinChunk = 25, kConnections = 8;
  const size_t chunk =
      std::clamp((xids.size() + kConnections - 1) / kConnections, kMinChunk, kMaxChunk);
  std::vector<Status> out(xids.size());
  auto run_chunk = [&](size_t from) {
    const size_t to = std::min(xids.size(), from + chunk);
    Status s = WithSession([&](PooledSession& ps) -> Status {
      return ApplyChunk(ps, xids.subspan(from, to - from),
                        std::span<Status>(out).subspan(from, to - from), commit);
    });
    if (!s.ok()) {
      for (size_t k = from; k < to; ++k) out[k] = s;
    }
  };
  const size_t chunks = (xids.size() + chunk - 1) / chunk;
  if (chunks <= 1) {
    if (chunks == 1) run_chunk(0);
    return out;
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t c; (c = next.fetch_add(1)) < chunks;) run_chunk(c * chunk);
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < std::min(chunks, kConnections); ++t) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
  return out;
}

// OK unless the whole chunk failed (then `out` is not used); per-XID results in `out`.
Status MariaDbParticipant::ApplyChunk(PooledSession& ps, std::span<const Xid> xids,
                                      std::span<Status> out, bool commit) {
  Conn& c = ps.conn();
  std::vector<std::string> gids;
  for (const Xid& x : xids) {
    if (!IsGid(x.gid)) return Status::InvalidArgument("not a gid: " + x.gid);
    gids.push_back(x.gid);
  }
  Result<std::map<std::string, MarkerState>> before = ReadMarkers(c, gids, mysql_);
  SEIGO_RETURN_IF_ERROR(before.status());
  std::vector<size_t> go;  // indexes into xids that get an XA statement
  for (size_t k = 0; k < xids.size(); ++k) {
    const MarkerState& m = before->at(xids[k].gid);
    if (m.committed) {
      // Committed before (phase 2 or another resolver): done — or, asked to roll back, a
      // contradiction that must not be papered over.
      out[k] = commit ? Status::OK()
                      : Status::Corruption("asked to roll back " + xids[k].Gtrid() + " on " +
                                           name_ + ", whose branch has committed");
      continue;
    }
    Status owner = CheckOwner(c, xids[k], m);
    if (!owner.ok()) {
      out[k] = owner;
      continue;
    }
    go.push_back(k);
  }
  // The XA statements, many per round trip. The server stops a batch at its first error: that
  // XID gets the error, the rest go again.
  const char* verb = commit ? "XA COMMIT " : "XA ROLLBACK ";
  std::vector<Status> said(go.size());
  for (size_t pos = 0; pos < go.size();) {
    std::string sql;
    const size_t end = std::min(go.size(), pos + 50);
    for (size_t q = pos; q < end; ++q) sql += (q > pos ? ";" : "") + (verb + XidSql(xids[go[q]]));
    Status st = c.Run(sql);
    if (st.ok()) {
      pos = end;
      continue;
    }
    if (st.Is(Code::kUnavailable)) {
      for (size_t q = pos; q < go.size(); ++q) said[q] = st;
      return st;  // the connection is gone; what ran is unknown: the caller retries it all
    }
    said[pos + static_cast<size_t>(c.failed_at())] = st;
    pos += static_cast<size_t>(c.failed_at()) + 1;
  }
  if (go.empty()) return Status::OK();
  std::vector<std::string> go_gids;
  for (size_t k : go) go_gids.push_back(xids[k].gid);
  Result<std::map<std::string, MarkerState>> after =
      ReadMarkers(c, go_gids, mysql_, /*with_owners=*/false);
  SEIGO_RETURN_IF_ERROR(after.status());
  for (size_t q = 0; q < go.size(); ++q) {
    const size_t k = go[q];
    const Status& s = said[q];
    const MarkerState& m = after->at(xids[k].gid);
    if (!s.ok() && !s.Is(Code::kNotFound)) {
      out[k] = s;
    } else if (commit) {
      if (m.committed) {
        out[k] = Status::OK();
      } else if (s.ok() && m.present) {
        out[k] = Status::Corruption(LimboMessage(name_, xids[k], "COMMIT"));
      } else if (s.ok()) {
        out[k] = Status::OK();  // committed, and its marker forgotten at once by GC
      } else {
        out[k] = s;  // XAER_NOTA: owned by a live connection, or nothing of it here
      }
    } else {
      if (m.committed) {
        out[k] = Status::Corruption("rolling back " + xids[k].Gtrid() + " on " + name_ +
                                    ": its branch has committed");
      } else if (!m.present) {
        out[k] = Status::OK();  // nothing of the branch is left
      } else if (s.ok()) {
        out[k] = Status::Corruption(LimboMessage(name_, xids[k], "ROLLBACK"));
      } else {
        out[k] = s;  // XAER_NOTA while the branch is open: a live connection owns it
      }
    }
  }
  return Status::OK();
}

namespace {
std::string GidList(std::span<const std::string> gids, size_t from, size_t to, Status* bad) {
  std::string s;
  for (size_t j = from; j < to; ++j) {
    if (!IsGid(gids[j])) {
      *bad = Status::InvalidArgument("not a gid: " + gids[j]);
      return "";
    }
    if (j > from) s += ',';
    s += "'" + gids[j] + "'";
  }
  return s;
}
}  // namespace

Result<std::vector<BranchTrace>> MariaDbParticipant::ProbeBranches(
    std::span<const std::string> gids) {
  return WithSession([&](PooledSession& ps) -> Result<std::vector<BranchTrace>> {
    std::vector<BranchTrace> out(gids.size(), BranchTrace::kNone);
    for (size_t i = 0; i < gids.size(); i += 500) {
      const size_t end = std::min(gids.size(), i + 500);
      Status bad;
      const std::string list = GidList(gids, i, end, &bad);
      SEIGO_RETURN_IF_ERROR(bad);
      // Uncommitted rows first, committed second: a branch that commits in between is seen as
      // committed, one that rolls back in between as open (the cautious side).
      std::vector<QueryResult> more;
      SEIGO_RETURN_IF_ERROR(ps.conn().Run(
          "SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED;"
          "SELECT gid FROM seigo_branch WHERE gid IN (" + list + ");"
          "SELECT gid FROM seigo_branch WHERE gid IN (" + list + ")",
          nullptr, &more));
      if (more.size() != 2) return Status::Internal("probe returned a wrong number of results");
      std::unordered_map<std::string, BranchTrace> seen;
      for (const auto& row : more[0].rows) {
        if (row[0]) seen[*row[0]] = BranchTrace::kOpen;
      }
      for (const auto& row : more[1].rows) {
        if (row[0]) seen[*row[0]] = BranchTrace::kCommitted;
      }
      for (size_t j = i; j < end; ++j) {
        auto it = seen.find(gids[j]);
        if (it != seen.end()) out[j] = it->second;
      }
    }
    return out;
  });
}

Status MariaDbParticipant::ForgetBranches(std::span<const std::string> gids) {
  // Only markers probed as committed are deleted (existing rows: record locks, no gap locks
  // that could hold up other branches' marker inserts). A concurrent GC pass deleting the same
  // rows may make this wait or fail with a conflict, which only delays them to the next pass.
  return DeleteGids("seigo_branch", gids);
}

Status MariaDbParticipant::DeleteGids(const char* table, std::span<const std::string> gids) {
  return WithSession([&](PooledSession& ps) -> Status {
    for (size_t i = 0; i < gids.size(); i += 500) {
      Status bad;
      const std::string list = GidList(gids, i, std::min(gids.size(), i + 500), &bad);
      SEIGO_RETURN_IF_ERROR(bad);
      SEIGO_RETURN_IF_ERROR(
          ps.conn().Run(std::string("DELETE FROM ") + table + " WHERE gid IN (" + list + ")"));
    }
    return Status::OK();
  });
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
    "SELECT gid, outcome, shards, deadline_ms, decided_ms FROM seigo_decision ";
}  // namespace

Result<std::optional<Decision>> MariaDbParticipant::ReadDecision(std::string_view gid) {
  if (!IsGid(gid)) return Status::InvalidArgument("not a gid: " + std::string(gid));
  return WithSession([&](PooledSession& ps) -> Result<std::optional<Decision>> {
    QueryResult r;
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(
        std::string(kDecisionColumns) + "WHERE gid='" + std::string(gid) + "'", &r));
    Result<std::vector<Decision>> ds = DecisionsFrom(r);
    if (!ds.ok()) return ds.status();
    if (ds->empty()) return std::optional<Decision>();
    return std::optional<Decision>(std::move(ds->front()));
  });
}

Result<std::vector<std::optional<Decision>>> MariaDbParticipant::ReadDecisions(
    std::span<const std::string> gids) {
  return WithSession([&](PooledSession& ps) -> Result<std::vector<std::optional<Decision>>> {
    std::map<std::string, Decision> found;
    for (size_t i = 0; i < gids.size(); i += 500) {
      Status bad;
      const std::string list = GidList(gids, i, std::min(gids.size(), i + 500), &bad);
      SEIGO_RETURN_IF_ERROR(bad);
      QueryResult r;
      SEIGO_RETURN_IF_ERROR(
          ps.conn().Run(std::string(kDecisionColumns) + "WHERE gid IN (" + list + ")", &r));
      Result<std::vector<Decision>> ds = DecisionsFrom(r);
      if (!ds.ok()) return ds.status();
      for (Decision& d : *ds) found[d.gid] = std::move(d);
    }
    std::vector<std::optional<Decision>> out;
    out.reserve(gids.size());
    for (const std::string& g : gids) {
      auto it = found.find(g);
      out.push_back(it == found.end() ? std::nullopt : std::optional<Decision>(it->second));
    }
    return out;
  });
}

Result<Outcome> MariaDbParticipant::FenceAbort(const Decision& d, bool by_coordinator) {
  if (!IsGid(d.gid)) return Status::InvalidArgument("not a gid: " + d.gid);
  return WithSession([&](PooledSession& ps) -> Result<Outcome> {
    // The time condition is evaluated by the decider's own clock, the same clock that refuses a
    // late commit (see CommitWithDecision); a false condition inserts NULL and fails (1048).
    const std::string window_end = std::to_string(d.deadline_ms + kFenceWindowMs);
    std::string cond = std::string(kServerNowMs) + " < " + window_end;
    if (!by_coordinator) {
      cond += std::string(" AND ") + kServerNowMs + " >= " + std::to_string(d.deadline_ms);
    }
    std::string sql =
        "INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms, decided_ms) VALUES ('" +
        d.gid + "', IF(" + cond + ", 'A', NULL), '" + ShardList(d.shards) + "', " +
        std::to_string(d.deadline_ms) + ", " + kServerNowMs + ")";
    Status s = ps.conn().Run(sql);
    if (s.ok()) return Outcome::kAbort;
    const bool exists = s.server_errno() == ER_DUP_ENTRY;
    const bool refused = s.server_errno() == ER_BAD_NULL_ERROR;
    if (s.Is(Code::kConflict)) {
      return Status::Busy("a live decider holds the decision row lock (commit in progress)");
    }
    if (!exists && !refused) return s;
    if (refused && by_coordinator) return Status::Busy("too long after the deadline to fence");
    // A decision exists (final), or the resolver is outside its window. A locking read waits for
    // an uncommitted insert of the gid (a stalled decider) instead of missing it.
    QueryResult r;
    Status rs = ps.conn().Run("SELECT outcome, " + std::string(kServerNowMs) +
                                  " FROM seigo_decision WHERE gid='" + d.gid +
                                  "' LOCK IN SHARE MODE",
                              &r);
    if (rs.Is(Code::kConflict)) {
      return Status::Busy("a live decider holds the decision row lock (commit in progress)");
    }
    SEIGO_RETURN_IF_ERROR(rs);
    if (!r.rows.empty() && r.rows[0][0]) {
      return *r.rows[0][0] == "C" ? Outcome::kCommit : Outcome::kAbort;
    }
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
  });
}

Result<std::vector<Decision>> MariaDbParticipant::ListExpiredDecisions(int64_t retention_ms,
                                                                      size_t limit) {
  return WithSession([&](PooledSession& ps) -> Result<std::vector<Decision>> {
    QueryResult r;
    // "deadline_ms < now - retention" rather than "deadline_ms + retention < now": the index
    // by_deadline serves it, so a pass reads only the expired rows, not the whole table.
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(std::string(kDecisionColumns) + "WHERE deadline_ms < " +
                                            kServerNowMs + " - " + std::to_string(retention_ms) +
                                            " ORDER BY deadline_ms LIMIT " + std::to_string(limit),
                                        &r));
    return DecisionsFrom(r);
  });
}

Status MariaDbParticipant::ForgetDecisions(std::span<const std::string> gids) {
  return DeleteGids("seigo_decision", gids);
}

// ---- Deadlock detection (doc/deadlocks.md) ----

// At most one read of a server's information_schema lock tables per this many ms, by all seigo
// processes together (InnoDB refreshes their cache only after 100 ms without a reader).
constexpr int64_t kLockWaitSnapshotMs = 110;
// A detector round trip (ReadLockWaits, BreakWait) still unanswered after this is cut.
constexpr int64_t kDetectorRoundTripMs = 1'000;

std::vector<LocalWait> MariaDbParticipant::LongStatements(int64_t before_ms) {
  std::vector<LocalWait> out;
  std::lock_guard<std::mutex> l(inflight_->mu);
  for (const auto& [session, slot] : inflight_->sessions) {
    const int64_t since = slot->since_ms.load(std::memory_order_relaxed);
    if (since == 0 || since > before_ms || slot->tag == nullptr || slot->thread == 0) continue;
    out.push_back(LocalWait{slot->thread, since, slot->tag});
  }
  return out;
}

namespace {

// What goes into seigo_waiter's text columns: gids are hex, store ids "hostname:port"; anything
// else is dropped rather than quoted. A list longer than the column loses its tail (a cycle
// through the connections cut off may then be left to the lock-wait timeout).
std::string WaiterText(const std::string& s, size_t max) {
  std::string out;
  for (char ch : s) {
    if (std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("._:@,-", ch) != nullptr) {
      out += ch;
    }
  }
  if (out.size() > max) {
    out.resize(max);
    const size_t comma = out.rfind(',');
    out.resize(comma == std::string::npos ? 0 : comma);
  }
  return out;
}

}  // namespace

Status MariaDbParticipant::ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) {
  if (store_id_.empty()) return Participant::ReadLockWaits(mine, out);
  // One round trip: expire old rows, publish ours (each with the query id its thread runs
  // now, so a reader can tell whether the row still describes the waiting statement), read
  // every lock wait with the waiting statement's query id, read everything published.
  std::string sql = std::string("DELETE FROM seigo_waiter WHERE published_ms < ") + kServerNowMs +
                    " - 60000;";
  for (const LocalWait& w : mine) {
    if (w.tag == nullptr) continue;
    std::string txn, threads;
    int64_t priority = 0;
    {
      std::lock_guard<std::mutex> l(w.tag->mu);
      txn = WaiterText(w.tag->txn, 32);
      threads = WaiterText(w.tag->threads, 2000);
      priority = w.tag->priority_ms;
    }
    if (txn.empty()) continue;
    const std::string th = std::to_string(w.thread);
    // Only if the thread's current statement is the one that has been running this long:
    // a statement started since (the connection went back to the pool and serves another
    // Run) has a much shorter TIME_MS, and must not be published under this Run's name.
    const int64_t age = std::max<int64_t>(0, UnixNowMs() - w.since_ms);
    // published_ms stays what it was while the row describes the same statement (query id):
    // it dates the wait's first publication, which the lock-wait snapshot must postdate to
    // judge the wait exactly (core::AnalyzeWaits). ON DUPLICATE KEY UPDATE assigns left to
    // right, so `query` on the right of published_ms is still the old one.
    sql += "INSERT INTO seigo_waiter (thread, query, txn, priority_ms, since_ms, threads, "
           "published_ms) SELECT ID, QUERY_ID, '" + txn + "', " + std::to_string(priority) +
           ", " + std::to_string(w.since_ms) + ", '" + threads + "', " + kServerNowMs +
           " FROM information_schema.PROCESSLIST WHERE ID = " + th + " AND COMMAND = 'Execute'"
           " AND TIME_MS >= " + std::to_string(age / 2) +
           " ON DUPLICATE KEY UPDATE published_ms = IF(query = VALUES(query), published_ms, "
           "VALUES(published_ms)), txn = VALUES(txn), priority_ms = VALUES(priority_ms), "
           "since_ms = VALUES(since_ms), threads = VALUES(threads), query = VALUES(query);";
  }
  // InnoDB serves INNODB_TRX and INNODB_LOCK_WAITS from a cache that it refreshes only when
  // nobody read it for 100 ms: clients that poll it more often than that (several detectors,
  // each polling while it waits) would all read the same old snapshot forever. So every seigo
  // process takes its turn through seigo_lockwait_clock: at most one read of the cache per
  // kLockWaitSnapshotMs per server (a condition false before the read makes the server skip
  // the information_schema tables altogether), stored in seigo_lockwait_edge for the others.
  // Edges are thus up to that old; a cycle lasts until broken, so a later pass sees it.
  const std::string now = kServerNowMs;
  const std::string every = std::to_string(kLockWaitSnapshotMs);
  const std::string token = RandomHex(16);
  sql +=
      "INSERT INTO seigo_lockwait_clock (one, read_ms) VALUES (1, " + now + ") ON DUPLICATE KEY"
      " UPDATE read_ms = IF(read_ms < " + now + " - " + every + ", " + now + ", read_ms);"
      "SET @seigo_turn = ROW_COUNT();"
      "DELETE FROM seigo_lockwait_edge WHERE @seigo_turn > 0;"
      // Whether the read below refreshed InnoDB's cache (FRESH) or got an old copy: a
      // transaction of this connection, started first, appears in the cache with the read's
      // own text (trx_query) only if the cache was filled during that read. The token makes
      // the text this turn's.
      "START TRANSACTION WITH CONSISTENT SNAPSHOT;"
      "INSERT /* seigo-turn " + token + " */ INTO seigo_lockwait_edge (waiter, waiter_query, holder)"
      " SELECT r.trx_mysql_thread_id, p.QUERY_ID, b.trx_mysql_thread_id"
      " FROM information_schema.INNODB_LOCK_WAITS w"
      " JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"
      " JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id"
      " JOIN information_schema.PROCESSLIST p ON p.ID = r.trx_mysql_thread_id"
      " WHERE @seigo_turn > 0;"
      "SET @seigo_fresh = (SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE"
      " @seigo_turn > 0 AND trx_mysql_thread_id = CONNECTION_ID() AND trx_query LIKE"
      " '%seigo-turn " + token + " %');"
      "COMMIT;"
      "UPDATE seigo_lockwait_clock SET snapshot_ms = read_ms, fresh = (@seigo_fresh > 0)"
      " WHERE one = 1 AND @seigo_turn > 0;"
      "SELECT waiter, waiter_query, holder FROM seigo_lockwait_edge;"
      "SELECT snapshot_ms, " + now + ", fresh FROM seigo_lockwait_clock WHERE one = 1;"
      // Only rows whose thread still runs that statement, and only a closure's statement:
      // those are prepared statements (COMMAND 'Execute'); seigo's own (XA PREPARE, the commit
      // batch, ...) go as text ('Query'). PROCESSLIST is live, not cached.
      "SELECT w.thread, w.query, w.txn, w.priority_ms, w.since_ms, w.threads, w.published_ms"
      " FROM seigo_waiter w JOIN information_schema.PROCESSLIST p"
      " ON p.ID = w.thread AND p.QUERY_ID = w.query AND p.COMMAND = 'Execute'";
  return WithSession([&](PooledSession& ps) -> Status {
    // A frozen shard must not stall the detector (every shard's pass waits for this one) or
    // the Coordinator's shutdown for read_timeout_s: the watchdog cuts the round trip.
    ps.session()->SetDeadline(UnixNowMs() + kDetectorRoundTripMs);
    std::vector<QueryResult> more;
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(sql, nullptr, &more));
    if (more.size() != 3) {
      return Status::Internal("lock-wait read returned " + std::to_string(more.size()) +
                              " result sets");
    }
    *out = LockWaits{};
    auto u64 = [](const std::optional<std::string>& c) -> uint64_t {
      return c ? std::strtoull(c->c_str(), nullptr, 10) : 0;
    };
    for (const auto& row : more[0].rows) {
      if (row.size() < 3) continue;
      out->edges.push_back({u64(row[0]), u64(row[1]), u64(row[2])});
    }
    if (!more[1].rows.empty() && more[1].rows[0].size() >= 3) {
      out->snapshot_ms = static_cast<int64_t>(u64(more[1].rows[0][0]));
      out->now_ms = static_cast<int64_t>(u64(more[1].rows[0][1]));
      out->snapshot_fresh = u64(more[1].rows[0][2]) != 0;
    }
    for (const auto& row : more[2].rows) {
      if (row.size() < 7) continue;
      LockWaits::Published p;
      p.thread = u64(row[0]);
      p.query = u64(row[1]);
      p.txn = row[2].value_or("");
      p.priority_ms = row[3] ? std::strtoll(row[3]->c_str(), nullptr, 10) : 0;
      p.since_ms = row[4] ? std::strtoll(row[4]->c_str(), nullptr, 10) : 0;
      p.threads = row[5].value_or("");
      p.published_ms = row[6] ? std::strtoll(row[6]->c_str(), nullptr, 10) : 0;
      out->published.push_back(std::move(p));
    }
    return Status::OK();
  });
}

Status MariaDbParticipant::BreakWait(uint64_t thread, uint64_t query) {
  if (store_id_.empty()) return Participant::BreakWait(thread, query);
  // By query id, not thread, and only a closure's statement (a prepared statement: COMMAND
  // 'Execute'), never one of seigo's own (text: XA PREPARE, the commit batch). The check and
  // the KILL run in one compound statement on the server, so the statement cannot finish in
  // between by a round trip's worth; if it finished within those microseconds the server
  // answers 1957 (unknown query id). What remains (doc/deadlocks.md, "Why atomicity holds"):
  // a kill delivered as the statement ends can interrupt the connection's next command.
  const std::string q = std::to_string(query), t = std::to_string(thread);
  const std::string match = "FROM information_schema.PROCESSLIST WHERE QUERY_ID = " + q +
                            " AND ID = " + t + " AND COMMAND = 'Execute'";
  return WithSession([&](PooledSession& ps) -> Status {
    ps.session()->SetDeadline(UnixNowMs() + kDetectorRoundTripMs);  // as in ReadLockWaits
    std::vector<QueryResult> more;
    Status s = ps.conn().Run("SELECT COUNT(*) " + match + ";BEGIN NOT ATOMIC IF (SELECT COUNT(*) " +
                                 match + ") > 0 THEN KILL QUERY ID " + q + "; END IF; END",
                             nullptr, &more);
    if (s.server_errno() == ER_NO_SUCH_QUERY || (s.ok() && !more.empty() && more[0].rows.size() == 1 &&
                                                  more[0].rows[0][0].value_or("0") == "0")) {
      return Status::NotFound("statement " + q + " of thread " + t +
                              " is no longer a closure's statement running");
    }
    return s;
  });
}

Result<QueryResult> MariaDbParticipant::Query(std::string_view sql,
                                               std::span<const Value> params) {
  PooledSession ps(this);
  SEIGO_RETURN_IF_ERROR(ps.status());
  return ps.session()->Execute(sql, params);
}

Result<int64_t> MariaDbParticipant::ServerNowMs() {
  return WithSession([&](PooledSession& ps) -> Result<int64_t> {
    QueryResult r;
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(std::string("SELECT ") + kServerNowMs, &r));
    return r.Int(0, 0);
  });
}

// ---- The outbox (doc/outbox.md) ----

namespace {
std::string GidList(std::span<const std::string> gids) {
  std::string s;
  for (const std::string& g : gids) {
    if (!s.empty()) s += ',';
    s += "'" + g + "'";
  }
  return s;
}
bool AllGids(std::span<const std::string> gids) {
  return std::all_of(gids.begin(), gids.end(), [](const std::string& g) { return IsGid(g); });
}
constexpr const char* kOutboxColumns =
    "id, gid, seq, exchange, routing_key, content_type, msg_type, headers, body, created_ms";
}  // namespace

namespace {
int64_t NumOfRow(const std::vector<std::optional<std::string>>& row, size_t i) {
  int64_t v = 0;
  if (i < row.size() && row[i]) std::from_chars(row[i]->data(), row[i]->data() + row[i]->size(), v);
  return v;
}

// A row that starts with kOutboxColumns.
Result<OutboxEntry> EntryOfRow(const std::vector<std::optional<std::string>>& row) {
  if (row.size() < 10) return Status::Internal("outbox row: too few columns");
  OutboxEntry e;
  e.id = static_cast<uint64_t>(NumOfRow(row, 0));
  e.gid = row[1].value_or("");
  e.seq = static_cast<uint32_t>(NumOfRow(row, 2));
  e.msg.exchange = row[3].value_or("");
  e.msg.routing_key = row[4].value_or("");
  e.msg.content_type = row[5].value_or("");
  e.msg.type = row[6].value_or("");
  Result<std::vector<std::pair<std::string, std::string>>> h = DecodeHeaders(row[7].value_or(""));
  if (!h.ok()) return h.status().Annotate("outbox entry " + std::to_string(e.id));
  e.msg.headers = std::move(*h);
  e.msg.body = row[8].value_or("");
  e.created_ms = NumOfRow(row, 9);
  return e;
}
}  // namespace

Result<std::vector<OutboxEntry>> MariaDbParticipant::ClaimOutbox(const std::string& claim,
                                                                 int64_t lease_ms,
                                                                 size_t max_txns) {
  if (!IsClaim(claim) || lease_ms < 0 || max_txns == 0) {
    return Status::InvalidArgument("ClaimOutbox: bad claim, lease or batch");
  }
  return WithSession([&](PooledSession& ps) -> Result<std::vector<OutboxEntry>> {
    Conn& c = ps.conn();
    // A transaction's entries are claimed together, through its first entry (seq 0): locked
    // with SKIP LOCKED, so relays polling at once take different transactions instead of
    // queueing behind each other. READ COMMITTED: no gap locks, so a commit inserting new
    // entries never waits for a claim. Any failure leaves the connection broken (never pooled
    // inside the transaction); the server rolls the claim back.
    // ORDER BY claimed_ms, id follows the by_claim index (seq, claimed_ms, then the primary
    // key), so a poll reads about as many rows as it claims. ORDER BY id made InnoDB walk the
    // primary key past every live claim: 100,000 rows read (and locked and released) per poll
    // with a backlog of 100,000 claimed entries ahead of 100 expired ones (EXPLAIN / Handler_
    // read_next on MariaDB 10.11, doc/outbox.md). Expired claims go oldest expiry first.
    QueryResult heads;
    Status s = c.Run(std::string("SET TRANSACTION ISOLATION LEVEL READ COMMITTED;"
                                 "START TRANSACTION;"
                                 "SELECT gid FROM seigo_outbox WHERE seq = 0 AND claimed_ms < ") +
                         kServerNowMs + " ORDER BY claimed_ms, id LIMIT " +
                         std::to_string(max_txns) +
                         " FOR UPDATE SKIP LOCKED",
                     &heads);
    std::vector<OutboxEntry> out;
    if (!s.ok()) {
      c.set_broken();
      return s.Annotate(name() + ": claiming outbox entries");
    }
    if (heads.rows.empty()) {
      s = c.Run("COMMIT");
      if (!s.ok()) c.set_broken();
      return out;
    }
    std::vector<std::string> gids;
    for (const auto& row : heads.rows) {
      if (row[0] && IsGid(*row[0])) gids.push_back(*row[0]);
    }
    QueryResult rows;  // the SELECT's rows (the UPDATE has no result set)
    s = c.Run("UPDATE seigo_outbox SET claim = '" + claim + "', claimed_ms = " + kServerNowMs +
                  " + " + std::to_string(lease_ms) + ", tries = tries + 1 WHERE gid IN (" +
                  GidList(gids) + ");SELECT " + kOutboxColumns + ", tries FROM seigo_outbox " +
                  "WHERE gid IN (" + GidList(gids) + ") ORDER BY id;COMMIT",
              &rows);
    if (!s.ok()) {
      c.set_broken();
      return s.Annotate(name() + ": claiming outbox entries");
    }
    for (const auto& row : rows.rows) {
      Result<OutboxEntry> e = EntryOfRow(row);
      if (!e.ok()) return e.status().Annotate(name());
      e->tries = static_cast<int>(NumOfRow(row, 10));
      out.push_back(std::move(*e));
    }
    return out;
  });
}

Status MariaDbParticipant::FinishOutbox(std::span<const std::string> gids,
                                        std::span<const DeadLetter> dead) {
  if (gids.empty()) return Status::OK();
  if (!AllGids(gids)) return Status::InvalidArgument("FinishOutbox: not a gid");
  return WithSession([&](PooledSession& ps) -> Status {
    std::string sql = "START TRANSACTION;";
    for (const DeadLetter& d : dead) {  // rare: one statement each
      if (!IsGid(d.gid)) return Status::InvalidArgument("FinishOutbox: not a gid");
      sql += std::string("INSERT IGNORE INTO seigo_outbox_dead (") + kOutboxColumns +
             ", dead_ms, reason) SELECT " + kOutboxColumns + ", " + kServerNowMs + ", " +
             HexLiteral(d.reason.substr(0, 1000)) + " FROM seigo_outbox WHERE gid = '" + d.gid +
             "' AND seq = " + std::to_string(d.seq) + ";";
    }
    sql += "DELETE FROM seigo_outbox WHERE gid IN (" + GidList(gids) + ");COMMIT";
    Status s = ps.conn().Run(sql);
    if (!s.ok()) ps.conn().set_broken();  // the server rolls back whatever the batch began
    return s.Annotate(name() + ": finishing outbox entries");
  });
}

Status MariaDbParticipant::ReleaseOutbox(std::span<const std::string> gids,
                                         const std::string& claim, int64_t retry_ms,
                                         const std::string& error) {
  if (gids.empty()) return Status::OK();
  if (!AllGids(gids) || !IsClaim(claim)) return Status::InvalidArgument("ReleaseOutbox: bad gid or claim");
  return WithSession([&](PooledSession& ps) -> Status {
    return ps.conn()
        .Run("UPDATE seigo_outbox SET claimed_ms = " + std::string(kServerNowMs) + " + " +
             std::to_string(std::max<int64_t>(0, retry_ms)) + ", last_error = " +
             HexLiteral(error.substr(0, 500)) + " WHERE claim = '" + claim + "' AND gid IN (" +
             GidList(gids) + ")")
        .Annotate(name() + ": releasing outbox entries");
  });
}

Result<OutboxStats> MariaDbParticipant::ReadOutboxStats() {
  return WithSession([&](PooledSession& ps) -> Result<OutboxStats> {
    QueryResult r;
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(
        std::string("SELECT COUNT(*), IFNULL(") + kServerNowMs + " - MIN(created_ms), 0), "
        "IFNULL(MAX(tries), 0), (SELECT COUNT(*) FROM seigo_outbox_dead), "
        "(SELECT last_error FROM seigo_outbox ORDER BY tries DESC, id LIMIT 1) FROM seigo_outbox",
        &r));
    OutboxStats st;
    SEIGO_ASSIGN_OR_RETURN(int64_t pending, r.Int(0, 0));
    SEIGO_ASSIGN_OR_RETURN(int64_t age, r.Int(0, 1));
    SEIGO_ASSIGN_OR_RETURN(int64_t tries, r.Int(0, 2));
    SEIGO_ASSIGN_OR_RETURN(int64_t dead, r.Int(0, 3));
    st.pending = static_cast<uint64_t>(pending);
    st.oldest_age_ms = pending > 0 ? std::max<int64_t>(0, age) : 0;
    st.max_tries = static_cast<int>(tries);
    st.dead = static_cast<uint64_t>(dead);
    st.last_error = r.rows[0][4].value_or("");
    return st;
  });
}

Result<std::vector<DeadRecord>> MariaDbParticipant::ListDeadLetters(size_t limit) {
  return WithSession([&](PooledSession& ps) -> Result<std::vector<DeadRecord>> {
    QueryResult r;
    SEIGO_RETURN_IF_ERROR(ps.conn().Run(std::string("SELECT ") + kOutboxColumns +
                                            ", dead_ms, reason FROM seigo_outbox_dead ORDER BY "
                                            "dead_ms, gid, seq LIMIT " +
                                            std::to_string(std::max<size_t>(1, limit)),
                                        &r));
    std::vector<DeadRecord> out;
    for (const auto& row : r.rows) {
      Result<OutboxEntry> e = EntryOfRow(row);
      if (!e.ok()) return e.status().Annotate(name() + ", dead-letter record");
      out.push_back({std::move(*e), NumOfRow(row, 10), row.size() > 11 ? row[11].value_or("") : ""});
    }
    return out;
  });
}

Result<size_t> MariaDbParticipant::ResendDeadLetters(std::span<const DeadLetter> which,
                                                     const std::string& new_gid) {
  if (!IsGid(new_gid)) return Status::InvalidArgument("ResendDeadLetters: bad gid");
  for (const DeadLetter& d : which) {
    if (!IsGid(d.gid)) return Status::InvalidArgument("ResendDeadLetters: not a gid: " + d.gid);
  }
  if (which.empty()) return size_t{0};
  return WithSession([&](PooledSession& ps) -> Result<size_t> {
    Conn& c = ps.conn();
    // Locked for the move: a second resend of the same records at the same time waits, then
    // finds them gone.
    std::string where;
    for (const DeadLetter& d : which) {
      where += std::string(where.empty() ? "" : " OR ") + "(gid = '" + d.gid +
               "' AND seq = " + std::to_string(d.seq) + ")";
    }
    QueryResult rows;
    Status s = c.Run(std::string("START TRANSACTION;SELECT ") + kOutboxColumns +
                         " FROM seigo_outbox_dead WHERE " + where + " FOR UPDATE",
                     &rows);
    if (!s.ok()) {
      c.set_broken();  // the server rolls back
      return s.Annotate(name() + ": reading dead letters");
    }
    std::map<std::pair<std::string, uint32_t>, OutboxEntry> found;
    for (const auto& row : rows.rows) {
      Result<OutboxEntry> e = EntryOfRow(row);
      if (!e.ok()) {
        c.set_broken();
        return e.status().Annotate(name());
      }
      found[{e->gid, e->seq}] = std::move(*e);
    }
    std::string sql;
    uint32_t seq = 0;
    for (const DeadLetter& d : which) {
      auto it = found.find({d.gid, d.seq});
      if (it == found.end()) continue;
      Message m = it->second.msg;
      m.headers.emplace_back(kResentFromHeader, it->second.message_id());
      sql += std::string(sql.empty() ? "INSERT INTO seigo_outbox (gid, seq, exchange, "
                                       "routing_key, content_type, msg_type, headers, body, "
                                       "created_ms, claim, claimed_ms) VALUES "
                                     : ",") +
             "('" + new_gid + "'," + std::to_string(seq++) + "," + HexLiteral(m.exchange) + "," +
             HexLiteral(m.routing_key) + "," + HexLiteral(m.content_type) + "," +
             HexLiteral(m.type) + "," + HexLiteral(EncodeHeaders(m.headers)) + "," +
             HexLiteral(m.body) + "," + kServerNowMs + ",'0000000000000000',0)";
      found.erase(it);  // named twice: moved once
    }
    if (seq == 0) {
      s = c.Run("COMMIT");
      if (!s.ok()) c.set_broken();
      return s.ok() ? Result<size_t>(size_t{0}) : Result<size_t>(s);
    }
    // The move is one local transaction: the new outbox rows and the delete commit together or
    // not at all. A lost reply leaves it either done (a repeated resend then finds nothing:
    // kNotFound, and `seigo status` shows the new entries) or undone (a repeat moves them);
    // never a letter both resent and still dead, or neither.
    sql += ";DELETE FROM seigo_outbox_dead WHERE " + where + ";COMMIT";
    s = c.Run(sql);
    if (!s.ok()) {
      c.set_broken();
      return s.Annotate(name() + ": resending dead letters");
    }
    return size_t{seq};
  });
}

const char* ServerNowMsSql() { return kServerNowMs; }

}  // namespace seigo::mariadb
