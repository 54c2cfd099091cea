// One seed of the deterministic simulation (sim/README.md).
//
// RunSeed(seed) builds a world from the seed alone — 2-4 simulated MariaDB servers, one or two
// seigo deployments with a database on each of them, other applications on the servers, a
// trading workload per deployment, coordinator processes that run seigo's real
// core::Protocol::Run / FinishPhase2 / TrySettle / ResolvePass (the seigo_core library,
// unmodified), standalone resolver processes, and the faults switched on for this seed — runs it
// to the end, lets it settle with faults off (an operator, a restart probe, a final garbage
// collection), and checks the invariants. The same seed and variant always give the same schedule,
// the same result and the same fingerprint.
#ifndef SEIGO_SIM_SIMULATION_H_
#define SEIGO_SIM_SIMULATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "sim/buggify.h"
#include "sim/checker.h"
#include "sim/common.h"

namespace seigo::sim {

struct SeedResult {
  uint64_t seed = 0;
  std::vector<std::string> violations;  // empty = every invariant held
  uint64_t fingerprint = 0;             // equal for two runs of the same seed and variant
  Checker::Stats stats;
  uint64_t faults_fired = 0;
  uint64_t resolver_passes = 0;
  uint64_t process_crashes = 0;
  uint64_t shard_crashes = 0;
  uint64_t fiber_switches = 0;
  int64_t simulated_ms = 0;
  Coverage coverage;
  std::string world;   // the seed's configuration, one line
  std::string faults;  // the fault sites switched on, one line

  bool ok() const { return violations.empty(); }
};

struct RunOptions {
  Variant variant = Variant::kCorrect;
  bool trace = false;                    // print every event of the seed to stdout
  std::vector<FaultSite> forced_faults;  // switched on in every seed (Buggify)
};

SeedResult RunSeed(uint64_t seed, const RunOptions& options);

}  // namespace seigo::sim

#endif  // SEIGO_SIM_SIMULATION_H_
