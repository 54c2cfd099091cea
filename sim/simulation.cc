#include "sim/simulation.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>

#include "core/protocol.h"
#include "seigo/shard_map.h"
#include "sim/buggify.h"
#include "sim/rng.h"
#include "sim/scheduler.h"
#include "sim/sim_participant.h"

namespace seigo::sim {
namespace {

// Simulated time starts at a realistic unix time, so deadlines look like real ones.
constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr int64_t kInitialGold = 100;
constexpr int64_t kInitialItems = 5;
constexpr int64_t kNoMinimum = INT64_MIN / 4;
// Safety nets against a runaway seed (a livelock in the simulated world is reported, not hung).
constexpr uint64_t kMaxSwitches = 20'000'000;
constexpr int kMaxFinalPasses = 200;
constexpr int64_t kFinalPassIntervalMs = 2'000;

int64_t GoldKey(int player) { return static_cast<int64_t>(player) * 10 + 1; }
int64_t ItemsKey(int player) { return static_cast<int64_t>(player) * 10 + 2; }

enum class ProcessKind { kCoordinator, kResolver, kFinalResolver };

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

// One simulated OS process. A coordinator process is what src/coordinator.cc builds around the
// protocol core: a worker running transactions (the application thread), a phase-2 worker, and
// a resolver thread that settles lost commits (Protocol::TrySettle) and runs ResolvePass.
struct Process {
  int id = 0;
  ProcessKind kind = ProcessKind::kCoordinator;
  int slot = 0;
  std::string name;
  bool alive = true;
  int fibers = 0;
  std::unique_ptr<SimEnv> env;
  std::vector<std::unique_ptr<SimParticipant>> participants;
  std::vector<Participant*> raw;
  std::unique_ptr<core::Protocol> protocol;
  // Coordinator library state (declared after the participants: destroyed first).
  std::deque<core::Phase2Item> phase2;
  std::vector<core::LostCommit> lost;
  bool worker_done = false;
  bool phase2_done = false;
  WaitQueue phase2_ready;
};

struct Step {
  bool get = false;
  int64_t key = 0;
  int64_t delta = 0;
  int64_t min = kNoMinimum;
};

struct WorldConfig {
  uint32_t shards = 2;
  int players = 4;
  int txns = 20;
  int coordinator_slots = 2;
  int standalone_resolvers = 1;
  bool coordinators_resolve = true;
  int64_t resolver_interval_ms = 500;
  int64_t lock_wait_timeout_ms = 200;
  bool long_gaps = false;
  ProtocolOptions protocol;
  ResolverOptions resolver;
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
  void BeforeRoundTrip(int process, uint32_t shard) override;
  void AfterRoundTrip(int process) override;
  void OneWayDelay() override;
  Delivery PickDelivery() override;
  int64_t NoticeDelayMs(bool clean_close) override;
  void ClientReadTimeout() override { sched_.Sleep(rng_.Range(20, 500)); }
  LateBatch LateBatchShape() override { return static_cast<LateBatch>(rng_.Uniform(3)); }

 private:
  void DrawWorld();
  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  Process* FindProcess(int id);
  Process& NewProcess(ProcessKind kind, int slot, const std::string& name);
  void SpawnFiber(Process& p, const std::string& role, std::function<void(Process&)> body);
  void OnFiberExit(int process);
  void DestroyProcess(int process);
  void CrashProcess(Process& p, const char* why);
  [[noreturn]] void CrashCurrentProcess(Process& p, const char* why);
  void CrashShard(uint32_t shard);

  void SpawnCoordinator(int slot);
  void SpawnResolver(int slot);
  void CoordinatorWorker(Process& p);
  void Phase2Worker(Process& p);
  void ResolverThread(Process& p);
  void StandaloneResolver(Process& p);
  void FinalResolver(Process& p);
  int64_t ResolverSleepMs();
  ResolveReport ResolveOnce(Process& p);
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
  WorldConfig cfg_;
  uint64_t next_id_ = 0;
  Coverage coverage_;
  std::vector<std::unique_ptr<SimShard>> shards_;
  std::map<int64_t, int64_t> initial_rows_;
  std::vector<std::vector<Step>> plans_;
  std::map<int, std::unique_ptr<Process>> processes_;
  int next_process_id_ = 1;
  int next_txn_ = 0;
  int live_coordinators_ = 0;
  int pending_respawns_ = 0;
  std::vector<int> generation_;  // per coordinator slot, for names
  bool stop_resolvers_ = false;
  bool final_done_ = false;
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
  ctx.variant = variant_;
  ctx.lock_wait_timeout_ms = cfg_.lock_wait_timeout_ms;
  ctx.next_id = &next_id_;
  ctx.coverage = &coverage_;
  for (uint32_t i = 0; i < cfg_.shards; ++i) shards_.push_back(std::make_unique<SimShard>(i, ctx));
  // Every player has gold and items, each row on the shard that owns its key (ShardMap's hash,
  // the same function the protocol's Tx::ShardFor uses).
  for (int p = 0; p < cfg_.players; ++p) {
    for (auto [key, v] :
         {std::pair{GoldKey(p), kInitialGold}, std::pair{ItemsKey(p), kInitialItems}}) {
      const uint32_t s = ShardMap::JumpHash(ShardMap::MixKey(key), cfg_.shards);
      shards_[s]->LoadRow(key, v);
      initial_rows_[key] = v;
    }
  }
}

Simulation::~Simulation() = default;

void Simulation::DrawWorld() {
  cfg_.shards = static_cast<uint32_t>(rng_.Range(2, 4));
  cfg_.players = static_cast<int>(rng_.Range(3, 10));
  cfg_.txns = static_cast<int>(rng_.Range(10, 60));
  cfg_.coordinator_slots = static_cast<int>(rng_.Range(1, 4));
  cfg_.standalone_resolvers = static_cast<int>(rng_.Range(0, 2));
  cfg_.coordinators_resolve = cfg_.standalone_resolvers == 0 || rng_.Chance(0.7);
  cfg_.resolver_interval_ms = rng_.LogRange(30, 3000);
  const int64_t lock_waits[] = {20, 100, 500, 2000};
  cfg_.lock_wait_timeout_ms = lock_waits[rng_.Uniform(4)];
  cfg_.long_gaps = rng_.Chance(0.3);
  ProtocolOptions& o = cfg_.protocol;
  o.max_attempts = rng_.Chance(0.8) ? 10 : static_cast<int>(rng_.Range(1, 4));
  const int64_t timeouts[] = {200, 1000, 3000, 10000};
  o.txn_timeout_ms = timeouts[rng_.Uniform(4)];
  o.unknown_resolve_tries = static_cast<int>(rng_.Range(1, 5));
  o.phase2_tries = static_cast<int>(rng_.Range(1, 5));
  ResolverOptions& r = cfg_.resolver;
  r.collect_garbage = rng_.Chance(0.9);
  r.decision_retention_ms =
      rng_.Chance(0.5) ? kMinDecisionRetentionMs : rng_.Range(60'000, 180'000);
  r.gc_batch = rng_.Range(1, 50);

  plans_.resize(static_cast<size_t>(cfg_.txns));
  for (auto& steps : plans_) {
    // A trade: the buyer pays the seller, the seller hands over items. Guards (min 0) make an
    // overdraft abort the transaction. Order shuffled: conflicting orders make deadlocks.
    const int buyer = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(cfg_.players)));
    int seller = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(cfg_.players - 1)));
    if (seller >= buyer) ++seller;
    const int64_t price = rng_.Range(1, 60);
    const int64_t qty = rng_.Range(1, 3);
    steps.push_back({false, GoldKey(buyer), -price, 0});
    steps.push_back({false, GoldKey(seller), price, kNoMinimum});
    if (rng_.Chance(0.7)) {
      steps.push_back({false, ItemsKey(seller), -qty, 0});
      steps.push_back({false, ItemsKey(buyer), qty, kNoMinimum});
    }
    for (size_t i = steps.size() - 1; i > 0; --i) std::swap(steps[i], steps[rng_.Uniform(i + 1)]);
    if (rng_.Chance(0.2)) {
      const int who = static_cast<int>(rng_.Uniform(static_cast<uint64_t>(cfg_.players)));
      Step get{true, rng_.Chance(0.5) ? GoldKey(who) : ItemsKey(who), 0, 0};
      steps.insert(steps.begin() + static_cast<long>(rng_.Uniform(steps.size() + 1)), get);
    }
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

void Simulation::BeforeRoundTrip(int process, uint32_t shard) {
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
  if (faults_.Fire(FaultSite::kShardClockStep)) {
    shards_[shard]->StepClock(rng_.Chance(0.7) ? rng_.Range(1, 3000) : -rng_.Range(1, 1000));
  }
  if (faults_.Fire(FaultSite::kShardCrash)) CrashShard(shard);
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
  if (p->kind == ProcessKind::kFinalResolver) return;
  if (faults_.Fire(CrashPointSite(site)))
    CrashCurrentProcess(*p, FaultSiteName(CrashPointSite(site)));
}

void Simulation::CrashShard(uint32_t shard) {
  SimShard& s = *shards_[shard];
  if (!s.up()) return;
  ++shard_crashes_;
  s.Crash();
  const int64_t down =
      faults_.Fire(FaultSite::kLongShardOutage) ? rng_.Range(1000, 10'000) : rng_.Range(1, 300);
  sched_.At(sched_.now() + down, [this, shard] { shards_[shard]->Restart(); });
}

// ---------------------------------------------------------------------------------------------
// Processes

Process* Simulation::FindProcess(int id) {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : it->second.get();
}

Process& Simulation::NewProcess(ProcessKind kind, int slot, const std::string& name) {
  auto p = std::make_unique<Process>();
  p->id = next_process_id_++;
  p->kind = kind;
  p->slot = slot;
  p->name = name;
  p->env = std::make_unique<SimEnv>(this, p->id);
  // A process starts with its clock a little off (NTP is never perfect) — by seconds in seeds
  // where clock steps are on: the protocol must judge deadlines by the decider's clock only.
  const int64_t skew = faults_.enabled(FaultSite::kProcessClockStep) ? 3000 : 50;
  p->env->StepClock(rng_.Range(-skew, skew));
  for (auto& s : shards_) {
    p->participants.push_back(std::make_unique<SimParticipant>(s.get(), this, p->id));
    p->raw.push_back(p->participants.back().get());
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
  if (it->second->kind == ProcessKind::kCoordinator) --live_coordinators_;
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
  for (auto& s : shards_) {
    for (uint64_t c : s->ConnectionsOf(p.id)) s->ClientGone(c, NoticeDelayMs(false));
  }
  sched_.KillProcess(p.id);
  if (p.kind == ProcessKind::kCoordinator) {
    // A supervisor restarts the application after a while; the new process takes the next
    // transactions (the one in flight is lost with the old process: "crashed").
    ++pending_respawns_;
    const int slot = p.slot;
    sched_.At(sched_.now() + rng_.Range(10, 3000), [this, slot] {
      --pending_respawns_;
      if (next_txn_ < cfg_.txns) SpawnCoordinator(slot);
    });
  } else if (p.kind == ProcessKind::kResolver && !stop_resolvers_) {
    const int slot = p.slot;
    sched_.At(sched_.now() + rng_.Range(10, 3000), [this, slot] {
      if (!stop_resolvers_) SpawnResolver(slot);
    });
  }
}

void Simulation::CrashCurrentProcess(Process& p, const char* why) {
  CrashProcess(p, why);
  throw ProcessKilled{};
}

void Simulation::SpawnCoordinator(int slot) {
  if (generation_.size() <= static_cast<size_t>(slot)) generation_.resize(slot + 1);
  const std::string name =
      "coord" + std::to_string(slot) + "." + std::to_string(generation_[slot]++);
  Process& p = NewProcess(ProcessKind::kCoordinator, slot, name);
  p.protocol = std::make_unique<core::Protocol>(p.raw, p.env.get(), cfg_.protocol);
  ++live_coordinators_;
  SpawnFiber(p, "worker", [this](Process& q) { CoordinatorWorker(q); });
  SpawnFiber(p, "phase2", [this](Process& q) { Phase2Worker(q); });
  SpawnFiber(p, "resolver", [this](Process& q) { ResolverThread(q); });
}

void Simulation::SpawnResolver(int slot) {
  Process& p = NewProcess(ProcessKind::kResolver, slot, "resolver" + std::to_string(slot));
  SpawnFiber(p, "main", [this](Process& q) { StandaloneResolver(q); });
}

// The application thread: runs transactions one after another.
void Simulation::CoordinatorWorker(Process& p) {
  while (next_txn_ < cfg_.txns) {
    int64_t think = rng_.Range(0, 20);
    if (cfg_.long_gaps && rng_.Chance(0.03)) think = rng_.Range(5'000, 70'000);
    p.env->SleepMs(think);
    if (next_txn_ >= cfg_.txns) break;
    const int txn = next_txn_++;
    checker_.OnTxnStarted(txn);
    Trace("%s runs txn %d", p.name.c_str(), txn);
    core::RunOutput out = p.protocol->Run(MakeClosure(txn));
    const TxResult& r = out.result;
    Trace("%s txn %d: %s after %d attempt(s), gid %s: %s", p.name.c_str(), txn,
          TxStateName(r.state), r.attempts, r.gid.substr(0, 8).c_str(),
          r.status.ToString().c_str());
    checker_.OnRunReturned(txn, r);
    for (core::Phase2Item& item : out.phase2) {
      if (faults_.Fire(FaultSite::kPhase2Drop)) continue;  // dropped: its session closes
      p.phase2.push_back(std::move(item));
    }
    sched_.NotifyAll(&p.phase2_ready);
    if (out.lost) p.lost.push_back(std::move(*out.lost));
  }
  p.worker_done = true;
  sched_.NotifyAll(&p.phase2_ready);
}

// The phase-2 thread: XA COMMIT of committed transactions' branches, off the caller's path.
void Simulation::Phase2Worker(Process& p) {
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
    Status s = core::Protocol::FinishPhase2(std::move(item), p.env.get(), cfg_.protocol);
    Trace("%s phase 2 of %s on shard %u: %s", p.name.c_str(), xid.gid.substr(0, 8).c_str(),
          xid.branch, s.ToString().c_str());
    checker_.OnPhase2Finished(xid, s);
  }
}

int64_t Simulation::ResolverSleepMs() {
  return rng_.Range(cfg_.resolver_interval_ms / 2, cfg_.resolver_interval_ms * 3 / 2);
}

ResolveReport Simulation::ResolveOnce(Process& p) {
  ++resolver_passes_;
  ResolveReport r = core::ResolvePass(p.raw, p.env.get(), cfg_.resolver);
  if (tracer_.on() && (!r.applied.empty() || !r.fenced.empty() || r.forgotten > 0)) {
    Trace("%s resolver pass: %zu applied, %zu fenced, %zu pending, %zu forgotten", p.name.c_str(),
          r.applied.size(), r.fenced.size(), r.pending.size(), r.forgotten);
  }
  return r;
}

// The coordinator library's resolver thread (src/coordinator.cc): settle lost commits first,
// then one resolver pass.
void Simulation::ResolverThread(Process& p) {
  for (;;) {
    p.env->SleepMs(ResolverSleepMs());
    if (p.worker_done && p.phase2_done) return;  // Coordinator::Stop
    std::vector<core::LostCommit> lost;
    lost.swap(p.lost);
    std::vector<core::LostCommit> keep;
    for (core::LostCommit& x : lost) {
      if (!core::Protocol::TrySettle(x, p.env.get())) keep.push_back(std::move(x));
    }
    if (cfg_.coordinators_resolve) ResolveOnce(p);
    for (core::LostCommit& x : keep) p.lost.push_back(std::move(x));
  }
}

// `seigo recover` in a loop, in its own process.
void Simulation::StandaloneResolver(Process& p) {
  while (!stop_resolvers_) {
    p.env->SleepMs(ResolverSleepMs());
    if (stop_resolvers_) break;
    if (rng_.Chance(0.2)) {
      // `seigo status` now and then: read-only, but what it shows must be true.
      InDoubtReport r = core::InspectInDoubt(p.raw, p.env.get());
      for (const InDoubtTx& tx : r.txs) checker_.OnInDoubtReported(tx);
    }
    ResolveOnce(p);
  }
}

// The quiescent phase: no faults, every shard up. Resolve until nothing is prepared and no
// server has a connection it has not finished with; then let every decision row expire and
// collect them.
void Simulation::FinalResolver(Process& p) {
  for (int pass = 0;; ++pass) {
    ResolveOnce(p);
    if (AllSettled()) break;
    if (pass >= kMaxFinalPasses) {
      checker_.Violation("liveness: branches still prepared after " +
                         std::to_string(kMaxFinalPasses) + " resolver passes without faults");
      break;
    }
    p.env->SleepMs(kFinalPassIntervalMs);
  }
  // `seigo status` agrees: nothing in doubt, every shard answered.
  InDoubtReport status = core::InspectInDoubt(p.raw, p.env.get());
  if (!status.txs.empty() || !status.errors.empty()) {
    checker_.Violation("seigo status still reports " + std::to_string(status.txs.size()) +
                       " transactions in doubt and " + std::to_string(status.errors.size()) +
                       " errors after the quiescent phase");
  }
  p.env->SleepMs(std::max(cfg_.resolver.decision_retention_ms, kMinDecisionRetentionMs) +
                 cfg_.protocol.txn_timeout_ms + 20'000);
  ResolveOnce(p);
  final_done_ = true;
}

bool Simulation::WorkloadFinished() const {
  return next_txn_ >= cfg_.txns && live_coordinators_ == 0 && pending_respawns_ == 0;
}

bool Simulation::AllSettled() const {
  for (const auto& s : shards_) {
    if (s->prepared_count() != 0 || s->lingering_connections() != 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The workload

TxFn Simulation::MakeClosure(int64_t txn) {
  const std::vector<Step>* steps = &plans_[static_cast<size_t>(txn)];
  return [this, txn, steps](Tx& tx) -> Status {
    const int attempt = tx.attempt();
    const int64_t tag = MakeTag(txn, attempt);
    // A sloppy application that carries on after an error: the protocol must still not commit
    // (the attempt is poisoned).
    const bool sloppy = faults_.Fire(FaultSite::kClosureIgnoresError);
    for (const Step& s : *steps) {
      if (s.get) {
        Result<QueryResult> r = tx.Exec(s.key, "GET ?", {s.key});
        if (!r.ok() && !sloppy) return r.status();
        continue;
      }
      Result<QueryResult> r = tx.Exec(s.key, "ADD ? ? ? ?", {s.key, s.delta, s.min, tag});
      if (!r.ok()) {
        if (sloppy) continue;
        return r.status();
      }
      if (r->affected_rows != 1) return Tx::Abort("not enough gold or items");
      checker_.OnClosureEffect(txn, attempt, tx.ShardFor(s.key), s.key, s.delta);
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
  next_txn_ = cfg_.txns;
  sched_.KillAll();
  sched_.RunUntil([this] { return sched_.live_fibers() == 0; });
}

SeedResult Simulation::Run() {
  SeedResult res;
  res.seed = seed_;
  char world[256];
  std::snprintf(world, sizeof world,
                "%u shards, %d players, %d txns, %d coordinators%s, %d resolvers, "
                "txn_timeout %lld ms, lock_wait %lld ms, resolver every ~%lld ms%s",
                cfg_.shards, cfg_.players, cfg_.txns, cfg_.coordinator_slots,
                cfg_.coordinators_resolve ? " (resolving)" : "", cfg_.standalone_resolvers,
                static_cast<long long>(cfg_.protocol.txn_timeout_ms),
                static_cast<long long>(cfg_.lock_wait_timeout_ms),
                static_cast<long long>(cfg_.resolver_interval_ms),
                cfg_.long_gaps ? ", long gaps" : "");
  res.world = world;
  res.faults = faults_.Describe();
  Trace("world: %s", world);
  Trace("faults: %s", res.faults.c_str());

  for (int i = 0; i < cfg_.coordinator_slots; ++i) SpawnCoordinator(i);
  for (int i = 0; i < cfg_.standalone_resolvers; ++i) SpawnResolver(i);

  auto runaway = [this] { return sched_.switches() > kMaxSwitches; };
  bool ok = sched_.RunUntil([&] { return WorkloadFinished() || runaway(); });
  if (ok && !runaway()) {
    // Quiescent phase: faults off, resolvers stopped, every shard back up.
    Trace("workload done: faults off");
    faults_.Disable();
    stop_resolvers_ = true;
    ok = sched_.RunUntil([&] { return processes_.empty() || runaway(); });
    for (auto& s : shards_) s->Restart();
    Process& fin = NewProcess(ProcessKind::kFinalResolver, 0, "final-resolver");
    SpawnFiber(fin, "main", [this](Process& q) { FinalResolver(q); });
    ok = ok && sched_.RunUntil([&] { return final_done_ || runaway(); });
    // Let the last processes end and every server notice its closed connections.
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
    std::vector<ShardFinalState> states;
    for (auto& s : shards_) states.push_back(s->FinalState());
    checker_.CheckFinal(states, initial_rows_);
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
  for (auto& s : shards_) {
    for (const auto& [k, v] : s->FinalState().rows) {
      h = (h ^ static_cast<uint64_t>(k * 31 + v)) * 0x100000001b3ULL;
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
  }
  return "?";
}

bool ParseVariant(std::string_view name, Variant* out) {
  for (Variant v : {Variant::kCorrect, Variant::kNoFence, Variant::kIgnoreDeadline,
                    Variant::kNotaIsDone, Variant::kCommitBeforeDecision}) {
    if (name == VariantName(v)) {
      *out = v;
      return true;
    }
  }
  return false;
}

const char* VariantList() {
  return "correct, no_fence, ignore_deadline, nota_is_done, commit_before_decision";
}

SeedResult RunSeed(uint64_t seed, const RunOptions& options) {
  Simulation sim(seed, options);
  return sim.Run();
}

}  // namespace seigo::sim
