// Default implementations of the Participant batch calls (include/seigo/participant.h): one
// call per item. Stores that can do better override them (src/mariadb/).
#include "seigo/participant.h"

namespace seigo {

std::vector<Status> Participant::CommitXids(std::span<const Xid> xids) {
  std::vector<Status> out;
  out.reserve(xids.size());
  for (const Xid& x : xids) out.push_back(CommitXid(x));
  return out;
}

std::vector<Status> Participant::RollbackXids(std::span<const Xid> xids) {
  std::vector<Status> out;
  out.reserve(xids.size());
  for (const Xid& x : xids) out.push_back(RollbackXid(x));
  return out;
}

Result<std::vector<std::optional<Decision>>> Participant::ReadDecisions(
    std::span<const std::string> gids) {
  std::vector<std::optional<Decision>> out;
  out.reserve(gids.size());
  for (const std::string& g : gids) {
    Result<std::optional<Decision>> d = ReadDecision(g);
    if (!d.ok()) return d.status();
    out.push_back(std::move(*d));
  }
  return out;
}


Result<uint64_t> Session::ExecuteEach(std::string_view sql, std::span<const Value> params,
                                      const std::function<Status(const QueryResult&)>& row) {
  Result<QueryResult> all = Execute(sql, params);
  if (!all.ok()) return all.status();
  QueryResult one;
  one.columns = all->columns;
  uint64_t n = 0;
  for (auto& r : all->rows) {
    one.rows.assign(1, std::move(r));
    Status s = row(one);
    if (!s.ok()) return s;
    ++n;
  }
  return n;
}

}  // namespace seigo
