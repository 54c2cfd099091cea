// Consumer: applies each message of a RabbitMQ queue exactly once, inside a seigo transaction
// (doc/outbox.md, "The inbox").
//
// For every delivery the consumer runs one transaction: it inserts the message id into
// seigo_inbox on the shard of the key `inbox_key` names, then runs `handler`. Both commit
// together, so a redelivered message (the consumer died between the commit and the ack, the
// relay published it twice) finds its inbox row and is acknowledged without effect. The ack is
// sent only after the commit.
//
// Two kinds of failure:
//   * nothing committed for a reason outside the message — a conflict that outlasted Run's
//     attempts, a store down, an outcome unknown (TxState kGaveUp, kOutcomeUnknown): the same
//     delivery is run again in this process after a backoff (100 ms doubling to 2 s) and stays
//     unacknowledged meanwhile, for as long as the channel lives and `stop()` is false. It is
//     not requeued, so an outage does not raise its x-delivery-count (nor spin it through the
//     queue);
//   * the handler itself failed (kAborted: Tx::Abort, a guard, a failed statement): requeued
//     (basic.reject), which counts a try; after `max_tries` deliveries it is rejected to the
//     dead-letter queue `<queue>.dead`.
//
//   seigo::ConsumerOptions o;
//   o.amqp = "amqp://seigo:secret@127.0.0.1:5672/";
//   o.queue = "collection";
//   o.inbox_key = [](const seigo::Delivery& d) -> seigo::Result<int64_t> { return PlayerOf(d); };
//   o.handler = [](seigo::Tx& tx, const seigo::Delivery& d) -> seigo::Status { ... };
//   auto c = seigo::Consumer::Open(coordinator.get(), o);
//   (*c)->Run([&] { return stopping; });
#ifndef SEIGO_CONSUMER_H_
#define SEIGO_CONSUMER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "seigo/status.h"
#include "seigo/transaction.h"

namespace seigo {

class Coordinator;

// One message as delivered.
struct Delivery {
  uint64_t tag = 0;          // the broker's delivery tag
  std::string message_id;    // "<gid>-<seq>" for messages of seigo transactions
  std::string exchange, routing_key, body, content_type, type;
  std::vector<std::pair<std::string, std::string>> headers;  // string-valued headers only
  bool redelivered = false;
  int64_t delivery_count = 0;  // earlier deliveries (a quorum queue's x-delivery-count)
};

struct ConsumerOptions {
  std::string amqp;    // broker URL, amqp://user:password@host:port/vhost
  std::string queue;   // declared if missing: durable, quorum, dead letters to <queue>.dead
  int prefetch = 32;   // unacknowledged deliveries the broker sends ahead (1..65535)
  // Deliveries of a message whose handler keeps failing (kAborted), then dead letter. On
  // RabbitMQ 4 keep it at most 20, the quorum queues' default delivery-limit (doc/outbox.md).
  int max_tries = 5;
  // The key whose shard holds the message's inbox row (the shard the handler writes to, so
  // that the commit is usually one shard). kInvalidArgument from it = a malformed message:
  // dead-lettered at once.
  std::function<Result<int64_t>(const Delivery&)> inbox_key;
  std::function<Status(Tx&, const Delivery&)> handler;
  int timeout_ms = 5'000;  // broker round trips
  // Inbox rows of this queue older than this are deleted (every minute, by Run), 0 = never.
  // A duplicate arriving after its row is gone would be applied again, so keep it longer than
  // a message can wait in the queue behind its own first copy: copies are published within
  // seconds of each other (a relay's retry, a redelivery), but both wait as long as the queue's
  // backlog does. The default, 7 days, is far longer than any backlog this queue should see.
  int64_t inbox_retention_ms = int64_t{7} * 24 * 3600 * 1000;
  // Where warnings go (a dead-lettered message, a lost broker). Empty = stderr.
  std::function<void(std::string_view)> log;
};

class Consumer {
 public:
  // Checks the options and connects (kInvalidArgument for bad options or refused credentials;
  // kUnavailable if the broker cannot be reached).
  static Result<std::unique_ptr<Consumer>> Open(Coordinator* coordinator,
                                                ConsumerOptions options);
  ~Consumer();

  // Consumes until `stop()` returns true (checked at least every 200 ms, also while a delivery
  // waits for its retry: that delivery is then returned to the queue with basic.nack),
  // reconnecting (and re-declaring the queue) after a lost broker. Returns OK then, or the
  // error that makes going on pointless (credentials or vhost refused).
  Status Run(const std::function<bool()>& stop);

  struct Counters {
    uint64_t applied = 0;     // deliveries whose transaction applied them
    uint64_t duplicates = 0;  // deliveries found in the inbox: acknowledged without effect
    uint64_t retried = 0;     // deliveries requeued because the handler failed (kAborted)
    // Runs of a delivery's transaction again in this process, after one committed nothing for
    // a transient reason (conflict, store down, outcome unknown); the delivery stayed
    // unacknowledged and was not requeued.
    uint64_t waited = 0;
    uint64_t dead = 0;        // deliveries rejected to the dead-letter queue
    uint64_t reconnects = 0;
    uint64_t inbox_forgotten = 0;  // inbox rows deleted after inbox_retention_ms
  };
  Counters counters() const;

 private:
  class Impl;
  explicit Consumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The inbox row a consumer records for `message_id` on the shard of `inbox_key`, in `tx`:
// true if it is new (apply the message), false if it was recorded before (a duplicate). For
// applications that consume with their own client but want the same rule.
Result<bool> RecordInInbox(Tx& tx, int64_t inbox_key, const std::string& message_id,
                           const std::string& queue);

}  // namespace seigo

#endif  // SEIGO_CONSUMER_H_
