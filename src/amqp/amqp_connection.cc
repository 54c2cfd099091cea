// RabbitMQ over rabbitmq-c 0.11. See amqp_connection.h.
//
// After the login, frames are encoded here (amqp_encode_method / amqp_encode_properties) and
// written on the socket with a deadline, and read one at a time (amqp_simple_wait_frame_noblock,
// which only decodes: heartbeats are off, so it never writes) and routed by channel (Dispatch).
//
// Confirms: rabbitmq-c 0.11 has no amqp_publisher_confirm_wait. In confirm mode the broker
// numbers the channel's publishes 1, 2, ... and answers each with basic.ack or basic.nack
// (`multiple` = every tag up to this one). With `mandatory`, a message no queue takes comes back
// first as basic.return (method, header, body frames), then its ack: so a return marks the
// message (by its message-id) and the ack that follows settles it as dead.
//
// A channel error (the broker's channel.close) discards everything the channel had in flight:
// the broker ignores the frames that follow the failing one and sends no more confirms. So
// when the publishing channel is closed mid-batch, the unsettled entries are not known to be
// stored; the exchange the broker names is set aside (its entries are retried later), and the
// others are published again on a reopened channel (duplicates are possible: same message ids).

#include "amqp/amqp_connection.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

namespace seigo::amqp {
namespace {

constexpr uint16_t kPublishChannel = 1;
constexpr uint16_t kDeclareChannel = 2;
constexpr uint16_t kConsumeChannel = 3;
// Encoded frames are written once this much is buffered (and always before waiting).
constexpr size_t kFlushBytes = 256 << 10;
// Channel closes one PublishConfirmed call recovers from before it gives the rest up.
constexpr int kMaxChannelCloses = 8;

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

void Put16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v & 0xff));
}
void Put32(std::string* s, uint32_t v) {
  Put16(s, static_cast<uint16_t>(v >> 16));
  Put16(s, static_cast<uint16_t>(v & 0xffff));
}
void Put64(std::string* s, uint64_t v) {
  Put32(s, static_cast<uint32_t>(v >> 32));
  Put32(s, static_cast<uint32_t>(v & 0xffffffffu));
}

int64_t MsUntil(std::chrono::steady_clock::time_point t) {
  return std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(t - std::chrono::steady_clock::now())
             .count());
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

// The exchange among `exchanges` that the broker's close text names ("access to exchange 'x'
// in vhost ...", "no exchange 'x' in vhost ..."; the default exchange is 'amq.default' there),
// or nullopt. Matching known names instead of parsing keeps quotes inside names harmless.
std::optional<std::string> NamedExchange(const std::string& text,
                                         const std::set<std::string>& exchanges) {
  std::optional<std::string> best;
  for (const std::string& e : exchanges) {
    const std::string shown = "exchange '" + (e.empty() ? std::string("amq.default") : e) + "'";
    if (text.find(shown) != std::string::npos && (!best || e.size() > best->size())) best = e;
  }
  return best;
}

// The string-valued headers and x-delivery-count of a message's properties.
void ReadProperties(const amqp_basic_properties_t& p, Delivery* d) {
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) d->message_id = Str(p.message_id);
  if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) d->content_type = Str(p.content_type);
  if (p._flags & AMQP_BASIC_TYPE_FLAG) d->type = Str(p.type);
  if (!(p._flags & AMQP_BASIC_HEADERS_FLAG)) return;
  for (int i = 0; i < p.headers.num_entries; ++i) {
    const amqp_table_entry_t& e = p.headers.entries[i];
    const std::string key = Str(e.key);
    if (e.value.kind == AMQP_FIELD_KIND_UTF8 || e.value.kind == AMQP_FIELD_KIND_BYTES) {
      d->headers.emplace_back(key, Str(e.value.value.bytes));
    } else if (key == "x-delivery-count") {
      switch (e.value.kind) {
        case AMQP_FIELD_KIND_I64: d->delivery_count = e.value.value.i64; break;
        case AMQP_FIELD_KIND_U64: d->delivery_count = static_cast<int64_t>(e.value.value.u64); break;
        case AMQP_FIELD_KIND_I32: d->delivery_count = e.value.value.i32; break;
        case AMQP_FIELD_KIND_U32: d->delivery_count = e.value.value.u32; break;
        case AMQP_FIELD_KIND_I16: d->delivery_count = e.value.value.i16; break;
        case AMQP_FIELD_KIND_U16: d->delivery_count = e.value.value.u16; break;
        case AMQP_FIELD_KIND_I8: d->delivery_count = e.value.value.i8; break;
        case AMQP_FIELD_KIND_U8: d->delivery_count = e.value.value.u8; break;
        default: break;
      }
    }
  }
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

// ---- PublishConfirmed's bookkeeping ----

struct Connection::PublishRound {
  std::vector<core::Broker::Result>* out = nullptr;
  std::vector<char> returned, settled;  // per entry
  std::map<uint64_t, size_t> by_tag;    // unsettled delivery tags of this pass -> entry
  std::unordered_map<std::string, size_t> by_id;  // message id -> entry (for returns)
  Clock::time_point last_progress;

  void Settle(uint64_t tag, bool multiple, bool ack) {
    using Fate = core::Broker::Fate;
    last_progress = Clock::now();
    for (auto it = by_tag.begin(); it != by_tag.end();) {
      if (it->first == tag || (multiple && (tag == 0 || it->first <= tag))) {
        const size_t i = it->second;
        if (!ack) {
          (*out)[i] = {Fate::kRetry, "nacked by the broker"};
        } else if (returned[i]) {
          (*out)[i].fate = Fate::kDead;  // reason set by the return
        } else {
          (*out)[i] = {Fate::kConfirmed, ""};
        }
        settled[i] = 1;
        it = by_tag.erase(it);
      } else if (it->first > tag) {
        break;
      } else {
        ++it;
      }
    }
  }

  void Returned(const std::string& message_id, const std::string& reason) {
    auto it = by_id.find(message_id);
    if (it == by_id.end()) return;
    returned[it->second] = 1;
    (*out)[it->second].reason = reason;
  }
};

// ---- Connection ----

Connection::Connection(AmqpUrl url, int timeout_ms)
    : url_(std::move(url)), timeout_ms_(std::max(100, timeout_ms)) {}

Connection::~Connection() { Close(); }

int Connection::socket_fd() const { return conn_ == nullptr ? -1 : amqp_get_sockfd(conn_); }

void Connection::Close() {
  if (conn_ == nullptr) return;
  // No graceful close handshake: it could wait on a broker that is gone. Destroying the
  // connection closes the socket; the broker requeues unacked deliveries.
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  out_.clear();
  open_.fill(false);
  for (auto& c : closed_) c.reset();
  for (auto& in : incoming_) in = Incoming{};
  next_tag_ = 1;
  rpc_channel_ = 0;
  consuming_ = false;
  consume_started_ = false;
  consumer_cancelled_ = false;
  deliveries_.clear();  // unacknowledged: the broker redelivers them
  // A reconnect may reach a broker (or a node) with other definitions: check again.
  known_exchanges_.clear();
}

Status Connection::Lost(const std::string& what) {
  Close();
  last_loss_ = what;
  return Status::Unavailable("broker " + url_.Redacted() + ": " + what);
}

Status Connection::LostAfter(const Status& s) {
  Close();
  last_loss_ = s.message();
  return s;
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
  // Dead peers (see the header): rabbitmq-c sets SO_KEEPALIVE with the kernel's timing (first
  // probe after 2 hours); make it short.
  const int fd = amqp_get_sockfd(conn_);
  const int one = 1, idle = kKeepIdleS, intvl = kKeepIntvlS, cnt = kKeepCnt;
  const unsigned user_timeout = kUserTimeoutMs;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout)) != 0) {
    return Lost(std::string("cannot set TCP keepalive: ") + std::strerror(errno));
  }
  amqp_set_handshake_timeout(conn_, &tv);
  amqp_set_rpc_timeout(conn_, &tv);
  // consumer_cancel_notify: a consumer whose queue is deleted gets basic.cancel (handled as a
  // lost channel) instead of waiting forever for deliveries that cannot come.
  amqp_table_entry_t cap;
  cap.key = amqp_cstring_bytes("consumer_cancel_notify");
  cap.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  cap.value.value.boolean = 1;
  amqp_table_entry_t prop;
  prop.key = amqp_cstring_bytes("capabilities");
  prop.value.kind = AMQP_FIELD_KIND_TABLE;
  prop.value.value.table = amqp_table_t{1, &cap};
  const amqp_table_t props{1, &prop};
  // heartbeat 0: off (doc/outbox.md, "Dead connections").
  amqp_rpc_reply_t r = amqp_login_with_properties(
      conn_, url_.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, /*heartbeat=*/0, &props,
      AMQP_SASL_METHOD_PLAIN, url_.user.c_str(), url_.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
      const int code = m->reply_code;
      const std::string reason = std::to_string(code) + " " + Str(m->reply_text);
      Close();
      // The broker's own refusal (rabbitmq-c announces authentication_failure_close, so a bad
      // login is a connection.close, not a silent hang-up): 403 ACCESS_REFUSED = user or
      // password; 530 NOT_ALLOWED = no such vhost or no access to it. "vhost ... is down" is
      // 530 too but passes.
      if (code == 403 || (code == 530 && reason.find(" is down") == std::string::npos)) {
        return Status::InvalidArgument("broker " + url_.Redacted() + " refused the login: " +
                                       reason + " (check the user, password and vhost)");
      }
      return Status::Unavailable("broker " + url_.Redacted() + " closed the connection during "
                                 "the login: " + reason);
    }
    const int err = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? r.library_error : 0;
    Close();
    // Not a refusal: the socket closed (a broker shutting down or still starting, a proxy
    // without a backend), a timeout, a socket error. The outbox waits for it.
    std::string what = err != 0 ? amqp_error_string2(err) : "no reply";
    if (err == AMQP_STATUS_CONNECTION_CLOSED || err == AMQP_STATUS_SOCKET_ERROR) {
      what += " (the broker hung up during the login: starting, stopping, or behind a proxy "
              "without a backend)";
    }
    return Status::Unavailable("broker " + url_.Redacted() + ": login failed: " + what);
  }
  Status s = EnsurePublishChannel();
  if (!s.ok()) return LostAfter(s);
  return Status::OK();
}

// ---- Writing ----

void Connection::AppendFrame(uint8_t type, uint16_t ch, const void* payload, size_t n) {
  out_.push_back(static_cast<char>(type));
  Put16(&out_, ch);
  Put32(&out_, static_cast<uint32_t>(n));
  out_.append(static_cast<const char*>(payload), n);
  out_.push_back(static_cast<char>(AMQP_FRAME_END));
}

Status Connection::AppendMethod(uint16_t ch, uint32_t method, void* decoded) {
  std::string payload;
  Put32(&payload, method);
  const size_t frame_max = static_cast<size_t>(amqp_get_frame_max(conn_));
  if (scratch_.size() < frame_max) scratch_.resize(frame_max);
  const int n = amqp_encode_method(method, decoded, amqp_bytes_t{frame_max, scratch_.data()});
  if (n < 0) {
    return Status::InvalidArgument(std::string("cannot encode an AMQP method: ") +
                                   amqp_error_string2(n));
  }
  payload.append(scratch_.data(), static_cast<size_t>(n));
  AppendFrame(AMQP_FRAME_METHOD, ch, payload.data(), payload.size());
  return Status::OK();
}

Status Connection::AppendPublish(uint16_t ch, const Message& m, const std::string& message_id,
                                 bool mandatory, bool persistent) {
  amqp_basic_publish_t pub{};
  pub.exchange = Bytes(m.exchange);
  pub.routing_key = Bytes(m.routing_key);
  pub.mandatory = mandatory ? 1 : 0;
  pub.immediate = 0;
  const size_t mark = out_.size();
  SEIGO_RETURN_IF_ERROR(AppendMethod(ch, AMQP_BASIC_PUBLISH_METHOD, &pub));
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
  props.message_id = Bytes(message_id);
  if (persistent) {
    props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 2;
  }
  if (!m.content_type.empty()) {
    props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = Bytes(m.content_type);
  }
  if (!m.type.empty()) {
    props._flags |= AMQP_BASIC_TYPE_FLAG;
    props.type = Bytes(m.type);
  }
  std::vector<amqp_table_entry_t> headers(m.headers.size());
  for (size_t h = 0; h < m.headers.size(); ++h) {
    headers[h].key = Bytes(m.headers[h].first);
    headers[h].value.kind = AMQP_FIELD_KIND_UTF8;
    headers[h].value.value.bytes = Bytes(m.headers[h].second);
  }
  if (!headers.empty()) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = static_cast<int>(headers.size());
    props.headers.entries = headers.data();
  }
  const size_t frame_max = static_cast<size_t>(amqp_get_frame_max(conn_));
  std::string header;
  Put16(&header, AMQP_BASIC_CLASS);
  Put16(&header, 0);  // weight
  Put64(&header, m.body.size());
  if (scratch_.size() < frame_max) scratch_.resize(frame_max);
  const int n =
      amqp_encode_properties(AMQP_BASIC_CLASS, &props, amqp_bytes_t{frame_max, scratch_.data()});
  if (n < 0) {
    out_.resize(mark);
    return Status::InvalidArgument(std::string("cannot encode the message's properties: ") +
                                   amqp_error_string2(n));
  }
  header.append(scratch_.data(), static_cast<size_t>(n));
  AppendFrame(AMQP_FRAME_HEADER, ch, header.data(), header.size());
  const size_t chunk = frame_max - 8;  // frame header (7) and end octet (1)
  for (size_t off = 0; off < m.body.size(); off += chunk) {
    AppendFrame(AMQP_FRAME_BODY, ch, m.body.data() + off, std::min(chunk, m.body.size() - off));
  }
  return Status::OK();
}

Status Connection::Flush(const char* what) {
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  const int fd = amqp_get_sockfd(conn_);
  size_t off = 0;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  while (off < out_.size()) {
    const ssize_t n = ::send(fd, out_.data() + off, out_.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);  // it reads: progress
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const int64_t ms = MsUntil(deadline);
      if (ms == 0) {
        return Lost(std::string(what) + ": the broker took no data for " +
                    std::to_string(timeout_ms_) + " ms (it stopped reading)");
      }
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(ms)) < 0 && errno != EINTR) {
        return Lost(std::string(what) + ": poll: " + std::strerror(errno));
      }
      continue;
    }
    return Lost(std::string(what) + ": " + (n < 0 ? std::strerror(errno) : "nothing written"));
  }
  out_.clear();
  return Status::OK();
}

Status Connection::SendMethod(uint16_t ch, uint32_t method, void* decoded, const char* what) {
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  SEIGO_RETURN_IF_ERROR(AppendMethod(ch, method, decoded));
  return Flush(what);
}

// ---- Reading ----

Status Connection::ReadOne(Clock::time_point deadline, bool* got) {
  *got = false;
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  amqp_maybe_release_buffers(conn_);  // what earlier frames pointed to was copied out
  amqp_frame_t f;
  timeval tv = Tv(MsUntil(deadline));
  const int rc = amqp_simple_wait_frame_noblock(conn_, &f, &tv);
  if (rc == AMQP_STATUS_TIMEOUT) return Status::OK();
  if (rc != AMQP_STATUS_OK) return Lost(std::string("connection lost: ") + amqp_error_string2(rc));
  *got = true;
  Status s = Dispatch(f);
  if (!s.ok()) Close();
  return s;
}

Status Connection::Dispatch(const amqp_frame_t& f) {
  const uint16_t ch = f.channel;
  if (f.frame_type == AMQP_FRAME_HEARTBEAT) return Status::OK();
  if (ch == 0) {
    if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* m = static_cast<const amqp_connection_close_t*>(f.payload.method.decoded);
      const std::string reason = std::to_string(m->reply_code) + " " + Str(m->reply_text);
      amqp_connection_close_ok_t ok{};
      if (AppendMethod(0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok).ok()) Flush("connection.close-ok");
      return Lost("the broker closed the connection: " + reason);
    }
    return Status::OK();  // nothing else on channel 0 matters here
  }
  if (ch >= incoming_.size()) return Status::OK();  // not a channel of ours
  Incoming& in = incoming_[ch];
  switch (f.frame_type) {
    case AMQP_FRAME_METHOD: {
      const uint32_t id = f.payload.method.id;
      void* dec = f.payload.method.decoded;
      switch (id) {
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<const amqp_channel_close_t*>(dec);
          closed_[ch] = ChannelClose{m->reply_code, Str(m->reply_text)};
          open_[ch] = false;
          in = Incoming{};
          if (ch == kConsumeChannel) {
            consuming_ = false;
            deliveries_.clear();  // their tags died with the channel; the broker requeued them
          }
          if (m->reply_code == 404) known_exchanges_.clear();
          // Acknowledge it, so the connection stays usable and the channel can be reopened.
          amqp_channel_close_ok_t ok{};
          SEIGO_RETURN_IF_ERROR(AppendMethod(ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok));
          return Flush("channel.close-ok");
        }
        case AMQP_BASIC_ACK_METHOD:
          if (ch == kPublishChannel && round_ != nullptr) {
            const auto* m = static_cast<const amqp_basic_ack_t*>(dec);
            round_->Settle(m->delivery_tag, m->multiple != 0, true);
          }
          return Status::OK();
        case AMQP_BASIC_NACK_METHOD:
          if (ch == kPublishChannel && round_ != nullptr) {
            const auto* m = static_cast<const amqp_basic_nack_t*>(dec);
            round_->Settle(m->delivery_tag, m->multiple != 0, false);
          }
          return Status::OK();
        case AMQP_BASIC_RETURN_METHOD: {
          const auto* m = static_cast<const amqp_basic_return_t*>(dec);
          in = Incoming{};
          in.kind = Incoming::Kind::kReturn;
          in.reason = "returned by the broker: " + std::to_string(m->reply_code) + " " +
                      Str(m->reply_text) + " (exchange '" + Str(m->exchange) +
                      "', routing key '" + Str(m->routing_key) + "')";
          return Status::OK();
        }
        case AMQP_BASIC_DELIVER_METHOD: {
          const auto* m = static_cast<const amqp_basic_deliver_t*>(dec);
          in = Incoming{};
          in.kind = Incoming::Kind::kDeliver;
          in.d.tag = m->delivery_tag;
          in.d.redelivered = m->redelivered != 0;
          in.d.exchange = Str(m->exchange);
          in.d.routing_key = Str(m->routing_key);
          return Status::OK();
        }
        case AMQP_BASIC_CANCEL_METHOD:  // the broker ended our consumer (its queue is gone)
          if (ch == kConsumeChannel) {
            consumer_cancelled_ = true;
            consuming_ = false;
          }
          return Status::OK();
        default:
          if (ch == rpc_channel_ && id == rpc_reply_) {
            rpc_done_ = true;
            if (id == AMQP_QUEUE_DECLARE_OK_METHOD) {
              rpc_message_count_ = static_cast<const amqp_queue_declare_ok_t*>(dec)->message_count;
            } else if (id == AMQP_BASIC_CONSUME_OK_METHOD) {
              consumer_tag_ = Str(static_cast<const amqp_basic_consume_ok_t*>(dec)->consumer_tag);
            }
          }
          return Status::OK();
      }
    }
    case AMQP_FRAME_HEADER: {
      if (in.kind == Incoming::Kind::kNone || in.have_header) return Status::OK();
      in.have_header = true;
      in.body_size = f.payload.properties.body_size;
      ReadProperties(*static_cast<const amqp_basic_properties_t*>(f.payload.properties.decoded),
                     &in.d);
      if (in.body_size > (512u << 20)) {  // RabbitMQ's own ceiling
        return Lost("a message of " + std::to_string(in.body_size) + " bytes (over 512 MiB)");
      }
      in.d.body.reserve(static_cast<size_t>(in.body_size));
      if (in.body_size == 0) Completed(ch, in);
      return Status::OK();
    }
    case AMQP_FRAME_BODY: {
      if (in.kind == Incoming::Kind::kNone || !in.have_header) return Status::OK();
      in.d.body.append(static_cast<const char*>(f.payload.body_fragment.bytes),
                       f.payload.body_fragment.len);
      if (in.d.body.size() >= in.body_size) Completed(ch, in);
      return Status::OK();
    }
    default:
      return Status::OK();
  }
}

void Connection::Completed(uint16_t ch, Incoming& in) {
  if (in.kind == Incoming::Kind::kDeliver && ch == kConsumeChannel) {
    deliveries_.push_back(std::move(in.d));
  } else if (in.kind == Incoming::Kind::kReturn && ch == kPublishChannel && round_ != nullptr) {
    round_->Returned(in.d.message_id, in.reason);
  }
  in = Incoming{};
}

Status Connection::ClosedStatus(uint16_t ch, const std::string& what) {
  const ChannelClose& c = *closed_[ch];
  return Status(c.code == 404 ? Code::kNotFound : Code::kQueryFailed,
                what + ": " + std::to_string(c.code) + " " + c.text);
}

Status Connection::Rpc(uint16_t ch, uint32_t method, void* decoded, uint32_t reply,
                       const std::string& what) {
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  closed_[ch].reset();
  rpc_channel_ = ch;
  rpc_reply_ = reply;
  rpc_done_ = false;
  Status s = SendMethod(ch, method, decoded, what.c_str());
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
  while (s.ok() && !rpc_done_) {
    if (closed_[ch]) {
      s = ClosedStatus(ch, what);
      break;
    }
    bool got = false;
    s = ReadOne(deadline, &got);
    if (s.ok() && !rpc_done_ && MsUntil(deadline) == 0) {
      s = Lost(what + ": no reply within " + std::to_string(timeout_ms_) + " ms");
    }
  }
  rpc_channel_ = 0;
  return s;
}

Status Connection::EnsureChannel(uint16_t ch) {
  SEIGO_RETURN_IF_ERROR(Connect());
  if (open_[ch]) return Status::OK();
  amqp_channel_open_t open{};
  SEIGO_RETURN_IF_ERROR(Rpc(ch, AMQP_CHANNEL_OPEN_METHOD, &open, AMQP_CHANNEL_OPEN_OK_METHOD,
                            "opening channel " + std::to_string(ch)));
  open_[ch] = true;
  return Status::OK();
}

Status Connection::EnsurePublishChannel() {
  if (conn_ != nullptr && open_[kPublishChannel]) return Status::OK();
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kPublishChannel));
  amqp_confirm_select_t sel{};
  SEIGO_RETURN_IF_ERROR(Rpc(kPublishChannel, AMQP_CONFIRM_SELECT_METHOD, &sel,
                            AMQP_CONFIRM_SELECT_OK_METHOD, "confirm.select"));
  next_tag_ = 1;  // a new channel numbers its publishes from 1
  return Status::OK();
}

// ---- Publishing ----

void Connection::PublishPass(std::span<const OutboxEntry> entries, const std::vector<size_t>& todo,
                             size_t window, PublishRound* round) {
  const auto stalled = [&] {
    return Clock::now() >= round->last_progress + std::chrono::milliseconds(timeout_ms_);
  };
  // Waits for one frame; false when the pass must end (connection gone, channel closed, or no
  // confirm for timeout_ms).
  const auto wait = [&]() -> bool {
    if (!Flush("publishing").ok()) return false;
    bool got = false;
    if (!ReadOne(round->last_progress + std::chrono::milliseconds(timeout_ms_), &got).ok()) {
      return false;
    }
    if (stalled()) {  // (also while other frames keep coming)
      Lost("no confirm from the broker for " + std::to_string(timeout_ms_) + " ms");
      return false;
    }
    return open_[kPublishChannel];
  };
  round->last_progress = Clock::now();
  for (size_t i : todo) {
    while (round->by_tag.size() >= std::max<size_t>(1, window)) {
      if (!wait()) return;
    }
    if (conn_ == nullptr || !open_[kPublishChannel]) return;
    const OutboxEntry& e = entries[i];
    const std::string id = e.message_id();
    Status s = AppendPublish(kPublishChannel, e.msg, id, /*mandatory=*/true, /*persistent=*/true);
    if (!s.ok()) {  // this message cannot be encoded (cannot happen within Tx::Publish's limits)
      (*round->out)[i] = {core::Broker::Fate::kRetry, s.ToString()};
      round->settled[i] = 1;
      continue;
    }
    round->returned[i] = 0;
    round->by_tag[next_tag_++] = i;
    round->by_id[id] = i;
    if (out_.size() >= kFlushBytes) {
      if (!Flush("publishing").ok()) return;
      round->last_progress = Clock::now();
    }
  }
  if (!Flush("publishing").ok()) return;
  round->last_progress = Clock::now();
  while (!round->by_tag.empty()) {
    if (!wait()) return;
  }
}

std::vector<core::Broker::Result> Connection::PublishConfirmed(
    std::span<const OutboxEntry> entries, size_t window) {
  using Fate = core::Broker::Fate;
  std::vector<core::Broker::Result> out(entries.size(), {Fate::kRetry, "not confirmed"});
  if (entries.empty()) return out;
  // An idle connection may hold news (a broker that went down closed it): read it first, so
  // that a dead connection is replaced now rather than failing this batch.
  if (conn_ != nullptr) Drain(Clock::now());
  Status s = EnsurePublishChannel();
  if (!s.ok()) {
    for (auto& r : out) r.reason = s.ToString();
    return out;
  }
  // Exchanges first (passive declare on the declaration channel): a publish to a missing one
  // would close the publishing channel.
  std::map<std::string, std::string> missing;  // exchange -> reason
  std::vector<size_t> todo;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& x = entries[i].msg.exchange;
    if (!x.empty() && !missing.count(x)) {
      Result<bool> exists = ExchangeExists(x);
      if (!exists.ok()) {
        for (auto& r : out) r = {Fate::kRetry, exists.status().ToString()};
        return out;
      }
      if (!*exists) missing[x] = "exchange '" + x + "' does not exist";
    }
    if (auto it = missing.find(x); it != missing.end()) {
      out[i] = {Fate::kDead, it->second};
    } else {
      todo.push_back(i);
    }
  }
  PublishRound round;
  round.out = &out;
  round.returned.assign(entries.size(), 0);
  round.settled.assign(entries.size(), 0);
  size_t win = window;
  int closes = 0;
  while (!todo.empty()) {
    s = EnsurePublishChannel();
    if (!s.ok()) {
      for (size_t i : todo) out[i] = {Fate::kRetry, s.ToString()};
      break;
    }
    round.by_tag.clear();
    round.by_id.clear();
    round_ = &round;
    PublishPass(entries, todo, win, &round);
    round_ = nullptr;
    std::vector<size_t> unsettled;
    for (size_t i : todo) {
      if (!round.settled[i]) unsettled.push_back(i);
    }
    if (conn_ == nullptr) {
      // Connection lost or no confirm in time: the channel's numbering can no longer be
      // trusted. Those messages are retried (duplicates are possible: same message ids).
      for (size_t i : unsettled) out[i] = {Fate::kRetry, "no confirm: " + last_loss_};
      break;
    }
    if (open_[kPublishChannel] || !closed_[kPublishChannel]) break;  // all settled
    // The broker closed the publishing channel. Whatever was in flight is lost; find the
    // cause, set it aside with the broker's reason (retried later: a permission can be fixed,
    // a 404 has cleared the exchange cache so the next check decides), publish the rest again.
    const ChannelClose cc = *closed_[kPublishChannel];
    const std::string reason = "the broker closed the publishing channel: " +
                               std::to_string(cc.code) + " " + cc.text;
    std::set<std::string> exchanges;
    for (size_t i : unsettled) exchanges.insert(entries[i].msg.exchange);
    std::optional<std::string> named = NamedExchange(cc.text, exchanges);
    std::optional<size_t> culprit;
    if (named) {
      for (size_t i : unsettled) {
        if (entries[i].msg.exchange == *named) {
          out[i] = {Fate::kRetry, reason};
          round.settled[i] = 1;
        }
      }
      win = window;
    } else if (win == 1 && round.by_tag.size() == 1) {
      // Publishing one at a time: the one in flight closed the channel.
      culprit = round.by_tag.begin()->second;
      out[*culprit] = {Fate::kRetry, reason};
      round.settled[*culprit] = 1;
      win = window;
    } else {
      win = 1;  // the broker named nothing we know: find the message by publishing singly
    }
    todo.clear();
    for (size_t i : unsettled) {
      if (!round.settled[i]) todo.push_back(i);
    }
    if (++closes >= kMaxChannelCloses) {
      for (size_t i : todo) out[i] = {Fate::kRetry, reason + " (and " + std::to_string(closes) +
                                                        " channel closes in this batch)"};
      break;
    }
  }
  return out;
}

Status Connection::PublishUnconfirmed(const Message& m, const std::string& message_id) {
  SEIGO_RETURN_IF_ERROR(EnsurePublishChannel());
  // On the confirm channel, but nobody waits for the confirms: read and drop what came.
  SEIGO_RETURN_IF_ERROR(AppendPublish(kPublishChannel, m, message_id, /*mandatory=*/false,
                                      /*persistent=*/true));
  SEIGO_RETURN_IF_ERROR(Flush("publishing"));
  ++next_tag_;
  return Drain(Clock::now());
}

// ---- Declarations (channel 2) ----

Result<bool> Connection::ExchangeExists(const std::string& exchange) {
  if (exchange.empty()) return true;
  const auto now = Clock::now();
  if (auto it = known_exchanges_.find(exchange);
      it != known_exchanges_.end() && now - it->second < std::chrono::minutes(1)) {
    return true;
  }
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_exchange_declare_t m{};
  m.exchange = Bytes(exchange);
  m.type = amqp_cstring_bytes("topic");
  m.passive = 1;
  m.arguments = amqp_empty_table;
  Status s = Rpc(kDeclareChannel, AMQP_EXCHANGE_DECLARE_METHOD, &m, AMQP_EXCHANGE_DECLARE_OK_METHOD,
                 "checking exchange '" + exchange + "'");
  if (s.Is(Code::kNotFound)) return false;  // (the 404 cleared the cache)
  SEIGO_RETURN_IF_ERROR(s);
  known_exchanges_[exchange] = now;
  return true;
}

Status Connection::DeclareExchange(const std::string& exchange, const std::string& type) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_exchange_declare_t m{};
  m.exchange = Bytes(exchange);
  m.type = Bytes(type);
  m.durable = 1;
  m.arguments = amqp_empty_table;
  return Rpc(kDeclareChannel, AMQP_EXCHANGE_DECLARE_METHOD, &m, AMQP_EXCHANGE_DECLARE_OK_METHOD,
             "declaring exchange '" + exchange + "'");
}

Status Connection::DeleteExchange(const std::string& exchange) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_exchange_delete_t m{};
  m.exchange = Bytes(exchange);
  known_exchanges_.erase(exchange);
  return Rpc(kDeclareChannel, AMQP_EXCHANGE_DELETE_METHOD, &m, AMQP_EXCHANGE_DELETE_OK_METHOD,
             "deleting exchange '" + exchange + "'");
}

Status Connection::DeclareQueue(const std::string& queue, bool quorum,
                                const std::string& dead_letter_queue) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
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
  auto declare = [&](const std::string& name, amqp_table_t table) {
    amqp_queue_declare_t m{};
    m.queue = Bytes(name);
    m.durable = 1;
    m.arguments = table;
    return Rpc(kDeclareChannel, AMQP_QUEUE_DECLARE_METHOD, &m, AMQP_QUEUE_DECLARE_OK_METHOD,
               "declaring queue '" + name + "'");
  };
  if (!dead_letter_queue.empty()) {
    // The dead-letter queue first (of the same type).
    SEIGO_RETURN_IF_ERROR(declare(dead_letter_queue, amqp_table_t{static_cast<int>(args.size()),
                                                                  args.data()}));
    add(dlx, empty);  // the default exchange routes by queue name
    add(dlk, dead_letter_queue);
  }
  return declare(queue, amqp_table_t{static_cast<int>(args.size()), args.data()});
}

Status Connection::BindQueue(const std::string& queue, const std::string& exchange,
                             const std::string& binding_key) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_queue_bind_t m{};
  m.queue = Bytes(queue);
  m.exchange = Bytes(exchange);
  m.routing_key = Bytes(binding_key);
  m.arguments = amqp_empty_table;
  return Rpc(kDeclareChannel, AMQP_QUEUE_BIND_METHOD, &m, AMQP_QUEUE_BIND_OK_METHOD,
             "binding queue '" + queue + "'");
}

Result<uint32_t> Connection::QueueDepth(const std::string& queue) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_queue_declare_t m{};
  m.queue = Bytes(queue);
  m.passive = 1;
  m.arguments = amqp_empty_table;
  rpc_message_count_ = 0;
  SEIGO_RETURN_IF_ERROR(Rpc(kDeclareChannel, AMQP_QUEUE_DECLARE_METHOD, &m,
                            AMQP_QUEUE_DECLARE_OK_METHOD, "checking queue '" + queue + "'"));
  return rpc_message_count_;
}

Status Connection::PurgeQueue(const std::string& queue) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kDeclareChannel));
  amqp_queue_purge_t m{};
  m.queue = Bytes(queue);
  return Rpc(kDeclareChannel, AMQP_QUEUE_PURGE_METHOD, &m, AMQP_QUEUE_PURGE_OK_METHOD,
             "purging queue '" + queue + "'");
}

// ---- Consuming (channel 3) ----

Status Connection::Consume(const std::string& queue, int prefetch, bool no_ack) {
  SEIGO_RETURN_IF_ERROR(EnsureChannel(kConsumeChannel));
  amqp_basic_qos_t q{};
  q.prefetch_count = static_cast<uint16_t>(std::clamp(prefetch, 1, 65535));
  SEIGO_RETURN_IF_ERROR(
      Rpc(kConsumeChannel, AMQP_BASIC_QOS_METHOD, &q, AMQP_BASIC_QOS_OK_METHOD, "basic.qos"));
  amqp_basic_consume_t c{};
  c.queue = Bytes(queue);
  c.no_ack = no_ack ? 1 : 0;
  c.arguments = amqp_empty_table;
  SEIGO_RETURN_IF_ERROR(Rpc(kConsumeChannel, AMQP_BASIC_CONSUME_METHOD, &c,
                            AMQP_BASIC_CONSUME_OK_METHOD, "consuming queue '" + queue + "'"));
  consuming_ = true;
  consume_started_ = true;
  consumer_cancelled_ = false;
  return Status::OK();
}

Status Connection::ConsumerAlive() {
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  if (consumer_cancelled_) return Lost("the broker cancelled the consumer (its queue was deleted?)");
  if (consuming_) return Status::OK();
  if (closed_[kConsumeChannel]) {
    const ChannelClose c = *closed_[kConsumeChannel];
    return Lost("the broker closed the consuming channel: " + std::to_string(c.code) + " " + c.text);
  }
  return Status::Unavailable("not consuming");
}

Status Connection::Drain(Clock::time_point deadline) {
  // Until nothing is waiting; past the deadline at most a few hundred more frames (a broker
  // that keeps sending cannot hold the caller).
  for (int n = 0;; ++n) {
    bool got = false;
    SEIGO_RETURN_IF_ERROR(ReadOne(deadline, &got));
    if (!got || (n >= 256 && Clock::now() >= deadline)) return Status::OK();
  }
}

Status Connection::Poll(int timeout_ms) {
  if (conn_ == nullptr) return Status::Unavailable("broker " + url_.Redacted() + ": not connected");
  if (consume_started_) SEIGO_RETURN_IF_ERROR(ConsumerAlive());
  SEIGO_RETURN_IF_ERROR(Drain(Clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms))));
  return consume_started_ ? ConsumerAlive() : Status::OK();
}

Result<std::optional<Delivery>> Connection::Next(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
  for (;;) {
    if (!deliveries_.empty()) {
      Delivery d = std::move(deliveries_.front());
      deliveries_.pop_front();
      return std::optional<Delivery>(std::move(d));
    }
    SEIGO_RETURN_IF_ERROR(ConsumerAlive());
    bool got = false;
    SEIGO_RETURN_IF_ERROR(ReadOne(deadline, &got));
    if (deliveries_.empty() && (!got || Clock::now() >= deadline)) {
      return std::optional<Delivery>();
    }
  }
}

Status Connection::StopConsuming() {
  if (conn_ == nullptr || !open_[kConsumeChannel]) {
    consume_started_ = consuming_ = false;
    deliveries_.clear();
    return Status::OK();
  }
  if (consuming_) {
    amqp_basic_cancel_t m{};
    m.consumer_tag = Bytes(consumer_tag_);
    // Deliveries sent before the cancel-ok are read (and handed back below).
    SEIGO_RETURN_IF_ERROR(Rpc(kConsumeChannel, AMQP_BASIC_CANCEL_METHOD, &m,
                              AMQP_BASIC_CANCEL_OK_METHOD, "basic.cancel"));
  }
  consume_started_ = consuming_ = false;
  deliveries_.clear();
  // Every delivery not acknowledged yet back to the queue (multiple, tag 0 = all outstanding;
  // basic.nack: RabbitMQ 4.3+ does not count it as a failed delivery).
  amqp_basic_nack_t n{};
  n.delivery_tag = 0;
  n.multiple = 1;
  n.requeue = 1;
  return SendMethod(kConsumeChannel, AMQP_BASIC_NACK_METHOD, &n, "basic.nack");
}

Status Connection::Ack(uint64_t tag) {
  if (conn_ == nullptr || !open_[kConsumeChannel]) {
    return Status::Unavailable("broker " + url_.Redacted() + ": ack: the consuming channel is gone");
  }
  amqp_basic_ack_t m{};
  m.delivery_tag = tag;
  return SendMethod(kConsumeChannel, AMQP_BASIC_ACK_METHOD, &m, "basic.ack");
}

Status Connection::Reject(uint64_t tag, bool requeue) {
  if (conn_ == nullptr || !open_[kConsumeChannel]) {
    return Status::Unavailable("broker " + url_.Redacted() + ": reject: the consuming channel is gone");
  }
  amqp_basic_reject_t m{};
  m.delivery_tag = tag;
  m.requeue = requeue ? 1 : 0;
  return SendMethod(kConsumeChannel, AMQP_BASIC_REJECT_METHOD, &m, "basic.reject");
}

Status Connection::Nack(uint64_t tag, bool requeue) {
  if (conn_ == nullptr || !open_[kConsumeChannel]) {
    return Status::Unavailable("broker " + url_.Redacted() + ": nack: the consuming channel is gone");
  }
  amqp_basic_nack_t m{};
  m.delivery_tag = tag;
  m.requeue = requeue ? 1 : 0;
  return SendMethod(kConsumeChannel, AMQP_BASIC_NACK_METHOD, &m, "basic.nack");
}

// ---- AmqpBroker ----

std::vector<core::Broker::Result> AmqpBroker::Publish(std::span<const OutboxEntry> entries) {
  return conn_.PublishConfirmed(entries, window_);
}

bool AmqpBroker::Ready() {
  if (conn_.connected()) conn_.Poll(0);  // a closed connection is noticed (and dropped) here
  return conn_.Connect().ok();
}

}  // namespace seigo::amqp
