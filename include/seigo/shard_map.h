// ShardMap: the list of shards and the stable key -> shard function.
//
// A shard is one MariaDB/MySQL database, named by a URL
//   mysql://user:password@host:port/database
// (mariadb:// is accepted too; port defaults to 3306; user, password and host may be
// percent-encoded). The position of a URL in the list IS the shard's identity: it is written into
// every XID (doc/xid.md) and into each shard's seigo_shard table, and seigo refuses to run when a
// database claims a different position. So the list may only grow at the end.
//
// Key -> shard (doc/sharding.md): h = SplitMix64(key) (for integer keys) or FNV-1a 64 (for
// string keys), then Lamping & Veach's jump consistent hash of h over the shard count. The
// function never changes between seigo versions; growing from N to N+1 shards moves ~1/(N+1) of
// the keys, all of them to the new shard.
//
// Thread-safety: immutable after Parse; share freely.
#ifndef SEIGO_SHARD_MAP_H_
#define SEIGO_SHARD_MAP_H_

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "seigo/status.h"

namespace seigo {

struct ShardUrl {
  std::string user;
  std::string password;
  std::string host;
  uint16_t port = 3306;
  std::string database;

  // Parses one URL. Errors say what is wrong and never echo the password.
  static Result<ShardUrl> Parse(std::string_view url);
  // The URL with the password replaced by "***": safe for logs and error messages.
  std::string Redacted() const;
};

class ShardMap {
 public:
  // Parses a comma-separated list ("URL,URL,...") or a vector of URLs. At least one shard; at
  // most 1000 (XIDs carry the index in three digits' worth of room, see doc/xid.md).
  static Result<ShardMap> Parse(std::string_view comma_separated);
  static Result<ShardMap> Parse(const std::vector<std::string>& urls);

  size_t size() const { return shards_.size(); }
  const ShardUrl& shard(size_t i) const { return shards_[i]; }

  // The shard that owns an integer key (a player id), signed or unsigned: a uint64_t id above
  // INT64_MAX maps by its 64 bits (the same as the int64_t with those bits). Stable across
  // versions.
  template <std::integral K>
  uint32_t ShardFor(K key) const {
    return ShardForBits(static_cast<int64_t>(key));
  }
  // The shard that owns a string key.
  uint32_t ShardForString(std::string_view key) const;

  // The underlying pure functions, exposed for tests and other languages' ports.
  static uint64_t MixKey(int64_t key);             // SplitMix64 finalizer
  static uint64_t HashString(std::string_view s);  // FNV-1a 64
  static uint32_t JumpHash(uint64_t h, uint32_t buckets);
  // Which of `instances` (> 0) key-value instances (Redis) owns `key`, 0-based: FNV-1a 64 of
  // its hash tag — the text between the first '{' and the next '}', if not empty, as in Redis
  // Cluster — else of the whole key, then JumpHash. What Tx::kv() routes by.
  static uint32_t KvInstanceFor(std::string_view key, uint32_t instances);

 private:
  uint32_t ShardForBits(int64_t key) const;
  std::vector<ShardUrl> shards_;
};

}  // namespace seigo

#endif  // SEIGO_SHARD_MAP_H_
