#include "seigo/status.h"

namespace seigo {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kConflict: return "Conflict";
    case Code::kUnavailable: return "Unavailable";
    case Code::kBusy: return "Busy";
    case Code::kAborted: return "Aborted";
    case Code::kOutcomeUnknown: return "OutcomeUnknown";
    case Code::kQueryFailed: return "QueryFailed";
    case Code::kUnsupported: return "Unsupported";
    case Code::kCorruption: return "Corruption";
    case Code::kInternal: return "Internal";
    case Code::kGuardFailed: return "GuardFailed";
    case Code::kDeadlineExceeded: return "DeadlineExceeded";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  if (!message_.empty()) {
    m += ": ";
    m += message_;
  }
  Status s(code_, std::move(m), server_errno_);
  s.shard_ = shard_;
  s.statement_ = statement_;
  return s;
}

}  // namespace seigo
