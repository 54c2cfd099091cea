// Small types shared by the simulator's parts: protocol variants, effects, tracing.
#ifndef SEIGO_SIM_COMMON_H_
#define SEIGO_SIM_COMMON_H_

#include <cstdarg>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace seigo::sim {

// Deliberately broken behaviours, implemented inside the simulated participants, that the
// checker must catch (sim/README.md, "Self-test"). kCorrect is the real MariaDB behaviour.
enum class Variant {
  kCorrect,
  kNoFence,               // FenceAbort writes no abort row, yet reports "abort"
  kIgnoreDeadline,        // a resolver's fence is accepted before the deadline, and the
                          // decider's commit insert overwrites an existing (abort) row
  kNotaIsDone,            // XA RECOVER hides branches owned by live connections, and a commit
                          // by XID takes XAER_NOTA for "finished" (no marker check)
  kCommitBeforeDecision,  // XA PREPARE already makes the branch's writes visible and permanent
  // Issue 7 ("widen the envelope"): each is a hole the old code had, planted again.
  kIgnoreDeployment,    // RecoverPrepared keeps every seigo XID, whichever deployment it names
  kZoneClock,           // the decider's clock is UNIX_TIMESTAMP(NOW()): local time of the session
                        // (or SYSTEM) zone, an hour off in a DST window
  kNoClassifier,        // no client-side refusal: a closure's COMMIT, BEGIN, SET autocommit=1
                        // or DDL reaches the decider's local transaction and commits it so far
  kPoolTainted,         // the old adapter: no classifier, no status-flag checks, and sessions
                        // whose state a closure changed (autocommit=1) go back to the pool
  kNoOwnerWait,         // commit/rollback by XID neither waits for the owner's teardown nor
                        // re-reads the marker: the server's OK is believed (the limbo branch)
  kGcOldestTrx,         // GC keeps every row while any transaction older than it is open on the
                        // server (the old INNODB_TRX rule): an unrelated snapshot stops GC
  kCommitErrorIsAbort,  // an error from the commit statement itself is taken for "not committed"
  kNoPoolFlush,         // the pool hands out connections made before a restart, one per attempt
  // Issue 8: the bank audits' reads are plain consistent reads (GET) instead of locking reads
  // (LGET): they may see half of a cross-shard transfer, and the checker must say so.
  kPlainAuditReads,
  // Issue 12: no deadlock detector runs (cross-shard cycles last until the lock-wait timeout);
  // or the detector breaks each cycle at its OLDEST transaction (priorities reported inverted),
  // which lets a transaction lose again and again.
  kNoDeadlockDetector,
  kDeadlockKillsOldest,
  // Found while building issue 12: a read-only attempt's final rollback failing (its connection
  // was lost after a read, so its locks were gone early) went unnoticed and the attempt counted
  // as committed, with reads that may straddle a transfer. Planted by hiding that failure.
  kReadOnlyIgnoresLostLocks,
  // Issue 9 (Redis, doc/redis.md): a write lock that expires on its own after 100 ms; reads
  // that are never validated at prepare; bounded increments checked without the other
  // transactions' pending reservations.
  kRedisLocksExpire,
  kRedisNoReadValidation,
  kRedisEscrowIgnoresPending,
  // Found by review: only written keys were locked at prepare, so two transactions that each
  // read what the other writes, on two instances, could both commit (write skew).
  kRedisNoReadLocks,
};
const char* VariantName(Variant v);
bool ParseVariant(std::string_view name, Variant* out);
const char* VariantList();  // "no_fence, ignore_deadline, ..."

// One row change made by a statement: key += delta. `tag` names the attempt that made it
// (txn id * 100 + attempt number), so the checker can tell attempts apart.
struct Effect {
  int64_t key = 0;
  int64_t delta = 0;
  int64_t tag = 0;
};
inline int64_t MakeTag(int64_t txn, int attempt) { return txn * 100 + attempt; }
inline int64_t TagTxn(int64_t tag) { return tag / 100; }
inline int TagAttempt(int64_t tag) { return static_cast<int>(tag % 100); }

// Counters of the interesting things that happened, to show the simulation reaches the paths
// that matter (printed with the results; sim/README.md).
enum class Cov : int {
  kDeadlock,               // a statement was a deadlock victim (real or injected)
  kLockWaitTimeout,        // a statement's lock wait timed out
  kRequestLost,            // a round trip lost (before or after the server ran it)
  kRequestLate,            // the server ran a request after the client had given up on it
  kCommitReplyLost,        // the decider's commit-point reply was lost (outcome unknown)
  kCommitRefusedDeadline,  // the decider refused the commit: past the deadline
  kCommitRefusedFenced,    // the decider refused the commit: the gid was fenced
  kNotaLiveOwner,          // XA COMMIT/ROLLBACK got XAER_NOTA because a live connection owns it
  kBranchDetached,         // a prepared branch outlived its connection
  kPreparedSurvivedCrash,  // a prepared branch survived a shard crash
  kFenceCoordinator,       // a coordinator's fence wrote an abort row
  kFenceResolver,          // a resolver's fence wrote an abort row
  kFenceFoundDecision,     // a fence ran into an existing decision
  kFenceWaitedForLock,     // a fence waited for a live decider's uncommitted insert
  kFenceBusy,              // a fence was refused (deadline / window / lock wait)
  kResolverCommitted,      // a resolver (or phase-2 retry) XA COMMITted a detached branch
  kResolverRolledBack,     // a resolver XA ROLLBACKed a detached branch
  kDecisionCollected,      // a decision row was garbage-collected
  // Issue 7.
  kTwoDeployments,         // a seed with two deployments sharing the servers
  kForeignXidSkipped,      // RecoverPrepared skipped another deployment's XID
  kNonSeigoXidSkipped,     // ... or another application's (not a seigo XID)
  kDstWindow,              // a server's SYSTEM time zone went through a DST change
  kDeciderCheckInDst,      // a deadline check ran while the zone (SYSTEM or session) was off
  kClosureEndTxRefused,    // a closure's COMMIT/BEGIN/SET autocommit/DDL was refused (1399)
  kClosureEndTxCommitted,  // ... reached a local transaction and committed the work so far
  kEndedBehindClassifier,  // the status flags showed a local transaction ended by a statement
  kSessionTainted,         // a session whose state a closure changed was kept out of the pool
  kStaleConnection,        // a call found its connection gone (server restarted, or killed)
  kPoolFlushed,            // an idle connection from before a dead one was dropped unused
  kRecoveryRetriedFresh,   // a recovery call was retried on a fresh connection
  kRestartProbeTxns,       // transactions run right after every server restarted
  kInnodbTrxCached,        // an INNODB_TRX read was served from the (possibly stale) cache
  kOwnerWaitBusy,          // commit/rollback by XID waited: the owner thread still holds it
  kOwnerIdReused,          // ... for a thread id that now names another connection (restart)
  kOwnerCheckSkipped,      // the owner check was skipped although the owner holds the branch
                           // (the marker's created_ms made it look older than the restart)
  kHungOwnerKilled,        // a resolver closed a hung owner's connection (KILL)
  kKilledUnrelated,        // ... and the thread id named a different connection (reused)
  kLimboCreated,           // an XA COMMIT/ROLLBACK by XID landed in the owner's teardown
  kLimboDetected,          // ... and the marker check reported it (kCorruption)
  kLimboRecovered,         // a restart made a limbo branch visible to XA RECOVER again
  kOperatorRestart,        // the operator restarted a server because limbo was reported
  kGcWithForeignSnapshot,  // a decision row was collected while a foreign snapshot was open
  kCommitErrorCommitted,   // a commit statement answered an error, but had committed
  kCommitErrorRolledBack,  // ... and had rolled back
  // Issue 12.
  kDeadlockBroken,         // a statement waiting for a lock was interrupted by a detector
  kDeadlockPass,           // a detector pass read every server's lock waits
  kDeadlockProbe,          // the end-of-seed two-process cycle was run and checked
  kDetectorVictimOften,    // a Run lost 5 or more attempts to deadlock detectors
  // Issue 9 (Redis).
  kRedisPrepared,           // a Redis branch stored its intent
  kRedisDecided,            // a Redis instance was the decider and committed
  kRedisCommitted,          // a prepared Redis intent was committed
  kRedisRolledBack,         // ... rolled back
  kRedisLatePrepareRefused, // a prepare arrived after its rollback and hit the tombstone
  kRedisReadConflict,       // a Redis read was refused or failed validation
  kRedisLockConflict,       // a Redis write or increment met another transaction's lock
  kRedisEscrowConflict,     // a bounded increment met pending reservations near its bound
  kRedisGuard,              // a bounded increment would have crossed its bound
  kRedisCrash,              // a Redis instance was killed (kill -9)
  kCount
};
const char* CovName(Cov c);
struct Coverage {
  uint64_t n[static_cast<int>(Cov::kCount)] = {};
  void Add(Cov c) { ++n[static_cast<int>(c)]; }
  uint64_t Get(Cov c) const { return n[static_cast<int>(c)]; }
  void Merge(const Coverage& o) {
    for (int i = 0; i < static_cast<int>(Cov::kCount); ++i) n[i] += o.n[i];
  }
  std::string Describe() const;  // "deadlock=12 lock_wait_timeout=3 ..."
};

// Optional event log for one seed (--trace). Off by default; Log() is cheap when off.
class Tracer {
 public:
  // `clock` returns simulated unix ms; lines show it relative to `origin`.
  void Enable(std::function<int64_t()> clock, int64_t origin) {
    clock_ = std::move(clock);
    origin_ = origin;
    on_ = true;
  }
  bool on() const { return on_; }
  void Log(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

 private:
  bool on_ = false;
  std::function<int64_t()> clock_;
  int64_t origin_ = 0;
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_COMMON_H_
