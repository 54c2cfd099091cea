// The participant interface: the only way seigo's protocol code talks to a store.
//
// A Participant is one store: a SQL shard (a MariaDB database, src/mariadb/) or a key-value
// instance (a Redis server, src/redis/). The protocol code in src/core/ calls nothing else,
// which is why the deterministic simulator (sim/) can run the very same protocol code against simulated
// participants.
//
// Every kind speaks the same store-neutral two-phase contract — begin, prepare, commit and roll
// back by XID, list what is prepared, and (where the store can be a decider) the decision
// record — so the protocol decides the same way for all of them. Beside it each kind has its
// own branch operations: SQL statements (Session::Execute) or key-value operations
// (Session::Kv, kv.h). Stores that buffer a branch's work (key-value) learn their role only at
// the end: CommitWithDecision when they are the decider (or the only participant), Prepare and
// CommitPrepared otherwise.
//
// Two levels:
//   * Session: one connection, used by one transaction at a time. It runs the transaction's
//     statements and the commit-protocol steps of that branch. A session that prepared an XA
//     branch owns it: on MariaDB no other connection can commit or roll it back until this one
//     disconnects (doc/protocol.md, "the owning connection"), so phase 2 runs here.
//   * Participant: the shard itself, for recovery. Its calls are idempotent by XID and safe from
//     any process at any time: RecoverPrepared, CommitXid, RollbackXid, ProbeBranches,
//     ForgetBranches, and the decision table (ReadDecision, FenceAbort, ListExpiredDecisions,
//     ForgetDecisions) that lives on every shard that can act as a decider.
//
// Deployments: several seigo deployments (and non-seigo XA users) may share one server. Every
// XID names its deployment (doc/xid.md) and a participant only ever lists, commits or rolls back
// XIDs of its own deployment.
//
// Error contract (every call): kConflict = deadlock / lock-wait timeout, the server rolled the
// statement or the transaction back; kUnavailable = connection refused or lost, the effect of the
// call is unknown (the Session is then Broken()); kQueryFailed = the server rejected it;
// kNotFound = XAER_NOTA (no such XID visible to this connection — which on MariaDB ALSO happens
// while another live connection owns the branch, so it never means "done" by itself);
// kBusy = cannot be decided now, nothing changed. Server error numbers travel in
// Status::server_errno().
//
// Thread-safety: Participant methods may be called from many threads at once. A Session is used
// by one thread at a time.
#ifndef SEIGO_PARTICIPANT_H_
#define SEIGO_PARTICIPANT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "seigo/kv.h"
#include "seigo/message.h"
#include "seigo/status.h"

namespace seigo {

// The identity of one XA branch: which deployment, which global transaction, who decides it,
// until when it may commit, and which shard this branch is on. Wire format in doc/xid.md.
struct Xid {
  static constexpr int32_t kFormatId = 0x73656967;  // "seig"
  std::string deployment;   // 16 lowercase hex digits: the deployment (seigo_shard, doc/xid.md)
  std::string gid;          // 32 lowercase hex digits, unique per attempt
  uint32_t decider = 0;     // shard index whose local commit is the commit point
  int64_t start_ms = 0;     // unix ms when the attempt began (for ages in reports)
  int64_t deadline_ms = 0;  // unix ms; no commit after it, no resolver abort before it
  uint32_t branch = 0;      // shard index of this branch

  // "sg2-<gid>-<decider>-<start_ms>-<deadline_ms - start_ms>"; at most 64 bytes as long as
  // decider < 1000 and the timeout < 10^7 ms (both enforced by the library).
  std::string Gtrid() const;
  std::string Bqual() const;  // "<branch>-<deployment>"
  // Parses XA RECOVER's columns. kNotFound if the XID is not a current seigo XID (other
  // formatID or prefix, including the deployment-less "sg1" of seigo 0.1); kCorruption if it
  // claims to be one but does not parse. The caller compares `deployment` with its own.
  static Result<Xid> Parse(int64_t format_id, std::string_view gtrid, std::string_view bqual);
  static bool IsDeploymentId(std::string_view s);  // 16 lowercase hex digits

  bool operator==(const Xid&) const = default;
};

enum class Outcome : char { kCommit = 'C', kAbort = 'A' };
const char* OutcomeName(Outcome o);  // "commit" / "abort"

// One row of the decision table (seigo_decision, doc/decision-table.md) on a decider shard.
struct Decision {
  std::string gid;
  Outcome outcome = Outcome::kAbort;
  std::vector<uint32_t> shards;  // every shard with a branch, decider included
  int64_t deadline_ms = 0;
  int64_t decided_at_ms = 0;  // filled by reads (server clock)
};

// What a shard still holds of one gid's branch (ProbeBranches).
enum class BranchTrace : char {
  kNone,       // nothing: rolled back, never prepared here, or committed and forgotten
  kOpen,       // an open transaction of this gid (active or prepared) exists on the server —
               // even one that XA RECOVER does not list (the MariaDB limbo branch)
  kCommitted,  // the branch committed and its marker is not forgotten yet
};

// A statement parameter. Values are sent separately from the SQL text (server-side prepared
// statements); they are never spliced into SQL. Implicit from integers (signed and unsigned
// 64-bit: ids above INT64_MAX travel as BIGINT UNSIGNED), doubles, strings, nullptr and
// std::optional (nullopt = NULL) so that `{price, player_id, "name"}` reads naturally at the
// call site. Value::Bytes(...) sends binary data (a BLOB parameter, no character set).
class Value {
 public:
  enum class Kind { kNull, kInt, kUint, kDouble, kString, kBytes };
  Value(std::nullptr_t) : kind_(Kind::kNull) {}                       // NOLINT
  Value(int v) : kind_(Kind::kInt), i_(v) {}                          // NOLINT
  Value(long v) : kind_(Kind::kInt), i_(v) {}                         // NOLINT
  Value(long long v) : kind_(Kind::kInt), i_(v) {}                    // NOLINT
  Value(unsigned v) : kind_(Kind::kInt), i_(v) {}                     // NOLINT
  Value(unsigned long v) : kind_(Kind::kUint), u_(v) {}               // NOLINT
  Value(unsigned long long v) : kind_(Kind::kUint), u_(v) {}          // NOLINT
  Value(double v) : kind_(Kind::kDouble), d_(v) {}                    // NOLINT
  Value(std::string v) : kind_(Kind::kString), s_(std::move(v)) {}    // NOLINT
  Value(std::string_view v) : kind_(Kind::kString), s_(v) {}          // NOLINT
  Value(const char* v) : kind_(Kind::kString), s_(v) {}               // NOLINT
  Value(bool v) : kind_(Kind::kInt), i_(v ? 1 : 0) {}                 // NOLINT
  template <typename T>
  Value(const std::optional<T>& v) : Value(nullptr) {                 // NOLINT
    if (v.has_value()) *this = Value(*v);
  }
  // Binary data: sent as a BLOB, never converted between character sets.
  static Value Bytes(std::string data) {
    Value v(std::move(data));
    v.kind_ = Kind::kBytes;
    return v;
  }

  Kind kind() const { return kind_; }
  int64_t int_value() const { return i_; }
  uint64_t uint_value() const { return u_; }
  double double_value() const { return d_; }
  const std::string& string_value() const { return s_; }

 private:
  Kind kind_;
  int64_t i_ = 0;
  uint64_t u_ = 0;
  double d_ = 0;
  std::string s_;
};

struct QueryResult {
  // Rows changed by INSERT/DELETE/REPLACE; rows MATCHED by UPDATE (seigo's transaction
  // connections use CLIENT_FOUND_ROWS, so an UPDATE that sets a row to the value it already had
  // counts 1, not 0). INSERT .. ON DUPLICATE KEY UPDATE counts 1 for an insert and 2 for an
  // update of an existing row (1 if that row already had the new values). For a SELECT: the
  // number of rows returned.
  uint64_t affected_rows = 0;
  uint64_t last_insert_id = 0;
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;  // text form; nullopt = NULL

  // Convenience: the integer in row r, column c (kQueryFailed if NULL or not an integer,
  // kNotFound if out of range).
  Result<int64_t> Int(size_t r, size_t c) const;

  // Typed access: the value in row r of column `c` (an index, or a column name as the SELECT
  // named it) as T = int64_t, uint64_t, double, bool, or std::string (any value's text; for a
  // BLOB its bytes). nullopt = SQL NULL. kNotFound: no such row or column; kInvalidArgument:
  // the value does not convert to T (not a number, out of T's range).
  //   Result<std::optional<int64_t>> gold = r->Get<int64_t>(0, "gold");
  template <typename T>
  Result<std::optional<T>> Get(size_t r, size_t c) const;
  template <typename T>
  Result<std::optional<T>> Get(size_t r, std::string_view column) const {
    Result<size_t> c = Column(column);
    if (!c.ok()) return c.status();
    return Get<T>(r, *c);
  }
  // The index of column `name` (exact match first, then case-insensitive), kNotFound if none.
  Result<size_t> Column(std::string_view name) const;
};

namespace detail {
// The conversions behind QueryResult::Get (src/core/xid.cc).
Status ParseCell(const std::string& text, int64_t* out);
Status ParseCell(const std::string& text, uint64_t* out);
Status ParseCell(const std::string& text, double* out);
Status ParseCell(const std::string& text, bool* out);
inline Status ParseCell(const std::string& text, std::string* out) {
  *out = text;
  return Status::OK();
}
}  // namespace detail

template <typename T>
Result<std::optional<T>> QueryResult::Get(size_t r, size_t c) const {
  if (r >= rows.size()) return Status::NotFound("no row " + std::to_string(r));
  if (c >= rows[r].size()) return Status::NotFound("no column " + std::to_string(c));
  const std::optional<std::string>& cell = rows[r][c];
  if (!cell) return std::optional<T>();
  T v{};
  Status s = detail::ParseCell(*cell, &v);
  if (!s.ok()) {
    return s.Annotate("column " + (c < columns.size() ? columns[c] : std::to_string(c)));
  }
  return std::optional<T>(std::move(v));
}

// Decision rows are written only until deadline + kFenceWindowMs (by the decider's clock):
// the decider's commit before the deadline, fences within the window. Rows are kept at least
// kMinDecisionRetentionMs past their deadline, so no write can land after its gid's row was
// garbage-collected and contradict it (doc/protocol.md, "Garbage collection").
inline constexpr int64_t kFenceWindowMs = 30'000;
inline constexpr int64_t kMinDecisionRetentionMs = 60'000;

// ---- Cross-shard deadlock detection (doc/deadlocks.md) ----
// No server sees a cycle of lock waits that runs through two shards. Each seigo process
// publishes, on the store where it waits, which transaction its long-waiting statement belongs
// to and which connections that transaction holds on every store; any process can then join
// every store's lock waits into one wait-for graph and break its cycles (src/core/deadlock.h).

// Who a Run is, for the detector. One per Run, shared by the sessions of its current attempt:
// written by the Run's thread, read by the detector's, hence the mutex.
struct WaitTag {
  mutable std::mutex mu;
  std::string txn;          // the Run: the gid of its first attempt
  int64_t priority_ms = 0;  // when the Run's first attempt started (smaller = older = wins)
  std::string threads;      // the current attempt's connections: "store_id@thread,..."
};

// A statement of this process that has been running since `since_ms` (NowMs clock) on
// server thread `thread`, for the Run `tag`.
struct LocalWait {
  uint64_t thread = 0;
  int64_t since_ms = 0;
  std::shared_ptr<WaitTag> tag;
};

// One store's lock waits, as read in one round trip by Participant::ReadLockWaits.
struct LockWaits {
  struct Edge {
    uint64_t waiter = 0;        // the waiting server thread
    uint64_t waiter_query = 0;  // the store's id of the waiting statement
    uint64_t holder = 0;        // a thread it waits for (holds the lock, or is ahead in line)
  };
  // What a seigo process published about one of its waiting statements. The store returns
  // only rows whose thread still runs that statement (a live check, not the cached snapshot).
  struct Published {
    uint64_t thread = 0, query = 0;
    std::string txn, threads;
    int64_t priority_ms = 0, since_ms = 0;
    int64_t published_ms = 0;  // by the store's clock
  };
  // The lock waits as of `snapshot_ms` (the store's clock; 0 = none yet). InnoDB serves them
  // from a cache refreshed at most every 100 ms, so they may be that old.
  std::vector<Edge> edges;
  int64_t snapshot_ms = 0;
  bool snapshot_fresh = false;  // the read refreshed the cache: it showed every wait then
  int64_t now_ms = 0;           // the store's clock when this was read
  std::vector<Published> published;
};

// The kind of a participant: which branch operations it takes.
enum class StoreKind { kSql, kKv };

class Session {
 public:
  virtual ~Session() = default;

  // Starts a plain local transaction (the decider, or the only shard). Statements that would end
  // it are refused by Execute (kInvalidArgument) before they reach the store.
  virtual Status BeginLocal() = 0;
  // Starts a local transaction that only reads (RunOptions::read_only): Execute refuses
  // statements that are not reads where the store can tell, and the transaction always ends
  // with RollbackAll — nothing it did can ever commit. Locking reads hold their locks until
  // then. The default is BeginLocal (a store that cannot tell reads from writes relies on the
  // rollback alone).
  virtual Status BeginReadOnly() { return BeginLocal(); }
  // XA START xid.
  virtual Status BeginBranch(const Xid& xid) = 0;
  // One statement with '?' placeholders. A statement that changes the session's state makes the
  // session unpoolable: it is closed after the transaction instead of reused.
  virtual Result<QueryResult> Execute(std::string_view sql, std::span<const Value> params) = 0;
  // The same, streaming: `row` is called once per result row (a QueryResult holding the columns
  // and that one row) while the rows arrive, so a large result never sits in memory. A non-OK
  // Status from `row` stops the stream (the rest is discarded) and is returned. OK = the number
  // of rows. No other statement may run on this session until it returns. The default runs
  // Execute and then walks its rows.
  virtual Result<uint64_t> ExecuteEach(std::string_view sql, std::span<const Value> params,
                                       const std::function<Status(const QueryResult&)>& row);

  // One key-value operation (kv.h); only on StoreKind::kKv participants.
  virtual Result<KvReply> Kv(const KvOp& op) {
    (void)op;
    return Status::InvalidArgument("not a key-value store");
  }

  // Messages of the transaction (Tx::Publish), to be written into this store's outbox as part
  // of its local transaction: the next CommitLocal or CommitWithDecision commits them with the
  // rest, atomically (and, where the store can, in the same round trip). Only on the decider
  // (or the only store). The entries are claimed by `claim` until `lease_ms` after the commit
  // (the store's clock), so that this process's relay publishes them first and pollers of other
  // processes take over only if it dies (doc/outbox.md). kUnsupported where the store keeps no
  // outbox (Participant::has_outbox).
  virtual Status StageMessages(const std::string& gid, std::span<const Message> messages,
                               const std::string& claim, int64_t lease_ms) {
    (void)gid;
    (void)messages;
    (void)claim;
    (void)lease_ms;
    return Status::Unsupported("this store keeps no outbox");
  }

  // XA END + XA PREPARE in one round trip, with the branch's marker (ProbeBranches) written
  // inside the branch first. OK = the branch is durable and survives crashes.
  virtual Status Prepare(const Xid& xid) = 0;
  // COMMIT of a local transaction (the one-shard path). kUnavailable = outcome unknown.
  virtual Status CommitLocal() = 0;
  // THE COMMIT POINT of a multi-shard transaction: inserts the commit decision row and commits
  // the local transaction, in one round trip. The server refuses the insert (kAborted) when its
  // clock is past d.deadline_ms or when the gid already has a row (a resolver's fence); then
  // nothing is committed. kUnavailable or kOutcomeUnknown (the commit itself failed after the
  // insert went in) = outcome unknown: the caller learns it through the fence. Any other error =
  // the insert failed, nothing committed.
  virtual Status CommitWithDecision(const Decision& d) = 0;
  // XA COMMIT of the branch this session prepared.
  virtual Status CommitPrepared(const Xid& xid) = 0;
  // Rolls back whatever this session has open: a local transaction, an active XA branch
  // (XA END + XA ROLLBACK), or a prepared one (XA ROLLBACK). Never fails silently: if the
  // server did not confirm, the session becomes Broken() and the server discards the
  // non-prepared work when the connection closes.
  virtual Status RollbackAll(const Xid* xid, bool prepared) = 0;

  // True once the connection is lost or in an unknown state; do not reuse it.
  virtual bool Broken() const = 0;

  // From now on, a call that is still waiting on the store at `unix_ms` (wall clock, as
  // DefaultEnv's NowMs) fails with kUnavailable — the connection is cut, as if the reply were
  // lost — instead of waiting for the store's own timeouts (RunOptions::timeout_ms). 0 = no
  // deadline. The default ignores it (the simulator's sessions).
  virtual void SetDeadline(int64_t unix_ms) { (void)unix_ms; }

  // Deadlock detection: the Run this session works for (nullptr = none; the session then never
  // appears in LongStatements), and the session's server thread (0 = the store has none).
  virtual void SetWaitTag(std::shared_ptr<WaitTag> tag) { (void)tag; }
  virtual uint64_t server_thread() const { return 0; }
};

class Participant {
 public:
  virtual ~Participant() = default;

  virtual uint32_t index() const = 0;  // position in the shard map
  virtual std::string name() const = 0;  // for messages: "shard 1 (127.0.0.1:3307/seigo)"
  // The deployment this shard belongs to (Xid::deployment); the same on every shard of a map.
  virtual const std::string& deployment() const = 0;

  virtual StoreKind kind() const { return StoreKind::kSql; }
  // True when a transaction whose only participant is this store should commit through
  // CommitWithDecision (a decision record in the same atomic step), not CommitLocal: where the
  // record costs nothing extra, a lost commit reply is then resolved by the fence instead of
  // staying unknown (ProtocolOptions::record_one_shard_commits does it for every store).
  virtual bool records_single_commits() const { return false; }

  // A session for one transaction. Real participants pool connections.
  virtual Result<std::unique_ptr<Session>> Acquire() = 0;
  // The same, giving up at `deadline_ms` (unix ms, as DefaultEnv's NowMs; 0 = none) with
  // kUnavailable, also while a new connection is being opened (RunOptions::timeout_ms). The
  // default ignores the deadline.
  virtual Result<std::unique_ptr<Session>> Acquire(int64_t deadline_ms) {
    (void)deadline_ms;
    return Acquire();
  }
  // Returns a session after its transaction ended. Broken sessions are discarded.
  virtual void Release(std::unique_ptr<Session> session) = 0;

  // Recovery calls: each runs on a fresh (pooled) connection, idempotent by XID.
  // This deployment's XIDs in XA RECOVER (others' are never returned).
  virtual Result<std::vector<Xid>> RecoverPrepared() = 0;
  // Commits a prepared branch from a connection that does not own it. OK = the branch is
  // committed (by this call or earlier: its marker says so). kNotFound = nothing to act on now
  // (owned by a live connection, or gone without a commit trace). kBusy = the owning connection
  // is still being torn down (committing now could hit the MariaDB limbo race), or it was hung
  // past its deadline and has just been killed; retry. kCorruption = the server answered OK but
  // the branch is still open: the limbo branch (doc/limbo-branch.md); the message says what to
  // do. Nothing may treat that branch as finished.
  virtual Status CommitXid(const Xid& xid) = 0;
  // Rolls back a prepared branch. OK = no transaction of the XID is left (by this call or
  // earlier). kNotFound / kBusy as for CommitXid; kCorruption = still open after an OK (limbo),
  // or the branch had committed.
  virtual Status RollbackXid(const Xid& xid) = 0;
  // Many at once (the resolver's batches), one status per XID in the same order, each meaning
  // what CommitXid / RollbackXid would return. The defaults call those one by one; a store may
  // do it in fewer round trips.
  virtual std::vector<Status> CommitXids(std::span<const Xid> xids);
  virtual std::vector<Status> RollbackXids(std::span<const Xid> xids);
  // What each gid's branch left on this shard, from seigo's own records (the marker every
  // branch writes inside itself before it prepares). Safe against other clients of the server:
  // unrelated open transactions do not matter. Same order as `gids`.
  virtual Result<std::vector<BranchTrace>> ProbeBranches(std::span<const std::string> gids) = 0;
  // Deletes the committed markers of `gids` (after their decision is no longer needed).
  virtual Status ForgetBranches(std::span<const std::string> gids) = 0;

  // Decision table on this shard (when it is a decider).
  virtual Result<std::optional<Decision>> ReadDecision(std::string_view gid) = 0;
  // Many at once, in the order of `gids` (the default calls ReadDecision one by one).
  virtual Result<std::vector<std::optional<Decision>>> ReadDecisions(
      std::span<const std::string> gids);
  // Writes an abort decision for d.gid unless a decision exists, and returns the decision that
  // holds afterwards (ours, or the existing one). This "fencing insert" is what makes a late
  // commit impossible: the decider's own insert of the commit row then fails. A live decider
  // holding the row lock (commit row inserted, not yet committed) makes it wait at most the
  // lock-wait timeout, then kBusy. Time conditions use the decider server's clock:
  //   by_coordinator=false (a resolver): before d.deadline_ms only an existing row's outcome,
  //     else kBusy, so a live transaction is never aborted before its deadline. In
  //     [deadline, deadline + kFenceWindowMs): the fence.
  //     From deadline + kFenceWindowMs on nothing is written any more: the existing row's outcome
  //     (after waiting for an uncommitted insert, as above), or, if there is none, kAbort
  //     without a row — no commit can appear any more, and writing a row then could contradict
  //     a commit row that was garbage-collected while this resolver was stalled.
  //   by_coordinator=true (the transaction's own coordinator, which knows its decider session is
  //     gone): the fence from any time until deadline + kFenceWindowMs, then kBusy (it could not
  //     tell a collected commit row from none).
  virtual Result<Outcome> FenceAbort(const Decision& d, bool by_coordinator) = 0;
  // Decision rows whose deadline_ms + retention_ms is behind the server's clock (at most
  // `limit`): candidates for garbage collection once no branch of theirs is prepared.
  virtual Result<std::vector<Decision>> ListExpiredDecisions(int64_t retention_ms,
                                                            size_t limit) = 0;
  virtual Status ForgetDecisions(std::span<const std::string> gids) = 0;

  // ---- The outbox (doc/outbox.md): committed messages waiting for the broker's confirm ----
  // True if this store can hold an outbox (StageMessages and the calls below work).
  virtual bool has_outbox() const { return false; }
  // Claims up to `max_txns` transactions' entries whose claim has expired (by the store's
  // clock), skipping entries another relay is claiming right now, for `lease_ms`; returns them
  // in outbox order, a transaction's entries together and in sequence. A transaction's entries
  // are always claimed together.
  virtual Result<std::vector<OutboxEntry>> ClaimOutbox(const std::string& claim,
                                                       int64_t lease_ms, size_t max_txns) {
    (void)claim;
    (void)lease_ms;
    (void)max_txns;
    return Status::Unsupported("no outbox on " + name());
  }
  // The broker confirmed every entry of these transactions: deletes them, moving the entries in
  // `dead` to the dead-letter record first, in one local transaction. Idempotent.
  virtual Status FinishOutbox(std::span<const std::string> gids,
                              std::span<const DeadLetter> dead) {
    (void)gids;
    (void)dead;
    return Status::Unsupported("no outbox on " + name());
  }
  // Publishing these transactions' entries failed (`error`): their claim ends in `retry_ms`,
  // after which any relay may claim them again. Only entries still claimed by `claim`.
  virtual Status ReleaseOutbox(std::span<const std::string> gids, const std::string& claim,
                               int64_t retry_ms, const std::string& error) {
    (void)gids;
    (void)claim;
    (void)retry_ms;
    (void)error;
    return Status::Unsupported("no outbox on " + name());
  }
  virtual Result<OutboxStats> ReadOutboxStats() {
    return Status::Unsupported("no outbox on " + name());
  }
  // The dead-letter record, oldest first, at most `limit` records.
  virtual Result<std::vector<DeadRecord>> ListDeadLetters(size_t limit) {
    (void)limit;
    return Status::Unsupported("no outbox on " + name());
  }
  // An operator fixed what killed them (a missing exchange, binding, permission): moves these
  // dead letters back into the outbox as ONE new transaction `new_gid` (seq 0, 1, ... in the
  // order given; each with the header kResentFromHeader = its old message id), claimable at
  // once, in one local transaction. Returns how many moved (records not found are skipped, so
  // a repeated call moves nothing twice). The new message ids are new: a dead letter was never
  // delivered, so no consumer's inbox knows the old one.
  virtual Result<size_t> ResendDeadLetters(std::span<const DeadLetter> which,
                                           const std::string& new_gid) {
    (void)which;
    (void)new_gid;
    return Status::Unsupported("no outbox on " + name());
  }

  // Deadlock detection (doc/deadlocks.md). The store's identity: the same for every client of
  // one server, whatever address it was reached by ("" = the store reports no lock waits, and
  // the detector leaves it out).
  virtual std::string store_id() const { return ""; }
  // This process's statements on the store, with a wait tag, running since before `before_ms`.
  virtual std::vector<LocalWait> LongStatements(int64_t before_ms) {
    (void)before_ms;
    return {};
  }
  // One round trip: publishes `mine` on the store (replacing what this process published
  // there before), then reads every lock wait of the store and everything published on it.
  virtual Status ReadLockWaits(std::span<const LocalWait> mine, LockWaits* out) {
    (void)mine;
    (void)out;
    return Status::Unsupported("no lock waits on " + name());
  }
  // Interrupts statement `query` of server thread `thread` if it is still running (else
  // kNotFound, and nothing happens): its transaction gets kConflict, rolls back and retries.
  virtual Status BreakWait(uint64_t thread, uint64_t query) {
    (void)thread;
    (void)query;
    return Status::Unsupported("no lock waits on " + name());
  }
};

}  // namespace seigo

#endif  // SEIGO_PARTICIPANT_H_
