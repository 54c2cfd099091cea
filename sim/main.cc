// seigo_sim: runs the deterministic simulation for one seed or many (sim/README.md).
//
// Exit codes: 0 = every seed passed (or, with --expect-violation, a violation was found);
// 1 = a violation was found (or, with --expect-violation, none was found; or a determinism
// check failed); 2 = usage error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "sim/simulation.h"

namespace {

using seigo::sim::SeedResult;
using seigo::sim::Variant;

constexpr int kExitOk = 0;
constexpr int kExitViolation = 1;
constexpr int kExitUsage = 2;

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: seigo_sim [--seed N | --seeds COUNT [--first-seed N]] [--variant NAME]\n"
      "                 [--expect-violation] [--max-seeds N] [--check-determinism]\n"
      "                 [--force-fault SITE]... [--trace]\n"
      "\n"
      "  --seed N             run one seed and print its world, faults and result\n"
      "  --seeds COUNT        run COUNT seeds starting at --first-seed (default 1)\n"
      "  --variant NAME       %s (default correct)\n"
      "  --expect-violation   self-test: run seeds until the checker catches a violation;\n"
      "                       exit 0 if it does within --max-seeds (default 2000), else 1\n"
      "  --force-fault SITE   switch fault site SITE on in every seed, at its highest rate\n"
      "                       (repeatable; sites: see sim/README.md or a wrong name)\n"
      "  --check-determinism  run every seed twice and compare the fingerprints\n"
      "  --trace              print every event of the seed (use with --seed)\n"
      "  --find-coverage NAME with --seeds: also list the seeds where coverage counter NAME\n"
      "                       (as printed in the coverage line) is non-zero\n"
      "\n"
      "exit codes: 0 ok, 1 violation found (or not found with --expect-violation), 2 usage\n",
      seigo::sim::VariantList());
}

bool ParseU64(const char* s, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

// Options that shape every seed (and so belong in a replay command).
seigo::sim::RunOptions g_options;

std::string ReplayCommand(const char* argv0, uint64_t seed, Variant v) {
  std::string cmd = std::string(argv0) + " --seed " + std::to_string(seed);
  if (v != Variant::kCorrect) cmd += std::string(" --variant ") + seigo::sim::VariantName(v);
  for (seigo::sim::FaultSite f : g_options.forced_faults) {
    cmd += std::string(" --force-fault ") + seigo::sim::FaultSiteName(f);
  }
  return cmd;
}

SeedResult Run(uint64_t seed, Variant v, bool trace = false) {
  seigo::sim::RunOptions o = g_options;
  o.variant = v;
  o.trace = trace;
  return seigo::sim::RunSeed(seed, o);
}

void PrintViolation(const char* argv0, const SeedResult& r, Variant v) {
  std::printf("VIOLATION in seed %llu (variant %s):\n", static_cast<unsigned long long>(r.seed),
              seigo::sim::VariantName(v));
  for (const std::string& m : r.violations) std::printf("  - %s\n", m.c_str());
  std::printf("  world:  %s\n  faults: %s\n  replay: %s\n", r.world.c_str(), r.faults.c_str(),
              ReplayCommand(argv0, r.seed, v).c_str());
}

struct Totals {
  uint64_t seeds = 0, violations = 0;
  seigo::sim::Checker::Stats s;
  uint64_t faults = 0, passes = 0, process_crashes = 0, shard_crashes = 0, switches = 0;
  int64_t simulated_ms = 0;
  seigo::sim::Coverage coverage;

  void Add(const SeedResult& r) {
    coverage.Merge(r.coverage);
    ++seeds;
    violations += r.ok() ? 0 : 1;
    s.txns += r.stats.txns;
    s.committed += r.stats.committed;
    s.aborted += r.stats.aborted;
    s.gave_up += r.stats.gave_up;
    s.unknown += r.stats.unknown;
    s.crashed += r.stats.crashed;
    s.multi_shard_committed += r.stats.multi_shard_committed;
    s.attempts += r.stats.attempts;
    s.commit_decisions += r.stats.commit_decisions;
    s.abort_decisions += r.stats.abort_decisions;
    s.decisions_forgotten += r.stats.decisions_forgotten;
    s.phase2_ok += r.stats.phase2_ok;
    s.phase2_left += r.stats.phase2_left;
    s.abort_reported_for_committed += r.stats.abort_reported_for_committed;
    s.audits_committed += r.stats.audits_committed;
    s.read_only_committed += r.stats.read_only_committed;
    s.detector_victims += r.stats.detector_victims;
    s.max_victims_one_run = std::max(s.max_victims_one_run, r.stats.max_victims_one_run);
    faults += r.faults_fired;
    passes += r.resolver_passes;
    process_crashes += r.process_crashes;
    shard_crashes += r.shard_crashes;
    switches += r.fiber_switches;
    simulated_ms += r.simulated_ms;
  }
};

void PrintSummary(const Totals& t, double seconds) {
  std::printf(
      "sim: %llu seeds, %llu violations, %llu txns committed (%llu multi-shard), %llu aborted, "
      "%llu gave_up, %llu outcome_unknown, %llu crashed with their coordinator; "
      "decisions %llu commit / %llu abort, %llu collected; phase 2 %llu ok / %llu left to the "
      "resolver; %llu bank audits committed (totals checked; %llu read-only); %llu attempts "
      "interrupted by a deadlock detector (at most %llu in one Run); %llu resolver passes; %llu faults, %llu process crashes, %llu shard crashes; "
      "%.0f simulated hours in %.1f s\n",
      static_cast<unsigned long long>(t.seeds), static_cast<unsigned long long>(t.violations),
      static_cast<unsigned long long>(t.s.committed),
      static_cast<unsigned long long>(t.s.multi_shard_committed),
      static_cast<unsigned long long>(t.s.aborted), static_cast<unsigned long long>(t.s.gave_up),
      static_cast<unsigned long long>(t.s.unknown), static_cast<unsigned long long>(t.s.crashed),
      static_cast<unsigned long long>(t.s.commit_decisions),
      static_cast<unsigned long long>(t.s.abort_decisions),
      static_cast<unsigned long long>(t.s.decisions_forgotten),
      static_cast<unsigned long long>(t.s.phase2_ok),
      static_cast<unsigned long long>(t.s.phase2_left),
      static_cast<unsigned long long>(t.s.audits_committed),
      static_cast<unsigned long long>(t.s.read_only_committed),
      static_cast<unsigned long long>(t.s.detector_victims),
      static_cast<unsigned long long>(t.s.max_victims_one_run),
      static_cast<unsigned long long>(t.passes),
      static_cast<unsigned long long>(t.faults), static_cast<unsigned long long>(t.process_crashes),
      static_cast<unsigned long long>(t.shard_crashes), static_cast<double>(t.simulated_ms) / 3.6e6,
      seconds);
  std::printf("sim: coverage: %s\n", t.coverage.Describe().c_str());
  if (t.s.abort_reported_for_committed != 0) {
    std::printf(
        "sim: note: %llu resolver passes reported abort applied to a branch that had "
        "committed long before (stalled pass, decision and marker collected meanwhile; "
        "nothing was changed)\n",
        static_cast<unsigned long long>(t.s.abort_reported_for_committed));
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 0, seeds = 0, first_seed = 1, max_seeds = 2000;
  std::string find_coverage;
  bool one_seed = false, expect_violation = false, check_determinism = false, trace = false;
  bool have_seeds = false;
  Variant variant = Variant::kCorrect;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](uint64_t* out) {
      if (i + 1 >= argc || !ParseU64(argv[i + 1], out)) {
        std::fprintf(stderr, "seigo_sim: %s needs a number\n", argv[i]);
        std::exit(kExitUsage);
      }
      ++i;
    };
    if (a == "--seed") {
      value(&seed);
      one_seed = true;
    } else if (a == "--seeds") {
      value(&seeds);
      have_seeds = true;
    } else if (a == "--first-seed") {
      value(&first_seed);
    } else if (a == "--max-seeds") {
      value(&max_seeds);
    } else if (a == "--variant") {
      if (i + 1 >= argc || !seigo::sim::ParseVariant(argv[i + 1], &variant)) {
        std::fprintf(stderr, "seigo_sim: --variant needs one of: %s\n", seigo::sim::VariantList());
        return kExitUsage;
      }
      ++i;
    } else if (a == "--expect-violation") {
      expect_violation = true;
    } else if (a == "--check-determinism") {
      check_determinism = true;
    } else if (a == "--strict") {
      // Accepted so that old replay commands still work: every check is strict.
    } else if (a == "--force-fault") {
      seigo::sim::FaultSite f;
      if (i + 1 >= argc || !seigo::sim::ParseFaultSite(argv[i + 1], &f)) {
        std::fprintf(stderr, "seigo_sim: --force-fault needs one of: %s\n",
                     seigo::sim::FaultSiteList().c_str());
        return kExitUsage;
      }
      g_options.forced_faults.push_back(f);
      ++i;
    } else if (a == "--trace") {
      trace = true;
    } else if (a == "--find-coverage") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "seigo_sim: --find-coverage needs a counter name\n");
        return kExitUsage;
      }
      find_coverage = argv[++i];
    } else if (a == "--help" || a == "-h") {
      Usage(stdout);
      return kExitOk;
    } else {
      std::fprintf(stderr, "seigo_sim: unknown argument '%s'\n", argv[i]);
      Usage(stderr);
      return kExitUsage;
    }
  }
  if (one_seed + have_seeds + expect_violation > 1 ||
      (one_seed + have_seeds + expect_violation == 0)) {
    std::fprintf(stderr, "seigo_sim: give exactly one of --seed, --seeds, --expect-violation\n");
    Usage(stderr);
    return kExitUsage;
  }
  if (trace && !one_seed) {
    std::fprintf(stderr, "seigo_sim: --trace works with --seed only\n");
    return kExitUsage;
  }

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  if (one_seed) {
    SeedResult r = Run(seed, variant, trace);
    std::printf("seed %llu (variant %s)\n  world:  %s\n  faults: %s\n",
                static_cast<unsigned long long>(seed), seigo::sim::VariantName(variant),
                r.world.c_str(), r.faults.c_str());
    Totals t;
    t.Add(r);
    PrintSummary(t, elapsed());
    std::printf("fingerprint %016llx\n", static_cast<unsigned long long>(r.fingerprint));
    if (check_determinism) {
      SeedResult again = Run(seed, variant);
      if (again.fingerprint != r.fingerprint) {
        std::printf("NOT DETERMINISTIC: second run gave fingerprint %016llx\n",
                    static_cast<unsigned long long>(again.fingerprint));
        return kExitViolation;
      }
    }
    if (!r.ok()) {
      PrintViolation(argv[0], r, variant);
      return kExitViolation;
    }
    std::printf("ok\n");
    return kExitOk;
  }

  if (expect_violation) {
    for (uint64_t s = first_seed; s < first_seed + max_seeds; ++s) {
      SeedResult r = Run(s, variant);
      if (!r.ok()) {
        PrintViolation(argv[0], r, variant);
        std::printf("caught: variant %s violated an invariant at seed %llu (%llu seeds, %.1f s)\n",
                    seigo::sim::VariantName(variant), static_cast<unsigned long long>(s),
                    static_cast<unsigned long long>(s - first_seed + 1), elapsed());
        return kExitOk;
      }
    }
    std::printf(
        "NOT CAUGHT: variant %s passed %llu seeds (%.1f s); the simulation is not sharp "
        "enough\n",
        seigo::sim::VariantName(variant), static_cast<unsigned long long>(max_seeds), elapsed());
    return kExitViolation;
  }

  Totals t;
  uint64_t shown = 0;
  bool nondeterministic = false;
  for (uint64_t s = first_seed; s < first_seed + seeds; ++s) {
    SeedResult r = Run(s, variant);
    if (check_determinism) {
      SeedResult again = Run(s, variant);
      if (again.fingerprint != r.fingerprint) {
        std::printf("NOT DETERMINISTIC: seed %llu gave fingerprints %016llx and %016llx\n",
                    static_cast<unsigned long long>(s),
                    static_cast<unsigned long long>(r.fingerprint),
                    static_cast<unsigned long long>(again.fingerprint));
        nondeterministic = true;
      }
    }
    t.Add(r);
    if (!find_coverage.empty()) {
      for (int c = 0; c < static_cast<int>(seigo::sim::Cov::kCount); ++c) {
        const auto cov = static_cast<seigo::sim::Cov>(c);
        if (find_coverage == seigo::sim::CovName(cov) && r.coverage.Get(cov) != 0) {
          std::printf("sim: seed %llu: %s=%llu\n", static_cast<unsigned long long>(s),
                      find_coverage.c_str(), static_cast<unsigned long long>(r.coverage.Get(cov)));
        }
      }
    }
    if (!r.ok() && shown++ < 10) PrintViolation(argv[0], r, variant);
    if (t.seeds % 1000 == 0) {
      std::printf("sim: %llu seeds done, %llu violations, %.1f s\n",
                  static_cast<unsigned long long>(t.seeds),
                  static_cast<unsigned long long>(t.violations), elapsed());
      std::fflush(stdout);
    }
  }
  PrintSummary(t, elapsed());
  return t.violations == 0 && !nondeterministic ? kExitOk : kExitViolation;
}
