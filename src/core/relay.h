// The relay and the consumer's inbox rule: how committed messages reach the broker, and how a
// delivered message is applied exactly once (doc/outbox.md). Deterministic like the protocol:
// the broker is reached only through Broker, the outbox only through Participant, so the
// simulator (sim/) runs this very code against a simulated broker.
#ifndef SEIGO_CORE_RELAY_H_
#define SEIGO_CORE_RELAY_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seigo/env.h"
#include "seigo/message.h"
#include "seigo/participant.h"
#include "seigo/status.h"
#include "seigo/transaction.h"

namespace seigo::core {

// The message broker as the relay sees it (src/amqp/ for RabbitMQ; sim/ simulates one).
class Broker {
 public:
  enum class Fate {
    kConfirmed,  // the broker confirmed it (an ack not preceded by a return): it is durable
    kDead,       // it can never be delivered (returned unroutable, unknown exchange): `reason`
    kRetry,      // not confirmed (nack, connection lost, no confirm in time): publish again
  };
  struct Result {
    Fate fate = Fate::kRetry;
    std::string reason;
  };
  virtual ~Broker() = default;
  // True if the broker can be reached now (connecting if need be). A relay that cannot reach
  // its broker must not claim other relays' work: its claims would only delay those messages
  // by a lease each time (found in the gacha demo: a stale process configured with a dead
  // broker kept claiming and releasing the outbox while a healthy relay waited).
  virtual bool Ready() { return true; }
  // Publishes `entries` in order — persistent, mandatory, message-id = message_id() — with
  // publisher confirms and many in flight, and returns one Result per entry.
  virtual std::vector<Result> Publish(std::span<const OutboxEntry> entries) = 0;
};

struct RelayStats {
  uint64_t confirmed = 0;  // messages confirmed and removed from the outbox
  uint64_t dead = 0;       // messages moved to the dead-letter record
  uint64_t retried = 0;    // messages left for a later try
  uint64_t claimed = 0;    // messages a poll claimed
  uint64_t claimed_txns = 0;  // transactions settled (published or released)
  Status error;            // the first store or broker failure of the call, if any
  void Add(const RelayStats& o) {
    confirmed += o.confirmed;
    dead += o.dead;
    retried += o.retried;
    claimed += o.claimed;
    claimed_txns += o.claimed_txns;
    if (error.ok()) error = o.error;
  }
};

// How long a transaction whose publish failed waits before any relay tries it again:
// 250 ms doubling with its tries, at most 30 s.
int64_t RelayRetryMs(int tries);

// Publishes `entries` (whole transactions, in outbox order, claimed by `claim` in `outbox`)
// and settles each transaction in the outbox: when every entry of it is confirmed or dead it
// is finished (FinishOutbox; the dead ones go to the dead-letter record); otherwise it is
// released for a retry after RelayRetryMs (all of its entries are published again then: the
// consumers' inbox drops the ones that had arrived). `env` gives the crash point
// kRelayAfterPublish, between the confirms and the settling.
RelayStats RelayBatch(Env* env, Participant* outbox, Broker* broker,
                      std::span<const OutboxEntry> entries, const std::string& claim);

// Several outboxes' entries at once: published in ONE stream (one wait for the confirms),
// then each outbox settled as RelayBatch does. One RelayStats per batch.
struct OutboxBatch {
  Participant* outbox = nullptr;
  std::vector<OutboxEntry> entries;  // whole transactions, in outbox order
};
std::vector<RelayStats> RelayBatches(Env* env, Broker* broker, std::span<const OutboxBatch> batches,
                                     const std::string& claim);

// One poll of one outbox: claims up to `max_txns` transactions whose claim expired (their
// relay died, or their publish failed) and relays them. Claims nothing while the broker is not
// Ready().
RelayStats PollOutbox(Env* env, Participant* outbox, Broker* broker, const std::string& claim,
                      int64_t lease_ms, size_t max_txns);
// The same for several outboxes: claims from each (at once, through Env::ForEach), then
// publishes everything claimed in one stream. One RelayStats per outbox.
std::vector<RelayStats> PollOutboxes(Env* env, std::span<Participant* const> outboxes,
                                     Broker* broker, const std::string& claim, int64_t lease_ms,
                                     size_t max_txns);

// ---- The consumer's inbox (exactly-once application) ----

// What a consumer does with a delivery once its handler's transaction ended.
enum class DeliveryAction {
  kAck,         // applied now, or applied before (a duplicate): acknowledge
  kRetry,       // not applied (conflict, store down, outcome unknown): requeue, try again
  kDeadLetter,  // the handler failed for good max_tries times: reject to the dead-letter queue
};

// The transaction a consumer runs for one delivery: `record` inserts the message id into the
// inbox on the handler's shard (affected rows: 1 = new, 0 = seen before) and `handler` applies
// it. The inbox row and the handler's writes commit together, so a message is applied at most
// once; the ack comes only after the commit, so at least once.
//   run: Coordinator::Run or Protocol::Run
//   tries: this delivery's number (1 = first; the broker's x-delivery-count + 1)
//   *applied: set true when this call's transaction applied it
// `env` gives the crash points kConsumerBeforeCommit (the handler ran, inside the transaction)
// and kConsumerAfterCommit (committed, not yet acknowledged).
DeliveryAction ApplyOnce(Env* env, const std::function<TxResult(const TxFn&)>& run,
                         const std::function<Result<bool>(Tx&)>& record, const TxFn& handler,
                         int tries, int max_tries, bool* applied, Status* why);

}  // namespace seigo::core

#endif  // SEIGO_CORE_RELAY_H_
