// RabbitMQ over rabbitmq-c 0.11. See amqp_connection.h.
//
// rabbitmq-c 0.11 has no amqp_publisher_confirm_wait: PublishConfirmed reads the frames itself.
// In confirm mode the broker numbers the channel's publishes 1, 2, ... and answers each with
// basic.ack or basic.nack (`multiple` = every tag up to this one). With `mandatory`, a message
// no queue takes comes back first as basic.return (method, header, body frames), then its ack:
// so a return marks the message (by its message-id) and the ack that follows settles it as dead.

#include "amqp/amqp_connection.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <sys/time.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace seigo::amqp {
namespace {

constexpr uint16_t kPublishChannel = 1;
constexpr uint16_t kDeclareChannel = 2;
constexpr uint16_t kConsumeChannel = 3;

amqp_bytes_t Bytes(const std::string& s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

std::string Str(amqp_bytes_t b) {
  return b.bytes == nullptr ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

timeval Tv(int64_t ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> Decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) {
      return Status::InvalidArgument("bad %-escape in the broker URL");
    }
    const int hi = Hex(s[i + 1]), lo = Hex(s[i + 2]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("bad %-escape in the broker URL");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// The server's reason for closing a channel or the connection.
std::string CloseReason(const amqp_rpc_reply_t& r) {
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) return amqp_error_string2(r.library_error);
  if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) return "no reply";
  if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
    return std::to_string(m->reply_code) + " " + Str(m->reply_text);
  }
  if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
    return std::to_string(m->reply_code) + " " + Str(m->reply_text);
  }
  return "server exception";
}

int CloseCode(const amqp_rpc_reply_t& r) {
  if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) return 0;
  if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    return static_cast<const amqp_channel_close_t*>(r.reply.decoded)->reply_code;
  }
  if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    return static_cast<const amqp_connection_close_t*>(r.reply.decoded)->reply_code;
  }
  return 0;
}

}  // namespace

Result<AmqpUrl> AmqpUrl::Parse(std::string_view url) {
  AmqpUrl u;
  constexpr std::string_view kScheme = "amqp://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    // Not echoed: the text may hold a password.
    return Status::InvalidArgument("broker URL must start with amqp://");
  }
  std::string_view rest = url.substr(kScheme.size());
  // The credentials end at the LAST '@' (a password may hold '/' or '@' unescaped); only then
  // does the path start. Nothing of the user info is ever echoed in an error.
  const size_t at = rest.rfind('@');
  std::string_view cred = at == std::string_view::npos ? std::string_view() : rest.substr(0, at);
  std::string_view after = at == std::string_view::npos ? rest : rest.substr(at + 1);
  const size_t slash = after.find('/');
  std::string_view authority = after.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view vhost = after.substr(slash + 1);
    if (vhost.find_first_of("?#") != std::string_view::npos) {
      return Status::InvalidArgument("broker URL: query strings are not supported");
    }
    if (!vhost.empty()) {
      SEIGO_ASSIGN_OR_RETURN(u.vhost, Decode(vhost));
    }
  }
  if (at != std::string_view::npos) {
    const size_t colon = cred.find(':');
    Result<std::string> user = Decode(cred.substr(0, colon));
    if (!user.ok()) return Status::InvalidArgument("broker URL: bad %-escape in the user");
    u.user = *user;
    if (colon != std::string_view::npos) {
      Result<std::string> pw = Decode(cred.substr(colon + 1));
      if (!pw.ok()) return Status::InvalidArgument("broker URL: bad %-escape in the password");
      u.password = *pw;
    } else {
      u.password.clear();
    }
  }
  const size_t colon = authority.rfind(':');
  u.host = std::string(authority.substr(0, colon));
  if (colon != std::string_view::npos) {
    const std::string_view p = authority.substr(colon + 1);
    int port = 0;
    for (char c : p) {
      if (c < '0' || c > '9' || port > 65535) {
        port = -1;
        break;
      }
      port = port * 10 + (c - '0');
    }
    if (p.empty() || port <= 0 || port > 65535) {
      return Status::InvalidArgument("broker URL: bad port (1..65535 expected)");
    }
    u.port = port;
  }
  if (u.host.empty()) return Status::InvalidArgument("broker URL has no host");
  return u;
}

std::string AmqpUrl::Redacted() const {
  std::string vh = vhost == "/" ? "" : vhost;
  return "amqp://" + user + (password.empty() ? "" : ":***") + "@" + host + ":" +
         std::to_string(port) + "/" + vh;
}

Connection::Connection(AmqpUrl url, int timeout_ms)
    : url_(std::move(url)), timeout_ms_(std::max(100, timeout_ms)) {}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (conn_ == nullptr) return;
  // No graceful close handshake: it could wait on a broker that is gone. Destroying the
  // connection closes the socket; the broker requeues unacked deliveries.
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  next_tag_ = 1;
  decl_channel_open_ = false;
}

Status Connection::Lost(const std::string& what) {
  Close();
  return Status::Unavailable("broker " + url_.Redacted() + ": " + what);
}

Status Connection::ReplyStatus(const char* what, uint16_t ch) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return Status::OK();
  const std::string reason = CloseReason(r);
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    // The broker closed the channel (e.g. 404 on a passive declare): acknowledge it, so the
    // connection stays usable, and reopen the channel the next time it is needed.
    amqp_channel_close_ok_t ok{};
    amqp_send_method(conn_, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (ch == kDeclareChannel) decl_channel_open_ = false;
    const int code = CloseCode(r);
    Status s(code == 404 ? Code::kNotFound : Code::kQueryFailed,
             std::string(what) + ": " + reason);
    if (ch == kPublishChannel || ch == kConsumeChannel) Close();  // their state is gone
    return s;
  }
  const int code = CloseCode(r);
  Close();
  if (code == 403 || code == 530) {
    return Status::InvalidArgument("broker " + url_.Redacted() + " refused " + what + ": " +
                                   reason + " (check the user, password and vhost)");
  }
  return Status::Unavailable("broker " + url_.Redacted() + ": " + what + ": " + reason);
}

Status Connection::OpenChannel(uint16_t ch) {
  amqp_channel_open(conn_, ch);
  return ReplyStatus("opening a channel", ch);
}

Status Connection::Connect() {
  if (conn_ != nullptr) return Status::OK();
  conn_ = amqp_new_connection();
  if (conn_ == nullptr) return Status::Internal("amqp_new_connection failed");
  amqp_socket_t* sock = amqp_tcp_socket_new(conn_);
  if (sock == nullptr) return Lost("cannot create a socket");
  timeval tv = Tv(timeout_ms_);
  int rc = amqp_socket_open_noblock(sock, url_.host.c_str(), url_.port, &tv);
  if (rc != AMQP_STATUS_OK) return Lost(std::string("cannot connect: ") + amqp_error_string2(rc));
  amqp_set_handshake_timeout(conn_, &tv);
  amqp_set_rpc_timeout(conn_, &tv);
  amqp_rpc_reply_t r = amqp_login(conn_, url_.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE,
                                  /*heartbeat=*/0, AMQP_SASL_METHOD_PLAIN, url_.user.c_str(),
                                  url_.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    const int code = CloseCode(r);
    const std::string reason = CloseReason(r);
    Close();
    // RabbitMQ closes with 403 ACCESS_REFUSED (bad credentials) or 530 NOT_ALLOWED (vhost).
    if (code == 403 || code == 530 ||
        (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
         r.library_error == AMQP_STATUS_CONNECTION_CLOSED)) {
      return Status::InvalidArgument("broker " + url_.Redacted() + " refused the login: " +
                                     reason + " (check the user, password and vhost)");
    }
    return Status::Unavailable("broker " + url_.Redacted() + ": login failed: " + reason);
  }
  SEIGO_RETURN_IF_ERROR(OpenChannel(kPublishChannel));
  amqp_confirm_select(conn_, kPublishChannel);
  SEIGO_RETURN_IF_ERROR(ReplyStatus("confirm.select", kPublishChannel));
  next_tag_ = 1;
  return Status::OK();
}

std::vector<core::Broker::Result> Connection::PublishConfirmed(
    std::span<const OutboxEntry> entries, size_t window) {
  using Fate = core::Broker::Fate;
  std::vector<core::Broker::Result> out(entries.size(), {Fate::kRetry, "not confirmed"});
  if (entries.empty()) return out;
  Status s = Connect();
  if (!s.ok()) {
    for (auto& r : out) r.reason = s.ToString();
    return out;
  }
  // Exchanges first (passive declare on the declaration channel): a publish to a missing one
  // would close the publishing channel and lose every confirm in flight.
  std::map<std::string, std::string> missing;  // exchange -> reason
  for (const OutboxEntry& e : entries) {
    if (e.msg.exchange.empty() || missing.count(e.msg.exchange)) continue;
    Result<bool> exists = ExchangeExists(e.msg.exchange);
    if (!exists.ok()) {
      for (auto& r : out) r.reason = exists.status().ToString();
      return out;
    }
    if (!*exists) missing[e.msg.exchange] = "exchange '" + e.msg.exchange + "' does not exist";
  }
  std::unordered_map<uint64_t, size_t> by_tag;
  std::unordered_map<std::string, size_t> by_id;
  std::vector<bool> returned(entries.size(), false);
  size_t unsettled = 0;  // published and not yet acked or nacked
  auto settle = [&](uint64_t tag, bool multiple, bool ack) {
    for (auto it = by_tag.begin(); it != by_tag.end();) {
      if (it->first == tag || (multiple && it->first < tag)) {
        const size_t i = it->second;
        if (!ack) {
          out[i] = {Fate::kRetry, "nacked by the broker"};
        } else if (returned[i]) {
          out[i].fate = Fate::kDead;  // reason set by the return
        } else {
          out[i] = {Fate::kConfirmed, ""};
        }
        --unsettled;
        it = by_tag.erase(it);
      } else {
        ++it;
      }
    }
  };
  // Reads one frame within `ms`; false when the connection failed (everything unsettled stays
  // kRetry) or nothing came.
  auto read_frame = [&](int64_t ms, bool* failed) -> bool {
    amqp_frame_t frame;
    timeval tv = Tv(ms);
    amqp_maybe_release_buffers(conn_);
    const int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) return false;
    if (rc != AMQP_STATUS_OK) {
      *failed = true;
      return false;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) return true;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        const auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, true);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, false);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        const auto* m = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
        const std::string reason = "returned by the broker: " + std::to_string(m->reply_code) +
                                   " " + Str(m->reply_text) + " (exchange '" +
                                   Str(m->exchange) + "', routing key '" +
                                   Str(m->routing_key) + "')";
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_, frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
          *failed = true;
          return false;
        }
        if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
          auto it = by_id.find(Str(msg.properties.message_id));
          if (it != by_id.end()) {
            returned[it->second] = true;
            out[it->second].reason = reason;
          }
        }
        amqp_destroy_message(&msg);
        break;
      }
      case AMQP_CHANNEL_CLOSE_METHOD:
      case AMQP_CONNECTION_CLOSE_METHOD:
      default:
        // The channel or connection is closing (a resource alarm, a deleted exchange): every
        // unconfirmed message is retried on a new connection.
        if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
            frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
          *failed = true;
          return false;
        }
        break;
    }
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  auto left_ms = [&] {
    return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
  };
  bool failed = false;
  for (size_t i = 0; i < entries.size() && !failed; ++i) {
    const OutboxEntry& e = entries[i];
    if (auto it = missing.find(e.msg.exchange); it != missing.end()) {
      out[i] = {Fate::kDead, it->second};
      continue;
    }
    while (unsettled >= std::max<size_t>(1, window) && !failed) {
      if (left_ms() == 0) {
        failed = true;
        break;
      }
      read_frame(left_ms(), &failed);
    }
    if (failed) break;
    const std::string id = e.message_id();
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.delivery_mode = 2;  // persistent
    props.message_id = Bytes(id);
    if (!e.msg.content_type.empty()) {
      props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
      props.content_type = Bytes(e.msg.content_type);
    }
    if (!e.msg.type.empty()) {
      props._flags |= AMQP_BASIC_TYPE_FLAG;
      props.type = Bytes(e.msg.type);
    }
    std::vector<amqp_table_entry_t> headers(e.msg.headers.size());
    for (size_t h = 0; h < e.msg.headers.size(); ++h) {
      headers[h].key = Bytes(e.msg.headers[h].first);
      headers[h].value.kind = AMQP_FIELD_KIND_UTF8;
      headers[h].value.value.bytes = Bytes(e.msg.headers[h].second);
    }
    if (!headers.empty()) {
      props._flags |= AMQP_BASIC_HEADERS_FLAG;
      props.headers.num_entries = static_cast<int>(headers.size());
      props.headers.entries = headers.data();
    }
    const int rc = amqp_basic_publish(conn_, kPublishChannel, Bytes(e.msg.exchange),
                                      Bytes(e.msg.routing_key), /*mandatory=*/1,
                                      /*immediate=*/0, &props, Bytes(e.msg.body));
    if (rc != AMQP_STATUS_OK) {
      failed = true;
      break;
    }
    by_tag[next_tag_++] = i;
    by_id[id] = i;
    ++unsettled;
  }
  while (unsettled > 0 && !failed) {
    if (left_ms() == 0) break;
    read_frame(left_ms(), &failed);
  }
  if (failed || unsettled > 0) {
    // Confirms lost with the connection, or not in time: the channel's numbering can no longer
    // be trusted. Start over on a new connection; those messages are retried (duplicates are
    // possible: same message ids).
    for (auto& [tag, i] : by_tag) out[i] = {Fate::kRetry, "no confirm (connection lost or timed out)"};
    Close();
  }
  return out;
}

Status Connection::PublishUnconfirmed(const Message& m, const std::string& message_id) {
  SEIGO_RETURN_IF_ERROR(Connect());
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
  props.delivery_mode = 2;
  props.message_id = Bytes(message_id);
  // On the confirm channel, but nobody waits for the confirms: consume and drop what came.
  const int rc = amqp_basic_publish(conn_, kPublishChannel, Bytes(m.exchange),
                                    Bytes(m.routing_key), 0, 0, &props, Bytes(m.body));
  if (rc != AMQP_STATUS_OK) return Lost(std::string("publish failed: ") + amqp_error_string2(rc));
  ++next_tag_;
  for (;;) {
    amqp_frame_t frame;
    timeval tv = Tv(0);
    amqp_maybe_release_buffers(conn_);
    const int r = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
    if (r == AMQP_STATUS_TIMEOUT) break;
    if (r != AMQP_STATUS_OK) return Lost("connection lost");
  }
  return Status::OK();
}

Result<bool> Connection::ExchangeExists(const std::string& exchange) {
  if (exchange.empty()) return true;
  const auto now = std::chrono::steady_clock::now();
  if (auto it = known_exchanges_.find(exchange);
      it != known_exchanges_.end() && now - it->second < std::chrono::minutes(1)) {
    return true;
  }
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  amqp_exchange_declare(conn_, kDeclareChannel, Bytes(exchange), amqp_cstring_bytes("topic"),
                        /*passive=*/1, 0, 0, 0, amqp_empty_table);
  Status s = ReplyStatus("checking the exchange", kDeclareChannel);
  if (s.Is(Code::kNotFound)) return false;
  SEIGO_RETURN_IF_ERROR(s);
  known_exchanges_[exchange] = now;
  return true;
}

Status Connection::DeclareExchange(const std::string& exchange, const std::string& type) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  amqp_exchange_declare(conn_, kDeclareChannel, Bytes(exchange), Bytes(type), 0, /*durable=*/1,
                        0, 0, amqp_empty_table);
  return ReplyStatus(("declaring exchange '" + exchange + "'").c_str(), kDeclareChannel);
}

Status Connection::DeclareQueue(const std::string& queue, bool quorum,
                                const std::string& dead_letter_queue) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  const std::string quorum_s = "quorum", empty, qtype = "x-queue-type",
                    dlx = "x-dead-letter-exchange", dlk = "x-dead-letter-routing-key";
  std::vector<amqp_table_entry_t> args;
  auto add = [&](const std::string& k, const std::string& v) {
    amqp_table_entry_t e;
    e.key = Bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = Bytes(v);
    args.push_back(e);
  };
  if (quorum) add(qtype, quorum_s);
  if (!dead_letter_queue.empty()) {
    // The dead-letter queue first (classic args are enough for it, but quorum as well).
    amqp_table_entry_t t;
    t.key = Bytes(qtype);
    t.value.kind = AMQP_FIELD_KIND_UTF8;
    t.value.value.bytes = Bytes(quorum_s);
    amqp_table_t dl_args{quorum ? 1 : 0, &t};
    amqp_queue_declare(conn_, kDeclareChannel, Bytes(dead_letter_queue), 0, 1, 0, 0, dl_args);
    SEIGO_RETURN_IF_ERROR(ReplyStatus(("declaring queue '" + dead_letter_queue + "'").c_str(),
                                      kDeclareChannel));
    add(dlx, empty);  // the default exchange routes by queue name
    add(dlk, dead_letter_queue);
  }
  amqp_table_t table{static_cast<int>(args.size()), args.data()};
  amqp_queue_declare(conn_, kDeclareChannel, Bytes(queue), 0, /*durable=*/1, 0, 0, table);
  return ReplyStatus(("declaring queue '" + queue + "'").c_str(), kDeclareChannel);
}

Status Connection::BindQueue(const std::string& queue, const std::string& exchange,
                             const std::string& binding_key) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  amqp_queue_bind(conn_, kDeclareChannel, Bytes(queue), Bytes(exchange), Bytes(binding_key),
                  amqp_empty_table);
  return ReplyStatus(("binding queue '" + queue + "'").c_str(), kDeclareChannel);
}

Result<uint32_t> Connection::QueueDepth(const std::string& queue) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, kDeclareChannel, Bytes(queue), /*passive=*/1, 0, 0, 0,
                         amqp_empty_table);
  SEIGO_RETURN_IF_ERROR(ReplyStatus(("checking queue '" + queue + "'").c_str(), kDeclareChannel));
  return ok->message_count;
}

Status Connection::PurgeQueue(const std::string& queue) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (!decl_channel_open_) {
    SEIGO_RETURN_IF_ERROR(OpenChannel(kDeclareChannel));
    decl_channel_open_ = true;
  }
  amqp_queue_purge(conn_, kDeclareChannel, Bytes(queue));
  return ReplyStatus(("purging queue '" + queue + "'").c_str(), kDeclareChannel);
}

Status Connection::Consume(const std::string& queue, int prefetch, bool no_ack) {
  SEIGO_RETURN_IF_ERROR(Connect());
  SEIGO_RETURN_IF_ERROR(OpenChannel(kConsumeChannel));
  amqp_basic_qos(conn_, kConsumeChannel, 0, static_cast<uint16_t>(std::clamp(prefetch, 1, 65535)),
                 0);
  SEIGO_RETURN_IF_ERROR(ReplyStatus("basic.qos", kConsumeChannel));
  amqp_basic_consume(conn_, kConsumeChannel, Bytes(queue), amqp_empty_bytes, 0, no_ack ? 1 : 0,
                     0, amqp_empty_table);
  return ReplyStatus(("consuming queue '" + queue + "'").c_str(), kConsumeChannel);
}

Result<std::optional<Delivery>> Connection::Next(int timeout_ms) {
  if (conn_ == nullptr) return Status::Unavailable("not connected");
  amqp_envelope_t env;
  timeval tv = Tv(timeout_ms);
  amqp_maybe_release_buffers(conn_);
  amqp_rpc_reply_t r = amqp_consume_message(conn_, &env, &tv, 0);
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
    return std::optional<Delivery>();
  }
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
      r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
    // Another frame came (a confirm of channel 1, a close): read it.
    amqp_frame_t frame;
    if (amqp_simple_wait_frame(conn_, &frame) != AMQP_STATUS_OK) return Lost("connection lost");
    if (frame.frame_type == AMQP_FRAME_METHOD &&
        (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
         frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
      return Lost("the broker closed the channel");
    }
    return std::optional<Delivery>();
  }
  if (r.reply_type != AMQP_RESPONSE_NORMAL) return Lost("connection lost: " + CloseReason(r));
  Delivery d;
  d.tag = env.delivery_tag;
  d.redelivered = env.redelivered != 0;
  d.exchange = Str(env.exchange);
  d.routing_key = Str(env.routing_key);
  const amqp_basic_properties_t& p = env.message.properties;
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) d.message_id = Str(p.message_id);
  if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) d.content_type = Str(p.content_type);
  if (p._flags & AMQP_BASIC_TYPE_FLAG) d.type = Str(p.type);
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const amqp_table_entry_t& e = p.headers.entries[i];
      const std::string key = Str(e.key);
      if (e.value.kind == AMQP_FIELD_KIND_UTF8 || e.value.kind == AMQP_FIELD_KIND_BYTES) {
        d.headers.emplace_back(key, Str(e.value.value.bytes));
      } else if (key == "x-delivery-count") {
        switch (e.value.kind) {
          case AMQP_FIELD_KIND_I64: d.delivery_count = e.value.value.i64; break;
          case AMQP_FIELD_KIND_U64: d.delivery_count = static_cast<int64_t>(e.value.value.u64); break;
          case AMQP_FIELD_KIND_I32: d.delivery_count = e.value.value.i32; break;
          case AMQP_FIELD_KIND_U32: d.delivery_count = e.value.value.u32; break;
          case AMQP_FIELD_KIND_I16: d.delivery_count = e.value.value.i16; break;
          case AMQP_FIELD_KIND_U16: d.delivery_count = e.value.value.u16; break;
          case AMQP_FIELD_KIND_I8: d.delivery_count = e.value.value.i8; break;
          case AMQP_FIELD_KIND_U8: d.delivery_count = e.value.value.u8; break;
          default: break;
        }
      }
    }
  }
  d.body = Str(env.message.body);
  amqp_destroy_envelope(&env);
  return std::optional<Delivery>(std::move(d));
}

Status Connection::Ack(uint64_t tag) {
  if (conn_ == nullptr) return Status::Unavailable("not connected");
  if (amqp_basic_ack(conn_, kConsumeChannel, tag, 0) != AMQP_STATUS_OK) return Lost("ack failed");
  return Status::OK();
}

Status Connection::Reject(uint64_t tag, bool requeue) {
  if (conn_ == nullptr) return Status::Unavailable("not connected");
  if (amqp_basic_reject(conn_, kConsumeChannel, tag, requeue ? 1 : 0) != AMQP_STATUS_OK) {
    return Lost("reject failed");
  }
  return Status::OK();
}

std::vector<core::Broker::Result> AmqpBroker::Publish(std::span<const OutboxEntry> entries) {
  return conn_.PublishConfirmed(entries, window_);
}

}  // namespace seigo::amqp
