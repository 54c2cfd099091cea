// The consumer helper (include/seigo/consumer.h; doc/outbox.md, "The inbox"). The rule itself —
// inbox row and handler in one transaction, ack after the commit — is core::ApplyOnce
// (src/core/relay.cc), which the simulator runs too; this file is the loop around a broker.

#include "seigo/consumer.h"

#include <cstdio>
#include <thread>

#include "amqp/amqp_connection.h"
#include "core/relay.h"
#include "mariadb/mariadb_participant.h"
#include "seigo/coordinator.h"

namespace seigo {

Result<bool> RecordInInbox(Tx& tx, int64_t inbox_key, const std::string& message_id,
                           const std::string& queue) {
  if (message_id.empty() || message_id.size() > 128) {
    return Status::InvalidArgument("a message id of 1..128 bytes is needed for the inbox (got " +
                                   std::to_string(message_id.size()) + " bytes)");
  }
  // INSERT IGNORE: 1 row = new; 0 = the id is there (committed earlier). A duplicate being
  // applied concurrently holds the row's lock: this waits, then sees it (or a deadlock retry).
  Result<QueryResult> r = tx.Exec(
      inbox_key,
      std::string("INSERT IGNORE INTO seigo_inbox (message_id, queue, applied_ms) VALUES (?, ?, ") +
          mariadb::ServerNowMsSql() + ")",
      {Value::Bytes(message_id), Value::Bytes(queue)});
  if (!r.ok()) return r.status();
  return r->affected_rows == 1;
}

class Consumer::Impl {
 public:
  Impl(Coordinator* c, ConsumerOptions o, amqp::AmqpUrl url)
      : c_(c), o_(std::move(o)), conn_(std::move(url), o_.timeout_ms) {}

  Status Setup() {
    SEIGO_RETURN_IF_ERROR(conn_.Connect());
    SEIGO_RETURN_IF_ERROR(conn_.DeclareQueue(o_.queue, /*quorum=*/true, o_.queue + ".dead"));
    return conn_.Consume(o_.queue, o_.prefetch, /*no_ack=*/false);
  }

  // Forgets this queue's inbox rows older than inbox_retention_ms, on every shard, at most
  // once a minute and 1,000 rows per statement (ConsumerOptions::inbox_retention_ms says when
  // that is safe). A failure is logged and tried again a minute later.
  void CleanInbox() {
    if (o_.inbox_retention_ms <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_clean_) return;
    next_clean_ = now + std::chrono::seconds(60);
    const std::string sql =
        std::string("DELETE FROM seigo_inbox WHERE applied_ms < ") + mariadb::ServerNowMsSql() +
        " - " + std::to_string(o_.inbox_retention_ms) + " AND queue = ? LIMIT 1000";
    for (uint32_t s = 0; s < c_->shard_map().size(); ++s) {
      for (int round = 0; round < 100; ++round) {  // 100,000 rows per shard and minute at most
        Result<QueryResult> r = c_->QueryShard(s, sql, {Value::Bytes(o_.queue)});
        if (!r.ok()) {
          Log("seigo consumer: cleaning the inbox of shard " + std::to_string(s) + ": " +
              r.status().ToString());
          break;
        }
        inbox_forgotten_ += r->affected_rows;
        if (r->affected_rows < 1000) break;
      }
    }
  }

  // Registers the queue in seigo_queue on shard 0, for `seigo status`. Not fatal: the
  // consumer works without it (shard 0 down, tables made by an older seigo).
  void Register() {
    Result<QueryResult> r = c_->QueryShard(
        0, std::string("INSERT IGNORE INTO seigo_queue (queue, registered_ms) VALUES (?, ") +
               mariadb::ServerNowMsSql() + ")",
        {Value::Bytes(o_.queue)});
    if (!r.ok()) {
      Log("seigo consumer: registering queue " + o_.queue + " for seigo status: " +
          r.status().ToString());
    }
  }

  void Log(const std::string& m) {
    if (o_.log) o_.log(m);
    else std::fprintf(stderr, "%s\n", m.c_str());
  }

  Status Run(const std::function<bool()>& stop) {
    int backoff_ms = 100;
    while (!stop()) {
      if (!conn_.consuming()) {
        const bool reconnect = !conn_.connected();  // (else: Run again after a stop)
        Status s = Setup();
        if (!s.ok()) {
          if (s.Is(Code::kInvalidArgument)) return s;  // credentials: retrying cannot help
          conn_.Close();
          Log("seigo consumer: " + s.ToString() + "; retrying in " + std::to_string(backoff_ms) +
              " ms");
          std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
          backoff_ms = std::min(backoff_ms * 2, 2'000);
          continue;
        }
        if (reconnect) reconnects_++;
        backoff_ms = 100;
      }
      Result<std::optional<Delivery>> d = conn_.Next(200);
      if (!d.ok()) {
        Log("seigo consumer: " + d.status().ToString() + "; reconnecting");
        continue;
      }
      if (!d->has_value()) {
        CleanInbox();
        continue;
      }
      Handle(**d, stop);
      CleanInbox();
    }
    // Hold nothing once Run has returned: what was received and not applied (prefetched, or a
    // delivery waiting for its retry) goes back to the queue now, for other consumers.
    if (conn_.connected()) {
      Status s = conn_.StopConsuming();
      if (!s.ok()) {
        Log("seigo consumer: " + s.ToString());
        conn_.Close();  // the broker requeues them with the connection
      }
    }
    return Status::OK();
  }

  // Holds the delivery unacknowledged for `ms` while reading the connection (so that a lost
  // channel is noticed, and deliveries sent meanwhile are kept). false: stop() became true or
  // the channel is gone.
  bool Wait(int ms, const std::function<bool()>& stop, Status* why) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
      if (stop()) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            end - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return true;
      Status s = conn_.Poll(static_cast<int>(std::min<int64_t>(left, 200)));
      if (!s.ok()) {
        *why = s;
        return false;
      }
    }
  }

  void Handle(const Delivery& d, const std::function<bool()>& stop) {
    // x-delivery-count counts requeues: with the in-process retries below, those are the
    // handler's own failures (and deliveries lost with a connection).
    const int tries = static_cast<int>(std::min<int64_t>(d.delivery_count, 1'000'000)) + 1;
    Result<int64_t> key = o_.inbox_key(d);
    Status why;
    core::DeliveryAction action;
    bool applied = false;
    if (!key.ok() || d.message_id.empty()) {
      why = key.ok() ? Status::InvalidArgument("the message has no message id") : key.status();
      action = core::DeliveryAction::kDeadLetter;  // malformed: no retry can help
    } else {
      int backoff_ms = 100;
      for (int run = 1;; ++run) {
        TxState state = TxState::kCommitted;
        action = core::ApplyOnce(
            DefaultEnv(),
            [&](const TxFn& fn) {
              TxResult r = c_->Run(fn);
              state = r.state;
              return r;
            },
            [&](Tx& tx) { return RecordInInbox(tx, *key, d.message_id, o_.queue); },
            [&](Tx& tx) { return o_.handler(tx, d); }, tries, o_.max_tries, &applied, &why);
        // kRetry without kAborted: nothing committed, and not because of the message (a
        // conflict that outlasted Run's attempts, a store down, an unknown outcome). Requeueing
        // would count a try and spin the message through the queue for the whole outage: run
        // it again here, the delivery held unacknowledged.
        if (action != core::DeliveryAction::kRetry || state == TxState::kAborted) break;
        waited_++;
        if (run == 1 || run % 10 == 0) {
          Log("seigo consumer: message " + d.message_id + " of queue " + o_.queue +
              " not applied (" + why.ToString() + "); run " + std::to_string(run) +
              ", next in " + std::to_string(backoff_ms) + " ms");
        }
        Status lost;
        if (!Wait(backoff_ms, stop, &lost)) {
          if (!lost.ok()) {
            // The broker requeued it with the channel; the inbox makes a later run safe.
            Log("seigo consumer: " + lost.ToString() + "; message " + d.message_id +
                " goes back to the queue");
            return;
          }
          return;  // stopping: Run hands it back to the queue (StopConsuming)
        }
        backoff_ms = std::min(backoff_ms * 2, 2'000);
      }
    }
    Status s;
    switch (action) {
      case core::DeliveryAction::kAck:
        (applied ? applied_ : duplicates_)++;
        s = conn_.Ack(d.tag);
        break;
      case core::DeliveryAction::kRetry:  // the handler failed (kAborted), below max_tries
        retried_++;
        s = conn_.Reject(d.tag, /*requeue=*/true);
        break;
      case core::DeliveryAction::kDeadLetter:
        dead_++;
        Log("seigo consumer: message " + d.message_id + " of queue " + o_.queue +
            " dead-lettered to " + o_.queue + ".dead after " + std::to_string(tries) +
            " deliveries: " + why.ToString());
        s = conn_.Reject(d.tag, /*requeue=*/false);
        break;
    }
    // A lost ack is harmless: the broker redelivers, and the inbox recognises the message.
    if (!s.ok()) Log("seigo consumer: " + s.ToString());
  }

  Counters counters() const {
    Counters c;
    c.applied = applied_;
    c.duplicates = duplicates_;
    c.retried = retried_;
    c.dead = dead_;
    c.waited = waited_;
    c.reconnects = reconnects_;
    c.inbox_forgotten = inbox_forgotten_;
    return c;
  }

 private:
  Coordinator* c_;
  ConsumerOptions o_;
  amqp::Connection conn_;
  std::atomic<uint64_t> applied_{0}, duplicates_{0}, retried_{0}, dead_{0}, waited_{0},
      reconnects_{0}, inbox_forgotten_{0};
  std::chrono::steady_clock::time_point next_clean_{};  // Run's thread only
};

Result<std::unique_ptr<Consumer>> Consumer::Open(Coordinator* coordinator,
                                                 ConsumerOptions options) {
  if (coordinator == nullptr) return Status::InvalidArgument("Consumer: no coordinator");
  if (options.queue.empty() || options.queue.size() > 200) {
    return Status::InvalidArgument("Consumer: a queue name of 1..200 bytes is needed");
  }
  if (!options.inbox_key || !options.handler) {
    return Status::InvalidArgument("Consumer: inbox_key and handler are required");
  }
  if (options.prefetch < 1 || options.prefetch > 65535) {
    return Status::InvalidArgument("Consumer: prefetch must be in 1..65535, got " +
                                   std::to_string(options.prefetch));
  }
  if (options.max_tries < 1) {
    return Status::InvalidArgument("Consumer: max_tries must be >= 1");
  }
  if (options.inbox_retention_ms < 0) {
    return Status::InvalidArgument("Consumer: inbox_retention_ms must be >= 0 (0 = keep forever)");
  }
  SEIGO_ASSIGN_OR_RETURN(amqp::AmqpUrl url, amqp::AmqpUrl::Parse(options.amqp));
  auto impl = std::make_unique<Impl>(coordinator, std::move(options), std::move(url));
  SEIGO_RETURN_IF_ERROR(impl->Setup());
  impl->Register();
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Consumer::~Consumer() = default;
Status Consumer::Run(const std::function<bool()>& stop) { return impl_->Run(stop); }
Consumer::Counters Consumer::counters() const { return impl_->counters(); }

}  // namespace seigo
