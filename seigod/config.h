// seigod's configuration file (doc/seigod.md, "Configuration"): TOML, read once at start.
#ifndef SEIGOD_CONFIG_H_
#define SEIGOD_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "seigo/status.h"

namespace seigod {

struct Config {
  // [server]
  std::string host = "127.0.0.1";
  int port = 8640;
  std::string admin_token;  // "" = admin endpoints refuse everyone
  size_t max_body_bytes = 1 << 20;
  size_t max_steps = 64;
  int64_t max_timeout_ms = 30'000;
  int64_t default_timeout_ms = 5'000;
  bool allow_raw_sql = false;
  int64_t hung_threshold_ms = 120'000;
  int64_t monitor_interval_ms = 2'000;
  int64_t idempotency_retention_ms = 86'400'000;  // at least 1 hour
  int threads = 64;  // HTTP workers: one per open connection
  int64_t session_idle_ms = 10'000;
  int max_sessions = 256;
  int64_t stop_grace_ms = 0;       // SIGTERM: /readyz fails this long before the listener closes
  int lock_wait_timeout_s = 2;     // CoordinatorOptions::lock_wait_timeout_s
  int max_connections_per_shard = 0;  // CoordinatorOptions::max_connections_per_shard (0: none)
  // Stores, with the passwords put in (never print these: use the redacted forms).
  std::vector<std::string> shard_urls, redis_urls;
  std::string amqp_url;
  std::vector<std::string> redacted_shards, redacted_redis;
  std::string redacted_amqp;
  // Passwords, so that logs and errors can be checked not to contain them.
  std::vector<std::string> secrets;
  // [statements]: name -> SQL.
  std::map<std::string, std::string> statements;
  // Warnings met while loading (a password written into a URL), for the log.
  std::vector<std::string> warnings;
};

// Reads and checks the file. Errors name the file, the key and what is wrong; they never
// contain a password (a URL is shown redacted).
seigo::Result<Config> LoadConfig(const std::string& path);
// The same from text (tests); `env` stands in for getenv.
seigo::Result<Config> ParseConfig(const std::string& text, const std::string& origin);

// Replaces every occurrence of each secret in `text` with "***".
std::string Scrub(std::string text, const std::vector<std::string>& secrets);

}  // namespace seigod

#endif  // SEIGOD_CONFIG_H_
