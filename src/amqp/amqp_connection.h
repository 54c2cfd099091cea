// One connection to a RabbitMQ broker over rabbitmq-c 0.11 (the I/O edge of messaging; it
// decides nothing — src/core/relay.cc does). Publishing runs on channel 1 in confirm mode;
// declarations and passive checks on channel 2 (a failed passive check closes its channel, not
// the publishing one); consuming on channel 3.
//
// rabbitmq-c is not thread-safe: a Connection belongs to one thread.
#ifndef SEIGO_AMQP_AMQP_CONNECTION_H_
#define SEIGO_AMQP_AMQP_CONNECTION_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/relay.h"
#include "seigo/consumer.h"
#include "seigo/message.h"
#include "seigo/status.h"

struct amqp_connection_state_t_;  // rabbitmq-c's connection (amqp.h)

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
  // `timeout_ms`: connecting, each broker round trip, and the wait for a batch's confirms.
  Connection(AmqpUrl url, int timeout_ms);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects and logs in if not connected. kInvalidArgument for refused credentials or vhost
  // (the message never holds the password); kUnavailable when the broker cannot be reached.
  Status Connect();
  bool connected() const { return conn_ != nullptr; }
  void Close();
  const AmqpUrl& url() const { return url_; }

  // Publishes in order with confirms, up to `window` unconfirmed at once. See core::Broker.
  std::vector<core::Broker::Result> PublishConfirmed(std::span<const OutboxEntry> entries,
                                                     size_t window);
  // One message without confirm and without mandatory (the naive demo's "commit, then
  // publish"). kUnavailable if the connection failed.
  Status PublishUnconfirmed(const Message& m, const std::string& message_id);

  // true if the exchange exists (passive declare). "" (the default exchange) always does.
  Result<bool> ExchangeExists(const std::string& exchange);
  // Durable declarations (idempotent; a mismatch with an existing one is kQueryFailed).
  Status DeclareExchange(const std::string& exchange, const std::string& type);
  // A durable queue, quorum by default, whose rejected messages go to `dead_letter_queue`
  // (also declared, durable; "" = none).
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
  // or channel is gone (unacked deliveries return to the queue).
  Result<std::optional<Delivery>> Next(int timeout_ms);
  Status Ack(uint64_t tag);
  Status Reject(uint64_t tag, bool requeue);

 private:
  Status OpenChannel(uint16_t ch);
  Status ReplyStatus(const char* what, uint16_t ch);
  Status Lost(const std::string& what);

  AmqpUrl url_;
  int timeout_ms_;
  ::amqp_connection_state_t_* conn_ = nullptr;
  uint64_t next_tag_ = 1;  // channel 1's next publish sequence number (confirm mode)
  bool decl_channel_open_ = false;
  // Exchanges known to exist, and since when (re-checked after a minute).
  std::map<std::string, std::chrono::steady_clock::time_point> known_exchanges_;
};

// core::Broker over a Connection (reconnecting as needed), for the relay.
class AmqpBroker final : public core::Broker {
 public:
  AmqpBroker(AmqpUrl url, int timeout_ms, size_t window)
      : conn_(std::move(url), timeout_ms), window_(window) {}
  std::vector<Result> Publish(std::span<const OutboxEntry> entries) override;
  bool Ready() override { return conn_.Connect().ok(); }
  Connection& connection() { return conn_; }

 private:
  Connection conn_;
  size_t window_;
};

}  // namespace seigo::amqp

#endif  // SEIGO_AMQP_AMQP_CONNECTION_H_
