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

}  // namespace seigo
