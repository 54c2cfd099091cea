// Scheduler: cooperative fibers on one OS thread, a simulated clock, and timed events.
//
// seigo's protocol core is synchronous: Protocol::Run blocks inside Session and Participant calls
// and in Env::SleepMs. To interleave several coordinator processes and resolvers in one thread,
// each simulated thread of control is a Fiber with its own stack. On x86-64 a fiber switch is a
// few instructions of assembly (callee-saved registers and the stack pointer; scheduler.cc):
// glibc's swapcontext also saves the signal mask with a system call on every switch, which was
// a third of the simulator's run time. Elsewhere it falls back to ucontext. A fiber runs until
// it blocks — Yield, Sleep or Wait, which the simulated participants and the simulated Env call
// at every round trip and every sleep — and the scheduler then picks the next runnable fiber
// with the seeded Rng. When nothing is runnable, the simulated clock jumps to the next wake-up or
// timed event. Timed events (At) run in the scheduler's own context and must never block; the
// simulated servers use them for work that happens "later" (a server noticing a dead client).
//
// Killing: Kill(f) marks f. A killed fiber throws ProcessKilled the moment it returns from a
// blocking call (or at once if it has not started), which unwinds its stack up to the fiber's
// entry: destructors run, so the sessions it held close — what the OS does to a dead process's
// sockets. C++ keeps per-thread exception state, which fibers share; that is safe because no
// fiber ever blocks while an exception is in flight or inside a catch block (destructors and
// timed events never block; blocking outside a fiber aborts the program).
//
// Ownership: the Scheduler owns its fibers. Before it is destroyed every fiber must have ended
// (KillAll + RunUntil). Thread-safety: single-threaded by design.
#ifndef SEIGO_SIM_SCHEDULER_H_
#define SEIGO_SIM_SCHEDULER_H_

#include <ucontext.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sim/rng.h"

namespace seigo::sim {

// Thrown inside a fiber whose process was killed; caught only at the fiber's entry.
struct ProcessKilled {};

class Scheduler;
class Fiber;

// Fibers blocked until someone calls Scheduler::NotifyAll on the queue (or their timeout).
class WaitQueue {
 public:
  WaitQueue() = default;
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;
  bool empty() const { return waiters_.empty(); }

 private:
  friend class Scheduler;
  std::vector<Fiber*> waiters_;
};

class Fiber {
 public:
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber();

  uint64_t id() const { return id_; }
  const std::string& name() const { return name_; }
  int process() const { return process_; }
  bool killed() const { return killed_; }

 private:
  friend class Scheduler;
  enum class State { kRunnable, kRunning, kSleeping, kWaiting, kDone };
  Fiber(Scheduler* sched, uint64_t id, std::string name, int process, std::function<void()> body);

  Scheduler* sched_;
  uint64_t id_;
  std::string name_;
  int process_;
  std::function<void()> body_;
  void* sp_ = nullptr;  // saved stack pointer while switched out (x86-64 switch)
#if !defined(__x86_64__)
  ucontext_t ctx_;
#endif
  void* stack_ = nullptr;  // from the stack pool; guard page below
  State state_ = State::kRunnable;
  int64_t wake_at_ = 0;         // kSleeping / kWaiting
  WaitQueue* queue_ = nullptr;  // kWaiting
  bool notified_ = false;
  bool killed_ = false;
};

class Scheduler {
 public:
  static constexpr int64_t kForever = INT64_MAX;

  Scheduler(Rng* rng, int64_t start_ms);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();

  // A new runnable fiber. `process` groups fibers for KillProcess.
  Fiber* Spawn(std::string name, int process, std::function<void()> body);
  // Runs `event` in the scheduler's context when the clock reaches `when_ms` (events at the same
  // time run in the order they were added). Events must not block.
  void At(int64_t when_ms, std::function<void()> event);

  // Runs fibers and events until `done()` holds (checked between steps) or nothing is left that
  // could ever run. Returns done().
  bool RunUntil(const std::function<bool()>& done);

  int64_t now() const { return now_ms_; }
  Fiber* current() const { return current_; }
  bool in_fiber() const { return current_ != nullptr; }
  size_t live_fibers() const { return fibers_.size(); }
  bool has_events() const { return !events_.empty(); }
  uint64_t switches() const { return switches_; }

  // Blocking calls: only from inside a fiber. Each may throw ProcessKilled.
  void Yield();
  void Sleep(int64_t ms);
  // True if notified, false if `timeout_ms` passed first (kForever: no timeout).
  bool Wait(WaitQueue* q, int64_t timeout_ms);

  // Not blocking: from fibers, events or outside.
  void NotifyAll(WaitQueue* q);
  void Kill(Fiber* f);
  void KillProcess(int process);
  void KillAll();

 private:
  void Block();  // switches to the scheduler; throws ProcessKilled on return if killed
  void SwitchTo(Fiber* f);
  bool AdvanceClock();
  void FireDueEvents();
  void MakeRunnable(Fiber* f);
  void RemoveFromQueue(Fiber* f);
  [[noreturn]] void RunFiber(Fiber* f);
  static void Trampoline(unsigned hi, unsigned lo);
  static void Entry(Fiber* f);

  Rng* rng_;
  int64_t now_ms_;
  void* main_sp_ = nullptr;  // the scheduler's saved stack pointer while a fiber runs
#if !defined(__x86_64__)
  ucontext_t main_ctx_;
#endif
  Fiber* current_ = nullptr;
  uint64_t next_fiber_id_ = 1;
  uint64_t next_event_seq_ = 0;
  uint64_t switches_ = 0;
  std::map<uint64_t, std::unique_ptr<Fiber>> fibers_;  // by id: iteration order is creation order
  std::vector<Fiber*> runnable_;
  std::map<std::pair<int64_t, uint64_t>, std::function<void()>> events_;  // (time, seq)
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_SCHEDULER_H_
