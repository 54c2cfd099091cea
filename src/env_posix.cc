// The real Env: system clock, sleeping threads, per-thread random generators and crash points
// armed by the environment variable SEIGO_CRASH_AT (doc/testing-hooks.md).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "seigo/env.h"

namespace seigo {

const char* CrashSiteName(CrashSite site) {
  switch (site) {
    case CrashSite::kBeforePrepare: return "before_prepare";
    case CrashSite::kAfterPrepare: return "after_prepare";
    case CrashSite::kBeforeDecision: return "before_decision";
    case CrashSite::kAfterDecision: return "after_decision";
    case CrashSite::kDuringPhase2: return "during_phase2";
    case CrashSite::kResolverAfterFence: return "resolver_after_fence";
    case CrashSite::kResolverBeforeApply: return "resolver_before_apply";
    case CrashSite::kRelayAfterPublish: return "relay_after_publish";
    case CrashSite::kConsumerBeforeCommit: return "consumer_before_commit";
    case CrashSite::kConsumerAfterCommit: return "consumer_after_commit";
  }
  return "unknown";
}

bool ParseCrashSite(std::string_view name, CrashSite* out) {
  for (int i = 0; i < kCrashSiteCount; ++i) {
    auto s = static_cast<CrashSite>(i);
    if (name == CrashSiteName(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

namespace {

class PosixEnv final : public Env {
 public:
  PosixEnv() {
    // SEIGO_CRASH_AT=site or site:N. Anything unparsable is ignored loudly rather than
    // silently arming nothing.
    const char* spec = std::getenv("SEIGO_CRASH_AT");
    if (spec == nullptr || *spec == '\0') return;
    std::string s(spec);
    size_t colon = s.find(':');
    std::string name = s.substr(0, colon);
    long nth = 1;
    if (colon != std::string::npos) nth = std::strtol(s.c_str() + colon + 1, nullptr, 10);
    CrashSite site;
    if (!ParseCrashSite(name, &site) || nth < 1) {
      std::fprintf(stderr, "seigo: ignoring malformed SEIGO_CRASH_AT='%s'\n", spec);
      return;
    }
    armed_ = true;
    site_ = site;
    remaining_.store(nth);
  }

  int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void SleepMs(int64_t ms) override {
    if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  }

  // Per-thread generators, reseeded in a child after fork(): otherwise parent and child would
  // draw the same gids (the child's thread-local state is a copy of the parent's).
  uint64_t Random64() override {
    struct Gen {
      std::mt19937_64 gen;
      uint64_t fork_generation = ~uint64_t{0};
    };
    thread_local Gen g;
    const uint64_t now = ForkGeneration().load(std::memory_order_relaxed);
    if (g.fork_generation != now) {
      std::random_device rd;
      std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
      g.gen.seed(seq);
      g.fork_generation = now;
    }
    return g.gen();
  }

  static std::atomic<uint64_t>& ForkGeneration() {
    static std::atomic<uint64_t> generation{0};
    static const bool registered = [] {
      ::pthread_atfork(nullptr, nullptr, [] { ForkGeneration().fetch_add(1); });
      return true;
    }();
    (void)registered;
    return generation;
  }

  // One thread per item after the first, which runs on the caller's thread (n is a shard
  // count: small).
  void ForEach(size_t n, const std::function<void(size_t)>& fn) override {
    if (n <= 1) {
      if (n == 1) fn(0);
      return;
    }
    std::vector<std::thread> threads;
    threads.reserve(n - 1);
    for (size_t i = 1; i < n; ++i) threads.emplace_back([&fn, i] { fn(i); });
    fn(0);
    for (std::thread& t : threads) t.join();
  }

  void CrashPoint(CrashSite site) override {
    if (!armed_ || site != site_) return;
    if (remaining_.fetch_sub(1) == 1) {
      std::fprintf(stderr, "seigo: SEIGO_CRASH_AT=%s reached, killing the process\n",
                   CrashSiteName(site));
      std::fflush(stderr);
      ::kill(::getpid(), SIGKILL);
    }
  }

 private:
  bool armed_ = false;
  CrashSite site_ = CrashSite::kBeforePrepare;
  std::atomic<long> remaining_{0};
};

}  // namespace

Env* DefaultEnv() {
  static Env* env = new PosixEnv();
  return env;
}

}  // namespace seigo
