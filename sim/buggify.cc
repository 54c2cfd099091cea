#include "sim/buggify.h"

#include <cstdio>

namespace seigo::sim {
namespace {

constexpr double kSiteOnProbability = 0.25;
constexpr double kRareFireProbability = 0.25;
constexpr double kHotMin = 0.002, kHotMax = 0.10;

// Rate range of a hot site whose every firing costs a lot of simulated time.
bool IsExpensive(FaultSite s) {
  return s == FaultSite::kLongProcessPause || s == FaultSite::kShardCrash ||
         s == FaultSite::kDstStep;
}

bool IsOptIn(FaultSite s) {
  (void)s;
  return false;  // every site is switched on by chance now (closure_hides_commit was opt-in
                 // until the classifier became an allowlist)
}

bool IsWorld(FaultSite s) {
  return s == FaultSite::kTwoDeployments || s == FaultSite::kLongForeignSnapshot ||
         s == FaultSite::kForeignXaUser;
}

bool IsHot(FaultSite s) {
  switch (s) {
    case FaultSite::kDeadlock:
    case FaultSite::kLockWaitTimeout:
    case FaultSite::kLostBeforeExecute:
    case FaultSite::kLostAfterExecute:
    case FaultSite::kExecutedLate:
    case FaultSite::kNetworkDelay:
    case FaultSite::kShardCrash:
    case FaultSite::kShardClockStep:
    case FaultSite::kCoordinatorCrash:
    case FaultSite::kResolverCrash:
    case FaultSite::kProcessPause:
    case FaultSite::kLongProcessPause:
    case FaultSite::kProcessClockStep:
    case FaultSite::kCommitStatementError:
    case FaultSite::kDstStep:
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* FaultSiteName(FaultSite site) {
  switch (site) {
    case FaultSite::kDeadlock:
      return "deadlock";
    case FaultSite::kLockWaitTimeout:
      return "lock_wait_timeout";
    case FaultSite::kLostBeforeExecute:
      return "lost_before_execute";
    case FaultSite::kLostAfterExecute:
      return "lost_after_execute";
    case FaultSite::kExecutedLate:
      return "executed_late";
    case FaultSite::kNetworkDelay:
      return "network_delay";
    case FaultSite::kSlowDisconnectNotice:
      return "slow_disconnect_notice";
    case FaultSite::kShardCrash:
      return "shard_crash";
    case FaultSite::kLongShardOutage:
      return "long_shard_outage";
    case FaultSite::kShardClockStep:
      return "shard_clock_step";
    case FaultSite::kCoordinatorCrash:
      return "coordinator_crash";
    case FaultSite::kResolverCrash:
      return "resolver_crash";
    case FaultSite::kProcessPause:
      return "process_pause";
    case FaultSite::kLongProcessPause:
      return "long_process_pause";
    case FaultSite::kProcessClockStep:
      return "process_clock_step";
    case FaultSite::kCrashBeforePrepare:
      return "crash@before_prepare";
    case FaultSite::kCrashAfterPrepare:
      return "crash@after_prepare";
    case FaultSite::kCrashBeforeDecision:
      return "crash@before_decision";
    case FaultSite::kCrashAfterDecision:
      return "crash@after_decision";
    case FaultSite::kCrashDuringPhase2:
      return "crash@during_phase2";
    case FaultSite::kCrashResolverAfterFence:
      return "crash@resolver_after_fence";
    case FaultSite::kCrashResolverBeforeApply:
      return "crash@resolver_before_apply";
    case FaultSite::kPhase2Delay:
      return "phase2_delay";
    case FaultSite::kPhase2Drop:
      return "phase2_drop";
    case FaultSite::kClosureIgnoresError:
      return "closure_ignores_error";
    case FaultSite::kClosureEndsTransaction:
      return "closure_ends_transaction";
    case FaultSite::kClosureChangesSession:
      return "closure_changes_session";
    case FaultSite::kCommitStatementError:
      return "commit_statement_error";
    case FaultSite::kSlowTeardown:
      return "slow_teardown";
    case FaultSite::kDstStep:
      return "dst_step";
    case FaultSite::kClosureHidesCommit:
      return "closure_hides_commit";
    case FaultSite::kTwoDeployments:
      return "two_deployments";
    case FaultSite::kLongForeignSnapshot:
      return "long_foreign_snapshot";
    case FaultSite::kForeignXaUser:
      return "foreign_xa_user";
    case FaultSite::kCount:
      break;
  }
  return "?";
}

FaultSite CrashPointSite(CrashSite site) {
  switch (site) {
    case CrashSite::kBeforePrepare:
      return FaultSite::kCrashBeforePrepare;
    case CrashSite::kAfterPrepare:
      return FaultSite::kCrashAfterPrepare;
    case CrashSite::kBeforeDecision:
      return FaultSite::kCrashBeforeDecision;
    case CrashSite::kAfterDecision:
      return FaultSite::kCrashAfterDecision;
    case CrashSite::kDuringPhase2:
      return FaultSite::kCrashDuringPhase2;
    case CrashSite::kResolverAfterFence:
      return FaultSite::kCrashResolverAfterFence;
    case CrashSite::kResolverBeforeApply:
      return FaultSite::kCrashResolverBeforeApply;
    case CrashSite::kRelayAfterPublish:
    case CrashSite::kConsumerBeforeCommit:
    case CrashSite::kConsumerAfterCommit:
      break;  // not reached in this simulation: seigo_sim_outbox crashes the relay there
  }
  return FaultSite::kCount;
}

bool ParseFaultSite(std::string_view name, FaultSite* out) {
  for (int i = 0; i < static_cast<int>(FaultSite::kCount); ++i) {
    if (name == FaultSiteName(static_cast<FaultSite>(i))) {
      *out = static_cast<FaultSite>(i);
      return true;
    }
  }
  return false;
}

std::string FaultSiteList() {
  std::string out;
  for (int i = 0; i < static_cast<int>(FaultSite::kCount); ++i) {
    if (!out.empty()) out += ", ";
    out += FaultSiteName(static_cast<FaultSite>(i));
  }
  return out;
}

Buggify::Buggify(Rng* rng, const std::vector<FaultSite>& forced) : rng_(rng) {
  for (size_t i = 0; i < sites_.size(); ++i) {
    Site& s = sites_[i];
    s.enabled = rng_->Chance(kSiteOnProbability);
    const auto site = static_cast<FaultSite>(i);
    if (IsOptIn(site)) s.enabled = false;  // drawn all the same: forcing it changes no other draw
    if (IsWorld(site)) {
      s.probability = 1;
    } else if (!IsHot(site)) {
      s.probability = kRareFireProbability;
    } else if (IsExpensive(site)) {
      s.probability = rng_->LogUniform(kHotMin / 4, kHotMax / 10);
    } else {
      s.probability = rng_->LogUniform(kHotMin, kHotMax);
    }
  }
  // After the draws, so that forcing a site leaves every other site's draw as it was.
  for (FaultSite f : forced) {
    Site& s = sites_[Index(f)];
    s.enabled = true;
    s.probability = IsWorld(f)       ? 1
                    : !IsHot(f)      ? kRareFireProbability
                    : IsExpensive(f) ? kHotMax / 10
                                     : kHotMax;
  }
}

bool Buggify::Fire(FaultSite site) {
  Site& s = sites_[Index(site)];
  if (!active_ || !s.enabled) return false;
  if (s.probability >= 1) {
    ++s.fired;
    return true;
  }
  if (!rng_->Chance(s.probability)) return false;
  ++s.fired;
  return true;
}

uint64_t Buggify::total_fired() const {
  uint64_t n = 0;
  for (const Site& s : sites_) n += s.fired;
  return n;
}

std::string Buggify::Describe() const {
  std::string out;
  for (size_t i = 0; i < sites_.size(); ++i) {
    if (!sites_[i].enabled) continue;
    char buf[80];
    std::snprintf(buf, sizeof buf, "%s%s(%.1f%%)", out.empty() ? "" : " ",
                  FaultSiteName(static_cast<FaultSite>(i)), sites_[i].probability * 100);
    out += buf;
  }
  return out.empty() ? "none" : out;
}

}  // namespace seigo::sim
