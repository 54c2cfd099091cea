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
//         {price, buyer, price}));
//     SEIGO_RETURN_IF_ERROR(tx.ExecExpect(seller, 1,
//         "UPDATE players SET gold = gold + ? WHERE player_id = ?", {price, seller}));
//     return seigo::Status::OK();
//   });
//
// Any failed statement poisons the attempt: even if the closure ignores the error and returns
// OK, the attempt is rolled back (and retried if the error was a conflict).
//
// Statements that would end the transaction or commit it implicitly (COMMIT, ROLLBACK, BEGIN,
// SET autocommit, DDL, LOCK TABLES, XA, ...) are refused with kInvalidArgument before they reach
// the server, and so is CALL on the first shard the closure touches (its local transaction
// decides the outcome; a procedure could commit it). doc/protocol.md, "What a closure may run".
//
// Thread-safety: a Tx belongs to the thread running the closure and dies when it returns.
#ifndef SEIGO_TRANSACTION_H_
#define SEIGO_TRANSACTION_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "seigo/participant.h"
#include "seigo/status.h"

namespace seigo {

class Tx {
 public:
  virtual ~Tx() = default;

  // The shard that owns `key` (ShardMap::ShardFor).
  virtual uint32_t ShardFor(int64_t key) const = 0;
  // Runs one statement on shard `shard` ('?' placeholders, values in `params`).
  virtual Result<QueryResult> ExecOn(uint32_t shard, std::string_view sql,
                                     std::initializer_list<Value> params) = 0;
  // 1 for the first run of the closure, 2 for the first retry, ...
  virtual int attempt() const = 0;
  // The gid of this attempt (doc/xid.md). Every attempt has one; it reaches the shards (XIDs,
  // decision row) only when the attempt touches a second shard.
  virtual const std::string& gid() const = 0;

  // Runs a statement on the shard that owns `key`.
  Result<QueryResult> Exec(int64_t key, std::string_view sql,
                           std::initializer_list<Value> params) {
    return ExecOn(ShardFor(key), sql, params);
  }
  // A guard: the statement must change exactly `rows` rows, else the transaction aborts with
  // kAborted and a message naming the statement (e.g. "not enough gold").
  Status ExecExpect(int64_t key, uint64_t rows, std::string_view sql,
                    std::initializer_list<Value> params);

  // For `return Tx::Abort("not enough gold");` inside the closure.
  static Status Abort(std::string reason) { return Status::Aborted(std::move(reason)); }
};

using TxFn = std::function<Status(Tx&)>;

enum class TxState {
  kCommitted,       // committed on every shard touched; visible there unless the shard is in
                    // TxResult::pending_visibility (or phase 2 runs in the background,
                    // Phase2Mode::kBackground)
  kAborted,         // the closure returned an error, or a statement failed for good
  kGaveUp,          // every attempt hit a conflict or an unavailable shard; nothing committed
  kOutcomeUnknown,  // the commit reply was lost and the outcome could not be learned in time;
                    // for a multi-shard transaction seigo's resolver finishes it either way
                    // (look up `gid` with `seigo status`); see doc/protocol.md
};
const char* TxStateName(TxState s);  // "committed", "aborted", "gave_up", "outcome_unknown"

struct TxResult {
  TxState state = TxState::kAborted;
  Status status;           // why it did not commit (OK when committed)
  int attempts = 0;        // closure runs
  std::string gid;         // the last attempt's gid ("" for a one-shard transaction without a
                           // commit record, ProtocolOptions::record_one_shard_commits)
  uint32_t shards = 0;     // shards touched by the last attempt
  // Committed, but these shards' branches could not be committed before Run() returned (the
  // shard went away after the commit point): the resolver finishes them; until then reads there
  // see the old rows. Empty in Phase2Mode::kBackground, where no branch is waited for.
  std::vector<uint32_t> pending_visibility;
  bool committed() const { return state == TxState::kCommitted; }
};

}  // namespace seigo

#endif  // SEIGO_TRANSACTION_H_
