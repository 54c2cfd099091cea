// Key-value branch operations: what a transaction does on a key-value participant (a Redis
// instance today; doc/redis.md), beside the SQL statements it runs on shards.
//
// The protocol core knows these only as values it hands to a participant's Session (Kv below):
// it routes them by key and never interprets them. The store's adapter (src/redis/) gives them
// their meaning: reads go to the store at once and record what they saw; writes and bounded
// increments are staged in the session and reach the store only when the branch prepares (or,
// when the branch decides, commits), in one server-side script that validates everything
// first.
#ifndef SEIGO_KV_H_
#define SEIGO_KV_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace seigo {

struct ScoredMember {
  std::string member;
  double score = 0;
  bool operator==(const ScoredMember&) const = default;
};

// One operation on the key-value store that owns `key`.
struct KvOp {
  enum class Kind {
    kGet,     // string value of key (nullopt: no such key)
    kSet,     // key = value
    kDel,     // key gone, whatever its type
    kHGet,    // hash key, field
    kHSet,    // hash key, field = value
    kHDel,    // hash key, field gone
    kZScore,  // sorted set key, member's score (as text)
    kZAdd,    // sorted set key, member with score
    kZRem,    // sorted set key, member gone
    kZTop,    // sorted set key, the `count` members with the highest scores, highest first
    kIncr,    // bounded increment: key += delta, with min <= result <= max (see Tx::KvTx::Incr)
  };
  Kind kind = Kind::kGet;
  std::string key;
  std::string field;   // hash field, sorted-set member
  std::string value;   // kSet, kHSet
  double score = 0;    // kZAdd
  int64_t delta = 0, min = 0, max = 0;  // kIncr
  int64_t count = 0;   // kZTop
  std::string reason;  // kIncr: the guard's message when the bound would be crossed
};

struct KvReply {
  std::optional<std::string> value;   // kGet, kHGet, kZScore; nullopt = none
  std::vector<ScoredMember> members;  // kZTop
};

// True for the kinds that read (and so are recorded for validation).
inline bool KvOpReads(KvOp::Kind k) {
  return k == KvOp::Kind::kGet || k == KvOp::Kind::kHGet || k == KvOp::Kind::kZScore ||
         k == KvOp::Kind::kZTop;
}

// Bounded increments carry integers that Redis scripts handle as doubles: values and deltas
// must stay within +-2^52, so that the sums the checks make stay exact (checked: an Incr beyond
// is kInvalidArgument, a stored value beyond fails the commit with kQueryFailed); bounds beyond
// are clamped to it.
inline constexpr int64_t kKvMaxExactInteger = int64_t{1} << 52;

}  // namespace seigo

#endif  // SEIGO_KV_H_
