// Shard URLs and the key -> shard function (doc/sharding.md). The hash functions here are part
// of seigo's on-disk contract: changing them moves players between shards.
#include "seigo/shard_map.h"

#include <cctype>
#include <charconv>

namespace seigo {
namespace {

constexpr size_t kMaxShards = 1000;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

}  // namespace

Result<ShardUrl> ShardUrl::Parse(std::string_view url) {
  // Error messages quote only the part before '@' minus the password, never the password.
  auto bad = [](std::string why) {
    return Status::InvalidArgument("malformed shard URL: " + why +
                                   " (expected mysql://user:password@host:port/database)");
  };
  std::string_view rest;
  if (url.substr(0, 8) == "mysql://") {
    rest = url.substr(8);
  } else if (url.substr(0, 10) == "mariadb://") {
    rest = url.substr(10);
  } else {
    return bad("it must start with mysql:// or mariadb://");
  }
  ShardUrl u;
  size_t at = rest.rfind('@');
  if (at == std::string_view::npos) return bad("no user (user@host)");
  std::string_view cred = rest.substr(0, at), hostpart = rest.substr(at + 1);
  size_t colon = cred.find(':');
  std::string_view user = cred.substr(0, colon);
  if (user.empty()) return bad("empty user name");
  if (!PercentDecode(user, &u.user)) return bad("bad percent-escape in user");
  if (colon != std::string_view::npos &&
      !PercentDecode(cred.substr(colon + 1), &u.password)) {
    return bad("bad percent-escape in password");
  }
  size_t slash = hostpart.find('/');
  if (slash == std::string_view::npos) return bad("no database (host/database)");
  std::string_view hostport = hostpart.substr(0, slash), db = hostpart.substr(slash + 1);
  if (db.empty()) return bad("empty database name");
  for (char c : db) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$')) {
      return bad("database name may contain only letters, digits, _ and $");
    }
  }
  u.database = std::string(db);
  size_t pc = hostport.rfind(':');
  std::string_view host = hostport;
  if (pc != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
    host = hostport.substr(0, pc);
    std::string_view port = hostport.substr(pc + 1);
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p == 0 ||
        p > 65535) {
      return bad("port '" + std::string(port) + "' is not a number from 1 to 65535");
    }
    u.port = static_cast<uint16_t>(p);
  }
  if (host.empty()) return bad("empty host");
  if (!PercentDecode(host, &u.host)) return bad("bad percent-escape in host");
  return u;
}

std::string ShardUrl::Redacted() const {
  return "mysql://" + user + (password.empty() ? "" : ":***") + "@" + host + ":" +
         std::to_string(port) + "/" + database;
}

Result<ShardMap> ShardMap::Parse(std::string_view list) {
  std::vector<std::string> urls;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    urls.emplace_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return Parse(urls);
}

Result<ShardMap> ShardMap::Parse(const std::vector<std::string>& urls) {
  if (urls.empty() || (urls.size() == 1 && urls[0].empty())) {
    return Status::InvalidArgument("no shards given (expected a comma-separated list of URLs)");
  }
  if (urls.size() > kMaxShards) {
    return Status::InvalidArgument("at most " + std::to_string(kMaxShards) + " shards");
  }
  ShardMap m;
  for (size_t i = 0; i < urls.size(); ++i) {
    Result<ShardUrl> u = ShardUrl::Parse(urls[i]);
    if (!u.ok()) return u.status().Annotate("shard " + std::to_string(i));
    for (size_t j = 0; j < m.shards_.size(); ++j) {
      const ShardUrl& o = m.shards_[j];
      if (o.host == u->host && o.port == u->port && o.database == u->database) {
        return Status::InvalidArgument("shards " + std::to_string(j) + " and " +
                                       std::to_string(i) + " are the same database (" +
                                       u->Redacted() + ")");
      }
    }
    m.shards_.push_back(std::move(*u));
  }
  return m;
}

uint64_t ShardMap::MixKey(int64_t key) {
  uint64_t z = static_cast<uint64_t>(key) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t ShardMap::HashString(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
uint32_t ShardMap::KvInstanceFor(std::string_view key, uint32_t instances) {
  std::string_view h = key;
  if (size_t open = key.find('{'); open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      h = key.substr(open + 1, close - open - 1);
    }
  }
  return JumpHash(HashString(h), instances);
}

uint32_t ShardMap::JumpHash(uint64_t key, uint32_t buckets) {
  int64_t b = -1, j = 0;
  while (j < static_cast<int64_t>(buckets)) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = static_cast<int64_t>(static_cast<double>(b + 1) *
                             (static_cast<double>(1LL << 31) /
                              static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<uint32_t>(b);
}

uint32_t ShardMap::ShardForBits(int64_t key) const {
  return JumpHash(MixKey(key), static_cast<uint32_t>(shards_.size()));
}

uint32_t ShardMap::ShardForString(std::string_view key) const {
  return JumpHash(HashString(key), static_cast<uint32_t>(shards_.size()));
}

}  // namespace seigo
