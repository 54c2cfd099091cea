// Shared pieces of the `seigo` command-line tool.
#ifndef SEIGO_TOOLS_CLI_H_
#define SEIGO_TOOLS_CLI_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "seigo/coordinator.h"

namespace seigo::cli {

// Exit codes of `seigo` (documented in doc/cli.md; keep in step).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;        // audit found violations / the operation failed
inline constexpr int kExitUsage = 2;         // bad command line or malformed input
inline constexpr int kExitUnavailable = 3;   // a shard is unreachable, refused us, or too old
inline constexpr int kExitInDoubt = 4;       // recover: transactions remain in doubt
inline constexpr int kExitLimbo = 5;         // recover: a branch is stuck in the MariaDB limbo
                                             // state; restart that server, then recover

// Options every shard-touching subcommand shares.
struct Common {
  std::string shards;
  std::string redis;                 // Redis URLs (--redis, $SEIGO_REDIS)
  std::string amqp;                  // RabbitMQ URL (--amqp, $SEIGO_AMQP)
  bool redis_unsafe_durability = false;
  int lock_wait_timeout_s = 2;
  int64_t txn_timeout_ms = 10'000;
};

// Opens a coordinator for a tool: no background resolver (tools run passes explicitly).
// `prepare_schema` false for tools that promise to change nothing (`seigo status`).
// On failure prints the error to stderr and stores the exit code.
// `tweak`, if given, adjusts the options before opening.
std::unique_ptr<Coordinator> OpenForTool(
    const Common& c, int* exit_code, bool background = false, bool prepare_schema = true,
    const std::function<void(CoordinatorOptions&)>& tweak = nullptr);

// The demos' load loop: runs client(0), ..., client(clients - 1) on their own threads and, until
// `end` (or *stop turns true), prints progress(seconds since `start`) to stderr once a second (one
// updating line on a terminal, one line each otherwise); then waits for the clients.
void RunClients(int clients, std::chrono::steady_clock::time_point start,
                std::chrono::steady_clock::time_point end, const std::function<void(int)>& client,
                const std::function<std::string(double)>& progress,
                const std::atomic<bool>* stop = nullptr);

// A demo's setup first finishes what is in doubt: leftover prepared branches would hold locks
// that its DROP TABLE waits on. kExitOk if nothing is left; otherwise prints why and returns
// kExitInDoubt (or kExitUnavailable when a shard could not be scanned).
int FinishInDoubtBeforeSetup(Coordinator& c);

// printf into a std::string (for progress lines).
std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Exit code for a failed Status.
int ExitCodeFor(const Status& s);

int DemoSetup(const Common& c, int64_t players, int items);
int DemoRun(const Common& c, int clients, double seconds, const std::string& mode);
int DemoAudit(const Common& c);
int RaidSetup(const Common& c, int64_t players, int64_t bosses, int64_t hp);
int RaidRun(const Common& c, int clients, double seconds, const std::string& mode);
int RaidAudit(const Common& c);
int GachaSetup(const Common& c, int64_t players, int64_t gold);
int GachaRun(const Common& c, int clients, double seconds, const std::string& mode);
int GachaConsume(const Common& c, const std::string& mode, double idle_exit_s, int prefetch);
int GachaAudit(const Common& c);
// `seigo check` (tools/check.cc): nagios exit codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
int Check(const std::string& url, const std::string& warn, const std::string& crit,
          int timeout_s);

}  // namespace seigo::cli

#endif  // SEIGO_TOOLS_CLI_H_
