// The commit protocol (doc/protocol.md).
//
// Shape of one attempt:
//   1. The closure runs. The first SQL shard it touches becomes the DECIDER and gets a plain
//      local transaction; every other SQL shard gets an XA branch whose XID names the decider
//      and the attempt's deadline. Key-value participants (Redis) buffer their work in the
//      session; they learn their role at commit: a branch like the others, or — when the
//      closure touched no SQL shard — the first one touched is the decider.
//   2. One shard touched: COMMIT. Done (no XA, no decision row, no extra round trip).
//   3. Several: XA END + PREPARE every non-decider branch; then, in ONE round trip on the
//      decider, insert the commit decision row and COMMIT. That local COMMIT is the commit point.
//   4. Phase 2: XA COMMIT each prepared branch on its own connection (before Run returns, or
//      on background threads: Phase2Mode).
// Anything that fails before the commit point rolls back every branch. A read-only attempt
// (RunOptions::read_only) gives every shard a local transaction and rolls them all back at the
// end: it commits nothing, so it needs neither XA nor a decision.
//
// Why the decider's COMMIT can be the commit point: the decision row and the decider's own work
// commit or vanish together (one local InnoDB transaction), and a resolver that finds no row
// after the deadline first inserts an abort row for the same gid (primary key). Whichever insert
// comes first wins; the loser gets a duplicate key (or waits on the winner's row lock and then
// gets it). So a gid has at most one decision, ever, and nobody acts before it exists.

#include "core/protocol.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "seigo/shard_map.h"

namespace seigo::core {
namespace {

bool IsRetryable(const Status& s) {
  return s.Is(Code::kConflict) || s.Is(Code::kUnavailable);
}

enum class BranchState {
  kActive,         // statements may run; nothing durable
  kPrepared,       // XA PREPARE succeeded: durable, survives crashes, holds its locks
  kMaybePrepared,  // XA PREPARE was sent and the reply lost: it may be durable
};

struct Branch {
  uint32_t shard = 0;
  Participant* participant = nullptr;
  std::unique_ptr<Session> session;
  bool xa = false;  // false for the decider's local transaction
  bool kv = false;  // a key-value participant: its XID is assigned at commit
  Xid xid;
  BranchState state = BranchState::kActive;
};

}  // namespace

std::string NewGid(Env* env) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx",
                static_cast<unsigned long long>(env->Random64()),
                static_cast<unsigned long long>(env->Random64()));
  return std::string(buf, 32);
}

// One run of the closure and its commit. Implements Tx for the closure.
class Attempt final : public Tx {
 public:
  // `run_deadline_ms`: the Run's own bound (RunOptions::timeout_ms), 0 = none.
  Attempt(const Protocol& p, int number, int64_t start_ms, int64_t run_deadline_ms,
          bool read_only, std::shared_ptr<WaitTag> tag)
      : p_(p),
        number_(number),
        gid_(NewGid(p.env_)),
        start_ms_(start_ms),
        deadline_ms_(run_deadline_ms > 0
                         ? std::min(start_ms_ + p.options_.txn_timeout_ms, run_deadline_ms)
                         : start_ms_ + p.options_.txn_timeout_ms),
        run_deadline_ms_(run_deadline_ms),
        read_only_(read_only),
        tag_(std::move(tag)) {
    // The deadlock detector knows a Run by its first attempt's gid and start (its priority,
    // kept across retries: doc/deadlocks.md) and by the connections of its current attempt.
    std::lock_guard<std::mutex> l(tag_->mu);
    if (tag_->txn.empty()) {
      tag_->txn = gid_;
      tag_->priority_ms = start_ms_;
    }
    tag_->threads.clear();
  }

  // No destructor work: every path out of Commit/Abort releases the sessions. A session still
  // held here (only if a closure throws) is destroyed, never pooled: its connection closes and
  // the server discards whatever was not prepared.

  int attempt() const override { return number_; }
  const std::string& gid() const override { return gid_; }
  bool read_only() const override { return read_only_; }

  using Tx::ExecOn;
  Result<QueryResult> ExecOn(uint32_t shard, std::string_view sql,
                             std::span<const Value> params) override {
    if (closed_) {
      // A reference kept past the closure (another thread, a callback): the attempt is being
      // committed or rolled back; nothing may join it now.
      return Status::InvalidArgument("Tx used after its closure returned: " +
                                     std::string(sql.substr(0, 200)));
    }
    // Once a statement failed, the attempt is doomed: later statements fail the same way, so a
    // closure that ignores an error cannot commit half of its work.
    if (!poison_.ok()) return poison_;
    if (shard < streaming_.size() && streaming_[shard]) {
      // Not a failed statement: nothing reached the server, the stream goes on.
      return Status::InvalidArgument("shard " + std::to_string(shard) + " is streaming a "
                                     "result (ExecEachOn): no other statement on it until that "
                                     "returns");
    }
    if (shard >= p_.sql_shards_) {
      poison_ = Status::InvalidArgument("shard " + std::to_string(shard) + " does not exist (" +
                                        std::to_string(p_.sql_shards_) + " SQL shards)");
      return poison_;
    }
    Result<Branch*> b = BranchFor(shard);
    if (!b.ok()) {
      poison_ = b.status().WithShard(static_cast<int>(shard)).WithStatement(sql);
      return poison_;
    }
    Result<QueryResult> r = (*b)->session->Execute(sql, params);
    if (!r.ok()) {
      poison_ = r.status().Annotate((*b)->participant->name()).WithShard(static_cast<int>(shard))
                    .WithStatement(sql);
      return poison_;
    }
    return r;
  }

  Result<uint64_t> ExecEachOn(uint32_t shard, std::string_view sql,
                              std::span<const Value> params, const RowFn& row) override {
    if (closed_) return Status::InvalidArgument("Tx used after its closure returned");
    if (!poison_.ok()) return poison_;
    if (shard >= p_.sql_shards_ || (shard < streaming_.size() && streaming_[shard])) {
      return ExecOn(shard, sql, params).status();  // the same refusals
    }
    Result<Branch*> b = BranchFor(shard);
    if (!b.ok()) {
      poison_ = b.status().WithShard(static_cast<int>(shard)).WithStatement(sql);
      return poison_;
    }
    // `row` may open other shards' branches (branches_ may grow): keep what the stream needs.
    Participant* const participant = (*b)->participant;
    Session* const session = (*b)->session.get();
    if (streaming_.size() < p_.shard_count()) streaming_.resize(p_.shard_count(), false);
    Status from_row;
    streaming_[shard] = true;
    Result<uint64_t> n = session->ExecuteEach(sql, params, [&](const QueryResult& r) {
      from_row = row(r);
      return from_row;
    });
    streaming_[shard] = false;
    if (session->Broken() && poison_.ok()) {
      // The connection did not survive (cut at the deadline, lost while draining): this
      // attempt's work on the shard is gone with it.
      poison_ = Status::Unavailable(participant->name() + ": connection lost while streaming")
                    .WithShard(static_cast<int>(shard)).WithStatement(sql);
    }
    if (!from_row.ok()) return from_row;  // the closure's own decision, not a failed statement
    if (!n.ok()) {
      poison_ = n.status().Annotate(participant->name()).WithShard(static_cast<int>(shard))
                    .WithStatement(sql);
      return poison_;
    }
    return n;
  }

  Result<KvReply> KvOn(uint32_t store, const KvOp& op) override {
    if (closed_) return Status::InvalidArgument("Tx used after its closure returned");
    if (!poison_.ok()) return poison_;
    if (store < p_.sql_shards_ || store >= p_.shard_count()) {
      poison_ = Status::InvalidArgument(
          p_.shard_count() == p_.sql_shards_
              ? std::string("no key-value store is configured (CoordinatorOptions::redis)")
              : "participant " + std::to_string(store) + " is not a key-value store");
      return poison_;
    }
    if (read_only_ && !KvOpReads(op.kind)) {
      poison_ = Status::InvalidArgument("a read-only transaction cannot write (key " + op.key +
                                        ")");
      return poison_;
    }
    Result<Branch*> b = BranchFor(store);
    if (!b.ok()) {
      poison_ = b.status().WithShard(static_cast<int>(store));
      return poison_;
    }
    Result<KvReply> r = (*b)->session->Kv(op);
    if (!r.ok()) {
      poison_ = r.status().Annotate((*b)->participant->name() + ", key " + op.key)
                    .WithShard(static_cast<int>(store));
      return poison_;
    }
    return r;
  }

  uint32_t KvStoreFor(std::string_view key) const override {
    const uint32_t n = static_cast<uint32_t>(p_.shard_count() - p_.sql_shards_);
    if (n == 0) return static_cast<uint32_t>(p_.shard_count());  // refused by KvOn
    return static_cast<uint32_t>(p_.sql_shards_) + ShardMap::KvInstanceFor(key, n);
  }

  Result<std::string> Publish(Message m) override {
    if (closed_) return Status::InvalidArgument("Tx used after its closure returned");
    if (!poison_.ok()) return poison_;
    Status bad;
    if (read_only_) {
      bad = Status::InvalidArgument("a read-only transaction cannot publish messages");
    } else if (!p_.outbox_.enabled) {
      bad = Status::InvalidArgument("no message broker is configured (CoordinatorOptions::amqp)");
    } else if (p_.sql_shards_ == 0) {
      bad = Status::InvalidArgument("publishing needs a SQL shard for the outbox");
    } else if (messages_.size() >= kMaxTxMessages) {
      bad = Status::InvalidArgument("more than " + std::to_string(kMaxTxMessages) +
                                    " messages in one transaction");
    } else if (m.body.size() > kMaxMessageBodyBytes) {
      bad = Status::InvalidArgument("message body of " + std::to_string(m.body.size()) +
                                    " bytes; at most " + std::to_string(kMaxMessageBodyBytes));
    } else if (message_bytes_ + m.body.size() > kMaxTxMessageBytes) {
      bad = Status::InvalidArgument("the transaction's messages exceed " +
                                    std::to_string(kMaxTxMessageBytes) + " bytes");
    } else if (m.exchange.size() > kMaxMessageNameBytes ||
               m.routing_key.size() > kMaxMessageNameBytes ||
               m.content_type.size() > kMaxMessageNameBytes ||
               m.type.size() > kMaxMessageNameBytes) {
      bad = Status::InvalidArgument("exchange, routing key, content type and type are at most " +
                                    std::to_string(kMaxMessageNameBytes) + " bytes");
    } else {
      size_t header_bytes = 0;
      for (const auto& [k, v] : m.headers) header_bytes += k.size() + v.size();
      bool bad_key = false;
      for (const auto& [k, v] : m.headers) bad_key |= k.empty() || k.size() > 128;
      if (header_bytes > kMaxMessageHeaderBytes || bad_key) {
        bad = Status::InvalidArgument("headers: keys of 1..128 bytes, at most " +
                                      std::to_string(kMaxMessageHeaderBytes) + " bytes in all");
      }
    }
    if (!bad.ok()) {
      poison_ = bad;
      return bad;
    }
    message_bytes_ += m.body.size();
    messages_.push_back(std::move(m));
    return gid_ + "-" + std::to_string(messages_.size() - 1);
  }

  Status Fail(Status s) override {
    if (s.ok()) s = Status::Internal("Tx::Fail called with OK");
    if (poison_.ok()) poison_ = s;
    return s;
  }

  // The closure has returned: from now on the Tx refuses statements.
  void Close() { closed_ = true; }

  // Commits the attempt. OK = committed (phase-2 items appended to `phase2`); kConflict or
  // kUnavailable = definitely not committed, may retry; kOutcomeUnknown; anything else = not
  // committed, do not retry.
  Status Commit(std::vector<Phase2Item>* phase2, std::optional<LostCommit>* lost);

  // Rolls back every branch and releases every session. Never called after the commit point.
  void Abort(bool decision_is_abort);

  const Status& poison() const { return poison_; }
  bool has_messages() const { return !messages_.empty(); }
  // After a successful Commit: the messages it committed and the store whose outbox has them.
  void TakeMessages(RunOutput* out) {
    if (messages_.empty() || branches_.empty()) return;
    out->outbox = branches_[0].participant;
    for (size_t i = 0; i < messages_.size(); ++i) {
      OutboxEntry e;
      e.gid = gid_;
      e.seq = static_cast<uint32_t>(i);
      e.msg = std::move(messages_[i]);
      out->messages.push_back(std::move(e));
    }
    messages_.clear();
  }
  uint32_t shards_touched() const { return static_cast<uint32_t>(branches_.size()); }

 private:
  Result<Branch*> BranchFor(uint32_t shard);
  void MoveDeciderFirst();
  Status ResolveLostCommit(const Decision& commit, std::vector<Phase2Item>* phase2,
                           std::optional<LostCommit>* lost);
  void HandOverPhase2(std::vector<Phase2Item>* phase2);
  Decision MakeDecision(Outcome outcome) const;

  uint32_t ShardForKey(int64_t key) const override {
    return ShardMap::JumpHash(ShardMap::MixKey(key), static_cast<uint32_t>(p_.sql_shards_));
  }

  const Protocol& p_;
  const int number_;
  const std::string gid_;
  const int64_t start_ms_;
  const int64_t deadline_ms_;
  const int64_t run_deadline_ms_;  // 0 = none
  const bool read_only_;
  const std::shared_ptr<WaitTag> tag_;
  bool closed_ = false;
  std::vector<bool> streaming_;  // by shard: an ExecEachOn is running there
  // In the order touched. The decider is branches_[sql_decider_] (or, with no SQL shard,
  // branches_[0]); Commit and Abort move it to the front.
  std::vector<Branch> branches_;
  int sql_decider_ = -1;
  Status poison_;
  std::vector<Message> messages_;  // Publish, in order
  size_t message_bytes_ = 0;
};

Result<Branch*> Attempt::BranchFor(uint32_t shard) {
  for (Branch& b : branches_) {
    if (b.shard == shard) return &b;
  }
  Branch b;
  b.shard = shard;
  b.participant = p_.participants_[shard];
  Result<std::unique_ptr<Session>> s = b.participant->Acquire(run_deadline_ms_);
  if (!s.ok()) return s.status();  // Acquire's errors name the participant already
  b.session = std::move(*s);
  // A statement waiting on a frozen shard is cut at the Run's deadline (a lost reply).
  if (run_deadline_ms_ > 0) b.session->SetDeadline(run_deadline_ms_);
  Status st;
  b.kv = b.participant->kind() == StoreKind::kKv;
  if (read_only_) {
    st = b.session->BeginReadOnly();  // every shard: a local transaction, rolled back at the end
  } else if (b.kv) {
    st = b.session->BeginLocal();  // buffered: the role (decider or branch) comes at commit
  } else if (sql_decider_ < 0) {
    st = b.session->BeginLocal();  // the decider: an ordinary local transaction
    if (st.ok()) sql_decider_ = static_cast<int>(branches_.size());
  } else {
    b.xa = true;
    b.xid = Xid{p_.participants_[0]->deployment(), gid_, branches_[sql_decider_].shard,
                start_ms_, deadline_ms_, shard};
    st = b.session->BeginBranch(b.xid);
  }
  if (!st.ok()) {
    // Nothing durable yet: returning the session lets the participant discard it if broken.
    b.session->RollbackAll(b.xa ? &b.xid : nullptr, false);
    b.participant->Release(std::move(b.session));
    return st.Annotate(b.participant->name());
  }
  if (const uint64_t thread = b.session->server_thread(); thread != 0) {
    const std::string store = b.participant->store_id();
    if (!store.empty()) {
      std::lock_guard<std::mutex> l(tag_->mu);
      if (!tag_->threads.empty()) tag_->threads += ',';
      tag_->threads += store + "@" + std::to_string(thread);
    }
    b.session->SetWaitTag(tag_);
  }
  branches_.push_back(std::move(b));
  return &branches_.back();
}

Decision Attempt::MakeDecision(Outcome outcome) const {
  Decision d;
  d.gid = gid_;
  d.outcome = outcome;
  d.deadline_ms = deadline_ms_;
  for (const Branch& b : branches_) d.shards.push_back(b.shard);
  return d;
}

Status Attempt::Commit(std::vector<Phase2Item>* phase2, std::optional<LostCommit>* lost) {
  if (!messages_.empty() && sql_decider_ < 0) {
    // The outbox lives on the decider, and only SQL shards keep one: a transaction that
    // touched none (Redis only, or nothing but Publish) gets a local transaction on the shard
    // its gid hashes to, which then decides. Its messages commit iff that commit does.
    const uint64_t h = std::strtoull(gid_.substr(0, 16).c_str(), nullptr, 16);
    const uint32_t shard = ShardMap::JumpHash(h, static_cast<uint32_t>(p_.sql_shards_));
    Result<Branch*> b = BranchFor(shard);
    if (!b.ok()) {
      Abort(false);
      return b.status().WithShard(static_cast<int>(shard)).Annotate("opening the outbox");
    }
  }
  if (branches_.empty()) return Status::OK();  // touched nothing: nothing to commit
  MoveDeciderFirst();
  Branch& decider = branches_[0];
  if (!messages_.empty()) {
    // Staged in the decider's session: they are inserted into its outbox in the very commit
    // below (one-shard COMMIT or the commit point), so they exist iff the transaction commits.
    Status s = decider.session->StageMessages(gid_, messages_, p_.outbox_.claim,
                                              p_.outbox_.lease_ms);
    if (!s.ok()) {
      Abort(false);
      return s.Annotate(decider.participant->name());
    }
  }
  // Key-value branches get their XIDs now that the decider is known.
  for (size_t i = 1; i < branches_.size(); ++i) {
    Branch& b = branches_[i];
    if (!b.kv) continue;
    b.xa = true;
    b.xid = Xid{p_.participants_[0]->deployment(), gid_, decider.shard, start_ms_, deadline_ms_,
                b.shard};
  }

  // Nothing has been sent for the commit yet, so these end the attempt as definitely not
  // committed: the Run's deadline has passed (a COMMIT now would be cut at once by the watchdog
  // and turn a clean rollback into an unknown outcome), or a session's connection is already
  // gone (cut, lost; its server discards its work).
  if (run_deadline_ms_ > 0 && p_.env_->NowMs() >= run_deadline_ms_ && !read_only_) {
    Abort(false);
    return Status(Code::kDeadlineExceeded, "the Run's deadline passed before the commit");
  }
  for (const Branch& b : branches_) {
    if (b.session->Broken()) {
      const std::string name = b.participant->name();
      Abort(false);
      return Status::Unavailable(name + ": connection lost before the commit");
    }
  }

  if (read_only_) {
    // A read-only transaction commits nothing: every read has completed with its locks held,
    // and rolling back releases them. No XA, no decision: there is no outcome to agree on, and
    // whatever a statement might have written (a function called from a SELECT) is discarded.
    // But the rollback must SUCCEED on every shard: it is what proves that the transaction —
    // and so its locks — lived until now. A connection lost after its last read (its server
    // restarted, or killed it) released those locks early; a transfer may have committed on
    // that shard since, and the reads of other shards after it would see half of it. Found by
    // the simulator (a shard crash between an audit's reads; sim/README.md, "Found").
    // Under a Run deadline the sessions would be cut at it, and a read-only Run finishing just
    // after it would then fail for nothing: its rollbacks get a second's grace, as in Abort.
    const int64_t grace =
        run_deadline_ms_ > 0 ? std::max(p_.env_->NowMs(), run_deadline_ms_) + 1'000 : 0;
    Status lost;
    for (Branch& b : branches_) {
      if (grace > 0) b.session->SetDeadline(grace);
      Status s = b.session->RollbackAll(nullptr, false);
      if (s.Is(Code::kConflict) && lost.ok()) {
        // A store that validates reads at the end (key-value): one changed since it was read.
        lost = s.Annotate(b.participant->name()).WithShard(static_cast<int>(b.shard));
      } else if (!s.ok() && lost.ok()) {
        lost = Status::Unavailable(b.participant->name() + ": the read-only transaction's "
                                   "connection was lost before its end (its locks may have been "
                                   "released early, so its reads are not known to be "
                                   "consistent): " + s.ToString())
                   .WithShard(static_cast<int>(b.shard));
      }
      b.participant->Release(std::move(b.session));
    }
    return lost;
  }

  if (branches_.size() == 1 && !p_.options_.record_one_shard_commits &&
      !decider.participant->records_single_commits()) {
    // One-shard fast path without a record: a plain local commit. There is no decision row, so
    // a lost reply is truly unknowable by seigo; atomicity still holds (one local transaction).
    // With record_one_shard_commits (off by default) the one-shard transaction takes the path
    // below with no branch to prepare: its commit inserts a decision row, so a lost COMMIT
    // reply is resolved by the fence like any other.
    Status s = decider.session->CommitLocal();
    if (s.ok()) {
      decider.participant->Release(std::move(decider.session));
      return s;
    }
    if (s.Is(Code::kUnavailable) || s.Is(Code::kOutcomeUnknown)) {
      decider.session.reset();  // connection is gone; the server finishes or discards the work
      return Status::OutcomeUnknown("the COMMIT reply from " + decider.participant->name() +
                                    " was lost (one-shard transaction, no decision record): " +
                                    s.message());
    }
    Abort(false);
    return s;
  }

  if (p_.env_->NowMs() >= deadline_ms_) {
    Abort(false);
    return Status::Conflict("the attempt reached its deadline before commit");
  }

  // Crash window: nothing is prepared. Every branch is an uncommitted transaction that its
  // server discards when our connection drops.
  p_.env_->CrashPoint(CrashSite::kBeforePrepare);

  // Key-value branches first: their prepare validates what they read, the likeliest reason to
  // fail, before the SQL branches pay for an XA PREPARE.
  std::vector<size_t> order;
  for (size_t i = 1; i < branches_.size(); ++i) {
    if (branches_[i].kv) order.push_back(i);
  }
  for (size_t i = 1; i < branches_.size(); ++i) {
    if (!branches_[i].kv) order.push_back(i);
  }
  for (size_t i : order) {
    Branch& b = branches_[i];
    Status s = b.session->Prepare(b.xid);
    if (!s.ok()) {
      // No decision exists, so nothing can commit: roll everything back. A lost PREPARE reply
      // (kUnavailable) may have left the branch durable; Abort() then writes the abort decision
      // so that a resolver can roll it back without waiting for the deadline.
      b.state = s.Is(Code::kUnavailable) ? BranchState::kMaybePrepared : BranchState::kActive;
      Abort(false);
      return s.Annotate("prepare on " + b.participant->name());
    }
    b.state = BranchState::kPrepared;
    // Crash window: some branches prepared (durable, holding locks), no decision. A resolver
    // finds them (XA RECOVER; a Redis instance's index of intents, RecoverPrepared), finds no
    // decision, waits for the deadline, fences an abort on the decider and rolls them back. The
    // decider's local work is discarded by its server; a Redis decider has sent nothing yet.
    p_.env_->CrashPoint(CrashSite::kAfterPrepare);
  }

  p_.env_->CrashPoint(CrashSite::kBeforeDecision);

  // THE COMMIT POINT. The decision row and the decider's work commit in one local transaction
  // (on a Redis decider: one atomic function applies its part and writes the decision). The
  // store refuses when its clock is past the deadline or a resolver already fenced this gid;
  // then nothing commits.
  const Decision commit = MakeDecision(Outcome::kCommit);
  Status s = decider.session->CommitWithDecision(commit);
  if (s.ok()) {
    // Crash window: committed. The decision row is durable; prepared branches are not yet
    // committed. A resolver (any process) reads the commit decision and commits them.
    p_.env_->CrashPoint(CrashSite::kAfterDecision);
    decider.participant->Release(std::move(decider.session));
    HandOverPhase2(phase2);
    return Status::OK();
  }
  // A lost reply, or a commit statement that itself failed after the insert went in: the
  // outcome is not ours to assume either way. The fence tells.
  if (s.Is(Code::kUnavailable) || s.Is(Code::kOutcomeUnknown)) {
    return ResolveLostCommit(commit, phase2, lost);
  }

  // The server answered with an error before the commit (the insert was refused, or the
  // transaction was already rolled back): nothing committed. Roll back everything.
  Abort(s.Is(Code::kAborted));
  if (s.Is(Code::kAborted)) {
    return Status::Conflict("the decider refused the commit (deadline passed or fenced): " +
                            s.message());
  }
  return s.Annotate("commit on decider " + decider.participant->name());
}

// The decider's COMMIT reply was lost: it may or may not have committed. We learn the outcome
// the same way a resolver would — a fencing insert of an abort row on the decider: if the commit
// row is there (or appears once the old session's lock is released), the transaction committed;
// if our abort row goes in, it never can. Allowed before the deadline because only we could
// still commit it, and our decider connection is gone.
Status Attempt::ResolveLostCommit(const Decision& commit, std::vector<Phase2Item>* phase2,
                                  std::optional<LostCommit>* lost) {
  Branch& decider = branches_[0];
  decider.session.reset();  // broken: drop it so the server ends that session
  Decision abort = commit;
  abort.outcome = Outcome::kAbort;
  Status last = Status::Unavailable("not asked: the Run's deadline has passed");
  // Past the Run's deadline (RunOptions::timeout_ms) the caller must not wait for a decider
  // that may be frozen: the outcome is left to TrySettle and the resolver.
  const bool may_wait = run_deadline_ms_ == 0 || p_.env_->NowMs() < run_deadline_ms_;
  for (int i = 0; may_wait && i < p_.options_.unknown_resolve_tries; ++i) {
    if (i > 0) p_.env_->SleepMs(std::min<int64_t>(p_.options_.backoff_max_ms, 50LL << i));
    Result<Outcome> o = decider.participant->FenceAbort(abort, /*by_coordinator=*/true);
    if (o.ok() && *o == Outcome::kCommit) {
      p_.env_->CrashPoint(CrashSite::kAfterDecision);
      HandOverPhase2(phase2);
      return Status::OK();
    }
    if (o.ok()) {
      Abort(/*decision_is_abort=*/true);
      return Status::Conflict("the commit reply was lost and the transaction did not commit");
    }
    last = o.status();
  }
  // Still unknown. Close the prepared branches' connections so that they detach from us and a
  // resolver can finish them whichever way the decision went; the decision, if any, is durable.
  for (Branch& b : branches_) b.session.reset();
  *lost = LostCommit{decider.participant, abort};
  return Status::OutcomeUnknown("gid " + gid_ + ": the commit reply from decider " +
                                decider.participant->name() + " was lost and the outcome could "
                                "not be learned yet (" + last.ToString() + "); the resolver "
                                "will finish it");
}

void Attempt::HandOverPhase2(std::vector<Phase2Item>* phase2) {
  for (size_t i = 1; i < branches_.size(); ++i) {
    Branch& b = branches_[i];
    b.session->SetDeadline(0);  // phase 2 is after the commit point: its caller decides
    phase2->push_back(Phase2Item{b.participant, std::move(b.session), b.xid});
  }
}

void Attempt::MoveDeciderFirst() {
  if (sql_decider_ > 0) {
    std::rotate(branches_.begin(), branches_.begin() + sql_decider_,
                branches_.begin() + sql_decider_ + 1);
  }
  if (sql_decider_ >= 0) sql_decider_ = 0;
}

void Attempt::Abort(bool decision_is_abort) {
  if (branches_.empty()) return;
  MoveDeciderFirst();
  Branch& decider = branches_[0];
  if (run_deadline_ms_ > 0) {
    // The rollbacks below may come after the Run's deadline: give them a second more before a
    // watchdog cuts them (a cut rollback only closes the connection, which rolls back too).
    const int64_t until = std::max(p_.env_->NowMs(), run_deadline_ms_) + 1'000;
    for (Branch& b : branches_) {
      if (b.session) b.session->SetDeadline(until);
    }
  }
  bool need_fence = false;
  // The decider first: its work is a local transaction and it holds no decision row here.
  if (decider.session) {
    decider.session->RollbackAll(nullptr, false);
    decider.participant->Release(std::move(decider.session));
  }
  for (size_t i = 1; i < branches_.size(); ++i) {
    Branch& b = branches_[i];
    if (!b.session) continue;
    const bool durable = b.state != BranchState::kActive;
    Status s = b.session->RollbackAll(&b.xid, b.state == BranchState::kPrepared);
    // A prepared (or maybe prepared) branch we could not roll back stays in XA RECOVER.
    if (durable && (!s.ok() || b.state == BranchState::kMaybePrepared)) need_fence = true;
    b.participant->Release(std::move(b.session));
  }
  // Crash window: some branch may still be prepared with no decision. Recording the abort now
  // lets a resolver roll it back at once instead of after the deadline; if this write fails too,
  // the resolver fences after the deadline. Either way nothing can commit: the decider's work is
  // gone and the commit row can no longer be inserted.
  if (need_fence && !decision_is_abort && branches_.size() > 1) {
    decider.participant->FenceAbort(MakeDecision(Outcome::kAbort), /*by_coordinator=*/true);
  }
}

Protocol::Protocol(std::vector<Participant*> participants, Env* env, ProtocolOptions options,
                   size_t sql_shards, OutboxConfig outbox)
    : participants_(std::move(participants)),
      sql_shards_(std::min(sql_shards, participants_.size())),
      env_(env),
      options_(options),
      outbox_(std::move(outbox)) {}

RunOutput Protocol::Run(const TxFn& fn, const RunOptions& run) const {
  RunOutput out;
  TxResult& r = out.result;
  const int max_attempts = std::max(1, options_.max_attempts);
  if (run.timeout_ms < 0) {
    r.status = Status::InvalidArgument("RunOptions::timeout_ms must not be negative (0 = none), "
                                       "got " + std::to_string(run.timeout_ms));
    return out;
  }
  const int64_t run_deadline = run.timeout_ms > 0 ? env_->NowMs() + run.timeout_ms : 0;
  auto past_run_deadline = [&](const Status& last) {
    r.state = TxState::kGaveUp;
    r.status = Status(Code::kDeadlineExceeded,
                      "the Run's deadline (" + std::to_string(run.timeout_ms) + " ms) passed " +
                          "after " + std::to_string(r.attempts) + " attempt(s)" +
                          (last.ok() ? std::string() : "; the last failed: " + last.ToString()));
  };
  auto tag = std::make_shared<WaitTag>();
  for (int n = 1; n <= max_attempts; ++n) {
    const int64_t start = env_->NowMs();
    if (run_deadline > 0 && start >= run_deadline) {
      past_run_deadline(r.status);
      return out;
    }
    Attempt a(*this, n, start, run_deadline, run.read_only, tag);
    Status s = fn(a);
    a.Close();
    const int64_t closure_ms = env_->NowMs() - start;
    if (s.ok() && !a.poison().ok()) s = a.poison();
    r.attempts = n;
    r.shards = a.shards_touched();
    r.gid = !run.read_only &&
                    (r.shards > 1 || (r.shards == 1 && options_.record_one_shard_commits))
                ? a.gid()
                : "";
    if (s.ok()) {
      s = a.Commit(&out.phase2, &out.lost);
      r.shards = a.shards_touched();  // the outbox may have opened a shard
      if (a.has_messages()) r.gid = a.gid();  // the messages' ids are "<gid>-<seq>"
    } else {
      a.Abort(false);
    }
    if (IsRetryable(s) && closure_ms >= options_.txn_timeout_ms) {
      // The closure alone used up the attempt's whole time: every retry would end the same way.
      s = Status(Code::kDeadlineExceeded,
                 "the closure took " + std::to_string(closure_ms) + " ms, not less than "
                 "txn_timeout_ms (" + std::to_string(options_.txn_timeout_ms) + "), so no "
                 "attempt can commit in time; the last attempt: " + s.ToString());
    }
    r.history.push_back({n, a.gid(), r.shards, env_->NowMs() - start, s});

    if (s.ok()) {
      r.state = TxState::kCommitted;
      r.status = Status::OK();
      a.TakeMessages(&out);
      return out;
    }
    r.status = s;
    if (s.Is(Code::kOutcomeUnknown)) {
      r.state = TxState::kOutcomeUnknown;
      return out;
    }
    if (s.Is(Code::kDeadlineExceeded)) {
      r.state = TxState::kGaveUp;
      return out;
    }
    if (!IsRetryable(s)) {
      r.state = TxState::kAborted;
      return out;
    }
    r.state = TxState::kGaveUp;
    if (n < max_attempts) {
      // Full jitter: conflicting transactions spread out instead of colliding again.
      int64_t cap = options_.backoff_base_ms << std::min(n - 1, 20);
      cap = std::max<int64_t>(1, std::min(cap, options_.backoff_max_ms));
      const int64_t sleep = static_cast<int64_t>(env_->Random64() % static_cast<uint64_t>(cap + 1));
      if (run_deadline > 0 && env_->NowMs() + sleep >= run_deadline) {
        past_run_deadline(s);
        return out;
      }
      env_->SleepMs(sleep);
    }
  }
  r.status = r.status.Annotate("gave up after " + std::to_string(r.attempts) + " attempts");
  return out;
}

bool Protocol::TrySettle(const LostCommit& lost, Env* env) {
  if (env->NowMs() > lost.abort.deadline_ms + kFenceWindowMs) return true;
  // Safe at any time for the same reason as in ResolveLostCommit: the fence only ever makes a
  // commit impossible, and if the commit row exists it reports commit.
  return lost.decider->FenceAbort(lost.abort, /*by_coordinator=*/true).ok();
}

Status Protocol::FinishPhase2(Phase2Item item, Env* env, const ProtocolOptions& options) {
  // The commit decision is durable, so every path here only ever commits the branch.
  Status s = item.session->CommitPrepared(item.xid);
  if (s.ok()) {
    env->CrashPoint(CrashSite::kDuringPhase2);
    item.participant->Release(std::move(item.session));
    return s;
  }
  // The owning connection failed. Closing it detaches the branch on the server (if the server
  // still has it prepared); then any connection may commit it — once the server has finished
  // tearing the old connection down, which CommitXid waits for (kBusy until then).
  item.session.reset();
  for (int i = 0; i < options.phase2_tries; ++i) {
    if (i > 0) env->SleepMs(std::min<int64_t>(options.backoff_max_ms, 20LL << i));
    s = item.participant->CommitXid(item.xid);
    if (s.ok()) return s;
    // The server said OK but the branch did not commit (the MariaDB limbo branch): retrying
    // cannot help; the decision stays until an operator restarts the server and a resolver
    // commits the branch then. The caller reports it.
    if (s.Is(Code::kCorruption)) return s;
  }
  return Status::Busy("phase 2 of " + item.xid.Gtrid() + " on " + item.participant->name() +
                      " left to the resolver: " + s.ToString());
}

}  // namespace seigo::core
