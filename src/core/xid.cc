// XID encoding, doc/xid.md. Keep the two in step.
#include <cctype>
#include <charconv>

#include "seigo/participant.h"

namespace seigo {
namespace {

constexpr std::string_view kPrefix = "sg2-";

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  if (s.empty() || s.size() > 19) return false;
  if (s.size() > 1 && s[0] == '0') return false;  // one spelling per number
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::string Xid::Gtrid() const {
  std::string s;
  s.reserve(64);
  s += kPrefix;
  s += gid;
  s += '-';
  s += std::to_string(decider);
  s += '-';
  s += std::to_string(start_ms);
  s += '-';
  s += std::to_string(deadline_ms - start_ms);
  return s;
}

std::string Xid::Bqual() const { return std::to_string(branch) + "-" + deployment; }

bool Xid::IsDeploymentId(std::string_view s) { return s.size() == 16 && IsLowerHex(s); }

Result<Xid> Xid::Parse(int64_t format_id, std::string_view gtrid, std::string_view bqual) {
  if (format_id != kFormatId || gtrid.substr(0, kPrefix.size()) != kPrefix) {
    return Status::NotFound("not a seigo XID");
  }
  auto bad = [&](const char* why) {
    return Status::Corruption(std::string("malformed seigo XID '") + std::string(gtrid) + "','" +
                              std::string(bqual) + "': " + why);
  };
  std::string_view rest = gtrid.substr(kPrefix.size());
  std::string_view part[4];
  for (int i = 0; i < 3; ++i) {
    size_t dash = rest.find('-');
    if (dash == std::string_view::npos) return bad("too few fields");
    part[i] = rest.substr(0, dash);
    rest = rest.substr(dash + 1);
  }
  part[3] = rest;
  Xid x;
  if (part[0].size() != 32 || !IsLowerHex(part[0])) return bad("gid is not 32 hex digits");
  x.gid = std::string(part[0]);
  if (!ParseNumber(part[1], &x.decider)) return bad("bad decider");
  int64_t timeout = 0;
  if (!ParseNumber(part[2], &x.start_ms)) return bad("bad start time");
  if (!ParseNumber(part[3], &timeout)) return bad("bad timeout");
  x.deadline_ms = x.start_ms + timeout;
  size_t dash = bqual.find('-');
  if (dash == std::string_view::npos) return bad("no deployment in bqual");
  if (!ParseNumber(bqual.substr(0, dash), &x.branch)) return bad("bad branch");
  if (!IsDeploymentId(bqual.substr(dash + 1))) return bad("bad deployment");
  x.deployment = std::string(bqual.substr(dash + 1));
  return x;
}

const char* OutcomeName(Outcome o) { return o == Outcome::kCommit ? "commit" : "abort"; }

Result<int64_t> QueryResult::Int(size_t r, size_t c) const {
  if (r >= rows.size() || c >= rows[r].size()) return Status::NotFound("no such cell");
  const std::optional<std::string>& v = rows[r][c];
  if (!v) return Status::QueryFailed("NULL where an integer was expected");
  int64_t out = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size()) {
    return Status::QueryFailed("'" + *v + "' is not an integer");
  }
  return out;
}


Result<size_t> QueryResult::Column(std::string_view name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return i;
  }
  auto lower = [](std::string_view v) {
    std::string out(v);
    for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return out;
  };
  const std::string want = lower(name);
  for (size_t i = 0; i < columns.size(); ++i) {
    if (lower(columns[i]) == want) return i;
  }
  return Status::NotFound("no column named '" + std::string(name) + "'");
}

namespace detail {

template <typename T>
Status ParseInteger(const std::string& text, T* out, const char* type) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec == std::errc::result_out_of_range) {
    return Status::InvalidArgument("'" + text + "' is out of the range of " + type);
  }
  if (ec != std::errc() || p != text.data() + text.size()) {
    return Status::InvalidArgument("'" + text + "' is not an integer (" + type + ")");
  }
  return Status::OK();
}

Status ParseCell(const std::string& text, int64_t* out) {
  return ParseInteger(text, out, "int64_t");
}
Status ParseCell(const std::string& text, uint64_t* out) {
  if (!text.empty() && text[0] == '-') {
    return Status::InvalidArgument("'" + text + "' is negative (uint64_t)");
  }
  return ParseInteger(text, out, "uint64_t");
}
Status ParseCell(const std::string& text, double* out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec != std::errc() || p != text.data() + text.size()) {
    return Status::InvalidArgument("'" + text + "' is not a number (double)");
  }
  return Status::OK();
}
Status ParseCell(const std::string& text, bool* out) {
  int64_t v = 0;
  if (!ParseInteger(text, &v, "bool").ok() || (v != 0 && v != 1)) {
    return Status::InvalidArgument("'" + text + "' is not 0 or 1 (bool)");
  }
  *out = v == 1;
  return Status::OK();
}

}  // namespace detail

}  // namespace seigo
