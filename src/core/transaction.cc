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

Status Tx::ExecExpect(int64_t key, uint64_t rows, std::string_view sql,
                      std::initializer_list<Value> params) {
  Result<QueryResult> r = Exec(key, sql, params);
  if (!r.ok()) return r.status();
  if (r->affected_rows != rows) {
    return Status::Aborted("expected " + std::to_string(rows) + " row(s) changed, got " +
                           std::to_string(r->affected_rows) + ": " + std::string(sql));
  }
  return Status::OK();
}

}  // namespace seigo
