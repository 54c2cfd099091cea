// Coordinator: the entry point of the seigo library. Start reading here.
//
//   auto c = seigo::Coordinator::Open({.shards = "mysql://u:p@127.0.0.1:3306/game,..."});
//   if (!c.ok()) { fprintf(stderr, "%s\n", c.status().ToString().c_str()); return 1; }
//   seigo::TxResult r = (*c)->Run([&](seigo::Tx& tx) { ... return seigo::Status::OK(); });
//
// A Coordinator holds the shard map, a connection pool per shard, a few phase-2 threads and one
// background resolver thread. It keeps no state of its own that matters after a crash: every
// decision lives in a shard (doc/protocol.md), so coordinators are disposable — kill one at any
// moment and any other coordinator's resolver (or `seigo recover`) finishes its transactions.
//
// Thread-safety: all methods may be called from any number of threads at once.
#ifndef SEIGO_COORDINATOR_H_
#define SEIGO_COORDINATOR_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "seigo/deadlock.h"
#include "seigo/env.h"
#include "seigo/message.h"
#include "seigo/options.h"
#include "seigo/resolver.h"
#include "seigo/shard_map.h"
#include "seigo/status.h"
#include "seigo/transaction.h"

namespace seigo {

// When Run() returns for a committed multi-shard transaction (doc/isolation.md).
enum class Phase2Mode {
  // Run() commits every prepared branch (XA COMMIT) before it returns: "committed" means
  // visible — a read right after it, from any connection, sees the transaction's writes, and its
  // row locks are released. If a branch's shard went away after the commit point, Run() still
  // returns committed (the decision is durable) and names that shard in
  // TxResult::pending_visibility; the resolver finishes it.
  kBeforeReturn,
  // Run() returns at the commit point; phase-2 threads commit the branches soon after. Faster
  // for the caller, but a read right after Run() may still see the old rows on a branch shard
  // (and a read-modify-write there waits for the branch's locks).
  kBackground,
};

// What the coordinator's threads do, for an application's logs and metrics
// (CoordinatorOptions::on_event). Background work (phase 2, the resolver) reports every failure
// here; nothing fails silently.
struct Event {
  enum class Kind {
    kAttemptStarted,  // the closure is about to run (gid, attempt)
    kAttemptFailed,   // an attempt did not commit and another may follow (status, duration)
    kCommitted,       // Run() returns committed (gid, attempt, duration of the whole Run)
    kFailed,          // Run() returns without committing: aborted, gave_up, outcome_unknown
    kPhase2Left,      // a committed branch's XA COMMIT failed; the resolver will finish it
                      // (gid, shard, status)
    kLimbo,           // a branch a commit by XID did not finish (doc/limbo-branch.md): needs
                      // an operator (gid, shard, status)
    kResolverPass,    // a resolver pass ended (report)
    kResolverError,   // a resolver pass could not do part of its work (status)
    kDeadlockBroken,  // this process's detector broke a deadlock (doc/deadlocks.md): gid = the
                      // victim's Run, shard = where it waited, duration_ms = how long
    kRelayError,      // the relay could not publish or settle messages (doc/outbox.md); they
                      // stay in the outbox and are retried (shard, status)
  };
  Kind kind = Kind::kAttemptStarted;
  std::string gid;          // "" when not about one transaction
  int attempt = 0;
  int shard = -1;
  int64_t duration_ms = 0;
  Status status;            // the failure; OK for kAttemptStarted, kCommitted, kResolverPass
  TxState state = TxState::kCommitted;   // kCommitted / kFailed: the result's state
  const ResolveReport* report = nullptr;  // kResolverPass: valid during the call only
};
const char* EventKindName(Event::Kind k);  // "attempt_started", ...

// The relay (doc/outbox.md): publishes committed messages from the shards' outboxes.
struct RelayOptions {
  // Committed messages are claimed by the committing process for this long; if it has not
  // published them by then (it died, the broker was down), any coordinator's poll takes them.
  int64_t lease_ms = 10'000;
  // How often every coordinator polls every shard's outbox for such messages.
  int64_t poll_interval_ms = 500;
  size_t window = 256;      // publishes awaiting the broker's confirm at once
  size_t batch_txns = 128;  // transactions claimed per poll and shard
  // Connecting and logging in; each write (it fails when the broker took no byte for this
  // long); each reply; the wait for confirms (none for this long). Then the connection is
  // dropped and the unconfirmed messages are retried.
  int timeout_ms = 5'000;
};

struct CoordinatorOptions {
  // Comma-separated shard URLs (ShardMap::Parse). Required.
  std::string shards;
  // Comma-separated Redis URLs, redis://[:password@]host[:port][/db]: the key-value
  // participants (doc/redis.md), reached through Tx::kv(). Like the shard list, the position
  // of an instance is its identity (participant index = shards + position, claimed on the
  // instance): the list may only grow at the end. Empty = none.
  std::string redis;
  // DEVELOPMENT ONLY. Accept Redis instances that are not configured to fsync every write
  // (appendonly yes, appendfsync always, no-appendfsync-on-rewrite no, maxmemory-policy
  // noeviction). A crash of such an instance can lose the Redis part of a committed
  // transaction: atomicity is then gone. Never in production.
  bool redis_allow_unsafe_durability = false;
  // The RabbitMQ broker that Tx::Publish's messages go to (doc/outbox.md):
  // amqp://user:password@host:port/vhost (never logged with the password). Empty = none, and
  // Tx::Publish is refused. Open() fails on refused credentials but not on an unreachable
  // broker: transactions commit, their messages wait in the outbox, and the relay publishes
  // them once the broker is back.
  std::string amqp;
  RelayOptions relay;
  ProtocolOptions protocol;
  ResolverOptions resolver;
  // innodb_lock_wait_timeout of seigo's connections, whole seconds (>= 1): the backstop for
  // lock waits the deadlock detector cannot see (another application's locks, a shard this
  // process does not use, a MySQL shard).
  int lock_wait_timeout_s = 2;
  // The cross-shard deadlock detector (doc/deadlocks.md): a thread that, while a statement of
  // this process waits, joins every shard's lock waits and breaks cycles in milliseconds.
  DeadlockOptions deadlock;
  int connect_timeout_s = 3;
  int read_timeout_s = 30;
  // Create (or upgrade) seigo's tables on each shard if missing, and claim each shard's index
  // and deployment. false: change nothing; the shards must have been set up before.
  bool prepare_schema = true;
  // false (the default): Open() succeeds while some shards are down (unreachable), as long as
  // one is up. Transactions that touch a down shard fail with kUnavailable (retried, then
  // gave_up) and the others run; resolver passes report the shard in their errors (and through
  // on_event) and retry it; it is opened — and checked like the rest — at the first call after
  // it is back. true: Open() fails unless every shard can be opened.
  bool require_all_shards = false;
  // Idle connections kept per shard and pool (transactions; recovery). 0 = the default (64).
  int max_idle_connections = 0;
  // Transaction connections open at once per shard (idle or in use), 0 = no cap. At the cap a
  // transaction that needs one more waits up to connect_timeout_s for one to come back, then
  // that attempt fails with kUnavailable (retried like an unavailable shard). Recovery
  // connections are not counted (at most 8 per shard during a big resolver pass, plus one).
  int max_connections_per_shard = 0;
  // Run one resolver pass inside Open(), and then one every resolver_interval_ms in the
  // background (0 = neither; then call Recover() yourself or run `seigo recover`).
  int64_t resolver_interval_ms = 1'000;
  // See Phase2Mode. Read-your-writes by default.
  Phase2Mode phase2 = Phase2Mode::kBeforeReturn;
  // kBackground only: threads that run phase 2 (XA COMMIT of prepared branches) off the callers'
  // path. At most 4 items per thread wait in the queue; beyond that a caller commits its own
  // branches before Run() returns (backpressure: queued branches hold connections and row locks).
  int phase2_threads = 4;
  // Time, randomness and crash points; nullptr = DefaultEnv(). Must outlive the Coordinator.
  Env* env = nullptr;
  // Called for every Event, from the thread that did the work: callers of Run() and the
  // coordinator's background threads, concurrently. It must be thread-safe and quick (it runs
  // on the transaction's path); an exception it throws is caught and dropped. Empty = none.
  std::function<void(const Event&)> on_event;
  // Where seigo's own warnings go (a limbo branch, a hook that threw). Empty = stderr.
  std::function<void(std::string_view)> log;
};

class Coordinator {
 public:
  // Parses the shard list, connects to every shard, checks server versions (kUnsupported for
  // servers that lose prepared branches on disconnect) and privileges, prepares the schema, runs
  // a first resolver pass. Fails with a clear Status on any bad input; an unreachable shard only
  // if every shard is, or with require_all_shards.
  static Result<std::unique_ptr<Coordinator>> Open(const CoordinatorOptions& options);

  // Waits for queued phase-2 work (bounded by the phase-2 retries), stops the threads.
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Runs `fn` as one atomic transaction across the shards it touches (transaction.h), with
  // per-call options (a deadline, read-only). Refused (kInvalidArgument, nothing run) when
  // called from inside a closure: nested transactions are not supported.
  TxResult Run(const TxFn& fn, const RunOptions& options = {});

  // One resolver pass now (also what `seigo recover` runs). It first tries to settle this
  // process's own lost commits (kOutcomeUnknown results), so callers that run recovery
  // themselves (resolver_interval_ms = 0) get them finished too.
  ResolveReport Recover();

  // The deployment id of this shard list (doc/xid.md): stored on every shard at setup.
  const std::string& deployment() const;

  // What is in doubt right now, changing nothing (what `seigo status` prints).
  InDoubtReport InDoubt();

  // Who waits for whom right now among seigo transactions of every process (what
  // `seigo status` prints under "lock waits"), changing nothing: no cycle is broken.
  DeadlockReport LockWaits();

  // Blocks until every phase-2 item queued before the call (Phase2Mode::kBackground) has been
  // attempted. A no-op in kBeforeReturn mode, where Run() does its own phase 2.
  void DrainPhase2();

  const ShardMap& shard_map() const;
  // The Redis instances (CoordinatorOptions::redis); instance i is participant
  // shard_map().size() + i.
  size_t redis_instances() const;
  // The Redis instance (0-based, as RedisCommand takes it) that owns `key`: what Tx::kv()
  // routes by (ShardMap::KvInstanceFor). Requires redis_instances() > 0.
  size_t RedisInstanceFor(std::string_view key) const;
  // Runs one command on Redis instance `instance` outside any transaction (e.g. {"GET", "k"}):
  // for tools and tests. The reply as text (nil = nullopt; array replies are refused).
  Result<std::optional<std::string>> RedisCommand(size_t instance,
                                                  const std::vector<std::string>& args);

  // What each shard's outbox holds now (doc/outbox.md), index = shard; a shard that cannot
  // be read has its error.
  std::vector<Result<OutboxStats>> OutboxStatus();
  // Every shard's dead-letter records (doc/outbox.md, "Dead letters"), oldest first, at most
  // `limit` per shard; index = shard.
  std::vector<Result<std::vector<DeadRecord>>> DeadLetters(size_t limit = 1000);
  // Puts dead letters back into their shard's outbox, to be published again: the ones whose
  // message id ("<gid>-<seq>") is in `message_ids`, or with `all` every one (up to 10,000 per
  // shard per call). The dead letters of one old transaction become one new transaction, with
  // new message ids and the header x-seigo-resent-from = the old id. Returns how many moved;
  // an id that names no dead letter is kNotFound (nothing moved for it).
  Result<size_t> ResendDeadLetters(std::span<const std::string> message_ids, bool all = false);
  // Blocks until this process's relay has tried every message committed before the call
  // (published or left in the outbox for a poll). For tests and tools.
  void DrainRelay();

  // Runs one statement outside any transaction on shard `shard` (autocommit). For tools and
  // tests: schema setup, audits. Not atomic with anything.
  Result<QueryResult> QueryShard(uint32_t shard, std::string_view sql,
                                 std::initializer_list<Value> params = {});
  // The same with values built at run time (an IN (...) list).
  Result<QueryResult> QueryShard(uint32_t shard, std::string_view sql,
                                 std::span<const Value> params);

  struct Counters {
    uint64_t committed = 0, aborted = 0, gave_up = 0, unknown = 0;
    uint64_t attempts = 0;        // closure runs
    uint64_t phase2_done = 0;     // branches committed by phase 2
    uint64_t phase2_left = 0;     // branches left to the resolver
    uint64_t limbo = 0;           // branches a commit/rollback by XID did not finish although
                                  // the server said OK (doc/limbo-branch.md): need an operator
    uint64_t resolver_passes = 0, resolver_errors = 0;
    // Deadlock detection (doc/deadlocks.md). Passes that read the shards (something waited
    // longer than DeadlockOptions::check_after_ms); cycles this process's detector broke, by
    // kind, and the total and longest wait of their victims before they were broken (ms);
    // attempts of this process's Runs that were a victim (of any process's detector).
    uint64_t deadlock_passes = 0;
    uint64_t deadlocks_cross_shard = 0, deadlocks_local = 0;
    uint64_t deadlock_wait_ms_total = 0, deadlock_wait_ms_max = 0;
    uint64_t deadlock_victims = 0;
    // The relay (doc/outbox.md): messages confirmed by the broker and removed from the
    // outbox, moved to the dead-letter record, or left for a retry; failed relay calls.
    uint64_t messages_confirmed = 0, messages_dead = 0, messages_retried = 0;
    uint64_t relay_errors = 0;
  };
  Counters counters() const;

 private:
  class Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace seigo

#endif  // SEIGO_COORDINATOR_H_
