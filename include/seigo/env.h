// Env: everything the protocol core needs from the outside world besides participants — time,
// sleep, randomness and fault hooks. The core never reads a clock, sleeps, or draws a random
// number on its own, so the deterministic simulator (sim/) can run it with a simulated clock and
// a seeded generator and replay any run exactly.
//
// Thread-safety: the real Env (DefaultEnv()) is thread-safe. A simulated Env belongs to one
// simulation.
#ifndef SEIGO_ENV_H_
#define SEIGO_ENV_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

namespace seigo {

// Named places in the protocol where a test may make the process die (doc/protocol.md lists
// what is durable at each; doc/outbox.md for the relay's and the consumer's). Each is reached by
// the coordinator, the resolver, the relay or the consumer.
enum class CrashSite {
  kBeforePrepare,        // work done on every branch, nothing prepared yet
  kAfterPrepare,         // after each successful XA PREPARE (fires once per branch)
  kBeforeDecision,       // every other branch prepared, decider not yet committed
  kAfterDecision,        // decider committed (commit point passed), phase 2 not started
  kDuringPhase2,         // after each XA COMMIT of phase 2
  kResolverAfterFence,   // a resolver wrote an abort decision, branches untouched
  kResolverBeforeApply,  // a resolver knows the outcome, is about to commit/roll back a branch
  kRelayAfterPublish,    // the relay published a batch and has its confirms; outbox not settled
  kConsumerBeforeCommit,  // a delivery's handler ran inside its transaction; not committed
  kConsumerAfterCommit,   // a delivery's transaction committed; the message not acknowledged
};
const char* CrashSiteName(CrashSite site);  // "after_prepare", ...
bool ParseCrashSite(std::string_view name, CrashSite* out);
inline constexpr int kCrashSiteCount = 10;

class Env {
 public:
  virtual ~Env() = default;
  // Wall-clock time in unix milliseconds. Deadlines are compared against the decider server's
  // clock at the commit point; this clock only sets them and paces retries.
  virtual int64_t NowMs() = 0;
  virtual void SleepMs(int64_t ms) = 0;
  // A uniformly distributed 64-bit number. Gids are drawn from it, so the real Env must be
  // seeded from a source unique per process (it uses std::random_device).
  virtual uint64_t Random64() = 0;
  // Called when the protocol reaches `site`. The default does nothing. The real Env kills the
  // process with SIGKILL when the environment variable SEIGO_CRASH_AT names the site (format
  // "site" or "site:N" = the N-th time it is reached, counted per process); the simulator may
  // crash the simulated process. Inert unless armed: one predictable branch per site.
  virtual void CrashPoint(CrashSite site) { (void)site; }
  // Runs fn(0) ... fn(n-1) and returns when all have returned. The resolver hands each shard's
  // work to it, so that shards are served at once without the core owning threads. The default
  // runs them one after another, in order (what the simulator uses: deterministic); the real
  // Env runs them on threads of their own. fn must be safe to run concurrently for distinct i.
  virtual void ForEach(size_t n, const std::function<void(size_t)>& fn) {
    for (size_t i = 0; i < n; ++i) fn(i);
  }
};

// The process-wide real Env: system clock, thread sleep, per-thread random generators seeded
// from std::random_device, crash points armed by SEIGO_CRASH_AT. Never destroyed.
Env* DefaultEnv();

}  // namespace seigo

#endif  // SEIGO_ENV_H_
