#include "seigo/transaction.h"

namespace seigo {

const char* TxStateName(TxState s) {
  switch (s) {
    case TxState::kCommitted: return "committed";
    case TxState::kAborted: return "aborted";
    case TxState::kGaveUp: return "gave_up";
    case TxState::kOutcomeUnknown: return "outcome_unknown";
  }
  return "unknown";
}

Status Tx::ExpectOn(uint32_t shard, uint64_t rows, std::string_view sql,
                    std::span<const Value> params, std::string_view reason) {
  Result<QueryResult> r = ExecOn(shard, sql, params);
  if (!r.ok()) return r.status();
  if (r->affected_rows == rows) return Status::OK();
  std::string m = reason.empty() ? std::string("guard failed") : std::string(reason);
  m += " (expected " + std::to_string(rows) + " row(s), got " +
       std::to_string(r->affected_rows) + ")";
  if (reason.empty()) m += ": " + std::string(sql.substr(0, 200));
  return Fail(Status(Code::kGuardFailed, std::move(m)).WithShard(static_cast<int>(shard))
                  .WithStatement(sql));
}

}  // namespace seigo
