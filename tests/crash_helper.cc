// A coordinator process for crash tests: runs ONE transaction that writes (key, value) into
// `table` on the shard of each key given, then exits 0 if it committed. Tests arm a crash point
// with SEIGO_CRASH_AT (env.h) so that this process kills itself mid-protocol.
//   crash_helper TABLE TXN_TIMEOUT_MS VALUE KEY [KEY...]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "seigo/coordinator.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: crash_helper TABLE TXN_TIMEOUT_MS VALUE KEY [KEY...]\n");
    return 2;
  }
  const char* shards = std::getenv("SEIGO_TEST_SHARDS");
  seigo::CoordinatorOptions o;
  o.shards = shards ? shards : "";
  o.resolver_interval_ms = 0;
  o.protocol.txn_timeout_ms = std::atoll(argv[2]);
  o.protocol.max_attempts = 1;
  auto c = seigo::Coordinator::Open(o);
  if (!c.ok()) {
    std::fprintf(stderr, "crash_helper: %s\n", c.status().ToString().c_str());
    return 3;
  }
  const std::string table = argv[1];
  const int64_t value = std::atoll(argv[3]);
  std::vector<int64_t> keys;
  for (int i = 4; i < argc; ++i) keys.push_back(std::atoll(argv[i]));
  seigo::TxResult r = (*c)->Run([&](seigo::Tx& tx) -> seigo::Status {
    for (int64_t k : keys) {
      auto q = tx.Exec(k, "INSERT INTO " + table + " (k, v) VALUES (?, ?)", {k, value});
      if (!q.ok()) return q.status();
    }
    return seigo::Status::OK();
  });
  (*c)->DrainPhase2();
  std::printf("%s %s\n", seigo::TxStateName(r.state), r.gid.c_str());
  return r.committed() ? 0 : 1;
}
