// One connection to a RabbitMQ broker over rabbitmq-c 0.11 (the I/O edge of messaging; it
// decides nothing — src/core/relay.cc does). Publishing runs on channel 1 in confirm mode;
// declarations and passive checks on channel 2 (a failed passive check closes its channel, not
// the publishing one); consuming on channel 3.
//
// rabbitmq-c is used for the TCP connection, the login and the frame decoder only. Everything
// after the login is written and read here, for three reasons (doc/outbox.md, "Publishing"):
//   * rabbitmq-c 0.11 writes publishes, acks and its RPC requests with no deadline: a broker
//     that stops reading (SIGSTOP, a resource alarm, a dead host) blocked the relay forever.
//     Every write here gives up after `timeout_ms` without progress, and so does every wait for
//     a reply or a confirm;
//   * one frame reader for all channels: each frame is routed by its channel, so a delivery of
//     channel 3 is never taken for (or lost among) channel 1's confirms, and channel 1's close
//     never ends a consumer;
//   * a channel the broker closes (403 ACCESS_REFUSED on one exchange, 404 on a deleted one) is
//     reopened at once, and the rest of a publish batch goes out again on it.
//
// Dead peers: TCP keepalive, not AMQP heartbeats (see kKeepIdleS below and doc/outbox.md).
//
// rabbitmq-c is not thread-safe: a Connection belongs to one thread.
#ifndef SEIGO_AMQP_AMQP_CONNECTION_H_
#define SEIGO_AMQP_AMQP_CONNECTION_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/relay.h"
#include "seigo/consumer.h"
#include "seigo/message.h"
#include "seigo/status.h"

struct amqp_connection_state_t_;  // rabbitmq-c's connection (amqp.h)
struct amqp_frame_t_;             // one decoded frame (amqp.h)

namespace seigo::amqp {

// amqp://user:password@host:port/vhost (port 5672 and vhost "/" by default; the vhost is
// URL-decoded: %2f = "/").
struct AmqpUrl {
  std::string user = "guest", password = "guest", host, vhost = "/";
  int port = 5672;
  static Result<AmqpUrl> Parse(std::string_view url);
  std::string Redacted() const;  // the URL with the password replaced by ***
};

class Connection {
 public:
  // Dead-peer detection on every connection: TCP keepalive probes after kKeepIdleS seconds
  // without traffic, every kKeepIntvlS seconds, kKeepCnt of them; TCP_USER_TIMEOUT bounds data
  // left unacknowledged by the peer's TCP the same way. A peer that is gone (host down, network
  // cut) is noticed within about 25 s even while no seigo code calls into the connection.
  static constexpr int kKeepIdleS = 10, kKeepIntvlS = 5, kKeepCnt = 3;
  static constexpr int kUserTimeoutMs = (kKeepIdleS + kKeepIntvlS * kKeepCnt) * 1000;

  // `timeout_ms`: connecting and the login; every write (it fails when the broker has taken no
  // byte for that long); every reply; the wait for confirms (it fails when no confirm came for
  // that long). After a timeout the connection is dropped.
  Connection(AmqpUrl url, int timeout_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects and logs in if not connected. kInvalidArgument only when the broker refused the
  // login — 403 ACCESS_REFUSED (user or password) or 530 NOT_ALLOWED (vhost missing, or no
  // access to it) — never with the password in the message; kUnavailable for everything else:
  // unreachable, the socket closed during the login (a broker shutting down or still booting,
  // a proxy without a backend), a timeout.
  Status Connect();
  bool connected() const { return conn_ != nullptr; }
  void Close();
  const AmqpUrl& url() const { return url_; }
  int socket_fd() const;  // -1 when not connected (tests read the socket options)

  // Publishes in order with confirms, up to `window` unconfirmed at once. See core::Broker.
  // If the broker closes the publishing channel mid-batch (403 ACCESS_REFUSED: no write
  // permission on one exchange; 404: an exchange deleted since it was checked), the entries of
  // the exchange the broker names get kRetry with its reason, and the other unsettled entries
  // go out again on a reopened channel in the same call. A 404 clears the exchange cache, so the
  // next call's check finds the exchange missing and those entries are dead.
  std::vector<core::Broker::Result> PublishConfirmed(std::span<const OutboxEntry> entries,
                                                     size_t window);
  // One message without confirm and without mandatory (the naive demo's "commit, then
  // publish"). kUnavailable if the connection failed.
  Status PublishUnconfirmed(const Message& m, const std::string& message_id);

  // true if the exchange exists (passive declare). "" (the default exchange) always does.
  // Positive answers are kept for a minute; the cache is cleared on reconnect and on any 404.
  Result<bool> ExchangeExists(const std::string& exchange);
  // Durable declarations (idempotent; a mismatch with an existing one is kQueryFailed).
  Status DeclareExchange(const std::string& exchange, const std::string& type);
  Status DeleteExchange(const std::string& exchange);
  // A durable queue, quorum by default, whose rejected messages go to `dead_letter_queue`
  // (also declared, durable; "" = none). No x-delivery-limit (doc/outbox.md, "The inbox").
  Status DeclareQueue(const std::string& queue, bool quorum, const std::string& dead_letter_queue);
  Status BindQueue(const std::string& queue, const std::string& exchange,
                   const std::string& binding_key);
  // Messages ready in the queue (passive declare); kNotFound if there is no such queue.
  Result<uint32_t> QueueDepth(const std::string& queue);
  Status PurgeQueue(const std::string& queue);

  // Consuming (channel 3). `no_ack`: the broker forgets each message once sent (the naive
  // demo's auto-ack).
  Status Consume(const std::string& queue, int prefetch, bool no_ack);
  // The next delivery, or nullopt after `timeout_ms` without one. kUnavailable: the connection
  // or the consuming channel is gone (the connection is then closed; unacked deliveries return
  // to the queue).
  Result<std::optional<Delivery>> Next(int timeout_ms);
  // Reads what the broker sends for up to `timeout_ms` (deliveries are kept for Next): OK while
  // the connection (and, after Consume, the consumer) lives; kUnavailable, the connection
  // closed, when not. The consumer's backoff uses it to hold a delivery unacknowledged.
  Status Poll(int timeout_ms);
  Status Ack(uint64_t tag);
  Status Reject(uint64_t tag, bool requeue);
  Status Nack(uint64_t tag, bool requeue);
  // Ends the consumer (basic.cancel) and hands every delivery not acknowledged yet back to the
  // queue (basic.nack requeue), the buffered ones too. Consume starts again.
  Status StopConsuming();
  bool consuming() const { return conn_ != nullptr && consuming_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct ChannelClose {  // what the broker said when it closed a channel
    int code = 0;
    std::string text;
  };
  // A content-bearing method (basic.deliver, basic.return) being read on a channel.
  struct Incoming {
    enum class Kind { kNone, kDeliver, kReturn } kind = Kind::kNone;
    Delivery d;
    std::string reason;  // kReturn
    uint64_t body_size = 0;
    bool have_header = false;
  };
  struct PublishRound;  // the confirms of one publishing pass (amqp_connection.cc)

  Status Lost(const std::string& what);
  Status LostAfter(const Status& s);  // closes the connection, keeps s (if not OK)
  // Writes `out_` completely; fails (and drops the connection) after timeout_ms_ without the
  // broker taking a byte.
  Status Flush(const char* what);
  Status SendMethod(uint16_t ch, uint32_t method, void* decoded, const char* what);
  void AppendFrame(uint8_t type, uint16_t ch, const void* payload, size_t n);
  Status AppendMethod(uint16_t ch, uint32_t method, void* decoded);
  Status AppendPublish(uint16_t ch, const Message& m, const std::string& message_id,
                       bool mandatory, bool persistent);
  // Reads and handles one frame, waiting until `deadline`; *got = false if none came. Fails
  // (connection dropped) when the connection is lost or closed by the broker.
  Status ReadOne(Clock::time_point deadline, bool* got);
  Status Dispatch(const amqp_frame_t_& f);
  void Completed(uint16_t ch, Incoming& in);
  // A synchronous method on `ch`: sends it, waits for `reply` (or the channel's close).
  Status Rpc(uint16_t ch, uint32_t method, void* decoded, uint32_t reply, const std::string& what);
  Status EnsureChannel(uint16_t ch);
  // OK while the consumer (Consume) lives; else kUnavailable, and a broker-side end (cancel,
  // channel closed) also closes the connection.
  Status ConsumerAlive();
  // Reads and handles the frames that arrive until `deadline` (now: only what is there).
  Status Drain(Clock::time_point deadline);
  Status EnsurePublishChannel();
  Status ClosedStatus(uint16_t ch, const std::string& what);
  // One pipelined pass over `todo` (indices into entries) on channel 1.
  void PublishPass(std::span<const OutboxEntry> entries, const std::vector<size_t>& todo,
                   size_t window, PublishRound* round);

  AmqpUrl url_;
  int timeout_ms_;
  ::amqp_connection_state_t_* conn_ = nullptr;
  std::string out_;  // frames encoded, not yet written
  std::array<bool, 4> open_{};  // channels 1..3 opened (and not closed by the broker since)
  std::array<std::optional<ChannelClose>, 4> closed_;  // the broker's last close of a channel
  std::array<Incoming, 4> incoming_;
  uint64_t next_tag_ = 1;  // channel 1's next publish sequence number (confirm mode)
  PublishRound* round_ = nullptr;  // set while PublishConfirmed waits for confirms
  // The reply an Rpc waits for.
  uint16_t rpc_channel_ = 0;
  uint32_t rpc_reply_ = 0;
  bool rpc_done_ = false;
  uint32_t rpc_message_count_ = 0;  // queue.declare-ok
  bool consuming_ = false;          // channel 3 has a live consumer
  bool consume_started_ = false;    // Consume succeeded on this connection
  bool consumer_cancelled_ = false;  // the broker sent basic.cancel
  std::string consumer_tag_;
  std::string scratch_;              // encoding buffer (frame_max bytes)
  std::string last_loss_;            // why the connection was dropped last
  std::deque<Delivery> deliveries_;  // read while waiting for something else, for Next
  // Exchanges known to exist, and since when (re-checked after a minute).
  std::map<std::string, Clock::time_point> known_exchanges_;
};

// core::Broker over a Connection (reconnecting as needed), for the relay.
class AmqpBroker final : public core::Broker {
 public:
  AmqpBroker(AmqpUrl url, int timeout_ms, size_t window)
      : conn_(std::move(url), timeout_ms), window_(window) {}
  std::vector<Result> Publish(std::span<const OutboxEntry> entries) override;
  // Connects if need be; on a live connection it first reads what the broker sent (a
  // connection.close of a broker restart, a channel close), so that a dead connection is
  // replaced before a batch is claimed for it.
  bool Ready() override;
  Connection& connection() { return conn_; }

 private:
  Connection conn_;
  size_t window_;
};

}  // namespace seigo::amqp

#endif  // SEIGO_AMQP_AMQP_CONNECTION_H_
