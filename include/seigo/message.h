// Messages a transaction publishes (doc/outbox.md): Tx::Publish stages them, the transaction's
// commit writes them into the outbox of its decider shard in the same local commit, and the
// relay (src/core/relay.h) publishes them to the broker after the commit. A message is therefore
// published if and only if its transaction committed — at least once: consumers deduplicate by
// message id (the consumer helper's inbox, include/seigo/consumer.h).
#ifndef SEIGO_MESSAGE_H_
#define SEIGO_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace seigo {

// One message, as the application hands it to Tx::Publish.
struct Message {
  std::string exchange;     // "" = the default exchange (routes by queue name)
  std::string routing_key;
  std::string body;         // any bytes
  std::string content_type;  // AMQP content-type property, "" = none
  std::string type;          // AMQP type property, "" = none
  std::vector<std::pair<std::string, std::string>> headers;  // string-valued AMQP headers
};

// Limits checked by Tx::Publish (kInvalidArgument beyond them, before anything is written).
inline constexpr size_t kMaxMessageBodyBytes = 1 << 20;        // one body
inline constexpr size_t kMaxTxMessageBytes = 4 << 20;          // all bodies of one transaction
inline constexpr size_t kMaxTxMessages = 1000;                 // messages of one transaction
inline constexpr size_t kMaxMessageNameBytes = 255;            // exchange, routing key, types
inline constexpr size_t kMaxMessageHeaderBytes = 16 << 10;     // all headers of one message

// A committed message as an outbox holds it.
struct OutboxEntry {
  uint64_t id = 0;   // the outbox's order (ascending in commit order per store, roughly)
  std::string gid;   // the transaction (its committed attempt)
  uint32_t seq = 0;  // position among the transaction's messages, from 0
  Message msg;
  int tries = 0;           // claims so far (the committing process's own publish is try 0)
  int64_t created_ms = 0;  // when its transaction committed (the store's clock, unix ms)
  // The AMQP message-id: "<gid>-<seq>", unique per message and the same on every republish.
  std::string message_id() const { return gid + "-" + std::to_string(seq); }
};

// An outbox entry that can never be delivered (unroutable: the broker returned it; unknown
// exchange): moved to the store's dead-letter record with `reason` instead of dropped.
struct DeadLetter {
  std::string gid;
  uint32_t seq = 0;
  std::string reason;
};

// A dead-letter record as stored: the entry, when it died and why (`seigo outbox dead`).
struct DeadRecord {
  OutboxEntry entry;
  int64_t dead_ms = 0;  // the store's clock, unix ms
  std::string reason;
};

// The header a resent dead letter carries: the message id it had when it died.
inline constexpr const char* kResentFromHeader = "x-seigo-resent-from";

// What an outbox holds now (for `seigo status`, metrics).
struct OutboxStats {
  uint64_t pending = 0;        // committed messages not yet confirmed by the broker
  int64_t oldest_age_ms = 0;   // age of the oldest pending one (0 if none)
  uint64_t dead = 0;           // dead-letter records
  int max_tries = 0;           // the most claims any pending entry has had
  std::string last_error;      // of the pending entry with the most tries
};

}  // namespace seigo

#endif  // SEIGO_MESSAGE_H_
