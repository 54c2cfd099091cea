// Moves gold between two players atomically, wherever their shards are.
//   transfer FROM TO AMOUNT      (shards from $SEIGO_SHARDS; needs `seigo demo setup` tables)
#include <cstdio>
#include <cstdlib>

#include <seigo/coordinator.h>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: transfer FROM TO AMOUNT\n");
    return 2;
  }
  const int64_t from = std::atoll(argv[1]), to = std::atoll(argv[2]), amount = std::atoll(argv[3]);
  const char* shards = std::getenv("SEIGO_SHARDS");
  seigo::CoordinatorOptions options;
  options.shards = shards ? shards : "";
  auto coordinator = seigo::Coordinator::Open(options);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "transfer: %s\n", coordinator.status().ToString().c_str());
    return 3;
  }
  seigo::TxResult r = (*coordinator)->Run([&](seigo::Tx& tx) -> seigo::Status {
    SEIGO_RETURN_IF_ERROR(tx.ExecExpect(from, 1,
        "UPDATE players SET gold = gold - ? WHERE player_id = ? AND gold >= ?",
        {amount, from, amount}));
    return tx.ExecExpect(to, 1, "UPDATE players SET gold = gold + ? WHERE player_id = ?",
                         {amount, to});
  });
  std::printf("%s after %d attempt(s)%s%s\n", seigo::TxStateName(r.state), r.attempts,
              r.committed() ? "" : ": ", r.committed() ? "" : r.status.ToString().c_str());
  return r.committed() ? 0 : 1;
}
