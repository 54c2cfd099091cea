// Messages published iff committed, and applied exactly once (doc/outbox.md), against the real
// MariaDB shards, Redis instances and RabbitMQ broker that scripts/test.sh starts
// (SEIGO_TEST_SHARDS, SEIGO_TEST_REDIS, SEIGO_TEST_AMQP).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "amqp/amqp_connection.h"
#include "seigo/consumer.h"
#include "tests/db_test_util.h"

namespace seigo {
namespace {

std::string TestAmqp() {
  const char* s = std::getenv("SEIGO_TEST_AMQP");
  return s == nullptr ? "" : s;
}
std::string TestRedis() {
  const char* s = std::getenv("SEIGO_TEST_REDIS");
  return s == nullptr ? "" : s;
}


// Ports for this file's stand-ins (below the ephemeral range, 10 apart from the brokers that
// scripts/test.sh and the demos start).
constexpr int kProxyPort = 5742;
constexpr int kHangUpPort = 5752;

int Listen(int port, int rcvbuf) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Set before listen(), so that accepted sockets start with it (and a small window).
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A TCP proxy from 127.0.0.1:port to the test broker. Freeze() makes it a broker that stops
// reading (like one stopped with SIGSTOP or under a resource alarm): nothing is read from
// either side, so the client's writes fill the socket buffers and no reply comes back. Cut()
// closes every proxied connection.
class TcpProxy {
 public:
  TcpProxy(int port, const std::string& host, int to_port) : to_port_(to_port) {
    to_host_ = host == "localhost" ? "127.0.0.1" : host;
    listen_fd_ = Listen(port, 16 << 10);
    if (listen_fd_ >= 0) thread_ = std::thread([this] { Loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (auto& [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  bool ok() const { return listen_fd_ >= 0; }
  void Freeze() { frozen_ = true; }
  void Thaw() { frozen_ = false; }
  void Cut() {
    cut_ = true;
    while (cut_ && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

 private:
  void Loop() {
    char buf[64 << 10];
    while (!stop_) {
      if (cut_) {
        for (auto& [a, b] : pairs_) {
          ::close(a);
          ::close(b);
        }
        pairs_.clear();
        cut_ = false;
      }
      const bool frozen = frozen_;
      std::vector<pollfd> fds{{listen_fd_, static_cast<short>(frozen ? 0 : POLLIN), 0}};
      for (auto& [a, b] : pairs_) {
        fds.push_back({a, static_cast<short>(frozen ? 0 : POLLIN), 0});
        fds.push_back({b, static_cast<short>(frozen ? 0 : POLLIN), 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0 || frozen) continue;
      if (fds[0].revents & POLLIN) {
        const int c = ::accept(listen_fd_, nullptr, nullptr);
        if (c >= 0) {
          const int u = ::socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_port = htons(static_cast<uint16_t>(to_port_));
          ::inet_pton(AF_INET, to_host_.c_str(), &a.sin_addr);
          if (::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
            pairs_.push_back({c, u});
          } else {
            ::close(c);
            ::close(u);
          }
        }
      }
      std::vector<size_t> dead;
      for (size_t p = 0; p < pairs_.size() && 1 + 2 * p + 1 < fds.size(); ++p) {
        for (int side = 0; side < 2; ++side) {
          if (!(fds[1 + 2 * p + side].revents & (POLLIN | POLLHUP | POLLERR))) continue;
          const int from = side == 0 ? pairs_[p].first : pairs_[p].second;
          const int to = side == 0 ? pairs_[p].second : pairs_[p].first;
          const ssize_t n = ::read(from, buf, sizeof(buf));
          bool good = n > 0;
          for (ssize_t off = 0; good && off < n;) {
            const ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
            if (w <= 0) good = false;
            else off += w;
          }
          if (!good) {
            dead.push_back(p);
            break;
          }
        }
      }
      for (auto it = dead.rbegin(); it != dead.rend(); ++it) {
        ::close(pairs_[*it].first);
        ::close(pairs_[*it].second);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
      }
    }
  }

  std::string to_host_;
  int to_port_;
  int listen_fd_ = -1;
  std::vector<std::pair<int, int>> pairs_;  // (client, broker), the loop's own
  std::atomic<bool> stop_{false}, frozen_{false}, cut_{false};
  std::thread thread_;
};

// A "broker" that accepts, reads the AMQP protocol header and hangs up: what a client sees
// from a broker that is shutting down or still booting, or from a TCP proxy without a backend.
class HangUpServer {
 public:
  explicit HangUpServer(int port) : fd_(Listen(port, 0)) {
    if (fd_ >= 0) {
      thread_ = std::thread([this] {
        while (!stop_) {
          pollfd p{fd_, POLLIN, 0};
          if (::poll(&p, 1, 20) <= 0) continue;
          const int c = ::accept(fd_, nullptr, nullptr);
          if (c < 0) continue;
          char header[8];
          size_t got = 0;
          for (int i = 0; i < 100 && got < sizeof(header); ++i) {
            pollfd q{c, POLLIN, 0};
            if (::poll(&q, 1, 20) <= 0) continue;
            const ssize_t n = ::read(c, header + got, sizeof(header) - got);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
          }
          ::close(c);  // all read: an orderly FIN, not a reset
          ++hang_ups_;
        }
      });
    }
  }
  ~HangUpServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  int hang_ups() const { return hang_ups_; }

 private:
  int fd_;
  std::atomic<bool> stop_{false};
  std::atomic<int> hang_ups_{0};
  std::thread thread_;
};

OutboxEntry Entry(const std::string& gid, const std::string& exchange, const std::string& key,
                  std::string body = "m") {
  OutboxEntry e;
  e.gid = gid;
  e.msg.exchange = exchange;
  e.msg.routing_key = key;
  e.msg.body = std::move(body);
  return e;
}

// A gid no earlier run used (message ids must not collide across runs in a shared queue).
std::string FreshGid(const std::string& tag) {
  static std::atomic<int> n{0};
  return tag + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
         std::to_string(n++);
}

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(testing::TestShards().empty()) << "run with scripts/test.sh (SEIGO_TEST_SHARDS)";
    ASSERT_FALSE(TestAmqp().empty()) << "run with scripts/test.sh (SEIGO_TEST_AMQP: the broker)";
    coord_ = OpenWith(TestAmqp());
    ASSERT_NE(coord_, nullptr);
    auto url = amqp::AmqpUrl::Parse(TestAmqp());
    ASSERT_TRUE(url.ok()) << url.status().ToString();
    url_ = *url;
    peer_ = std::make_unique<amqp::Connection>(url_, 5'000);
    ASSERT_TRUE(peer_->Connect().ok());
    // Each test's own queue, reached through the default exchange by its name.
    queue_ = std::string("seigo-test-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_TRUE(peer_->DeclareQueue(queue_, true, "").ok());
    ASSERT_TRUE(peer_->PurgeQueue(queue_).ok());
    ClearOutboxes();
  }

  std::unique_ptr<Coordinator> OpenWith(const std::string& amqp, int64_t lease_ms = 10'000,
                                        bool redis = false, int64_t poll_interval_ms = 50) {
    CoordinatorOptions o = testing::TestOptions();
    o.amqp = amqp;
    o.relay.lease_ms = lease_ms;
    o.relay.poll_interval_ms = poll_interval_ms;
    o.relay.timeout_ms = 2'000;
    if (redis) o.redis = TestRedis();
    auto c = Coordinator::Open(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  void ClearOutboxes() {
    for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
      ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_outbox").ok());
      ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_outbox_dead").ok());
    }
  }

  uint64_t Pending() {
    uint64_t n = 0;
    for (const auto& st : coord_->OutboxStatus()) {
      EXPECT_TRUE(st.ok()) << st.status().ToString();
      if (st.ok()) n += st->pending;
    }
    return n;
  }

  // Reads what arrives in the test queue within `ms` (after the first message, until 300 ms
  // pass without another).
  std::vector<Delivery> Receive(size_t want, int ms = 10'000) {
    amqp::Connection c(url_, 5'000);
    EXPECT_TRUE(c.Consume(queue_, 500, /*no_ack=*/true).ok());
    std::vector<Delivery> got;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      auto d = c.Next(got.size() >= want ? 300 : 100);
      if (!d.ok()) break;
      if (!d->has_value()) {
        if (got.size() >= want) break;
        continue;
      }
      got.push_back(**d);
    }
    return got;
  }

  void WaitUntil(const std::function<bool()>& f, int ms = 10'000) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!f() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::unique_ptr<Coordinator> coord_;
  amqp::AmqpUrl url_;
  std::unique_ptr<amqp::Connection> peer_;
  std::string queue_;
};

// A port nothing listens on: a broker that is down.
const char* const kDeadBroker = "amqp://seigo:x@127.0.0.1:1/";

TEST_F(OutboxTest, CommittedMessagesArriveInOrderWithGidSeqMessageIds) {
  int64_t a = -1, b = -1;  // keys on shards 0 and 1
  for (int64_t k = 1; k < 1000 && (a < 0 || b < 0); ++k) {
    const uint32_t s = coord_->shard_map().ShardFor(k);
    if (s == 0 && a < 0) a = k;
    if (s == 1 && b < 0) b = k;
  }
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "CREATE TABLE IF NOT EXISTS outbox_t (k BIGINT PRIMARY KEY,"
                                      " v BIGINT NOT NULL) ENGINE=InnoDB").ok());
    ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM outbox_t").ok());
  }
  std::vector<std::string> gids;
  // One shard, two shards, and nothing but messages (the outbox opens a shard).
  for (int shape = 0; shape < 3; ++shape) {
    TxResult r = coord_->Run([&](Tx& tx) -> Status {
      if (shape >= 0 && shape < 2) {
        SEIGO_RETURN_IF_ERROR(tx.Exec(a, "INSERT INTO outbox_t VALUES (?, 1) ON DUPLICATE KEY "
                                         "UPDATE v = v + 1", {a}).status());
      }
      if (shape == 1) {
        SEIGO_RETURN_IF_ERROR(tx.Exec(b, "INSERT INTO outbox_t VALUES (?, 1) ON DUPLICATE KEY "
                                         "UPDATE v = v + 1", {b}).status());
      }
      for (int i = 0; i < 3; ++i) {
        Message m;
        m.routing_key = queue_;
        m.body = "shape " + std::to_string(shape) + " msg " + std::to_string(i);
        m.content_type = "text/plain";
        m.headers = {{"player", "7"}};
        SEIGO_RETURN_IF_ERROR(tx.Publish(std::move(m)).status());
      }
      return Status::OK();
    });
    ASSERT_TRUE(r.committed()) << r.status.ToString();
    ASSERT_EQ(r.gid.size(), 32u);
    EXPECT_EQ(r.shards, shape == 1 ? 2u : 1u);
    gids.push_back(r.gid);
  }
  coord_->DrainRelay();
  std::vector<Delivery> got = Receive(9);
  ASSERT_EQ(got.size(), 9u);
  for (int shape = 0; shape < 3; ++shape) {
    for (int i = 0; i < 3; ++i) {
      const Delivery& d = got[static_cast<size_t>(shape * 3 + i)];
      EXPECT_EQ(d.message_id, gids[static_cast<size_t>(shape)] + "-" + std::to_string(i));
      EXPECT_EQ(d.body, "shape " + std::to_string(shape) + " msg " + std::to_string(i));
      EXPECT_EQ(d.content_type, "text/plain");
      ASSERT_EQ(d.headers.size(), 1u);
      EXPECT_EQ(d.headers[0].first, "player");
    }
  }
  EXPECT_EQ(Pending(), 0u) << "confirmed messages leave the outbox";
  EXPECT_EQ(coord_->counters().messages_confirmed, 9u);
}

TEST_F(OutboxTest, MessagesOfAbortedOrFailedTransactionsAreNeverPublished) {
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Publish("", queue_, "never").status());
    return Tx::Abort("changed my mind");
  });
  EXPECT_EQ(r.state, TxState::kAborted);
  // A failed statement after the publish poisons the attempt: nothing commits.
  r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Publish("", queue_, "never either").status());
    tx.Exec(1, "SELECT * FROM no_such_table_here");
    return Status::OK();
  });
  EXPECT_FALSE(r.committed());
  // A retried attempt publishes only the committed attempt's messages.
  r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Publish("", queue_, "attempt " + std::to_string(tx.attempt())).status());
    if (tx.attempt() == 1) return Status::Conflict("first attempt loses");
    return Status::OK();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  ASSERT_EQ(r.attempts, 2);
  coord_->DrainRelay();
  std::vector<Delivery> got = Receive(1, 3'000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "attempt 2");
  EXPECT_EQ(got[0].message_id, r.gid + "-0");
  EXPECT_EQ(Pending(), 0u);
}

TEST_F(OutboxTest, RedisOnlyTransactionPublishesThroughAShardOutbox) {
  auto c = OpenWith(TestAmqp(), 10'000, /*redis=*/true);
  ASSERT_NE(c, nullptr);
  ASSERT_GT(c->redis_instances(), 0u) << "SEIGO_TEST_REDIS is not set";
  TxResult r = c->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.kv().Incr("outbox-test:{hp}", -5, -1'000'000, 1'000'000));
    return tx.Publish("", queue_, "boss hit").status();
  });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  EXPECT_EQ(r.shards, 2u) << "the Redis instance and the outbox's shard";
  c->DrainRelay();
  std::vector<Delivery> got = Receive(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message_id, r.gid + "-0");
}

TEST_F(OutboxTest, BrokerDownAtCommitThenAnotherCoordinatorsPollPublishes) {
  auto down = OpenWith(kDeadBroker, /*lease_ms=*/300);
  ASSERT_NE(down, nullptr) << "an unreachable broker does not fail Open";
  TxResult r = down->Run([&](Tx& tx) { return tx.Publish("", queue_, "waited").status(); });
  ASSERT_TRUE(r.committed()) << "transactions commit while the broker is down: "
                             << r.status.ToString();
  down->DrainRelay();
  EXPECT_EQ(Pending(), 1u) << "the message waits in the outbox";
  EXPECT_GE(down->counters().messages_retried, 1u);
  // Another process with a working broker takes it once the claim's lease has passed.
  WaitUntil([&] { return Pending() == 0; });
  EXPECT_EQ(Pending(), 0u);
  std::vector<Delivery> got = Receive(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message_id, r.gid + "-0");
}

TEST_F(OutboxTest, ARelayThatCannotReachItsBrokerDoesNotClaimOtherRelaysWork) {
  // Found by the gacha demo: a stale process configured with a dead broker kept claiming the
  // outbox (tries rising, each claim a lease of delay) while healthy relays waited.
  coord_.reset();  // no healthy relay in this test
  auto down = OpenWith(kDeadBroker, /*lease_ms=*/100);
  ASSERT_NE(down, nullptr);
  TxResult r = down->Run([&](Tx& tx) { return tx.Publish("", queue_, "m").status(); });
  ASSERT_TRUE(r.committed());
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));  // many polls past the lease
  std::vector<Result<OutboxStats>> st = down->OutboxStatus();
  uint64_t pending = 0;
  int tries = 0;
  for (const auto& s : st) {
    ASSERT_TRUE(s.ok());
    pending += s->pending;
    tries = std::max(tries, s->max_tries);
  }
  EXPECT_EQ(pending, 1u);
  EXPECT_EQ(tries, 0) << "polls claimed the entry although the broker was unreachable";
  coord_ = OpenWith(TestAmqp());  // a healthy relay takes it at once
  WaitUntil([&] { return Pending() == 0; });
  EXPECT_EQ(Pending(), 0u);
  EXPECT_EQ(Receive(1).size(), 1u);
}

TEST_F(OutboxTest, ConcurrentPollsClaimEachTransactionOnce) {
  // 200 transactions committed while their process cannot reach the broker; then two
  // coordinators poll at once. Claims are exclusive (SKIP LOCKED) and last long: no duplicate.
  auto down = OpenWith(kDeadBroker, /*lease_ms=*/200);
  ASSERT_NE(down, nullptr);
  coord_.reset();  // only the two pollers below
  for (int i = 0; i < 200; ++i) {
    TxResult r = down->Run([&](Tx& tx) { return tx.Publish("", queue_, std::to_string(i)).status(); });
    ASSERT_TRUE(r.committed());
  }
  down.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto p1 = OpenWith(TestAmqp(), 60'000);
  auto p2 = OpenWith(TestAmqp(), 60'000);
  coord_ = OpenWith(TestAmqp(), 60'000);
  WaitUntil([&] { return Pending() == 0; }, 20'000);
  ASSERT_EQ(Pending(), 0u);
  std::vector<Delivery> got = Receive(200);
  std::set<std::string> ids;
  for (const Delivery& d : got) ids.insert(d.message_id);
  EXPECT_EQ(ids.size(), 200u);
  EXPECT_EQ(got.size(), 200u) << "a message was published twice";
  EXPECT_GT(p1->counters().messages_confirmed + p2->counters().messages_confirmed +
                coord_->counters().messages_confirmed,
            0u);
}

TEST_F(OutboxTest, UnroutableAndUnknownExchangeGoToTheDeadLetterRecord) {
  TxResult r = coord_->Run([&](Tx& tx) -> Status {
    SEIGO_RETURN_IF_ERROR(tx.Publish("", "no-such-queue-anywhere", "lost?").status());
    SEIGO_RETURN_IF_ERROR(tx.Publish("no-such-exchange", "x", "lost too?").status());
    return tx.Publish("", queue_, "delivered").status();
  });
  ASSERT_TRUE(r.committed());
  WaitUntil([&] { return Pending() == 0; });
  ASSERT_EQ(Pending(), 0u);
  uint64_t dead = 0;
  std::string reasons;
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    auto q = coord_->QueryShard(s, "SELECT gid, seq, reason FROM seigo_outbox_dead ORDER BY seq");
    ASSERT_TRUE(q.ok());
    for (const auto& row : q->rows) {
      EXPECT_EQ(*row[0], r.gid);
      reasons += *row[2] + "\n";
      ++dead;
    }
  }
  EXPECT_EQ(dead, 2u) << reasons;
  EXPECT_NE(reasons.find("NO_ROUTE"), std::string::npos) << reasons;
  EXPECT_NE(reasons.find("exchange 'no-such-exchange' does not exist"), std::string::npos)
      << reasons;
  std::vector<Delivery> got = Receive(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "delivered");
  EXPECT_EQ(got[0].message_id, r.gid + "-2");
}

TEST_F(OutboxTest, BadInputIsRefusedAndNothingIsWritten) {
  auto expect_refused = [&](const TxFn& fn, const std::string& what) {
    TxResult r = coord_->Run(fn);
    EXPECT_EQ(r.state, TxState::kAborted) << what;
    EXPECT_TRUE(r.status.Is(Code::kInvalidArgument)) << what << ": " << r.status.ToString();
  };
  expect_refused([&](Tx& tx) {
    return tx.Publish("", queue_, std::string(kMaxMessageBodyBytes + 1, 'x')).status();
  }, "oversized body");
  expect_refused([&](Tx& tx) {
    for (size_t i = 0; i <= kMaxTxMessages; ++i) {
      Status s = tx.Publish("", queue_, "m").status();
      if (!s.ok()) return s;
    }
    return Status::OK();
  }, "too many messages");
  expect_refused([&](Tx& tx) {
    return tx.Publish(std::string(300, 'e'), queue_, "m").status();
  }, "exchange name too long");
  expect_refused([&](Tx& tx) {
    tx.Publish("", queue_, std::string(kMaxMessageBodyBytes + 1, 'x'));
    return Status::OK();  // the closure ignores the error: the attempt is poisoned anyway
  }, "ignored refusal");
  TxResult ro = coord_->Run([&](Tx& tx) { return tx.Publish("", queue_, "m").status(); },
                            RunOptions{.read_only = true});
  EXPECT_TRUE(ro.status.Is(Code::kInvalidArgument)) << ro.status.ToString();
  auto none = OpenWith("");
  TxResult nb = none->Run([&](Tx& tx) { return tx.Publish("", queue_, "m").status(); });
  EXPECT_TRUE(nb.status.Is(Code::kInvalidArgument)) << nb.status.ToString();
  EXPECT_NE(nb.status.message().find("no message broker"), std::string::npos);
  EXPECT_EQ(Pending(), 0u);
  EXPECT_EQ(Receive(0, 500).size(), 0u);
}

TEST_F(OutboxTest, WrongCredentialsFailOpenWithoutEchoingThePassword) {
  CoordinatorOptions o = testing::TestOptions();
  std::string bad = TestAmqp();
  const size_t at = bad.find('@');
  ASSERT_NE(at, std::string::npos);
  bad = "amqp://seigo:WrongPassw0rd" + bad.substr(at);
  o.amqp = bad;
  auto c = Coordinator::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().Is(Code::kInvalidArgument)) << c.status().ToString();
  EXPECT_EQ(c.status().ToString().find("WrongPassw0rd"), std::string::npos) << c.status().ToString();
  o.amqp = "amqps://x:WrongPassw0rd@127.0.0.1/";
  c = Coordinator::Open(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().ToString().find("WrongPassw0rd"), std::string::npos) << c.status().ToString();
}

// ---- The AMQP adapter (src/amqp/amqp_connection.cc): review findings ----

// Review finding 1: one publish that makes the broker close the publishing channel (here 403
// ACCESS_REFUSED: the user may not write to one exchange) failed the whole batch. The old code
// took the channel.close as a lost connection: every entry still in flight — those of other
// exchanges too — came back kRetry ("no confirm"), and so again on every retry of a batch
// holding such a transaction. Now only the entries of the exchange the broker names get kRetry
// with its reason; the others are published again on a reopened channel and confirmed.
TEST_F(OutboxTest, AChannelClosingPublishFailsOnlyTheEntriesOfItsExchange) {
  const char* script = std::getenv("SEIGO_RABBITMQ_SCRIPT");
  ASSERT_NE(script, nullptr) << "run with scripts/test.sh (SEIGO_RABBITMQ_SCRIPT, to set permissions)";
  // A vhost of its own, with a user that may not write to one exchange.
  const std::string vhost = "seigo-test-perm", user = "seigo-test-limited", pw = "Lim1ted-pw";
  const std::string ctl = std::string("\"") + script + "\" ctl -q ";
  const std::string setup =
      ctl + "add_vhost " + vhost + " >/dev/null 2>&1; " + ctl + "add_user " + user + " " + pw +
      " >/dev/null 2>&1; " + ctl + "set_permissions -p " + vhost + " " + user +
      " '.*' '^(?!seigo-forbidden$).*' '.*' >/dev/null && " + ctl + "set_permissions -p " +
      vhost + " " + url_.user + " '.*' '.*' '.*' >/dev/null";
  ASSERT_EQ(std::system(setup.c_str()), 0) << setup;
  amqp::AmqpUrl admin = url_;
  admin.vhost = vhost;
  amqp::Connection a(admin, 5'000);
  const std::string q = "seigo-test-perm-q";
  ASSERT_TRUE(a.DeclareExchange("seigo-allowed", "direct").ok());
  ASSERT_TRUE(a.DeclareExchange("seigo-forbidden", "direct").ok());
  ASSERT_TRUE(a.DeclareQueue(q, /*quorum=*/false, "").ok());
  ASSERT_TRUE(a.PurgeQueue(q).ok());
  ASSERT_TRUE(a.BindQueue(q, "seigo-allowed", "k").ok());
  ASSERT_TRUE(a.BindQueue(q, "seigo-forbidden", "k").ok());

  amqp::AmqpUrl limited = admin;
  limited.user = user;
  limited.password = pw;
  amqp::AmqpBroker broker(limited, 2'000, 256);
  ASSERT_TRUE(broker.Ready());
  std::vector<OutboxEntry> entries;
  std::set<std::string> allowed_ids;
  for (int i = 0; i < 30; ++i) {
    const bool forbidden = i % 3 == 1;
    entries.push_back(Entry(FreshGid("perm"), forbidden ? "seigo-forbidden" : "seigo-allowed",
                            "k", std::to_string(i)));
    if (!forbidden) allowed_ids.insert(entries.back().message_id());
  }
  for (int pass = 0; pass < 2; ++pass) {  // and again: nothing of the first call lingers
    std::vector<core::Broker::Result> res = broker.Publish(entries);
    ASSERT_EQ(res.size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].msg.exchange == "seigo-forbidden") {
        EXPECT_EQ(res[i].fate, core::Broker::Fate::kRetry) << i;
        EXPECT_NE(res[i].reason.find("403"), std::string::npos) << res[i].reason;
        EXPECT_NE(res[i].reason.find("ACCESS_REFUSED"), std::string::npos) << res[i].reason;
      } else {
        EXPECT_EQ(res[i].fate, core::Broker::Fate::kConfirmed) << i << ": " << res[i].reason;
      }
    }
  }
  EXPECT_TRUE(broker.connection().connected()) << "a channel error does not cost the connection";
  // What arrived: every allowed message (a resend after the close may add duplicates), no
  // forbidden one.
  amqp::Connection c(admin, 5'000);
  ASSERT_TRUE(c.Consume(q, 500, /*no_ack=*/true).ok());
  std::set<std::string> got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got.size() < allowed_ids.size() && std::chrono::steady_clock::now() < end) {
    auto d = c.Next(100);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    if (d->has_value()) got.insert((*d)->message_id);
  }
  EXPECT_EQ(got, allowed_ids);
  c.Close();
  a.Close();
  std::system((ctl + "delete_vhost " + vhost + " >/dev/null 2>&1; " + ctl + "delete_user " +
               user + " >/dev/null 2>&1").c_str());
}

// Review findings 1 and 5: an exchange deleted after its passive check (the check is cached
// for a minute) made the broker close the publishing channel with 404. The old code failed
// the whole batch and kept the cache, so every batch failed the same way for up to a minute.
// Now the deleted exchange's entries get kRetry with the 404, the others are confirmed, and
// the 404 clears the cache: the next call finds the exchange missing (dead-letter record).
TEST_F(OutboxTest, AnExchangeDeletedAfterItsCheckFailsOnlyItsEntriesThenIsDead) {
  const std::string x = "seigo-test-deleted-x";
  ASSERT_TRUE(peer_->DeclareExchange(x, "direct").ok());
  ASSERT_TRUE(peer_->BindQueue(queue_, x, "k").ok());
  amqp::AmqpBroker broker(url_, 2'000, 256);
  std::vector<OutboxEntry> first{Entry(FreshGid("del"), x, "k")};
  ASSERT_EQ(broker.Publish(first)[0].fate, core::Broker::Fate::kConfirmed);  // x is cached now
  ASSERT_TRUE(peer_->DeleteExchange(x).ok());
  std::vector<OutboxEntry> batch{Entry(FreshGid("del"), "", queue_), Entry(FreshGid("del"), x, "k"),
                                 Entry(FreshGid("del"), "", queue_)};
  std::vector<core::Broker::Result> res = broker.Publish(batch);
  EXPECT_EQ(res[0].fate, core::Broker::Fate::kConfirmed) << res[0].reason;
  EXPECT_EQ(res[1].fate, core::Broker::Fate::kRetry);
  EXPECT_NE(res[1].reason.find("404"), std::string::npos) << res[1].reason;
  EXPECT_EQ(res[2].fate, core::Broker::Fate::kConfirmed) << res[2].reason;
  res = broker.Publish(std::span<const OutboxEntry>(&batch[1], 1));
  EXPECT_EQ(res[0].fate, core::Broker::Fate::kDead) << res[0].reason;
  EXPECT_NE(res[0].reason.find("does not exist"), std::string::npos) << res[0].reason;
  std::set<std::string> ids;
  for (const Delivery& d : Receive(3)) ids.insert(d.message_id);
  EXPECT_EQ(ids, (std::set<std::string>{first[0].message_id(), batch[0].message_id(),
                                        batch[2].message_id()}));
}

// Review finding 5: the exchange cache survived a reconnect, so a new connection (perhaps to a
// broker node with other definitions) trusted checks made on the old one. The old code then
// published to the deleted exchange and lost the batch's confirms to the 404; now the new
// connection checks again and the entry is dead at once.
TEST_F(OutboxTest, TheExchangeCacheIsClearedOnReconnect) {
  const std::string x = "seigo-test-reconnect-x";
  ASSERT_TRUE(peer_->DeclareExchange(x, "direct").ok());
  amqp::AmqpBroker broker(url_, 2'000, 256);
  std::vector<OutboxEntry> one{Entry(FreshGid("rc"), x, "k")};
  ASSERT_NE(broker.Publish(one)[0].fate, core::Broker::Fate::kRetry);  // unroutable: dead, fine
  ASSERT_TRUE(peer_->DeleteExchange(x).ok());
  broker.connection().Close();
  one[0] = Entry(FreshGid("rc"), x, "k");
  std::vector<core::Broker::Result> res = broker.Publish(one);
  EXPECT_EQ(res[0].fate, core::Broker::Fate::kDead) << res[0].reason;
  EXPECT_NE(res[0].reason.find("does not exist"), std::string::npos) << res[0].reason;
}

// Review finding 3: frames were not checked for their channel. On a connection that both
// consumes (channel 3) and publishes (channel 1), the old PublishConfirmed read and dropped the
// deliveries that arrived among the confirms (they were never handed out, and stayed unacked),
// and the old Next took channel 1's close (a publish to a missing exchange) for the end of the
// consumer and dropped the connection. Now each frame goes to its channel.
TEST_F(OutboxTest, OneConnectionPublishingAndConsumingKeepsEachChannelsFrames) {
  amqp::Connection c(url_, 5'000);
  ASSERT_TRUE(c.Consume(queue_, 500, /*no_ack=*/false).ok());
  std::vector<OutboxEntry> entries;
  for (int i = 0; i < 60; ++i) entries.push_back(Entry(FreshGid("mix"), "", queue_));
  for (const auto& r : c.PublishConfirmed(entries, 4)) {
    ASSERT_EQ(r.fate, core::Broker::Fate::kConfirmed) << r.reason;
  }
  std::set<std::string> got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (got.size() < entries.size() && std::chrono::steady_clock::now() < end) {
    auto d = c.Next(100);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    if (!d->has_value()) continue;
    got.insert((*d)->message_id);
    ASSERT_TRUE(c.Ack((*d)->tag).ok());
  }
  EXPECT_EQ(got.size(), entries.size()) << "deliveries read among the confirms were lost";
  // The broker closes channel 1 (404): the consumer on channel 3 goes on.
  Message bad;
  bad.exchange = "seigo-test-no-such-exchange";
  bad.routing_key = "k";
  ASSERT_TRUE(c.PublishUnconfirmed(bad, FreshGid("bad")).ok());
  Message m;
  m.routing_key = queue_;
  m.body = "after";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, FreshGid("after")).ok());
  std::optional<Delivery> after;
  for (int i = 0; i < 50 && !after; ++i) {
    auto d = c.Next(100);
    ASSERT_TRUE(d.ok()) << "channel 1's close ended the consumer: " << d.status().ToString();
    if (d->has_value()) after = **d;
  }
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->body, "after");
  ASSERT_TRUE(c.Ack(after->tag).ok());
  // And channel 1 is reopened for the next publish.
  std::vector<OutboxEntry> again{Entry(FreshGid("mix"), "", queue_)};
  EXPECT_EQ(c.PublishConfirmed(again, 4)[0].fate, core::Broker::Fate::kConfirmed);
}

// Review finding 2: rabbitmq-c writes publishes with no deadline. A broker that stops reading
// (here a proxy that stops reading either side; a SIGSTOPped broker or a resource alarm look
// the same) made the old PublishConfirmed block in its send forever. Now every write and every
// wait for a confirm gives up after timeout_ms without progress: the entries are kRetry and the
// connection is dropped.
TEST_F(OutboxTest, ABrokerThatStopsReadingCannotBlockAPublish) {
  TcpProxy proxy(kProxyPort, url_.host, url_.port);
  ASSERT_TRUE(proxy.ok()) << "port " << kProxyPort << " is taken";
  amqp::AmqpUrl via = url_;
  via.port = kProxyPort;
  amqp::AmqpBroker broker(via, /*timeout_ms=*/1'000, 256);
  ASSERT_TRUE(broker.Ready());
  proxy.Freeze();
  std::vector<OutboxEntry> entries;
  for (int i = 0; i < 16; ++i) {
    entries.push_back(Entry(FreshGid("stuck"), "", queue_, std::string(1 << 20, 'x')));
  }
  std::atomic<bool> done{false};
  std::vector<core::Broker::Result> res;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread t([&] {
    res = broker.Publish(entries);
    done = true;
  });
  WaitUntil([&] { return done.load(); }, 15'000);
  const bool returned = done;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  if (!returned) proxy.Cut();  // the old code: still in send(); this lets the thread end
  t.join();
  ASSERT_TRUE(returned) << "PublishConfirmed blocked on a broker that does not read";
  EXPECT_LT(ms, 5'000);
  ASSERT_EQ(res.size(), entries.size());
  for (const auto& r : res) EXPECT_EQ(r.fate, core::Broker::Fate::kRetry);
  EXPECT_NE(res[0].reason.find("stopped reading"), std::string::npos) << res[0].reason;
  EXPECT_FALSE(broker.connection().connected());
}

// The same at the coordinator: the relay thread blocked in a poll's publish, so the old
// DrainRelay never returned (it waits for the relay to take this process's new messages). Now
// the poll's publish gives up, DrainRelay returns, the messages wait in the outbox and are
// delivered once the broker reads again.
TEST_F(OutboxTest, DrainRelayReturnsWhenTheBrokerStopsReading) {
  coord_.reset();  // no relay but the one under test until the end
  TcpProxy proxy(kProxyPort, url_.host, url_.port);
  ASSERT_TRUE(proxy.ok()) << "port " << kProxyPort << " is taken";
  // Polls 3 s apart: the backlog below is complete before the poll that claims it (all of it,
  // in one batch), and c is connected before the proxy freezes.
  auto c = OpenWith("amqp://" + url_.user + ":" + url_.password + "@127.0.0.1:" +
                        std::to_string(kProxyPort) + "/",
                    10'000, false, /*poll_interval_ms=*/3'000);
  ASSERT_NE(c, nullptr);
  proxy.Freeze();
  // A backlog on one shard, far larger than the socket buffers: committed by a process whose
  // broker is down, so it waits for c's next poll.
  auto down = OpenWith(kDeadBroker, /*lease_ms=*/100);
  ASSERT_NE(down, nullptr);
  int64_t k0 = 1;
  while (down->shard_map().ShardFor(k0) != 0) ++k0;
  ASSERT_TRUE(down->QueryShard(0, "CREATE TABLE IF NOT EXISTS outbox_drain_t (k BIGINT PRIMARY "
                                  "KEY, v BIGINT NOT NULL) ENGINE=InnoDB").ok());
  std::set<std::string> ids;
  auto commit = [&](Coordinator* co, int n, size_t bytes) {
    TxResult r = co->Run([&](Tx& tx) -> Status {
      SEIGO_RETURN_IF_ERROR(tx.Exec(k0, "INSERT INTO outbox_drain_t VALUES (?, 1) ON DUPLICATE "
                                        "KEY UPDATE v = v + 1", {k0}).status());
      for (int i = 0; i < n; ++i) {
        SEIGO_RETURN_IF_ERROR(tx.Publish("", queue_, std::string(bytes, 'y')).status());
      }
      return Status::OK();
    });
    EXPECT_TRUE(r.committed()) << r.status.ToString();
    for (int i = 0; i < n; ++i) ids.insert(r.gid + "-" + std::to_string(i));
  };
  for (int t = 0; t < 12; ++t) commit(down.get(), 2, 1'000'000);
  down.reset();
  // Wait until c's poll has claimed the backlog (its publish is then stuck or timing out).
  WaitUntil([&] {
    for (const auto& st : c->OutboxStatus()) {
      if (st.ok() && st->max_tries >= 1) return true;
    }
    return false;
  });
  commit(c.get(), 1, 10);  // one message of this process for DrainRelay to wait for
  std::atomic<bool> done{false};
  std::thread t([&] {
    c->DrainRelay();
    done = true;
  });
  WaitUntil([&] { return done.load(); }, 20'000);
  const bool returned = done;
  if (!returned) proxy.Cut();  // the old code: the relay thread stays in send() until then
  t.join();
  ASSERT_TRUE(returned) << "DrainRelay hung on a broker that does not read";
  EXPECT_GE(c->counters().messages_retried, 1u);
  proxy.Thaw();
  coord_ = OpenWith(TestAmqp());
  WaitUntil([&] { return Pending() == 0; }, 30'000);
  EXPECT_EQ(Pending(), 0u);
  std::set<std::string> got;
  for (const Delivery& d : Receive(ids.size(), 20'000)) got.insert(d.message_id);
  EXPECT_EQ(got, ids);
}

// Review finding 4: AMQP_STATUS_CONNECTION_CLOSED during the login was reported as refused
// credentials (kInvalidArgument), so Coordinator::Open failed for good when the broker merely
// hung up (shutting down, still booting, a proxy without a backend). Now that is kUnavailable
// and Open succeeds (the outbox waits); only the broker's 403/530 is a refusal (see
// WrongCredentialsFailOpenWithoutEchoingThePassword).
TEST_F(OutboxTest, ABrokerThatHangsUpDuringTheLoginIsUnavailableNotRefused) {
  HangUpServer hang(kHangUpPort);
  ASSERT_TRUE(hang.ok()) << "port " << kHangUpPort << " is taken";
  amqp::AmqpUrl u = url_;
  u.port = kHangUpPort;
  amqp::Connection conn(u, 2'000);
  Status s = conn.Connect();
  EXPECT_TRUE(s.Is(Code::kUnavailable)) << s.ToString();
  EXPECT_EQ(s.ToString().find(u.password), std::string::npos) << s.ToString();
  EXPECT_GE(hang.hang_ups(), 1);
  CoordinatorOptions o = testing::TestOptions();
  o.amqp = "amqp://" + url_.user + ":" + url_.password + "@127.0.0.1:" +
           std::to_string(kHangUpPort) + "/";
  auto c = Coordinator::Open(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
}

// Review finding 6: heartbeats are off (rabbitmq-c 0.11 sends them only from inside its own
// calls, and the relay and the consumer spend most of their time outside them), and the
// socket's keepalive had the kernel's timing (first probe after 7200 s here), so a dead peer
// on an idle connection went unnoticed for hours. Now keepalive probes start after 10 s.
TEST_F(OutboxTest, BrokerConnectionsProbeAnIdlePeerWithShortTcpKeepalives) {
  amqp::Connection c(url_, 2'000);
  ASSERT_TRUE(c.Connect().ok());
  const int fd = c.socket_fd();
  ASSERT_GE(fd, 0);
  auto opt = [&](int level, int name) {
    int v = -1;
    socklen_t n = sizeof(v);
    EXPECT_EQ(::getsockopt(fd, level, name, &v, &n), 0);
    return v;
  };
  EXPECT_EQ(opt(SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(opt(IPPROTO_TCP, TCP_KEEPIDLE), amqp::Connection::kKeepIdleS);
  EXPECT_EQ(opt(IPPROTO_TCP, TCP_KEEPINTVL), amqp::Connection::kKeepIntvlS);
  EXPECT_EQ(opt(IPPROTO_TCP, TCP_KEEPCNT), amqp::Connection::kKeepCnt);
  EXPECT_EQ(opt(IPPROTO_TCP, TCP_USER_TIMEOUT), amqp::Connection::kUserTimeoutMs);
  EXPECT_LE(amqp::Connection::kUserTimeoutMs, 30'000);
}

TEST(AmqpUrl, APasswordWithSlashOrAtParsesAndIsNeverEchoed) {
  // Review finding: the URL was split at the first '/' before the '@', so part of such a
  // password became the host, the port and the vhost, and was printed in errors.
  auto u = amqp::AmqpUrl::Parse("amqp://user:se/cr@t123@broker.example:5673/game");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->user, "user");
  EXPECT_EQ(u->password, "se/cr@t123");
  EXPECT_EQ(u->host, "broker.example");
  EXPECT_EQ(u->port, 5673);
  EXPECT_EQ(u->vhost, "game");
  EXPECT_EQ(u->Redacted().find("se/cr"), std::string::npos) << u->Redacted();
  for (const char* bad : {"amqp://user:s3cr3tpw@host:99999/", "amqp://user:s3cr3tpw@host:x/",
                          "amqp://user:s3cr3tpw%zz@host/", "http://user:s3cr3tpw@host/"}) {
    auto r = amqp::AmqpUrl::Parse(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.status().Is(Code::kInvalidArgument));
    EXPECT_EQ(r.status().ToString().find("s3cr3tpw"), std::string::npos) << r.status().ToString();
  }
}

// ---- The consumer ----

class ConsumerTest : public OutboxTest {
 protected:
  void SetUp() override {
    OutboxTest::SetUp();
    for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
      ASSERT_TRUE(coord_->QueryShard(s, "CREATE TABLE IF NOT EXISTS consumer_t (k BIGINT PRIMARY "
                                        "KEY, n BIGINT NOT NULL) ENGINE=InnoDB").ok());
      ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM consumer_t").ok());
      ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_inbox WHERE queue = ?", {queue_ + "-c"}).ok());
    }
    // The consumer's queue and its dead-letter queue, as Consumer::Open declares them, empty.
    ASSERT_TRUE(peer_->DeclareQueue(queue_ + "-c", true, queue_ + "-c.dead").ok());
    ASSERT_TRUE(peer_->PurgeQueue(queue_ + "-c").ok());
    ASSERT_TRUE(peer_->PurgeQueue(queue_ + "-c.dead").ok());
  }

  ConsumerOptions Options(std::function<Status(Tx&, const Delivery&)> handler) {
    ConsumerOptions o;
    o.amqp = TestAmqp();
    o.queue = queue_ + "-c";
    o.prefetch = 8;
    o.max_tries = 3;
    o.inbox_key = [](const Delivery& d) -> Result<int64_t> {
      try {
        return static_cast<int64_t>(std::stoll(d.body));
      } catch (...) {
        return Status::InvalidArgument("body is not a key: " + d.body);
      }
    };
    o.handler = std::move(handler);
    return o;
  }

  int64_t Count(int64_t k) {
    auto r = coord_->QueryShard(coord_->shard_map().ShardFor(k),
                                "SELECT n FROM consumer_t WHERE k = ?", {k});
    if (!r.ok() || r->rows.empty()) return 0;
    return *r->Int(0, 0);
  }

  static Status Bump(Tx& tx, const Delivery& d) {
    const int64_t k = std::stoll(d.body);
    return tx.Exec(k, "INSERT INTO consumer_t VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1",
                   {k}).status();
  }
};

TEST_F(ConsumerTest, DuplicateDeliveriesAreAppliedOnce) {
  ConsumerOptions o = Options(Bump);
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // The same message id three times (a relay that republished), and another message.
  Message m;
  m.routing_key = o.queue;
  m.body = "42";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(peer_->PublishUnconfirmed(m, "dup-id-1").ok());
  m.body = "43";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, "other-id").ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().applied + (*c)->counters().duplicates >= 4; });
  stop = true;
  t.join();
  EXPECT_EQ(Count(42), 1);
  EXPECT_EQ(Count(43), 1);
  EXPECT_EQ((*c)->counters().applied, 2u);
  EXPECT_EQ((*c)->counters().duplicates, 2u);
}

TEST_F(ConsumerTest, ConsumerKilledBetweenCommitAndAckDoesNotApplyTwice) {
  ConsumerOptions o = Options(Bump);
  {
    auto c = Consumer::Open(coord_.get(), o);  // declares the queue
    ASSERT_TRUE(c.ok()) << c.status().ToString();
  }
  Message m;
  m.routing_key = o.queue;
  m.body = "77";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, "crash-id").ok());
  // A consumer that commits the handler's transaction and then dies before its ack: the
  // connection closes, the broker redelivers.
  {
    amqp::Connection dying(url_, 5'000);
    ASSERT_TRUE(dying.Consume(o.queue, 1, false).ok());
    std::optional<Delivery> d;
    WaitUntil([&] {
      auto n = dying.Next(100);
      if (n.ok() && n->has_value()) d = **n;
      return d.has_value();
    });
    ASSERT_TRUE(d.has_value());
    TxResult r = coord_->Run([&](Tx& tx) -> Status {
      SEIGO_ASSIGN_OR_RETURN(bool fresh, RecordInInbox(tx, 77, d->message_id, o.queue));
      if (!fresh) return Status::Internal("not fresh");
      return Bump(tx, *d);
    });
    ASSERT_TRUE(r.committed()) << r.status.ToString();
  }  // no ack
  EXPECT_EQ(Count(77), 1);
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().duplicates >= 1; });
  stop = true;
  t.join();
  EXPECT_EQ((*c)->counters().duplicates, 1u) << "the redelivery was recognised";
  EXPECT_EQ(Count(77), 1);
  auto depth = peer_->QueueDepth(o.queue);
  ASSERT_TRUE(depth.ok());
  EXPECT_EQ(*depth, 0u) << "acknowledged";
}

TEST_F(ConsumerTest, AFailingHandlerIsDeadLetteredAfterMaxTriesAndCommitsNothing) {
  ConsumerOptions o = Options([](Tx& tx, const Delivery& d) -> Status {
    SEIGO_RETURN_IF_ERROR(Bump(tx, d));
    return Tx::Abort("this item does not exist");
  });
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok());
  Message m;
  m.routing_key = o.queue;
  m.body = "5";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, "poison-1").ok());
  m.body = "not a number";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, "malformed-1").ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().dead >= 2; });
  stop = true;
  t.join();
  EXPECT_EQ((*c)->counters().dead, 2u);
  EXPECT_EQ((*c)->counters().retried, 2u) << "tries 1 and 2 requeued, try 3 dead-lettered";
  EXPECT_EQ(Count(5), 0) << "the handler's writes never committed";
  uint32_t dead_depth = 0;
  WaitUntil([&] {
    auto d = peer_->QueueDepth(o.queue + ".dead");
    dead_depth = d.ok() ? *d : 0;
    return dead_depth >= 2;
  });
  EXPECT_EQ(dead_depth, 2u);
}

// Review finding 7: a delivery whose transaction committed nothing for a transient reason (here
// the handler's store is "down": kUnavailable, which Run retries, then gives up) was requeued
// at once by the old code — basic.reject requeue=true with no delay, so an outage spun the
// message through the queue and each requeue raised x-delivery-count, which counted as a try
// (and RabbitMQ 4's default delivery-limit of 20 would dead-letter it). Now it is run again in
// process with a backoff, the delivery held unacknowledged: no requeue, no try counted.
TEST_F(ConsumerTest, AStoreOutageIsRetriedInProcessWithoutCountingATry) {
  CoordinatorOptions co = testing::TestOptions();
  co.protocol.max_attempts = 2;  // Run gives up quickly: many consumer-level retries
  auto quick = Coordinator::Open(co);
  ASSERT_TRUE(quick.ok()) << quick.status().ToString();
  std::atomic<bool> outage{true};
  std::atomic<int> runs{0};
  std::atomic<int64_t> seen_count{-1};
  ConsumerOptions o = Options([&](Tx& tx, const Delivery& d) -> Status {
    runs++;
    if (outage) return Status::Unavailable("simulated: the handler's store is down");
    seen_count = d.delivery_count;
    return Bump(tx, d);
  });
  o.max_tries = 2;  // the second counted try would dead-letter it
  auto c = Consumer::Open(quick->get(), o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Message m;
  m.routing_key = o.queue;
  m.body = "61";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, FreshGid("outage")).ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().waited >= 4 || (*c)->counters().retried >= 4; });
  outage = false;
  WaitUntil([&] { return (*c)->counters().applied + (*c)->counters().dead >= 1; });
  stop = true;
  t.join();
  EXPECT_EQ(Count(61), 1);
  EXPECT_EQ((*c)->counters().applied, 1u);
  EXPECT_EQ((*c)->counters().dead, 0u) << "the outage was counted as tries";
  EXPECT_EQ((*c)->counters().retried, 0u) << "requeued during the outage";
  EXPECT_GE((*c)->counters().waited, 4u);
  EXPECT_EQ(seen_count.load(), 0) << "x-delivery-count rose during the outage";
  EXPECT_GT(runs.load(), 4 * co.protocol.max_attempts);
}

// Stopping while a delivery waits for its retry hands it back to the queue at once (and Run
// returns within its 200 ms bound): once Run has returned the consumer holds no message (the
// old code kept its prefetched deliveries until the connection closed). Run again applies it.
TEST_F(ConsumerTest, StoppingDuringAnOutageReturnsTheDeliveryToTheQueue) {
  std::atomic<bool> outage{true};
  ConsumerOptions o = Options([&](Tx& tx, const Delivery& d) -> Status {
    if (outage) return Status::Unavailable("simulated: the handler's store is down");
    return Bump(tx, d);
  });
  CoordinatorOptions co = testing::TestOptions();
  co.protocol.max_attempts = 1;
  auto quick = Coordinator::Open(co);
  ASSERT_TRUE(quick.ok()) << quick.status().ToString();
  auto c = Consumer::Open(quick->get(), o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Message m;
  m.routing_key = o.queue;
  m.body = "62";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, FreshGid("stop")).ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().waited >= 3; });
  const bool waiting = (*c)->counters().waited >= 3;
  const auto t0 = std::chrono::steady_clock::now();
  stop = true;
  t.join();
  ASSERT_TRUE(waiting) << "the delivery was not held for an in-process retry";
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - t0).count(), 1'000);
  uint32_t depth = 0;
  WaitUntil([&] {
    auto d = peer_->QueueDepth(o.queue);
    depth = d.ok() ? *d : 0;
    return depth == 1;
  }, 5'000);
  EXPECT_EQ(depth, 1u) << "the delivery went back to the queue while the consumer lives";
  // Run again: the consumer subscribes again and applies it.
  outage = false;
  stop = false;
  std::thread t2([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().applied >= 1; });
  stop = true;
  t2.join();
  EXPECT_EQ(Count(62), 1);
  EXPECT_EQ((*c)->counters().reconnects, 0u);
}

TEST_F(ConsumerTest, PublishedTransactionsAreAppliedExactlyOnceEndToEnd) {
  ConsumerOptions o = Options(Bump);
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  for (int i = 0; i < 50; ++i) {
    TxResult r = coord_->Run([&](Tx& tx) {
      return tx.Publish("", o.queue, std::to_string(100 + i % 10)).status();
    });
    ASSERT_TRUE(r.committed());
  }
  WaitUntil([&] { return (*c)->counters().applied >= 50; });
  stop = true;
  t.join();
  for (int k = 100; k < 110; ++k) EXPECT_EQ(Count(k), 5) << k;
  EXPECT_EQ((*c)->counters().duplicates, 0u);
}

// Issue 10 ("shows in status"): a message that kept failing sits in the queue's dead-letter
// queue, and `seigo status` shows it there. Before, the consumer registered its queue nowhere
// and AMQP cannot list queues, so status printed nothing about dead-lettered messages.
TEST_F(ConsumerTest, AMessageThatKeepsFailingShowsInSeigoStatusAsDeadLettered) {
  ConsumerOptions o = Options([](Tx&, const Delivery&) -> Status {
    return Tx::Abort("this item does not exist");
  });
  o.max_tries = 1;
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Message m;
  m.routing_key = o.queue;
  m.body = "9";
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, "status-poison-1").ok());
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().dead >= 1; });
  stop = true;
  t.join();
  ASSERT_EQ((*c)->counters().dead, 1u);
  WaitUntil([&] {
    auto d = peer_->QueueDepth(o.queue + ".dead");
    return d.ok() && *d >= 1;
  });
  const std::string cmd = std::string(SEIGO_CLI_PATH) + " status --shards '" +
                          testing::TestShards() + "' --amqp '" + TestAmqp() + "' 2>&1";
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  pclose(f);
  // "<queue>   0   1": the queue, its ready messages, its dead-letter queue's.
  std::regex line(o.queue + " +[0-9]+ +1\n");
  EXPECT_TRUE(std::regex_search(out, line)) << out;
  EXPECT_NE(out.find("message(s) in dead-letter queues"), std::string::npos) << out;
}

// Inbox retention: rows of this queue older than inbox_retention_ms are deleted by Run; newer
// ones and other queues' rows stay. Before, the inbox only grew.
TEST_F(ConsumerTest, InboxRowsOlderThanTheRetentionAreForgottenAndTheRestKept) {
  const int64_t now = DefaultEnv()->NowMs();
  const int64_t day = int64_t{24} * 3600 * 1000;
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_inbox WHERE queue = 'other-queue'").ok());
    for (int i = 0; i < 3; ++i) {
      const std::string id = "ret-" + std::to_string(s) + "-" + std::to_string(i);
      ASSERT_TRUE(coord_->QueryShard(s, "INSERT INTO seigo_inbox VALUES (?, ?, ?)",
                                     {Value::Bytes(id + "-old"), Value::Bytes(queue_ + "-c"),
                                      now - 3 * day}).ok());
      ASSERT_TRUE(coord_->QueryShard(s, "INSERT INTO seigo_inbox VALUES (?, ?, ?)",
                                     {Value::Bytes(id + "-new"), Value::Bytes(queue_ + "-c"),
                                      now - day / 2}).ok());
      ASSERT_TRUE(coord_->QueryShard(s, "INSERT INTO seigo_inbox VALUES (?, 'other-queue', ?)",
                                     {Value::Bytes(id + "-other"), now - 3 * day}).ok());
    }
  }
  ConsumerOptions o = Options(Bump);
  o.inbox_retention_ms = day;
  auto c = Consumer::Open(coord_.get(), o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::atomic<bool> stop{false};
  std::thread t([&] { (*c)->Run([&] { return stop.load(); }); });
  WaitUntil([&] { return (*c)->counters().inbox_forgotten >= 3 * coord_->shard_map().size(); });
  stop = true;
  t.join();
  EXPECT_EQ((*c)->counters().inbox_forgotten, 3 * coord_->shard_map().size());
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    auto left = coord_->QueryShard(s, "SELECT SUM(message_id LIKE '%-old'), SUM(message_id LIKE "
                                      "'%-new'), SUM(queue = 'other-queue') FROM seigo_inbox "
                                      "WHERE message_id LIKE 'ret-%'");
    ASSERT_TRUE(left.ok()) << left.status().ToString();
    EXPECT_EQ(*left->Int(0, 0), 0) << "shard " << s << ": old rows of the queue are gone";
    EXPECT_EQ(*left->Int(0, 1), 3) << "shard " << s << ": rows within the retention stay";
    EXPECT_EQ(*left->Int(0, 2), 3) << "shard " << s << ": another queue's rows are not ours";
    ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_inbox WHERE message_id LIKE 'ret-%'").ok());
  }
}

// `seigo outbox resend` (Coordinator::ResendDeadLetters): a message whose exchange did not
// exist is a dead letter; once the exchange exists, the resent letter is published with a new
// message id and the old one in x-seigo-resent-from; resending it again moves nothing.
TEST_F(OutboxTest, ADeadLetterResentAfterItsExchangeExistsIsPublishedOnceWithANewId) {
  const std::string exchange = "seigo-test-late-" + queue_;
  (void)peer_->DeleteExchange(exchange);
  TxResult r = coord_->Run([&](Tx& tx) { return tx.Publish(exchange, "late", "body-1").status(); });
  ASSERT_TRUE(r.committed()) << r.status.ToString();
  coord_->DrainRelay();
  const std::string old_id = r.gid + "-0";
  std::string reason;
  for (const auto& shard : coord_->DeadLetters()) {
    ASSERT_TRUE(shard.ok()) << shard.status().ToString();
    for (const DeadRecord& d : *shard) {
      if (d.entry.message_id() == old_id) reason = d.reason;
    }
  }
  ASSERT_NE(reason.find("does not exist"), std::string::npos) << reason;
  ASSERT_TRUE(peer_->DeclareExchange(exchange, "direct").ok());
  ASSERT_TRUE(peer_->BindQueue(queue_, exchange, "late").ok());
  Result<size_t> moved = coord_->ResendDeadLetters(std::vector<std::string>{old_id});
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(*moved, 1u);
  Result<size_t> again = coord_->ResendDeadLetters(std::vector<std::string>{old_id});
  EXPECT_TRUE(again.status().Is(Code::kNotFound)) << again.status().ToString();
  WaitUntil([&] { return Pending() == 0; });
  std::vector<Delivery> got = Receive(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "body-1");
  EXPECT_NE(got[0].message_id, old_id);
  std::string from;
  for (const auto& [k, v] : got[0].headers) {
    if (k == kResentFromHeader) from = v;
  }
  EXPECT_EQ(from, old_id);
  EXPECT_EQ(Receive(1, 1'000).size(), 0u) << "published once";
  (void)peer_->DeleteExchange(exchange);
}

// Review finding: seigo_inbox was keyed by the message id alone. A message fanned out to two
// queues (an exchange bound to both) whose consumers keep their inbox rows on one shard was
// applied by the first consumer only; the second took it for a duplicate.
TEST_F(ConsumerTest, AMessageFannedOutToTwoQueuesIsAppliedOnceByEachConsumer) {
  const std::string second = queue_ + "-c2";
  ASSERT_TRUE(peer_->DeclareQueue(second, true, second + ".dead").ok());
  ASSERT_TRUE(peer_->PurgeQueue(second).ok());
  for (uint32_t s = 0; s < coord_->shard_map().size(); ++s) {
    ASSERT_TRUE(coord_->QueryShard(s, "DELETE FROM seigo_inbox WHERE queue = ?", {second}).ok());
  }
  ConsumerOptions a = Options(Bump), b = Options(Bump);
  b.queue = second;
  auto ca = Consumer::Open(coord_.get(), a);
  auto cb = Consumer::Open(coord_.get(), b);
  ASSERT_TRUE(ca.ok() && cb.ok());
  Message m;
  m.body = "77";
  const std::string id = FreshGid("fanout") + "-0";
  m.routing_key = a.queue;
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, id).ok());
  m.routing_key = second;
  ASSERT_TRUE(peer_->PublishUnconfirmed(m, id).ok());
  std::atomic<bool> stop{false};
  std::thread ta([&] { (*ca)->Run([&] { return stop.load(); }); });
  std::thread tb([&] { (*cb)->Run([&] { return stop.load(); }); });
  WaitUntil([&] {
    return (*ca)->counters().applied + (*ca)->counters().duplicates >= 1 &&
           (*cb)->counters().applied + (*cb)->counters().duplicates >= 1;
  });
  stop = true;
  ta.join();
  tb.join();
  EXPECT_EQ((*ca)->counters().applied, 1u);
  EXPECT_EQ((*cb)->counters().applied, 1u) << "the second queue's consumer applied it too";
  EXPECT_EQ(Count(77), 2);
}

}  // namespace
}  // namespace seigo
