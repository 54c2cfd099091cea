#include "sim/scheduler.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace seigo::sim {
namespace {

constexpr size_t kStackBytes = 256 * 1024;

// Stacks are mmap'ed with a PROT_NONE guard page below them (an overflow faults instead of
// corrupting a neighbour) and recycled across fibers and seeds: a long run spawns millions.
class StackPool {
 public:
  static StackPool& Get() {
    static StackPool* pool = new StackPool();
    return *pool;
  }
  void* Take() {
    if (!free_.empty()) {
      void* s = free_.back();
      free_.pop_back();
      return s;
    }
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      std::perror("seigo_sim: mmap of a fiber stack");
      std::abort();
    }
    mprotect(base, page, PROT_NONE);
    return static_cast<char*>(base) + page;
  }
  void Give(void* stack) { free_.push_back(stack); }

 private:
  std::vector<void*> free_;
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "seigo_sim: internal error: %s\n", what);
  std::abort();
}

}  // namespace

#if defined(__x86_64__)
// sim_switch(&from_sp, to_sp): pushes the System V callee-saved registers (and the SSE / x87
// control words) on the current stack, stores the stack pointer in *from_sp, loads to_sp and
// pops the same frame from there. A new fiber's stack is laid out by Spawn so that its first
// switch "returns" into sim_fiber_start, which calls Scheduler::Entry(r12). No system call, no
// signal mask: the simulator never uses signals.
extern "C" void sim_switch(void** from_sp, void* to_sp);
extern "C" void sim_fiber_start();
asm(R"(
  .text
  .globl sim_switch
  .type sim_switch, @function
sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sim_switch, .-sim_switch

  .globl sim_fiber_start
  .type sim_fiber_start, @function
sim_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%rbx
  ud2
  .cfi_endproc
  .size sim_fiber_start, .-sim_fiber_start
)");
#endif

Fiber::Fiber(Scheduler* sched, uint64_t id, std::string name, int process,
             std::function<void()> body)
    : sched_(sched), id_(id), name_(std::move(name)), process_(process), body_(std::move(body)) {}

Fiber::~Fiber() {
  if (stack_ != nullptr) StackPool::Get().Give(stack_);
}

Scheduler::Scheduler(Rng* rng, int64_t start_ms) : rng_(rng), now_ms_(start_ms) {}

Scheduler::~Scheduler() {
  if (!fibers_.empty()) Die("scheduler destroyed with live fibers");
}

Fiber* Scheduler::Spawn(std::string name, int process, std::function<void()> body) {
  const uint64_t id = next_fiber_id_++;
  auto f = std::unique_ptr<Fiber>(new Fiber(this, id, std::move(name), process, std::move(body)));
  f->stack_ = StackPool::Get().Take();
#if defined(__x86_64__)
  // The frame sim_switch pops, from the lowest address up: SSE/x87 control words, r15, r14,
  // r13, r12 (= the fiber), rbx (= Entry), rbp, and the "return address" sim_fiber_start. After
  // that ret the stack pointer is 16-byte aligned, as a call needs.
  auto* top = reinterpret_cast<uint64_t*>(static_cast<char*>(f->stack_) + kStackBytes);
  uint64_t* sp = top - 8;
  const uint32_t mxcsr = 0x1F80;  // defaults: all exceptions masked, round to nearest
  const uint16_t fpucw = 0x037F;
  sp[0] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpucw) << 32);
  sp[1] = 0;                                              // r15
  sp[2] = 0;                                              // r14
  sp[3] = 0;                                              // r13
  sp[4] = reinterpret_cast<uint64_t>(f.get());            // r12
  sp[5] = reinterpret_cast<uint64_t>(&Scheduler::Entry);  // rbx
  sp[6] = 0;                                              // rbp
  sp[7] = reinterpret_cast<uint64_t>(&sim_fiber_start);   // return address
  f->sp_ = sp;
#else
  getcontext(&f->ctx_);
  f->ctx_.uc_stack.ss_sp = f->stack_;
  f->ctx_.uc_stack.ss_size = kStackBytes;
  f->ctx_.uc_link = nullptr;
  const auto p = reinterpret_cast<uintptr_t>(f.get());
  makecontext(&f->ctx_, reinterpret_cast<void (*)()>(&Scheduler::Trampoline), 2,
              static_cast<unsigned>(p >> 32), static_cast<unsigned>(p & 0xffffffffu));
#endif
  Fiber* raw = f.get();
  fibers_.emplace(id, std::move(f));
  runnable_.push_back(raw);
  return raw;
}

void Scheduler::Trampoline(unsigned hi, unsigned lo) {
  auto* f = reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo);
  f->sched_->RunFiber(f);
}

void Scheduler::Entry(Fiber* f) { f->sched_->RunFiber(f); }

void Scheduler::RunFiber(Fiber* f) {
  if (!f->killed_) {
    try {
      f->body_();
    } catch (const ProcessKilled&) {
      // The process died; its stack has been unwound. Nothing to do: not blocking here.
    }
  }
  f->body_ = nullptr;  // destroys the captures here, on the fiber's own stack
  f->state_ = Fiber::State::kDone;
#if defined(__x86_64__)
  sim_switch(&f->sp_, main_sp_);
#else
  swapcontext(&f->ctx_, &main_ctx_);
#endif
  Die("a finished fiber was resumed");
}

void Scheduler::At(int64_t when_ms, std::function<void()> event) {
  events_.emplace(std::make_pair(std::max(when_ms, now_ms_), next_event_seq_++), std::move(event));
}

void Scheduler::FireDueEvents() {
  while (!events_.empty() && events_.begin()->first.first <= now_ms_) {
    std::function<void()> e = std::move(events_.begin()->second);
    events_.erase(events_.begin());
    e();
  }
}

bool Scheduler::AdvanceClock() {
  int64_t next = kForever;
  if (!events_.empty()) next = events_.begin()->first.first;
  for (auto& [id, f] : fibers_) {
    if (f->state_ == Fiber::State::kSleeping || f->state_ == Fiber::State::kWaiting) {
      next = std::min(next, f->wake_at_);
    }
  }
  if (next == kForever) return false;
  now_ms_ = std::max(now_ms_, next);
  // Wake in creation order (fibers_ is keyed by id): deterministic.
  for (auto& [id, f] : fibers_) {
    if ((f->state_ == Fiber::State::kSleeping || f->state_ == Fiber::State::kWaiting) &&
        f->wake_at_ <= now_ms_) {
      if (f->state_ == Fiber::State::kWaiting) {
        RemoveFromQueue(f.get());
        f->notified_ = false;
      }
      MakeRunnable(f.get());
    }
  }
  return true;
}

bool Scheduler::RunUntil(const std::function<bool()>& done) {
  if (in_fiber()) Die("RunUntil called from a fiber");
  for (;;) {
    if (done()) return true;
    FireDueEvents();
    if (done()) return true;
    if (runnable_.empty()) {
      if (!AdvanceClock()) return done();
      continue;
    }
    const size_t i = rng_->Uniform(runnable_.size());
    Fiber* f = runnable_[i];
    runnable_[i] = runnable_.back();
    runnable_.pop_back();
    SwitchTo(f);
    if (f->state_ == Fiber::State::kDone) fibers_.erase(f->id_);
  }
}

void Scheduler::SwitchTo(Fiber* f) {
  ++switches_;
  current_ = f;
  f->state_ = Fiber::State::kRunning;
#if defined(__x86_64__)
  sim_switch(&main_sp_, f->sp_);
#else
  swapcontext(&main_ctx_, &f->ctx_);
#endif
  current_ = nullptr;
}

void Scheduler::Block() {
  Fiber* f = current_;
  if (f == nullptr) Die("blocking call outside a fiber (in a timed event?)");
#if defined(__x86_64__)
  sim_switch(&f->sp_, main_sp_);
#else
  swapcontext(&f->ctx_, &main_ctx_);
#endif
  // Resumed by the scheduler (current_ == f again).
  if (f->killed_) throw ProcessKilled{};
}

void Scheduler::Yield() {
  if (current_ == nullptr) Die("Yield outside a fiber");
  if (current_->killed_) throw ProcessKilled{};
  current_->state_ = Fiber::State::kRunnable;
  runnable_.push_back(current_);
  Block();
}

void Scheduler::Sleep(int64_t ms) {
  if (ms <= 0) {
    Yield();
    return;
  }
  if (current_ == nullptr) Die("Sleep outside a fiber");
  if (current_->killed_) throw ProcessKilled{};
  current_->state_ = Fiber::State::kSleeping;
  current_->wake_at_ = now_ms_ + ms;
  Block();
}

bool Scheduler::Wait(WaitQueue* q, int64_t timeout_ms) {
  Fiber* f = current_;
  if (f == nullptr) Die("Wait outside a fiber");
  if (f->killed_) throw ProcessKilled{};
  f->state_ = Fiber::State::kWaiting;
  f->wake_at_ = timeout_ms == kForever ? kForever : now_ms_ + std::max<int64_t>(0, timeout_ms);
  f->queue_ = q;
  f->notified_ = false;
  q->waiters_.push_back(f);
  Block();
  return f->notified_;
}

void Scheduler::NotifyAll(WaitQueue* q) {
  std::vector<Fiber*> w;
  w.swap(q->waiters_);
  for (Fiber* f : w) {
    f->queue_ = nullptr;
    f->notified_ = true;
    MakeRunnable(f);
  }
}

void Scheduler::MakeRunnable(Fiber* f) {
  f->state_ = Fiber::State::kRunnable;
  runnable_.push_back(f);
}

void Scheduler::RemoveFromQueue(Fiber* f) {
  if (f->queue_ == nullptr) return;
  auto& w = f->queue_->waiters_;
  w.erase(std::remove(w.begin(), w.end(), f), w.end());
  f->queue_ = nullptr;
}

void Scheduler::Kill(Fiber* f) {
  if (f->killed_ || f->state_ == Fiber::State::kDone) return;
  f->killed_ = true;
  if (f->state_ == Fiber::State::kSleeping || f->state_ == Fiber::State::kWaiting) {
    RemoveFromQueue(f);
    MakeRunnable(f);  // it throws ProcessKilled as soon as it runs
  }
  // kRunnable: already queued. kRunning: the caller (that very fiber) throws itself.
}

void Scheduler::KillProcess(int process) {
  for (auto& [id, f] : fibers_) {
    if (f->process_ == process) Kill(f.get());
  }
}

void Scheduler::KillAll() {
  for (auto& [id, f] : fibers_) Kill(f.get());
}

}  // namespace seigo::sim
