// Tx and TxResult: what application code sees of a transaction.
//
// The application hands seigo a closure `Status fn(Tx&)`. Inside it, statements go to the shard
// that owns a key; the first statement on a shard opens that shard's branch (lazily). When the
// closure returns OK, seigo commits atomically across every shard touched; when it returns an
// error, everything is rolled back. Deadlocks, lock-wait timeouts and lost connections before
// the commit point roll back every branch and run the closure again (so it must have no side
// effects outside the Tx — it may run several times).
//
//   seigo::TxResult r = coordinator->Run([&](seigo::Tx& tx) -> seigo::Status {
//     SEIGO_RETURN_IF_ERROR(tx.ExecExpect(buyer, 1,
//         "UPDATE players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
//         {price, buyer, price}, "not enough gold"));
//     SEIGO_RETURN_IF_ERROR(tx.ExecExpect(seller, 1,
//         "UPDATE players SET gold = gold + ? WHERE player_id = ?", {price, seller}));
//     return seigo::Status::OK();
//   });
//   if (r.status.Is(seigo::Code::kGuardFailed)) ...  // "not enough gold"
//
// Any failed statement — and any failed guard (ExecExpect) — poisons the attempt: even if the
// closure ignores the error and returns OK, the attempt is rolled back (and retried if the error
// was a conflict; a guard failure is final).
//
// Statements that would end the transaction or commit it implicitly (COMMIT, ROLLBACK, BEGIN,
// SET autocommit, DDL, LOCK TABLES, XA, ...) are refused with kInvalidArgument before they reach
// the server, and so is CALL on the first shard the closure touches (its local transaction
// decides the outcome; a procedure could commit it). doc/protocol.md, "What a closure may run".
//
// Rules (doc/library.md):
//   * Thread: a Tx belongs to the thread running the closure. Using it after the closure
//     returned is refused (kInvalidArgument) while Run() is still running; after Run() returned
//     the Tx no longer exists — do not keep references to it.
//   * Nesting: calling Coordinator::Run inside a closure is refused (kInvalidArgument): it would
//     be an independent transaction that commits even if the outer one aborts, and one touching
//     the outer's rows would wait for itself.
//   * Exceptions: an exception thrown by the closure rolls the attempt back (its connections
//     are closed, so the servers discard the work) and propagates out of Run() unchanged.
#ifndef SEIGO_TRANSACTION_H_
#define SEIGO_TRANSACTION_H_

#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "seigo/kv.h"
#include "seigo/message.h"
#include "seigo/participant.h"
#include "seigo/status.h"

namespace seigo {

class Tx;

// A transaction's view of the key-value participants (the Redis instances of
// CoordinatorOptions::redis; doc/redis.md): every call goes to the instance that owns the key
// (KvStoreFor: a hash of the key's hash tag `{...}` if it has one, else of the whole key).
//
//   tx.kv().Incr("boss:{7}:hp", -damage, 0, INT64_MAX, "the boss is already defeated");
//
// Reads go to the instance at once and see this transaction's own earlier writes; what they
// saw is checked again when the transaction commits (a read of a key that changed, or that
// another transaction is committing, fails the attempt with kConflict and it is retried).
// Writes are staged and applied atomically with the rest of the transaction (SQL shards and
// other instances). Errors poison the attempt like a failed SQL statement.
class KvTx {
 public:
  explicit KvTx(Tx* tx) : tx_(tx) {}

  Result<std::optional<std::string>> Get(std::string_view key);
  // Get, parsed as a 64-bit integer (kInvalidArgument if the value is not one).
  Result<std::optional<int64_t>> GetInt(std::string_view key);
  Status Set(std::string_view key, std::string_view value);
  Status Del(std::string_view key);
  Result<std::optional<std::string>> HGet(std::string_view key, std::string_view field);
  Status HSet(std::string_view key, std::string_view field, std::string_view value);
  Status HDel(std::string_view key, std::string_view field);
  Result<std::optional<double>> ZScore(std::string_view key, std::string_view member);
  Status ZAdd(std::string_view key, std::string_view member, double score);
  Status ZRem(std::string_view key, std::string_view member);
  // The `n` highest-scored members, highest first (a leaderboard's top). Refused after a write
  // of the same key in the same transaction.
  Result<std::vector<ScoredMember>> ZTop(std::string_view key, int64_t n);
  // Bounded increment (escrow): key += delta, refused unless min <= key + delta <= max. It
  // reads nothing, so increments of one hot key by many transactions at once do not conflict:
  // at commit each reserves its delta against the bounds, counting the reservations of other
  // transactions still committing, and applies it once decided. A missing key counts as 0.
  // When the bound itself would be crossed the attempt fails with kGuardFailed and `reason`
  // (not retried); when only other pending reservations stand in the way, with kConflict
  // (retried). Values and deltas within +-2^52 (bounds beyond are clamped to it).
  Status Incr(std::string_view key, int64_t delta, int64_t min, int64_t max,
              std::string_view reason = {});

  // The participant index of the instance that owns `key`.
  uint32_t StoreFor(std::string_view key) const;

 private:
  Tx* tx_;
};

class Tx {
 public:
  virtual ~Tx() = default;

  // The shard that owns `key` (ShardMap::ShardFor): signed or unsigned 64-bit ids.
  template <std::integral K>
  uint32_t ShardFor(K key) const {
    return ShardForKey(static_cast<int64_t>(key));
  }
  // Runs one statement on shard `shard` ('?' placeholders, values in `params`). The span form
  // takes any number of values built at run time (an IN (...) list, a multi-row INSERT).
  // A failure's Status names the shard (Status::shard()) and the statement
  // (Status::statement()), and carries the server's error number (Status::server_errno()).
  virtual Result<QueryResult> ExecOn(uint32_t shard, std::string_view sql,
                                     std::span<const Value> params) = 0;
  Result<QueryResult> ExecOn(uint32_t shard, std::string_view sql,
                             std::initializer_list<Value> params = {}) {
    return ExecOn(shard, sql, std::span<const Value>(params.begin(), params.size()));
  }
  // Streams a query's rows: `row` is called with each row as it arrives (a QueryResult with the
  // columns and that one row: row.Get<T>(0, "col")), so a large result never sits in memory.
  // Returns the number of rows, or the first non-OK Status `row` returned (which stops the
  // stream; that is the closure's business and does not poison the attempt). While it streams,
  // `row` must not run statements on the same shard (refused: kInvalidArgument); other shards
  // are fine.
  using RowFn = std::function<Status(const QueryResult& row)>;
  virtual Result<uint64_t> ExecEachOn(uint32_t shard, std::string_view sql,
                                      std::span<const Value> params, const RowFn& row) = 0;
  Result<uint64_t> ExecEachOn(uint32_t shard, std::string_view sql,
                              std::initializer_list<Value> params, const RowFn& row) {
    return ExecEachOn(shard, sql, std::span<const Value>(params.begin(), params.size()), row);
  }
  template <std::integral K>
  Result<uint64_t> ExecEach(K key, std::string_view sql, std::initializer_list<Value> params,
                            const RowFn& row) {
    return ExecEachOn(ShardFor(key), sql, std::span<const Value>(params.begin(), params.size()),
                      row);
  }

  // Runs a statement on the shard that owns `key`.
  template <std::integral K>
  Result<QueryResult> Exec(K key, std::string_view sql, std::span<const Value> params) {
    return ExecOn(ShardFor(key), sql, params);
  }
  template <std::integral K>
  Result<QueryResult> Exec(K key, std::string_view sql, std::initializer_list<Value> params = {}) {
    return ExecOn(ShardFor(key), sql, std::span<const Value>(params.begin(), params.size()));
  }
  // A guard: the statement must affect exactly `rows` rows (QueryResult::affected_rows: rows
  // MATCHED by an UPDATE, so setting a value it already has still counts; an upsert of an
  // existing row counts 2). Otherwise the attempt fails with kGuardFailed — poisoned like a
  // failed statement, rolled back, not retried — and the status message is `reason` (e.g.
  // "not enough gold"), followed by what was expected and got.
  template <std::integral K>
  Status ExecExpect(K key, uint64_t rows, std::string_view sql,
                    std::initializer_list<Value> params, std::string_view reason = {}) {
    return ExpectOn(ShardFor(key), rows, sql,
                    std::span<const Value>(params.begin(), params.size()), reason);
  }
  template <std::integral K>
  Status ExecExpect(K key, uint64_t rows, std::string_view sql, std::span<const Value> params,
                    std::string_view reason = {}) {
    return ExpectOn(ShardFor(key), rows, sql, params, reason);
  }
  Status ExpectOn(uint32_t shard, uint64_t rows, std::string_view sql,
                  std::span<const Value> params, std::string_view reason = {});

  // Key-value participants (Redis): see KvTx.
  KvTx kv() { return KvTx(this); }
  // One key-value operation on participant `store` (KvTx routes by key). kInvalidArgument if
  // `store` is not a key-value participant.
  virtual Result<KvReply> KvOn(uint32_t store, const KvOp& op) = 0;
  // The participant index that owns `key` among the key-value participants (kInvalidArgument
  // status from KvOn when there are none).
  virtual uint32_t KvStoreFor(std::string_view key) const = 0;

  // Messages (doc/outbox.md): `m` is published to the broker (CoordinatorOptions::amqp) if and
  // only if this transaction commits, after the commit, at least once, with the AMQP message-id
  // "<gid>-<seq>" (seq = 0, 1, ... in the order of the Publish calls); the messages of one
  // transaction are published in that order. They are written into the outbox of the decider
  // shard in its commit (a transaction that touched no SQL shard gets one for its outbox).
  // kInvalidArgument (and the attempt fails) in a read-only Run, without a broker, or beyond the
  // limits of message.h. Returns the message id.
  virtual Result<std::string> Publish(Message m) = 0;
  Result<std::string> Publish(std::string_view exchange, std::string_view routing_key,
                              std::string_view body) {
    Message m;
    m.exchange = exchange;
    m.routing_key = routing_key;
    m.body = body;
    return Publish(std::move(m));
  }

  // Fails the attempt with `s` (not OK) as a failed statement would: nothing of it can commit
  // any more, even if the closure then returns OK. Returns `s`, for `return tx.Fail(...)`.
  virtual Status Fail(Status s) = 0;

  // 1 for the first run of the closure, 2 for the first retry, ...
  virtual int attempt() const = 0;
  // The gid of this attempt (doc/xid.md). Every attempt has one; it reaches the shards (XIDs,
  // decision row) only when the attempt touches a second shard.
  virtual const std::string& gid() const = 0;
  // True in a read-only Run (RunOptions::read_only).
  virtual bool read_only() const = 0;

  // For `return Tx::Abort("not enough gold");` inside the closure: kAborted, not retried.
  static Status Abort(std::string reason) { return Status::Aborted(std::move(reason)); }

 protected:
  virtual uint32_t ShardForKey(int64_t key) const = 0;
};

using TxFn = std::function<Status(Tx&)>;

// Per-call options of Coordinator::Run.
struct RunOptions {
  // Bounds the whole call — every attempt, backoff sleep, statement and commit — to about this
  // many ms from the call (0: no bound beyond ProtocolOptions::max_attempts). Each attempt's own
  // deadline (in its XIDs: the decider refuses to commit after it) is the earlier of its start +
  // txn_timeout_ms and this bound. A statement still waiting on a server at the deadline (a
  // frozen shard, a lock wait) is cut — its connection is closed, as if the reply were lost —
  // and Run() ends with kDeadlineExceeded (nothing committed) or, if the cut hit the commit
  // itself, with what the fence learns (committed, not committed, or outcome_unknown). Opening
  // a new connection is given up at the deadline too. With read-your-writes, a branch whose
  // XA COMMIT is cut is left to the resolver and named in pending_visibility.
  int64_t timeout_ms = 0;
  // A read-only transaction: the closure may only read (writes are refused with
  // kInvalidArgument before they reach the server); every shard gets a plain local transaction
  // — no XA, no decision row — which is rolled back once the closure has returned. Locking reads
  // (SELECT .. FOR UPDATE / FOR SHARE) hold their locks until then, so the reads of all shards
  // are one consistent, serializable view (doc/isolation.md). A committed read-only result
  // means: every read completed with all its locks held at once.
  bool read_only = false;
};

enum class TxState {
  kCommitted,       // committed on every shard touched; visible there unless the shard is in
                    // TxResult::pending_visibility (or phase 2 runs in the background,
                    // Phase2Mode::kBackground)
  kAborted,         // the closure returned an error, a guard failed, or a statement failed for
                    // good (see TxResult::status's code)
  kGaveUp,          // every attempt hit a conflict or an unavailable shard, or the Run's
                    // deadline passed; nothing committed
  kOutcomeUnknown,  // the commit reply was lost and the outcome could not be learned in time;
                    // for a multi-shard transaction seigo's resolver finishes it either way
                    // (look up `gid` with `seigo status`); see doc/protocol.md
};
const char* TxStateName(TxState s);  // "committed", "aborted", "gave_up", "outcome_unknown"

// One attempt of a Run, for TxResult::history.
struct AttemptInfo {
  int attempt = 0;
  std::string gid;
  uint32_t shards = 0;      // shards it touched
  int64_t duration_ms = 0;  // closure + commit (or rollback)
  Status status;            // why it did not commit; OK for the committed attempt
};

struct TxResult {
  TxState state = TxState::kAborted;
  Status status;           // why it did not commit (OK when committed)
  int attempts = 0;        // closure runs
  std::string gid;         // the last attempt's gid ("" for a one-shard transaction without a
                           // commit record, ProtocolOptions::record_one_shard_commits, and
                           // without messages: Tx::Publish)
  uint32_t shards = 0;     // shards touched by the last attempt
  // Committed, but these shards' branches could not be committed before Run() returned (the
  // shard went away after the commit point): the resolver finishes them; until then reads there
  // see the old rows. Empty in Phase2Mode::kBackground, where no branch is waited for.
  std::vector<uint32_t> pending_visibility;
  // Every attempt, in order, with its cause and duration (the last one is this result's).
  std::vector<AttemptInfo> history;
  bool committed() const { return state == TxState::kCommitted; }
};

}  // namespace seigo

#endif  // SEIGO_TRANSACTION_H_
