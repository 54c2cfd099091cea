// Status and Result<T>: how every seigo function reports failure.
//
// seigo does not throw. A function that can fail returns Status (or Result<T>, which is a Status
// or a T). Codes exist only where a caller reacts differently to them; everything else is in the
// message. The one code that matters most is kOutcomeUnknown: "the transaction may or may not have
// committed". seigo resolves those by itself (see doc/protocol.md), but it never pretends to know.
//
// Thread-safety: Status and Result are values; copies may be used from any thread.
#ifndef SEIGO_STATUS_H_
#define SEIGO_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace seigo {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // bad input from the caller (URL, parameter, option): fix the call.
  kNotFound,         // no such row / XID (XAER_NOTA for XA statements).
  kConflict,         // deadlock or lock-wait timeout: the attempt was rolled back; retry it.
  kUnavailable,      // connection refused or lost; the statement's effect is unknown.
  kBusy,             // cannot be decided now (a live session holds the lock or the
                     // deadline has not passed): try again later, nothing was changed.
  kAborted,          // the transaction did not commit and never will (closure abort, fence).
  kOutcomeUnknown,   // the transaction may or may not have committed.
  kQueryFailed,      // the server rejected a statement (syntax, constraint, privilege...).
  kUnsupported,      // the server cannot run seigo safely (too old, no XA...).
  kCorruption,       // state that the protocol says cannot exist (e.g. a decision flipped).
  kInternal,         // a bug in seigo.
  kGuardFailed,      // a guard in the closure did not hold (Tx::ExecExpect: not the expected
                     // number of rows); the transaction is rolled back and not retried.
  kDeadlineExceeded, // the Run's deadline (RunOptions::timeout_ms) passed, or the closure alone
                     // took longer than an attempt may (txn_timeout_ms): retrying cannot help.
};

// Name of a code, e.g. "Conflict". Stable: used in logs and the CLI's JSON output.
const char* CodeName(Code code);

class Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  // `server_errno`: the store's own error number (MariaDB's 1213, 2013, ...), 0 if none.
  Status(Code code, std::string message, int server_errno)
      : code_(code), message_(std::move(message)), server_errno_(server_errno) {}

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status Conflict(std::string m) { return {Code::kConflict, std::move(m)}; }
  static Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status Busy(std::string m) { return {Code::kBusy, std::move(m)}; }
  static Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
  static Status OutcomeUnknown(std::string m) { return {Code::kOutcomeUnknown, std::move(m)}; }
  static Status QueryFailed(std::string m) { return {Code::kQueryFailed, std::move(m)}; }
  static Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool Is(Code c) const { return code_ == c; }
  // The store's error number behind this status (e.g. 1062 duplicate key), 0 if there is none.
  // It survives Annotate(), so callers test numbers, never message text.
  int server_errno() const { return server_errno_; }
  // The shard a statement failed on (-1 if the status is not about one shard), and the
  // statement's text (empty if none; at most 200 bytes). They survive Annotate().
  int shard() const { return shard_; }
  const std::string& statement() const { return statement_; }
  Status WithShard(int shard) const {
    Status s = *this;
    s.shard_ = shard;
    return s;
  }
  Status WithStatement(std::string_view sql) const {
    Status s = *this;
    s.statement_ = std::string(sql.substr(0, 200));
    return s;
  }

  // "Conflict: Deadlock found when trying to get lock" or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>".
  Status Annotate(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  int server_errno_ = 0;
  int shard_ = -1;
  std::string statement_;
};

// A T or a non-OK Status. Constructing a Result from an OK Status is a bug (asserted).
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace seigo

// Returns early from the enclosing function if `expr` (a Status) is not OK.
#define SEIGO_RETURN_IF_ERROR(expr)              \
  do {                                           \
    ::seigo::Status seigo_status_ = (expr);      \
    if (!seigo_status_.ok()) return seigo_status_; \
  } while (0)

// `SEIGO_ASSIGN_OR_RETURN(auto v, tx.kv().Get(key));` declares v from a Result's value, or
// returns the Result's Status from the enclosing function if it is not OK.
#define SEIGO_CONCAT_INNER_(a, b) a##b
#define SEIGO_CONCAT_(a, b) SEIGO_CONCAT_INNER_(a, b)
#define SEIGO_ASSIGN_OR_RETURN(decl, expr) \
  SEIGO_ASSIGN_OR_RETURN_IMPL_(SEIGO_CONCAT_(seigo_result_, __LINE__), decl, expr)
#define SEIGO_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  decl = std::move(*tmp)

#endif  // SEIGO_STATUS_H_
