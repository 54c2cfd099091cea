#include "sim/simulation.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "core/deadlock.h"
#include "core/protocol.h"
#include "seigo/shard_map.h"
#include "sim/buggify.h"
#include "sim/rng.h"
#include "sim/scheduler.h"
#include "sim/sim_participant.h"
#include "sim/sim_redis.h"

namespace seigo::sim {
namespace {

// Simulated time starts at a realistic unix time, so deadlines look like real ones.
constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr int64_t kInitialGold = 100;
constexpr int64_t kInitialItems = 5;
constexpr int64_t kNoMinimum = INT64_MIN / 4;
// Redis (issue 9): a few token counters per deployment, moved between by bounded increments
// and read-modify-writes; few, so that transactions meet on them.
constexpr int64_t kInitialTokens = 100;
constexpr int kTokens = 3;
// Safety nets against a runaway seed (a livelock in the simulated world is reported, not hung).
constexpr uint64_t kMaxSwitches = 20'000'000;
constexpr int kMaxFinalPasses = 200;
constexpr int64_t kFinalPassIntervalMs = 2'000;
// Deployment d's keys and transaction numbers are offset, so that they never collide.
constexpr int64_t kKeyOffset = 1'000'000;
constexpr int64_t kTxnOffset = 100'000;
constexpr int64_t kProbeTxnOffset = 50'000;
// The restart probe (issue 7, case 6): warm the pools with this many concurrent workers, restart
// every server, then run this many transactions one after the other.
constexpr int kProbeWarmWorkers = 3;
constexpr int kProbeWarmTxns = 2;
constexpr int kProbeTxns = 4;
// Invariant 18: without faults, a cross-shard lock cycle is broken within this long of forming
// (check_after_ms + one shared lock-wait snapshot of 110 ms + a pass interval + round trips).
constexpr int64_t kDeadlockBoundMs = 400;
// The probe's txn_timeout_ms (its decision rows are collectable that much later).
constexpr int64_t kDeadlockProbeTimeoutMs = 60'000;

int64_t GoldKey(int64_t offset, int player) {
  return offset + static_cast<int64_t>(player) * 10 + 1;
}
int64_t ItemsKey(int64_t offset, int player) {
  return offset + static_cast<int64_t>(player) * 10 + 2;
}
int64_t TokenKey(int64_t offset, int token) {
  return offset + 500'000 + static_cast<int64_t>(token) * 10 + 5;
}
std::string RedisKey(int64_t key) { return "k" + std::to_string(key); }
int64_t SkewKey(int64_t offset, int i) { return offset + 600'000 + static_cast<int64_t>(i) * 10 + 5; }
// Both skew keys start at kSkewFloor and only ever decrease; a transaction takes from one only
// if their sum stays >= kSkewFloor, which also keeps each of them >= 0.
constexpr int64_t kInitialSkew = 40;
constexpr int64_t kSkewFloor = 40;

enum class ProcessKind { kCoordinator, kResolver, kFinalResolver, kProbe };

class Simulation;

// The Env of one simulated process: its own clock (which may be stepped), sleeps that block its
// fiber, the seed's random numbers, and crash points that may kill it.
class SimEnv final : public Env {
 public:
  SimEnv(Simulation* sim, int process) : sim_(sim), process_(process) {}
  int64_t NowMs() override;
  void SleepMs(int64_t ms) override;
  uint64_t Random64() override;
  void CrashPoint(CrashSite site) override;
  void StepClock(int64_t delta_ms) {
    clock_offset_ = std::clamp<int64_t>(clock_offset_ + delta_ms, -10'000, 10'000);
  }

 private:
  Simulation* sim_;
  int process_;
  int64_t clock_offset_ = 0;
};

// One simulated OS process of one deployment. A coordinator process is what src/coordinator.cc
// builds around the protocol core: a worker running transactions (the application thread), a
// phase-2 worker, and a resolver thread that settles lost commits (Protocol::TrySettle) and runs
// ResolvePass.
struct Process {
  int id = 0;
  int deployment = 0;
  ProcessKind kind = ProcessKind::kCoordinator;
  int slot = 0;
  std::string name;
  bool alive = true;
  int fibers = 0;
  std::unique_ptr<SimEnv> env;
  std::vector<std::unique_ptr<SimParticipant>> participants;
  std::vector<std::unique_ptr<SimRedisParticipant>> redis;  // after the shards in `raw`
  std::vector<Participant*> raw;
  std::unique_ptr<core::Protocol> protocol;
  // Coordinator library state (declared after the participants: destroyed first).
  std::deque<core::Phase2Item> phase2;
  std::vector<core::LostCommit> lost;
  bool worker_done = false;
  bool phase2_done = false;
  WaitQueue phase2_ready;
  int busy_workers = 0;  // kProbe
};

struct Step {
  bool get = false;   // a read; in an audit plan, a locking read (LGET) of one gold row
  int64_t key = 0;
  int64_t delta = 0;
  int64_t min = kNoMinimum;
  bool redis = false;  // a token on Redis: a bounded increment, or (rmw) GET then SET
  bool rmw = false;
  // The write-skew probe: read both skew keys (b first if skew_b_first), and if their sum
  // stays >= kSkewFloor, take -delta from `key` (one of them) with a SET.
  bool skew = false;
  bool skew_b_first = false;
};

// One seigo deployment: its databases on the servers, its workload, its processes' settings.
struct Deployment {
  int index = 0;
  std::string id;    // 16 hex digits (seigo_shard.deployment)
  std::string name;  // "game_a"
  uint32_t shards = 2;
  std::vector<uint32_t> server_of;  // shard -> server
  uint32_t redis = 0;               // Redis instances (participants shards..shards+redis-1)
  // Two keys whose sum must never go below kSkewFloor (on two instances when there are two):
  // the write-skew probe's constraint, checked at the end of the seed.
  int64_t skew_a = 0, skew_b = 0;
  std::vector<uint32_t> redis_server_of;  // instance -> simulated Redis server
  std::vector<int> db_of;           // shard -> database id on that server
  int players = 4;
  int txns = 20;
  int coordinator_slots = 2;
  int standalone_resolvers = 1;
  bool coordinators_resolve = true;
  int64_t resolver_interval_ms = 500;
  bool long_gaps = false;
  int64_t key_offset = 0;
  int64_t txn_offset = 0;
  ProtocolOptions protocol;
  ResolverOptions resolver;
  // Phase2Mode (src/coordinator.cc): true = kBeforeReturn, Run() commits every branch first.
  bool phase2_before_return = true;
  // Running state.
  int next_txn = 0;
  int live_coordinators = 0;
  int pending_respawns = 0;
  std::vector<int> generation;  // per coordinator slot, for names
};

class Simulation final : public Network {
 public:
  Simulation(uint64_t seed, const RunOptions& options);
  ~Simulation() override;
  SeedResult Run();

  Scheduler& sched() { return sched_; }
  Rng& rng() { return rng_; }
  void OnCrashPoint(int process, CrashSite site);

  // Network
  void BeforeRoundTrip(int process, uint32_t server) override;
  void AfterRoundTrip(int process) override;
  void OneWayDelay() override;
  Delivery PickDelivery() override;
  int64_t NoticeDelayMs(bool clean_close) override;
  void ClientReadTimeout() override { sched_.Sleep(rng_.Range(20, 500)); }
  LateBatch LateBatchShape() override { return static_cast<LateBatch>(rng_.Uniform(3)); }
  CommitFailure PickCommitFailure() override;
  std::pair<int64_t, int64_t> TeardownMs() override;

 private:
  void DrawWorld();
  void DrawDeployment(Deployment& d, bool first);
  std::vector<Step> DrawTrade(const Deployment& d);
  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  Process* FindProcess(int id);
  Process& NewProcess(int deployment, ProcessKind kind, int slot, const std::string& name);
  void SpawnFiber(Process& p, const std::string& role, std::function<void(Process&)> body);
  void OnFiberExit(int process);
  void DestroyProcess(int process);
  void CrashProcess(Process& p, const char* why);
  [[noreturn]] void CrashCurrentProcess(Process& p, const char* why);
  void CrashServer(uint32_t server);
  void CrashRedis(uint32_t server);
  void OperatorRestart(uint32_t server, int64_t after_ms);
  void ForeignXaTick(uint32_t server);

  void SpawnCoordinator(int deployment, int slot);
  void SpawnResolver(int deployment, int slot);
  void CoordinatorWorker(Process& p);
  void Phase2Worker(Process& p);
  void ResolverThread(Process& p);
  void StandaloneResolver(Process& p);
  // Runs one transaction as src/coordinator.cc's Run does: with `inline_phase2`
  // (Phase2Mode::kBeforeReturn) every branch is committed before it "returns"; otherwise the
  // phase-2 items are handed out in `phase2_out`.
  void RunOneTxn(Process& p, int64_t txn, bool inline_phase2,
                 std::vector<core::Phase2Item>* phase2_out);
  void Operator(Process& op);
  bool Converge(Process& op);
  void RestartProbe(Process& op);
  void ProbeMain(Process& p);
  // The deadlock detector of a coordinator process (the library's detector thread).
  void DetectorThread(Process& p);
  // End of seed, no faults: a lock cycle across two shards between two processes must be broken
  // by the detector, at the younger transaction, within kDeadlockBoundMs (invariant 18).
  void DeadlockProbe(Process& op);
  int64_t ResolverSleepMs(const Deployment& d);
  ResolveReport ResolveOnce(Process& p, const ResolverOptions& options);
  void OnLimboReported(const Process& p, uint32_t shard);
  void OnPhase2Result(const Process& p, const Xid& xid, const Status& s);
  TxFn MakeClosure(int64_t txn);
  bool WorkloadFinished() const;
  bool AllSettled() const;
  void Teardown();

  const uint64_t seed_;
  const Variant variant_;
  Rng rng_;
  Tracer tracer_;
  Buggify faults_;
  Checker checker_;
  Scheduler sched_;
  uint32_t servers_count_ = 2;
  int64_t lock_wait_timeout_ms_ = 200;
  std::vector<Deployment> deps_;
  uint64_t next_id_ = 0;
  Coverage coverage_;
  std::vector<std::unique_ptr<SimServer>> servers_;
  std::vector<std::unique_ptr<SimRedisServer>> redis_servers_;
  std::map<std::string, int64_t> gid_tags_;  // gid -> attempt tag (for Redis effects)
  std::map<int64_t, int64_t> initial_rows_;
  std::map<int64_t, std::vector<Step>> plans_;  // by txn id
  std::map<int64_t, int64_t> audits_;  // txn id -> the gold total an audit of it must read
  std::map<int64_t, int> txn_deployment_;
  std::map<int, std::unique_ptr<Process>> processes_;
  int next_process_id_ = 1;
  bool stop_resolvers_ = false;
  bool stop_foreign_ = false;
  bool final_done_ = false;
  bool probe_restarted_ = false;
  int64_t deadlock_probe_timeout_ms_ = 10'000;  // the longest txn_timeout_ms DeadlockProbe used
  std::set<uint32_t> restart_pending_;  // servers an operator is about to restart
  uint64_t resolver_passes_ = 0, process_crashes_ = 0, shard_crashes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// SimEnv

int64_t SimEnv::NowMs() { return sim_->sched().now() + clock_offset_; }
void SimEnv::SleepMs(int64_t ms) { sim_->sched().Sleep(ms); }
uint64_t SimEnv::Random64() { return sim_->rng().Next(); }
void SimEnv::CrashPoint(CrashSite site) { sim_->OnCrashPoint(process_, site); }

// ---------------------------------------------------------------------------------------------
// Set-up

Simulation::Simulation(uint64_t seed, const RunOptions& options)
    : seed_(seed),
      variant_(options.variant),
      rng_(seed),
      faults_(&rng_, options.forced_faults),
      checker_(&tracer_),
      sched_(&rng_, kStartMs) {
  if (options.trace) tracer_.Enable([this] { return sched_.now(); }, kStartMs);
  DrawWorld();
  ShardContext ctx;
  ctx.sched = &sched_;
  ctx.faults = &faults_;
  ctx.checker = &checker_;
  ctx.tracer = &tracer_;
  ctx.net = this;
  ctx.variant = variant_;
  ctx.lock_wait_timeout_ms = lock_wait_timeout_ms_;
  ctx.next_id = &next_id_;
  ctx.coverage = &coverage_;
  for (uint32_t i = 0; i < servers_count_; ++i) {
    servers_.push_back(std::make_unique<SimServer>(i, ctx));
  }
  uint32_t redis_servers = 0;
  for (const Deployment& d : deps_) {
    for (uint32_t r : d.redis_server_of) redis_servers = std::max(redis_servers, r + 1);
  }
  for (uint32_t i = 0; i < redis_servers; ++i) {
    redis_servers_.push_back(std::make_unique<SimRedisServer>(
        i, ctx, [this](const std::string& gid) {
          auto t = gid_tags_.find(gid);
          return t == gid_tags_.end() ? int64_t{0} : t->second;
        }));
  }
  for (Deployment& d : deps_) {
    for (uint32_t s = 0; s < d.shards; ++s) {
      d.db_of.push_back(servers_[d.server_of[s]]->AddDatabase(d.id, s, d.name));
    }
    // Every player has gold and items, each row on the shard that owns its key (ShardMap's
    // hash, the same function the protocol's Tx::ShardFor uses).
    for (int p = 0; p < d.players; ++p) {
      for (auto [key, v] : {std::pair{GoldKey(d.key_offset, p), kInitialGold},
                            std::pair{ItemsKey(d.key_offset, p), kInitialItems}}) {
        const uint32_t s = ShardMap::JumpHash(ShardMap::MixKey(key), d.shards);
        servers_[d.server_of[s]]->LoadRow(d.db_of[s], key, v);
        initial_rows_[key] = v;
      }
    }
    for (uint32_t r = 0; r < d.redis; ++r) {
      redis_servers_[d.redis_server_of[r]]->AddDeployment(d.id, d.shards + r);
    }
    for (int t = 0; t < kTokens && d.redis > 0; ++t) {
      // The instance that owns the key: Tx::kv()'s routing.
      const int64_t key = TokenKey(d.key_offset, t);
      const uint32_t r = ShardMap::KvInstanceFor(RedisKey(key), d.redis);
      redis_servers_[d.redis_server_of[r]]->LoadValue(d.id, key, kInitialTokens);
      initial_rows_[key] = kInitialTokens;
    }
    for (int64_t key : {d.skew_a, d.skew_b}) {
      if (d.redis == 0) break;
      const uint32_t r = ShardMap::KvInstanceFor(RedisKey(key), d.redis);
      redis_servers_[d.redis_server_of[r]]->LoadValue(d.id, key, kInitialSkew);
      initial_rows_[key] = kInitialSkew;
    }
  }
  if (deps_.size() > 1) coverage_.Add(Cov::kTwoDeployments);
}

Simulation::~Simulation() = default;

std::vector<Step> Simulation::DrawTrade(const Deployment& d) {
  // A trade: the buyer pays the seller, the seller hands over items. Guards (min 0) make an
  // overdraft abort the transaction. Order shuffled: conflicting orders make deadlocks.
  std::vector<Step> steps;
  const int buyer = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(d.players)));
  int seller = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(d.players - 1)));
  if (seller >= buyer) ++seller;
  const int64_t price = rng_.Range(1, 60);
  const int64_t qty = rng_.Range(1, 3);
  const int64_t o = d.key_offset;
  steps.push_back({false, GoldKey(o, buyer), -price, 0});
  steps.push_back({false, GoldKey(o, seller), price, kNoMinimum});
  if (rng_.Chance(0.7)) {
    steps.push_back({false, ItemsKey(o, seller), -qty, 0});
    steps.push_back({false, ItemsKey(o, buyer), qty, kNoMinimum});
  }
  if (d.redis > 1 && rng_.Chance(0.4)) {
    // The write-skew probe: check a constraint over two keys (their sum >= 0), keep it by
    // reading both, and write only one of them. Two such transactions that each write the key
    // the other only read can both commit unless reads are locked until the decision.
    const int64_t n = rng_.Range(5, 30);
    Step take{false, rng_.Chance(0.5) ? d.skew_a : d.skew_b, -n, kNoMinimum, true, false};
    take.skew = true;
    take.skew_b_first = rng_.Chance(0.5);
    if (rng_.Chance(0.5)) steps.clear();
    steps.push_back(take);
    steps.push_back({false, TokenKey(o, static_cast<int>(rng_.Uniform(kTokens))), n, kNoMinimum,
                     true, false});
  } else if (d.redis > 0 && rng_.Chance(0.5)) {
    // Tokens move between two Redis counters: out of one (bounded at 0), into the other. Now
    // and then the whole transaction is on Redis (a Redis decider, or one instance alone).
    if (rng_.Chance(0.2)) steps.clear();
    const int from = static_cast<int>(rng_.Uniform(kTokens));
    int to = static_cast<int>(rng_.Uniform(kTokens - 1));
    if (to >= from) ++to;
    const int64_t n = rng_.Range(1, 40);
    steps.push_back({false, TokenKey(o, from), -n, 0, true, rng_.Chance(0.4)});
    steps.push_back({false, TokenKey(o, to), n, kNoMinimum, true, rng_.Chance(0.2)});
  }
  for (size_t i = steps.size() - 1; i > 0; --i) std::swap(steps[i], steps[rng_.Uniform(i + 1)]);
  if (rng_.Chance(0.2)) {
    const int who = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(d.players)));
    Step get{true, rng_.Chance(0.5) ? GoldKey(o, who) : ItemsKey(o, who), 0, 0};
    steps.insert(steps.begin() + static_cast<long>(rng_.Uniform(steps.size() + 1)), get);
  }
  return steps;
}

void Simulation::DrawDeployment(Deployment& d, bool first) {
  char id[17];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(rng_.Next()));
  d.id = id;
  d.name = std::string("game_") + static_cast<char>('a' + d.index);
  if (first) {
    d.shards = servers_count_;
    for (uint32_t s = 0; s < d.shards; ++s) d.server_of.push_back(s);
  } else {
    // A second deployment on the same servers (issue 7, case 1): its shard i usually on server
    // i, as in the reported incident (A's and B's shard 0 side by side), sometimes rotated.
    d.shards = static_cast<uint32_t>(rng_.Range(2, servers_count_));
    const uint32_t rot = rng_.Chance(0.7) ? 0 : static_cast<uint32_t>(rng_.Uniform(servers_count_));
    for (uint32_t s = 0; s < d.shards; ++s) d.server_of.push_back((s + rot) % servers_count_);
  }
  d.players = static_cast<int>(rng_.Range(3, 10));
  // Redis instances (issue 9): none in some seeds. Drawn from a stream of their own, so that a
  // seed without Redis is exactly the world it was before Redis existed (the variants' seeds
  // measured in sim/README.md stay valid there).
  Rng redis_rng(seed_ ^ 0x7ed15ULL ^ (static_cast<uint64_t>(d.index) << 32));
  d.redis = redis_rng.Chance(0.6) ? static_cast<uint32_t>(redis_rng.Range(1, 2)) : 0;
  for (uint32_t r = 0; r < d.redis; ++r) d.redis_server_of.push_back(r);
  if (d.redis > 0) {
    auto instance = [&](int64_t key) {
      return ShardMap::KvInstanceFor(RedisKey(key), d.redis);
    };
    d.skew_a = SkewKey(kKeyOffset * d.index, 0);
    for (int i = 1; i < 100; ++i) {
      d.skew_b = SkewKey(kKeyOffset * d.index, i);
      if (d.redis < 2 || instance(d.skew_b) != instance(d.skew_a)) break;
    }
  }
  d.txns = static_cast<int>(first ? rng_.Range(10, 60) : rng_.Range(5, 30));
  d.coordinator_slots = static_cast<int>(first ? rng_.Range(1, 4) : rng_.Range(1, 2));
  d.standalone_resolvers = static_cast<int>(rng_.Range(0, first ? 2 : 1));
  d.coordinators_resolve = d.standalone_resolvers == 0 || rng_.Chance(0.7);
  d.resolver_interval_ms = rng_.LogRange(30, 3000);
  d.long_gaps = rng_.Chance(0.3);
  d.key_offset = kKeyOffset * d.index;
  d.txn_offset = kTxnOffset * d.index;
  ProtocolOptions& o = d.protocol;
  o.max_attempts = rng_.Chance(0.8) ? 10 : static_cast<int>(rng_.Range(1, 4));
  const int64_t timeouts[] = {200, 1000, 3000, 10000};
  o.txn_timeout_ms = timeouts[rng_.Uniform(4)];
  o.unknown_resolve_tries = static_cast<int>(rng_.Range(1, 5));
  o.phase2_tries = static_cast<int>(rng_.Range(1, 5));
  o.record_one_shard_commits = rng_.Chance(0.7);  // both one-shard paths, whatever the default
  d.phase2_before_return = rng_.Chance(0.6);
  ResolverOptions& r = d.resolver;
  r.collect_garbage = rng_.Chance(0.9);
  r.decision_retention_ms =
      rng_.Chance(0.5) ? kMinDecisionRetentionMs : rng_.Range(60'000, 180'000);
  r.gc_batch = rng_.Range(1, 50);
  for (int i = 0; i < d.txns; ++i) {
    if (rng_.Chance(0.12)) {
      // A bank audit (issue 8): a read-only transaction that reads every player's gold with
      // locking reads, in random order. Trades move gold but never create or destroy it, so a
      // committed audit must read exactly the initial total.
      std::vector<Step> audit;
      for (int p = 0; p < d.players; ++p) audit.push_back({true, GoldKey(d.key_offset, p), 0, 0});
      for (size_t k = audit.size() - 1; k > 0; --k) {
        std::swap(audit[k], audit[rng_.Uniform(k + 1)]);
      }
      plans_[d.txn_offset + i] = std::move(audit);
      audits_[d.txn_offset + i] = kInitialGold * d.players;
      txn_deployment_[d.txn_offset + i] = d.index;
      continue;
    }
    plans_[d.txn_offset + i] = DrawTrade(d);
    txn_deployment_[d.txn_offset + i] = d.index;
  }
  for (int i = 0; i < kProbeWarmWorkers * kProbeWarmTxns + kProbeTxns; ++i) {
    plans_[d.txn_offset + kProbeTxnOffset + i] = DrawTrade(d);
    txn_deployment_[d.txn_offset + kProbeTxnOffset + i] = d.index;
  }
}

void Simulation::DrawWorld() {
  servers_count_ = static_cast<uint32_t>(rng_.Range(2, 4));
  const int64_t lock_waits[] = {20, 100, 500, 2000};
  lock_wait_timeout_ms_ = lock_waits[rng_.Uniform(4)];
  const int n = faults_.Fire(FaultSite::kTwoDeployments) ? 2 : 1;
  deps_.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    deps_[static_cast<size_t>(i)].index = i;
    DrawDeployment(deps_[static_cast<size_t>(i)], i == 0);
  }
}

void Simulation::Trace(const char* fmt, ...) {
  if (!tracer_.on()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  tracer_.Log("%s", buf);
}

// ---------------------------------------------------------------------------------------------
// Network: the faults around every round trip

void Simulation::BeforeRoundTrip(int process, uint32_t server) {
  Process* p = FindProcess(process);
  if (p == nullptr || !p->alive) throw ProcessKilled{};
  if (p->kind == ProcessKind::kCoordinator && faults_.Fire(FaultSite::kCoordinatorCrash)) {
    CrashCurrentProcess(*p, "at a round trip");
  }
  if (p->kind == ProcessKind::kResolver && faults_.Fire(FaultSite::kResolverCrash)) {
    CrashCurrentProcess(*p, "at a round trip");
  }
  if (faults_.Fire(FaultSite::kProcessPause)) {
    const int64_t ms = rng_.LogRange(1, 3000);
    Trace("%s pauses %lld ms", p->name.c_str(), static_cast<long long>(ms));
    sched_.Sleep(ms);
  }
  if (faults_.Fire(FaultSite::kLongProcessPause)) {
    const int64_t ms = rng_.Range(20'000, 90'000);
    Trace("%s pauses %lld ms", p->name.c_str(), static_cast<long long>(ms));
    sched_.Sleep(ms);
  }
  if (faults_.Fire(FaultSite::kProcessClockStep)) p->env->StepClock(rng_.Range(-5000, 5000));
  if (server >= kRedisNetBase) {
    SimRedisServer& r = *redis_servers_[server - kRedisNetBase];
    if (faults_.Fire(FaultSite::kShardClockStep)) {
      r.StepClock(rng_.Chance(0.7) ? rng_.Range(1, 3000) : -rng_.Range(1, 1000));
    }
    if (faults_.Fire(FaultSite::kShardCrash)) CrashRedis(server - kRedisNetBase);
    return;
  }
  if (faults_.Fire(FaultSite::kShardClockStep)) {
    servers_[server]->StepClock(rng_.Chance(0.7) ? rng_.Range(1, 3000) : -rng_.Range(1, 1000));
  }
  if (faults_.Fire(FaultSite::kDstStep)) {
    // The SYSTEM zone's hour around a DST change: +1 h (the hour before the autumn change with
    // time_zone=SYSTEM) or -1 h (the repeated hour with a named zone). Simulated runs last
    // minutes, so the window is 1-120 s.
    servers_[server]->StartDstWindow(rng_.Chance(0.5) ? 3'600'000 : -3'600'000,
                                     rng_.Range(1000, 120'000));
  }
  if (faults_.Fire(FaultSite::kShardCrash)) CrashServer(server);
}

void Simulation::AfterRoundTrip(int process) {
  Process* p = FindProcess(process);
  if (p == nullptr || !p->alive) throw ProcessKilled{};
  if (p->kind == ProcessKind::kCoordinator && faults_.Fire(FaultSite::kCoordinatorCrash)) {
    CrashCurrentProcess(*p, "after a reply");
  }
}

void Simulation::OneWayDelay() {
  // 0-3 ms a hop; a zero-length hop still yields, so that other fibers may run in between.
  int64_t ms = rng_.Chance(0.3) ? 0 : rng_.Range(1, 3);
  if (faults_.Fire(FaultSite::kNetworkDelay)) ms += rng_.LogRange(10, 3000);
  sched_.Sleep(ms);
}

Network::Delivery Simulation::PickDelivery() {
  if (faults_.Fire(FaultSite::kLostBeforeExecute)) return Delivery::kLostBefore;
  if (faults_.Fire(FaultSite::kLostAfterExecute)) return Delivery::kLostAfter;
  if (faults_.Fire(FaultSite::kExecutedLate)) return Delivery::kLate;
  return Delivery::kNormal;
}

Network::CommitFailure Simulation::PickCommitFailure() {
  if (!faults_.Fire(FaultSite::kCommitStatementError)) return CommitFailure::kNone;
  return rng_.Chance(0.5) ? CommitFailure::kErrorButCommitted : CommitFailure::kErrorRolledBack;
}

std::pair<int64_t, int64_t> Simulation::TeardownMs() {
  // Steps (1)-(2) of a disconnect are instant; (2)-(3) take 0-2 ms, or much longer when the
  // server is loaded (free_connection waits for the thread pool, the socket close is slow).
  const int64_t to_step2 = rng_.Chance(0.5) ? 0 : 1;
  const int64_t to_step3 =
      faults_.Fire(FaultSite::kSlowTeardown) ? rng_.LogRange(10, 1000) : rng_.Range(0, 2);
  return {to_step2, to_step3};
}

int64_t Simulation::NoticeDelayMs(bool clean_close) {
  if (clean_close) return rng_.Range(0, 2);
  // A broken link: the server notices when its read or write on the socket fails — sometimes
  // before the client's own read timeout, sometimes well after it.
  if (faults_.Fire(FaultSite::kSlowDisconnectNotice)) return rng_.Range(1000, 40'000);
  return rng_.Chance(0.5) ? rng_.Range(0, 50) : rng_.Range(50, 2000);
}

void Simulation::OnCrashPoint(int process, CrashSite site) {
  Process* p = FindProcess(process);
  if (p == nullptr || !p->alive) throw ProcessKilled{};
  if (p->kind == ProcessKind::kFinalResolver || p->kind == ProcessKind::kProbe) return;
  const FaultSite f = CrashPointSite(site);
  if (f != FaultSite::kCount && faults_.Fire(f)) CrashCurrentProcess(*p, FaultSiteName(f));
}

void Simulation::CrashServer(uint32_t server) {
  SimServer& s = *servers_[server];
  if (!s.up()) return;
  ++shard_crashes_;
  // Mostly kill -9 of mariadbd (the kernel closes its sockets: clients see EOF); sometimes the
  // whole host (no FIN: idle client connections look alive until used).
  s.Crash(/*silent=*/rng_.Chance(0.2));
  const int64_t down =
      faults_.Fire(FaultSite::kLongShardOutage) ? rng_.Range(1000, 10'000) : rng_.Range(1, 300);
  sched_.At(sched_.now() + down, [this, server] { servers_[server]->Restart(); });
}

void Simulation::CrashRedis(uint32_t server) {
  SimRedisServer& s = *redis_servers_[server];
  if (!s.up()) return;
  ++shard_crashes_;
  s.Crash();
  const int64_t down =
      faults_.Fire(FaultSite::kLongShardOutage) ? rng_.Range(1000, 10'000) : rng_.Range(1, 300);
  sched_.At(sched_.now() + down, [this, server] { redis_servers_[server]->Restart(); });
}

void Simulation::OperatorRestart(uint32_t server, int64_t after_ms) {
  // doc/limbo-branch.md: the remedy for a limbo branch is a restart of that server, after which
  // XA RECOVER lists the branch again and a resolver finishes it with its (kept) decision. An
  // operator does it some time after seigo reported it.
  if (restart_pending_.count(server)) return;
  restart_pending_.insert(server);
  sched_.At(sched_.now() + after_ms, [this, server] {
    restart_pending_.erase(server);
    SimServer& s = *servers_[server];
    coverage_.Add(Cov::kOperatorRestart);
    Trace("operator restarts %s (limbo reported)", s.name().c_str());
    if (!s.up()) return;  // it is down anyway; its restart does the same
    s.Crash();
    s.Restart();
  });
}

void Simulation::ForeignXaTick(uint32_t server) {
  if (stop_foreign_) return;
  servers_[server]->RunForeignXa(rng_.Range(10, 3000));
  sched_.At(sched_.now() + rng_.Range(100, 5000), [this, server] { ForeignXaTick(server); });
}

// ---------------------------------------------------------------------------------------------
// Processes

Process* Simulation::FindProcess(int id) {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : it->second.get();
}

Process& Simulation::NewProcess(int deployment, ProcessKind kind, int slot,
                                const std::string& name) {
  auto p = std::make_unique<Process>();
  p->id = next_process_id_++;
  p->deployment = deployment;
  p->kind = kind;
  p->slot = slot;
  p->name = name;
  p->env = std::make_unique<SimEnv>(this, p->id);
  // A process starts with its clock a little off (NTP is never perfect) — by seconds in seeds
  // where clock steps are on: the protocol must judge deadlines by the decider's clock only.
  const int64_t skew = faults_.enabled(FaultSite::kProcessClockStep) ? 3000 : 50;
  p->env->StepClock(rng_.Range(-skew, skew));
  const Deployment& d = deps_[static_cast<size_t>(deployment)];
  for (uint32_t s = 0; s < d.shards; ++s) {
    p->participants.push_back(std::make_unique<SimParticipant>(servers_[d.server_of[s]].get(),
                                                               d.db_of[s], s, d.id, this, p->id));
    p->raw.push_back(p->participants.back().get());
    p->participants.back()->set_clock([env = p->env.get()] { return env->NowMs(); });
  }
  for (uint32_t r = 0; r < d.redis; ++r) {
    p->redis.push_back(std::make_unique<SimRedisParticipant>(
        redis_servers_[d.redis_server_of[r]].get(), d.shards + r, d.id, this, p->id));
    p->raw.push_back(p->redis.back().get());
  }
  Process& ref = *p;
  processes_.emplace(ref.id, std::move(p));
  Trace("%s starts (process %d)", name.c_str(), ref.id);
  return ref;
}

void Simulation::SpawnFiber(Process& p, const std::string& role,
                            std::function<void(Process&)> body) {
  ++p.fibers;
  const int pid = p.id;
  // Tells the process that this fiber is over when the fiber's captures are destroyed: after its
  // body returned or a crash unwound it, and also when it was killed before it ever ran.
  class ExitGuard {
   public:
    ExitGuard(Simulation* sim, int pid) : sim_(sim), pid_(pid) {}
    ExitGuard(const ExitGuard&) = delete;
    ExitGuard& operator=(const ExitGuard&) = delete;
    ~ExitGuard() { sim_->OnFiberExit(pid_); }

   private:
    Simulation* sim_;
    int pid_;
  };
  auto guard = std::make_shared<ExitGuard>(this, pid);
  sched_.Spawn(p.name + "/" + role, pid, [this, pid, guard, body = std::move(body)] {
    Process* p = FindProcess(pid);
    if (p != nullptr && p->alive) body(*p);
  });
}

void Simulation::OnFiberExit(int process) {
  Process* p = FindProcess(process);
  if (p == nullptr) return;
  if (--p->fibers == 0) sched_.At(sched_.now(), [this, process] { DestroyProcess(process); });
}

void Simulation::DestroyProcess(int process) {
  auto it = processes_.find(process);
  if (it == processes_.end()) return;
  Trace("%s ends", it->second->name.c_str());
  if (it->second->kind == ProcessKind::kCoordinator) {
    --deps_[static_cast<size_t>(it->second->deployment)].live_coordinators;
  }
  processes_.erase(it);  // closes whatever sessions it still had
}

void Simulation::CrashProcess(Process& p, const char* why) {
  if (!p.alive) return;
  p.alive = false;
  ++process_crashes_;
  Trace("%s CRASH (%s)", p.name.c_str(), why);
  // The OS closes the dead process's sockets; each server notices after a while (at once after
  // a FIN, much later after a power loss or a partition). Until then its connections — and the
  // prepared branches they own — stay alive on the servers.
  for (auto& s : servers_) {
    for (uint64_t c : s->ConnectionsOf(p.id)) s->ClientGone(c, NoticeDelayMs(false));
  }
  sched_.KillProcess(p.id);
  const int dep = p.deployment;
  if (p.kind == ProcessKind::kCoordinator) {
    // A supervisor restarts the application after a while; the new process takes the next
    // transactions (the one in flight is lost with the old process: "crashed").
    ++deps_[static_cast<size_t>(dep)].pending_respawns;
    const int slot = p.slot;
    sched_.At(sched_.now() + rng_.Range(10, 3000), [this, dep, slot] {
      Deployment& d = deps_[static_cast<size_t>(dep)];
      --d.pending_respawns;
      if (d.next_txn < d.txns) SpawnCoordinator(dep, slot);
    });
  } else if (p.kind == ProcessKind::kResolver && !stop_resolvers_) {
    const int slot = p.slot;
    sched_.At(sched_.now() + rng_.Range(10, 3000), [this, dep, slot] {
      if (!stop_resolvers_) SpawnResolver(dep, slot);
    });
  }
}

void Simulation::CrashCurrentProcess(Process& p, const char* why) {
  CrashProcess(p, why);
  throw ProcessKilled{};
}

void Simulation::SpawnCoordinator(int deployment, int slot) {
  Deployment& d = deps_[static_cast<size_t>(deployment)];
  if (d.generation.size() <= static_cast<size_t>(slot)) d.generation.resize(slot + 1);
  const std::string name = d.name.substr(5) + ".coord" + std::to_string(slot) + "." +
                           std::to_string(d.generation[slot]++);
  Process& p = NewProcess(deployment, ProcessKind::kCoordinator, slot, name);
  p.protocol = std::make_unique<core::Protocol>(p.raw, p.env.get(), d.protocol, d.shards);
  ++d.live_coordinators;
  SpawnFiber(p, "worker", [this](Process& q) { CoordinatorWorker(q); });
  SpawnFiber(p, "phase2", [this](Process& q) { Phase2Worker(q); });
  SpawnFiber(p, "resolver", [this](Process& q) { ResolverThread(q); });
  SpawnFiber(p, "detector", [this](Process& q) { DetectorThread(q); });
}

void Simulation::DetectorThread(Process& p) {
  // As src/coordinator.cc's DetectorLoop: look every poll_ms, pass at most every
  // pass_interval_ms while a statement of this process has waited check_after_ms.
  if (variant_ == Variant::kNoDeadlockDetector) return;
  DeadlockOptions o;
  o.poll_ms = 10;  // the library's 5 ms would only cost the simulator switches
  int64_t last_pass = INT64_MIN / 2;
  core::DetectorState state;
  while (!p.worker_done) {
    p.env->SleepMs(o.poll_ms);
    if (p.env->NowMs() - last_pass < o.pass_interval_ms) continue;
    DeadlockReport r = core::DetectDeadlocks(p.raw, p.env.get(), o, false, true, &state);
    if (!r.ran) continue;
    last_pass = p.env->NowMs();
    coverage_.Add(Cov::kDeadlockPass);
    for (const BrokenDeadlock& b : r.broken) {
      Trace("%s detector broke a %s deadlock: victim %s on shard %u after %lld ms",
            p.name.c_str(), b.cross_shard ? "cross-shard" : "local", b.victim.substr(0, 8).c_str(),
            b.shard, static_cast<long long>(b.waited_ms));
    }
  }
}

void Simulation::SpawnResolver(int deployment, int slot) {
  Deployment& d = deps_[static_cast<size_t>(deployment)];
  Process& p = NewProcess(deployment, ProcessKind::kResolver, slot,
                          d.name.substr(5) + ".resolver" + std::to_string(slot));
  SpawnFiber(p, "main", [this](Process& q) { StandaloneResolver(q); });
}

// One transaction as the application runs it, reported to the checker.
void Simulation::RunOneTxn(Process& p, int64_t txn, bool inline_phase2,
                           std::vector<core::Phase2Item>* phase2_out) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  checker_.OnTxnStarted(txn, d.id);
  Trace("%s runs txn %lld", p.name.c_str(), static_cast<long long>(txn));
  // Every other bank audit runs as a read-only transaction (RunOptions::read_only: no XA, no
  // decision row, rolled back at the end); the rest as ordinary transactions that commit.
  seigo::RunOptions run;
  run.read_only = audits_.count(txn) != 0 && txn % 2 == 0;
  // One trade in five runs under a Run deadline shorter than txn_timeout_ms
  // (RunOptions::timeout_ms): attempts get the earlier deadline, retries stop at it, and a lost
  // commit reply past it is left to TrySettle and the resolver without a fence.
  if (audits_.count(txn) == 0 && txn % 5 == 1) run.timeout_ms = d.protocol.txn_timeout_ms / 2;
  if (run.read_only) checker_.OnReadOnly(txn);
  core::RunOutput out = p.protocol->Run(MakeClosure(txn), run);
  TxResult& r = out.result;
  if (inline_phase2) {
    for (core::Phase2Item& item : out.phase2) {
      const Xid xid = item.xid;
      Status s = core::Protocol::FinishPhase2(std::move(item), p.env.get(), d.protocol);
      OnPhase2Result(p, xid, s);
      if (!s.ok()) r.pending_visibility.push_back(xid.branch);
    }
    out.phase2.clear();
  }
  Trace("%s txn %lld: %s after %d attempt(s), gid %s: %s", p.name.c_str(),
        static_cast<long long>(txn), TxStateName(r.state), r.attempts, r.gid.substr(0, 8).c_str(),
        r.status.ToString().c_str());
  checker_.OnRunReturned(txn, r);
  int victimized = 0;
  for (const AttemptInfo& a : r.history) victimized += a.status.server_errno() == 1317 ? 1 : 0;
  if (victimized >= 5) coverage_.Add(Cov::kDetectorVictimOften);
  if (inline_phase2 && r.committed()) checker_.OnVisibleAtReturn(d.id, r);
  for (core::Phase2Item& item : out.phase2) phase2_out->push_back(std::move(item));
  if (out.lost) p.lost.push_back(std::move(*out.lost));
  if (p.kind == ProcessKind::kProbe) coverage_.Add(Cov::kRestartProbeTxns);
}

// The application thread: runs transactions one after another.
void Simulation::CoordinatorWorker(Process& p) {
  Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  while (d.next_txn < d.txns) {
    int64_t think = rng_.Range(0, 20);
    if (d.long_gaps && rng_.Chance(0.03)) think = rng_.Range(5'000, 70'000);
    p.env->SleepMs(think);
    if (d.next_txn >= d.txns) break;
    const int64_t txn = d.txn_offset + d.next_txn++;
    std::vector<core::Phase2Item> items;
    RunOneTxn(p, txn, d.phase2_before_return, &items);
    for (core::Phase2Item& item : items) {
      if (faults_.Fire(FaultSite::kPhase2Drop)) continue;  // dropped: its session closes
      p.phase2.push_back(std::move(item));
    }
    sched_.NotifyAll(&p.phase2_ready);
  }
  p.worker_done = true;
  sched_.NotifyAll(&p.phase2_ready);
}

void Simulation::OnPhase2Result(const Process& p, const Xid& xid, const Status& s) {
  Trace("%s phase 2 of %s on shard %u: %s", p.name.c_str(), xid.gid.substr(0, 8).c_str(),
        xid.branch, s.ToString().c_str());
  checker_.OnPhase2Finished(xid, s);
  if (s.Is(Code::kCorruption)) OnLimboReported(p, xid.branch);
}

// The phase-2 thread: XA COMMIT of committed transactions' branches, off the caller's path.
void Simulation::Phase2Worker(Process& p) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  for (;;) {
    while (p.phase2.empty()) {
      if (p.worker_done) {
        p.phase2_done = true;
        return;
      }
      sched_.Wait(&p.phase2_ready, Scheduler::kForever);
    }
    core::Phase2Item item = std::move(p.phase2.front());
    p.phase2.pop_front();
    if (faults_.Fire(FaultSite::kPhase2Delay)) p.env->SleepMs(rng_.LogRange(1, 5000));
    const Xid xid = item.xid;
    Status s = core::Protocol::FinishPhase2(std::move(item), p.env.get(), d.protocol);
    OnPhase2Result(p, xid, s);
  }
}

int64_t Simulation::ResolverSleepMs(const Deployment& d) {
  return rng_.Range(d.resolver_interval_ms / 2, d.resolver_interval_ms * 3 / 2);
}

void Simulation::OnLimboReported(const Process& p, uint32_t shard) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  if (shard >= d.shards) return;
  const uint32_t server = d.server_of[shard];
  // During the workload an operator reacts within seconds; in the quiescent phase at once.
  OperatorRestart(server, faults_.active() ? rng_.Range(1000, 20'000) : 0);
}

ResolveReport Simulation::ResolveOnce(Process& p, const ResolverOptions& options) {
  ++resolver_passes_;
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  ResolveReport r = core::ResolvePass(p.raw, p.env.get(), options);
  for (const ResolveReport::Applied& a : r.applied) checker_.OnResolverApplied(d.id, a);
  for (const ResolveReport::Limbo& l : r.limbo) {
    Trace("%s resolver: LIMBO gid %s shard %u: %s", p.name.c_str(), l.gid.substr(0, 8).c_str(),
          l.shard, l.message.c_str());
    OnLimboReported(p, l.shard);
  }
  if (tracer_.on() && (!r.applied.empty() || !r.fenced.empty() || r.forgotten > 0)) {
    Trace("%s resolver pass: %zu applied, %zu fenced, %zu pending, %zu forgotten", p.name.c_str(),
          r.applied.size(), r.fenced.size(), r.pending.size(), r.forgotten);
  }
  return r;
}

// The coordinator library's resolver thread (src/coordinator.cc): settle lost commits first,
// then one resolver pass.
void Simulation::ResolverThread(Process& p) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  for (;;) {
    p.env->SleepMs(ResolverSleepMs(d));
    if (p.worker_done && p.phase2_done) return;  // Coordinator::Stop
    std::vector<core::LostCommit> lost;
    lost.swap(p.lost);
    std::vector<core::LostCommit> keep;
    for (core::LostCommit& x : lost) {
      if (!core::Protocol::TrySettle(x, p.env.get())) keep.push_back(std::move(x));
    }
    if (d.coordinators_resolve) ResolveOnce(p, d.resolver);
    for (core::LostCommit& x : keep) p.lost.push_back(std::move(x));
  }
}

// `seigo recover` in a loop, in its own process.
void Simulation::StandaloneResolver(Process& p) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  while (!stop_resolvers_) {
    p.env->SleepMs(ResolverSleepMs(d));
    if (stop_resolvers_) break;
    if (rng_.Chance(0.2)) {
      // `seigo status` now and then: read-only, but what it shows must be true.
      InDoubtReport r = core::InspectInDoubt(p.raw, p.env.get());
      for (const InDoubtTx& tx : r.txs) checker_.OnInDoubtReported(d.id, tx);
    }
    ResolveOnce(p, d.resolver);
  }
}

// ---------------------------------------------------------------------------------------------
// The quiescent phase

// Every deployment's final resolver (`seigo recover`), until nothing is prepared and no server
// has a connection it has not finished with. Limbo reports make the operator restart a server.
bool Simulation::Converge(Process& op) {
  for (int pass = 0;; ++pass) {
    for (auto& [id, p] : processes_) {
      if (p->kind != ProcessKind::kFinalResolver) continue;
      ResolveOnce(*p, deps_[static_cast<size_t>(p->deployment)].resolver);
    }
    if (AllSettled()) return true;
    if (pass >= kMaxFinalPasses) {
      checker_.Violation("liveness: branches still prepared after " +
                         std::to_string(kMaxFinalPasses) + " resolver passes without faults");
      return false;
    }
    op.env->SleepMs(kFinalPassIntervalMs);
  }
}

// A probe process of one deployment: warm its pools with concurrent transactions, wait for the
// operator to restart every server, then run transactions one after another (RunOneTxn checks
// how many attempts each needed).
void Simulation::ProbeMain(Process& p) {
  const Deployment& d = deps_[static_cast<size_t>(p.deployment)];
  const int64_t base = d.txn_offset + kProbeTxnOffset;
  p.busy_workers = kProbeWarmWorkers;
  for (int w = 0; w < kProbeWarmWorkers; ++w) {
    SpawnFiber(p, "warm" + std::to_string(w), [this, base, w](Process& q) {
      for (int i = 0; i < kProbeWarmTxns; ++i) {
        std::vector<core::Phase2Item> items;
        RunOneTxn(q, base + w * kProbeWarmTxns + i, /*inline_phase2=*/true, &items);
      }
      --q.busy_workers;
    });
  }
  while (p.busy_workers > 0 || !probe_restarted_) p.env->SleepMs(10);
  std::vector<uint64_t> stale_before;
  for (auto& sp : p.participants) stale_before.push_back(sp->stale_calls());
  for (int i = 0; i < kProbeTxns; ++i) {
    std::vector<core::Phase2Item> items;
    RunOneTxn(p, base + kProbeWarmWorkers * kProbeWarmTxns + i, /*inline_phase2=*/true, &items);
  }
  // Issue 7, case 6: the first transactions after a restart must not fail on the pool. A dead
  // idle connection shows an EOF (poll) and is dropped with every older one; if the host died
  // without a FIN, the first call on one fails and the flush drops the rest. So at most one
  // round trip per shard may hit a connection from before the restart.
  for (size_t s = 0; s < p.participants.size(); ++s) {
    const uint64_t stale = p.participants[s]->stale_calls() - stale_before[s];
    if (stale > 1) {
      checker_.Violation("liveness after a restart: " + std::to_string(stale) +
                         " round trips of deployment " + d.id.substr(0, 4) + " on shard " +
                         std::to_string(s) +
                         " hit connections pooled before the restart (at "
                         "most 1 allowed: the pool must drop the others)");
    }
  }
  p.worker_done = true;
}

void Simulation::RestartProbe(Process& op) {
  std::vector<int> probes;
  for (const Deployment& d : deps_) {
    Process& p = NewProcess(d.index, ProcessKind::kProbe, 0, d.name.substr(5) + ".probe");
    ProtocolOptions o = d.protocol;
    o.max_attempts = 10;  // an application's default
    o.txn_timeout_ms = 10'000;
    p.protocol = std::make_unique<core::Protocol>(p.raw, p.env.get(), o,
                                                   deps_[static_cast<size_t>(p.deployment)].shards);
    probes.push_back(p.id);
    SpawnFiber(p, "main", [this](Process& q) { ProbeMain(q); });
  }
  auto warm = [&] {
    for (int id : probes) {
      Process* p = FindProcess(id);
      if (p != nullptr && p->busy_workers > 0) return false;
    }
    return true;
  };
  op.env->SleepMs(1);
  while (!warm()) op.env->SleepMs(10);
  // Every server restarts while the probes' pools hold connections to it: a restart of mariadbd
  // (its clients see EOF on their idle connections) or, in half the seeds, of its host (no FIN).
  const bool silent = rng_.Chance(0.5);
  for (auto& s : servers_) {
    s->Crash(silent);
    s->Restart();
  }
  Trace("restart probe: every server restarted under warm pools");
  probe_restarted_ = true;
  auto done = [&] {
    for (int id : probes) {
      if (FindProcess(id) != nullptr) return false;
    }
    return true;
  };
  while (!done()) op.env->SleepMs(10);
}

void Simulation::DeadlockProbe(Process& op) {
  const Deployment& d = deps_[0];
  if (d.shards < 2) return;
  coverage_.Add(Cov::kDeadlockProbe);
  // Rows on shards 0 and 1 (and one more on shard 0), away from the workload's players:
  // locking reads only, so the data (and the checker's books) stay as they are.
  int64_t key[2] = {-1, -1}, key_held = -1;
  for (int64_t k = 1'000'000; key[0] < 0 || key[1] < 0 || key_held < 0; ++k) {
    const uint32_t s = ShardMap::JumpHash(ShardMap::MixKey(k), d.shards);
    if (s < 2 && key[s] < 0) {
      key[s] = k;
    } else if (s == 0 && key_held < 0 && k != key[0]) {
      key_held = k;
    }
  }
  // Three processes. The holder (2) keeps `key_held` locked for 300 ms. Process 0 locks
  // key[0], then waits for `key_held` (a plain wait: both detectors poll meanwhile, as they do
  // under any contention), then asks for key[1]; process 1 locks key[1] and asks for key[0].
  // The cycle closes when the holder lets go — while detectors have been reading for a while,
  // which is when InnoDB's lock-wait cache can be stale: then only the presumed edges find it.
  const int64_t txn0 = d.txn_offset + kProbeTxnOffset + 1000;
  int holding = 0;
  bool held = false;
  // When the cycle closed (the later of the two second reads began) and when a first attempt's
  // second read failed (the cycle broke), in simulated time.
  int64_t cycle_at = 0, broken_at = 0;
  TxResult result[3];
  int64_t priority[3] = {0, 0, 0};
  bool done[3] = {false, false, false};
  for (int i = 0; i < 3; ++i) {
    Process& p = NewProcess(0, ProcessKind::kProbe, 0, d.name.substr(5) + ".dlprobe" +
                                                         std::to_string(i));
    // This checks the detector, not clocks: deadlines a minute past the latest server clock
    // (steps during the seed may have put one far ahead of every process clock).
    int64_t latest = 0;
    for (const auto& sv : servers_) latest = std::max(latest, sv->NowMs());
    ProtocolOptions o = d.protocol;
    o.max_attempts = 10;
    o.txn_timeout_ms = std::max<int64_t>(0, latest - p.env->NowMs()) + kDeadlockProbeTimeoutMs;
    deadlock_probe_timeout_ms_ = std::max(deadlock_probe_timeout_ms_, o.txn_timeout_ms);
    p.protocol = std::make_unique<core::Protocol>(p.raw, p.env.get(), o,
                                                   deps_[static_cast<size_t>(p.deployment)].shards);
    SpawnFiber(p, "detector", [this](Process& q) { DetectorThread(q); });
    SpawnFiber(p, "main", [&, i](Process& q) {
      while (i == 0 && !held) q.env->SleepMs(1);
      while (i == 1 && holding < 1) q.env->SleepMs(1);  // the younger starts second
      const int64_t txn = txn0 + i;
      checker_.OnTxnStarted(txn, d.id);
      core::RunOutput out = q.protocol->Run([&](Tx& tx) -> Status {
        checker_.OnClosureGid(txn, tx.attempt(), tx.gid());
        // The Run's priority: its first attempt's start by its own process clock (the Attempt
        // read NowMs just before calling the closure, with no yield in between).
        if (tx.attempt() == 1) priority[i] = q.env->NowMs();
        // For the checker an audit of nothing: locking reads, no writes, a total of 0.
        checker_.OnAuditRead(txn, tx.attempt(), 0, 0);
        if (i == 2) {
          SEIGO_RETURN_IF_ERROR(tx.Exec(key_held, "LGET ?", {key_held}).status());
          held = true;
          q.env->SleepMs(300);
          return Status::OK();
        }
        SEIGO_RETURN_IF_ERROR(tx.Exec(key[i], "LGET ?", {key[i]}).status());
        if (tx.attempt() == 1) {
          ++holding;
          if (i == 0) SEIGO_RETURN_IF_ERROR(tx.Exec(key_held, "LGET ?", {key_held}).status());
          while (holding < 2) q.env->SleepMs(1);
          cycle_at = std::max(cycle_at, sched_.now());
        }
        Status s = tx.Exec(key[1 - i], "LGET ?", {key[1 - i]}).status();
        if (tx.attempt() == 1 && !s.ok() && broken_at == 0) broken_at = sched_.now();
        return s;
      });
      for (core::Phase2Item& item : out.phase2) {
        const Xid xid = item.xid;
        OnPhase2Result(q, xid, core::Protocol::FinishPhase2(std::move(item), q.env.get(), o));
      }
      checker_.OnRunReturned(txn, out.result);
      result[i] = out.result;
      done[i] = true;
      q.worker_done = true;
    });
  }
  while (!done[0] || !done[1] || !done[2]) op.env->SleepMs(10);
  const std::string where = "deadlock probe (" + d.id.substr(0, 4) + "): ";
  if (!result[0].committed() || !result[1].committed()) {
    checker_.Violation(where + "a transaction of the cycle did not commit: " +
                       result[0].status.ToString() + " / " + result[1].status.ToString());
    return;
  }
  // Only when the lock-wait timeout cannot end the cycle before the detector does.
  if (lock_wait_timeout_ms_ < 2 * kDeadlockBoundMs) return;
  // "Older" is by priority: the processes' clocks differ (by seconds in some seeds), so the
  // one started second in simulated time may well be the older.
  // Ties (the same millisecond) go by the first attempt's gid, as in core::AnalyzeWaits.
  auto run_id = [&](int i) {
    return result[i].history.empty() ? std::string() : result[i].history[0].gid;
  };
  const std::string id0 = run_id(0), id1 = run_id(1);
  const int older = std::tie(priority[0], id0) < std::tie(priority[1], id1) ? 0 : 1;
  const int younger = 1 - older;
  Trace("deadlock probe: priorities %lld / %lld, gids %s / %s", static_cast<long long>(priority[0]),
        static_cast<long long>(priority[1]),
        result[0].history.empty() ? "-" : result[0].history[0].gid.substr(0, 8).c_str(),
        result[1].history.empty() ? "-" : result[1].history[0].gid.substr(0, 8).c_str());
  const TxResult& y = result[younger];
  const Status first = y.history.empty() ? Status::OK() : y.history[0].status;
  if (result[older].attempts != 1) {
    checker_.Violation(where + "the older transaction needed " +
                       std::to_string(result[older].attempts) + " attempts: it lost the cycle");
  } else if (first.server_errno() != 1317) {
    checker_.Violation(where + "the younger transaction's first attempt did not end by the "
                       "detector's interrupt (1317) but: " + first.ToString());
  } else if (broken_at - cycle_at > kDeadlockBoundMs) {
    checker_.Violation(where + "the cycle lasted " + std::to_string(broken_at - cycle_at) +
                       " ms (bound " + std::to_string(kDeadlockBoundMs) + " ms)");
  }
}

// The quiescent phase, as an operator would run it: faults are off, every server is up.
void Simulation::Operator(Process& op) {
  Converge(op);
  // `seigo status` agrees: nothing in doubt, every shard answered.
  for (auto& [id, p] : processes_) {
    if (p->kind != ProcessKind::kFinalResolver) continue;
    InDoubtReport status = core::InspectInDoubt(p->raw, p->env.get());
    if (!status.txs.empty() || !status.errors.empty()) {
      checker_.Violation("seigo status still reports " + std::to_string(status.txs.size()) +
                         " transactions in doubt and " + std::to_string(status.errors.size()) +
                         " errors after the quiescent phase");
    }
  }
  RestartProbe(op);
  DeadlockProbe(op);
  Converge(op);
  int64_t wait = 0;
  for (const Deployment& d : deps_) {
    wait = std::max(wait, std::max(d.resolver.decision_retention_ms, kMinDecisionRetentionMs) +
                              std::max<int64_t>(d.protocol.txn_timeout_ms,
                                                deadlock_probe_timeout_ms_));
  }
  op.env->SleepMs(wait + 20'000);
  // Garbage collection until a round collects nothing (the final resolver is `seigo recover`
  // with the deployment's settings, but a large batch).
  for (int round = 0; round < 50; ++round) {
    size_t forgotten = 0;
    for (auto& [id, p] : processes_) {
      if (p->kind != ProcessKind::kFinalResolver) continue;
      ResolverOptions o = deps_[static_cast<size_t>(p->deployment)].resolver;
      o.gc_batch = 5000;
      forgotten += ResolveOnce(*p, o).forgotten;
    }
    if (forgotten == 0) break;
  }
  final_done_ = true;
}

bool Simulation::WorkloadFinished() const {
  for (const Deployment& d : deps_) {
    if (d.next_txn < d.txns || d.live_coordinators != 0 || d.pending_respawns != 0) return false;
  }
  return true;
}

bool Simulation::AllSettled() const {
  for (const auto& s : servers_) {
    if (s->prepared_count() != 0 || s->lingering_connections() != 0) return false;
  }
  for (const auto& r : redis_servers_) {
    if (r->prepared_count() != 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The workload

TxFn Simulation::MakeClosure(int64_t txn) {
  const std::vector<Step>* steps = &plans_.at(txn);
  if (auto a = audits_.find(txn); a != audits_.end()) {
    const int64_t expected = a->second;
    const bool locking = variant_ != Variant::kPlainAuditReads;
    return [this, txn, steps, expected, locking](Tx& tx) -> Status {
      int64_t total = 0;
      for (const Step& s : *steps) {
        Result<QueryResult> r = tx.Exec(s.key, locking ? "LGET ?" : "GET ?", {s.key});
        if (!r.ok()) return r.status();
        Result<int64_t> v = r->Int(0, 0);
        if (!v.ok()) return v.status();
        total += *v;
      }
      checker_.OnAuditRead(txn, tx.attempt(), total, expected);
      checker_.OnClosureGid(txn, tx.attempt(), tx.gid());
      return Status::OK();
    };
  }
  return [this, txn, steps](Tx& tx) -> Status {
    const int attempt = tx.attempt();
    const int64_t tag = MakeTag(txn, attempt);
    gid_tags_[tx.gid()] = tag;  // the simulated Redis reports its effects by gid
    // A sloppy application that carries on after an error: the protocol must still not commit
    // (the attempt is poisoned).
    const bool sloppy = faults_.Fire(FaultSite::kClosureIgnoresError);
    // A closure that ends the transaction itself (COMMIT, BEGIN, SET autocommit=1, DDL) after
    // step `end_at`, on the decider (the first shard touched) or another shard it touched; and
    // one that changes its session (SET time_zone, SET timestamp).
    const bool hide = faults_.Fire(FaultSite::kClosureHidesCommit);
    const bool end_tx = hide || faults_.Fire(FaultSite::kClosureEndsTransaction);
    const bool change_session = faults_.Fire(FaultSite::kClosureChangesSession);
    const size_t end_at = end_tx ? rng_.Uniform(steps->size()) : steps->size();
    const size_t change_at = change_session ? rng_.Uniform(steps->size()) : steps->size();
    const int end_kind = hide ? 4 : static_cast<int>(rng_.Uniform(4));
    const bool end_on_decider = rng_.Chance(0.7);
    for (size_t i = 0; i < steps->size(); ++i) {
      const Step& s = (*steps)[i];
      if (s.redis) {
        const std::string k = RedisKey(s.key);
        Status st;
        if (s.skew) {
          const Deployment& d = deps_[static_cast<size_t>(txn_deployment_.at(txn))];
          int64_t sum = 0, mine = 0;
          bool failed = false;
          for (int64_t key : s.skew_b_first ? std::vector{d.skew_b, d.skew_a}
                                            : std::vector{d.skew_a, d.skew_b}) {
            Result<std::optional<int64_t>> v = tx.kv().GetInt(RedisKey(key));
            if (!v.ok()) {
              st = v.status();
              failed = true;
              break;
            }
            sum += v->value_or(0);
            if (key == s.key) mine = v->value_or(0);
          }
          if (failed) {
            if (sloppy) continue;
            return st;
          }
          if (sum + s.delta < kSkewFloor) return Tx::Abort("the pair would go below its floor");
          st = tx.kv().Set(k, std::to_string(mine + s.delta));
        } else if (s.rmw) {
          Result<std::optional<int64_t>> v = tx.kv().GetInt(k);
          if (!v.ok()) {
            if (sloppy) continue;
            return v.status();
          }
          if (v->value_or(0) + s.delta < s.min) return Tx::Abort("not enough tokens");
          st = tx.kv().Set(k, std::to_string(v->value_or(0) + s.delta));
        } else {
          st = tx.kv().Incr(k, s.delta, std::max(s.min, -kKvMaxExactInteger), kKvMaxExactInteger);
        }
        if (!st.ok()) {
          if (sloppy) continue;
          return st;
        }
        checker_.OnClosureEffect(txn, attempt, tx.kv().StoreFor(k), s.key, s.delta);
      } else if (s.get) {
        Result<QueryResult> r = tx.Exec(s.key, "GET ?", {s.key});
        if (!r.ok() && !sloppy) return r.status();
      } else {
        Result<QueryResult> r = tx.Exec(s.key, "ADD ? ? ? ?", {s.key, s.delta, s.min, tag});
        if (!r.ok()) {
          if (sloppy) continue;
          return r.status();
        }
        if (r->affected_rows != 1) return Tx::Abort("not enough gold or items");
        checker_.OnClosureEffect(txn, attempt, tx.ShardFor(s.key), s.key, s.delta);
      }
      if (i == end_at) {
        const int64_t on = end_on_decider ? (*steps)[0].key : (*steps)[rng_.Uniform(i + 1)].key;
        Result<QueryResult> r = tx.Exec(on, "ENDTX ?", {end_kind});
        if (!r.ok() && !sloppy) return r.status();
      }
      if (i == change_at) {
        const int64_t on = (*steps)[rng_.Uniform(i + 1)].key;
        Result<QueryResult> r =
            rng_.Chance(0.5)
                ? tx.Exec(on, "SETTZ ?", {static_cast<int64_t>(rng_.Range(-12, 12))})
                : tx.Exec(on, "SETTS ?",
                          {static_cast<int64_t>(rng_.Chance(0.5) ? -86'400'000 : 3'600'000)});
        if (!r.ok() && !sloppy) return r.status();
      }
    }
    checker_.OnClosureGid(txn, attempt, tx.gid());
    return Status::OK();
  };
}

// ---------------------------------------------------------------------------------------------
// The run

void Simulation::Teardown() {
  // Ends every fiber (unwinding their stacks) so the scheduler can be destroyed. Nothing may
  // start any more: no faults, no resolvers, no coordinator restarts (no work left).
  faults_.Disable();
  stop_resolvers_ = true;
  stop_foreign_ = true;
  for (Deployment& d : deps_) d.next_txn = d.txns;
  sched_.KillAll();
  sched_.RunUntil([this] { return sched_.live_fibers() == 0; });
}

SeedResult Simulation::Run() {
  SeedResult res;
  res.seed = seed_;
  std::string world = std::to_string(servers_count_) + " servers, lock_wait " +
                      std::to_string(lock_wait_timeout_ms_) + " ms";
  for (const Deployment& d : deps_) {
    char buf[320];
    std::string map;
    for (uint32_t s = 0; s < d.shards; ++s) map += (s ? "," : "") + std::to_string(d.server_of[s]);
    std::snprintf(buf, sizeof buf,
                  "; %s (%.4s): %u shards on servers %s, %d players, %d txns, %d coordinators%s, "
                  "%d resolvers, txn_timeout %lld ms, resolver every ~%lld ms%s%s",
                  d.name.c_str(), d.id.c_str(), d.shards, map.c_str(), d.players, d.txns,
                  d.coordinator_slots, d.coordinators_resolve ? " (resolving)" : "",
                  d.standalone_resolvers, static_cast<long long>(d.protocol.txn_timeout_ms),
                  static_cast<long long>(d.resolver_interval_ms), d.long_gaps ? ", long gaps" : "",
                  d.phase2_before_return ? "" : ", phase 2 in background");
    world += buf;
  }
  res.world = world;
  res.faults = faults_.Describe();
  Trace("world: %s", world.c_str());
  Trace("faults: %s", res.faults.c_str());

  // Other applications on the servers.
  const bool foreign_snapshot = faults_.Fire(FaultSite::kLongForeignSnapshot);
  const bool foreign_xa = faults_.Fire(FaultSite::kForeignXaUser);
  for (auto& s : servers_) {
    if (foreign_snapshot) s->OpenForeignSnapshot();
    if (foreign_xa) {
      const uint32_t i = s->index();
      sched_.At(sched_.now() + rng_.Range(0, 2000), [this, i] { ForeignXaTick(i); });
    }
  }
  for (const Deployment& d : deps_) {
    for (int i = 0; i < d.coordinator_slots; ++i) SpawnCoordinator(d.index, i);
    for (int i = 0; i < d.standalone_resolvers; ++i) SpawnResolver(d.index, i);
  }

  auto runaway = [this] { return sched_.switches() > kMaxSwitches; };
  bool ok = sched_.RunUntil([&] { return WorkloadFinished() || runaway(); });
  if (ok && !runaway()) {
    // Quiescent phase: faults off, resolvers stopped, every server back up.
    Trace("workload done: faults off");
    faults_.Disable();
    stop_resolvers_ = true;
    stop_foreign_ = true;
    ok = sched_.RunUntil([&] { return processes_.empty() || runaway(); });
    for (auto& s : servers_) s->Restart();
    for (auto& r : redis_servers_) r->Restart();
    std::vector<int> finals;
    for (const Deployment& d : deps_) {
      finals.push_back(
          NewProcess(d.index, ProcessKind::kFinalResolver, 0, d.name.substr(5) + ".final").id);
    }
    Process& op = *FindProcess(finals[0]);
    SpawnFiber(op, "operator", [this](Process& q) { Operator(q); });
    ok = ok && sched_.RunUntil([&] { return final_done_ || runaway(); });
    for (int id : finals) {
      if (id != finals[0]) DestroyProcess(id);
    }
    // The other applications end; let the last processes end and every server notice its
    // closed connections.
    for (auto& s : servers_) s->CloseForeign();
    ok = ok && sched_.RunUntil([&] {
      return (processes_.empty() && !sched_.has_events() && sched_.live_fibers() == 0) || runaway();
    });
  }
  const bool completed = ok && !runaway();
  if (runaway()) {
    checker_.Violation("runaway: more than " + std::to_string(kMaxSwitches) +
                       " fiber switches (livelock?)");
  } else if (!ok) {
    checker_.Violation("stuck: no fiber can run and no event is pending, but the seed is not done");
  }
  Teardown();
  if (completed) {
    std::vector<DbFinalState> dbs;
    std::vector<ServerFinalState> servers;
    for (auto& s : servers_) {
      for (DbFinalState& db : s->DbFinalStates()) dbs.push_back(std::move(db));
      servers.push_back(s->FinalState());
    }
    for (auto& r : redis_servers_) {
      for (DbFinalState& db : r->DbFinalStates()) dbs.push_back(std::move(db));
      servers.push_back(r->FinalState());
    }
    std::set<std::string> collected;
    for (const Deployment& d : deps_) {
      if (d.resolver.collect_garbage) collected.insert(d.id);
    }
    checker_.CheckFinal(dbs, servers, initial_rows_, collected);
    // The write-skew probe's constraint: every transaction kept skew_a + skew_b >= kSkewFloor
    // given what it read, so a serializable history ends with it too.
    for (const Deployment& d : deps_) {
      if (d.redis == 0) continue;
      int64_t sum = 0;
      for (const DbFinalState& db : dbs) {
        if (db.deployment != d.id) continue;
        for (int64_t key : {d.skew_a, d.skew_b}) {
          if (auto v = db.rows.find(key); v != db.rows.end()) sum += v->second;
        }
      }
      if (sum < kSkewFloor) {
        checker_.Violation("write skew: Redis keys " + std::to_string(d.skew_a) + " and " +
                           std::to_string(d.skew_b) + " sum to " + std::to_string(sum) +
                           ", but every transaction kept their sum >= " +
                           std::to_string(kSkewFloor) + " given what it read");
      }
    }
  }
  processes_.clear();

  res.violations = checker_.violations();
  res.coverage = coverage_;
  res.stats = checker_.stats();
  res.faults_fired = faults_.total_fired();
  res.resolver_passes = resolver_passes_;
  res.process_crashes = process_crashes_;
  res.shard_crashes = shard_crashes_;
  res.fiber_switches = sched_.switches();
  res.simulated_ms = sched_.now() - kStartMs;
  uint64_t h = rng_.Fingerprint() ^ static_cast<uint64_t>(sched_.now());
  for (auto& s : servers_) {
    for (const DbFinalState& db : s->DbFinalStates()) {
      for (const auto& [k, v] : db.rows) {
        h = (h ^ static_cast<uint64_t>(k * 31 + v)) * 0x100000001b3ULL;
      }
    }
  }
  for (auto& r : redis_servers_) {
    for (const DbFinalState& db : r->DbFinalStates()) {
      for (const auto& [k, v] : db.rows) {
        h = (h ^ static_cast<uint64_t>(k * 37 + v)) * 0x100000001b3ULL;
      }
    }
  }
  res.fingerprint = h;
  return res;
}

}  // namespace

void Tracer::Log(const char* fmt, ...) {
  if (!on_) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::printf("[%9.3f s] %s\n", static_cast<double>(clock_() - origin_) / 1000.0, buf);
}

const char* CovName(Cov c) {
  switch (c) {
    case Cov::kDeadlock:
      return "deadlock";
    case Cov::kLockWaitTimeout:
      return "lock_wait_timeout";
    case Cov::kRequestLost:
      return "request_lost";
    case Cov::kRequestLate:
      return "request_run_late";
    case Cov::kCommitReplyLost:
      return "commit_reply_lost";
    case Cov::kCommitRefusedDeadline:
      return "commit_refused_deadline";
    case Cov::kCommitRefusedFenced:
      return "commit_refused_fenced";
    case Cov::kNotaLiveOwner:
      return "nota_live_owner";
    case Cov::kBranchDetached:
      return "branch_detached";
    case Cov::kPreparedSurvivedCrash:
      return "prepared_survived_crash";
    case Cov::kFenceCoordinator:
      return "fence_by_coordinator";
    case Cov::kFenceResolver:
      return "fence_by_resolver";
    case Cov::kFenceFoundDecision:
      return "fence_found_decision";
    case Cov::kFenceWaitedForLock:
      return "fence_waited_for_lock";
    case Cov::kFenceBusy:
      return "fence_busy";
    case Cov::kResolverCommitted:
      return "detached_branch_committed";
    case Cov::kResolverRolledBack:
      return "detached_branch_rolled_back";
    case Cov::kDecisionCollected:
      return "decision_collected";
    case Cov::kTwoDeployments:
      return "two_deployment_worlds";
    case Cov::kForeignXidSkipped:
      return "other_deployment_xid_skipped";
    case Cov::kNonSeigoXidSkipped:
      return "non_seigo_xid_skipped";
    case Cov::kDstWindow:
      return "dst_windows";
    case Cov::kDeciderCheckInDst:
      return "decider_check_in_dst_window";
    case Cov::kClosureEndTxRefused:
      return "closure_endtx_refused";
    case Cov::kClosureEndTxCommitted:
      return "closure_endtx_committed";
    case Cov::kEndedBehindClassifier:
      return "tx_ended_behind_classifier";
    case Cov::kSessionTainted:
      return "session_tainted";
    case Cov::kStaleConnection:
      return "stale_connection";
    case Cov::kPoolFlushed:
      return "pool_flushed";
    case Cov::kRecoveryRetriedFresh:
      return "recovery_retried_fresh";
    case Cov::kRestartProbeTxns:
      return "restart_probe_txns";
    case Cov::kInnodbTrxCached:
      return "innodb_trx_cached";
    case Cov::kOwnerWaitBusy:
      return "owner_wait_busy";
    case Cov::kOwnerIdReused:
      return "owner_wait_for_reused_thread_id";
    case Cov::kOwnerCheckSkipped:
      return "owner_check_skipped_wrongly";
    case Cov::kHungOwnerKilled:
      return "hung_owner_killed";
    case Cov::kKilledUnrelated:
      return "killed_unrelated_connection";
    case Cov::kLimboCreated:
      return "limbo_created";
    case Cov::kLimboDetected:
      return "limbo_detected";
    case Cov::kLimboRecovered:
      return "limbo_recovered";
    case Cov::kOperatorRestart:
      return "operator_restart";
    case Cov::kGcWithForeignSnapshot:
      return "gc_with_foreign_snapshot";
    case Cov::kCommitErrorCommitted:
      return "commit_error_committed";
    case Cov::kCommitErrorRolledBack:
      return "commit_error_rolled_back";
    case Cov::kDeadlockBroken:
      return "deadlock_broken";
    case Cov::kDeadlockPass:
      return "deadlock_pass";
    case Cov::kDeadlockProbe:
      return "deadlock_probe";
    case Cov::kDetectorVictimOften:
      return "detector_victim_5_times";
    case Cov::kRedisPrepared: return "redis_prepared";
    case Cov::kRedisDecided: return "redis_decided";
    case Cov::kRedisCommitted: return "redis_committed";
    case Cov::kRedisRolledBack: return "redis_rolled_back";
    case Cov::kRedisLatePrepareRefused: return "redis_late_prepare_refused";
    case Cov::kRedisReadConflict: return "redis_read_conflict";
    case Cov::kRedisLockConflict: return "redis_lock_conflict";
    case Cov::kRedisEscrowConflict: return "redis_escrow_conflict";
    case Cov::kRedisGuard: return "redis_guard";
    case Cov::kRedisCrash: return "redis_crash";
    case Cov::kCount:
      break;
  }
  return "?";
}

std::string Coverage::Describe() const {
  std::string out;
  for (int i = 0; i < static_cast<int>(Cov::kCount); ++i) {
    if (!out.empty()) out += ' ';
    out += CovName(static_cast<Cov>(i));
    out += '=';
    out += std::to_string(n[i]);
  }
  return out;
}

namespace {
constexpr Variant kAllVariants[] = {
    Variant::kCorrect,
    Variant::kNoFence,
    Variant::kIgnoreDeadline,
    Variant::kNotaIsDone,
    Variant::kCommitBeforeDecision,
    Variant::kIgnoreDeployment,
    Variant::kZoneClock,
    Variant::kNoClassifier,
    Variant::kPoolTainted,
    Variant::kNoOwnerWait,
    Variant::kGcOldestTrx,
    Variant::kCommitErrorIsAbort,
    Variant::kNoPoolFlush,
    Variant::kPlainAuditReads,
    Variant::kNoDeadlockDetector,
    Variant::kDeadlockKillsOldest,
    Variant::kReadOnlyIgnoresLostLocks,
    Variant::kRedisLocksExpire,
    Variant::kRedisNoReadValidation,
    Variant::kRedisEscrowIgnoresPending,
    Variant::kRedisNoReadLocks,
};
}  // namespace

const char* VariantName(Variant v) {
  switch (v) {
    case Variant::kCorrect:
      return "correct";
    case Variant::kNoFence:
      return "no_fence";
    case Variant::kIgnoreDeadline:
      return "ignore_deadline";
    case Variant::kNotaIsDone:
      return "nota_is_done";
    case Variant::kCommitBeforeDecision:
      return "commit_before_decision";
    case Variant::kIgnoreDeployment:
      return "ignore_deployment";
    case Variant::kZoneClock:
      return "zone_clock";
    case Variant::kNoClassifier:
      return "no_classifier";
    case Variant::kPoolTainted:
      return "pool_tainted";
    case Variant::kNoOwnerWait:
      return "no_owner_wait";
    case Variant::kGcOldestTrx:
      return "gc_oldest_trx";
    case Variant::kCommitErrorIsAbort:
      return "commit_error_is_abort";
    case Variant::kNoPoolFlush:
      return "no_pool_flush";
    case Variant::kPlainAuditReads:
      return "plain_audit_reads";
    case Variant::kNoDeadlockDetector:
      return "no_deadlock_detector";
    case Variant::kDeadlockKillsOldest:
      return "deadlock_kills_oldest";
    case Variant::kReadOnlyIgnoresLostLocks:
      return "read_only_ignores_lost_locks";
    case Variant::kRedisLocksExpire:
      return "redis_locks_expire";
    case Variant::kRedisNoReadValidation:
      return "redis_no_read_validation";
    case Variant::kRedisEscrowIgnoresPending:
      return "redis_escrow_ignores_pending";
    case Variant::kRedisNoReadLocks:
      return "redis_no_read_locks";
  }
  return "?";
}

bool ParseVariant(std::string_view name, Variant* out) {
  for (Variant v : kAllVariants) {
    if (name == VariantName(v)) {
      *out = v;
      return true;
    }
  }
  return false;
}

const char* VariantList() {
  static const std::string list = [] {
    std::string s;
    for (Variant v : kAllVariants) {
      if (!s.empty()) s += ", ";
      s += VariantName(v);
    }
    return s;
  }();
  return list.c_str();
}

SeedResult RunSeed(uint64_t seed, const RunOptions& options) {
  Simulation sim(seed, options);
  return sim.Run();
}

}  // namespace seigo::sim
