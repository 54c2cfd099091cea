// Messages published iff committed, and applied exactly once (doc/outbox.md), against the real
// MariaDB shards, Redis instances and RabbitMQ broker that scripts/test.sh starts
// (SEIGO_TEST_SHARDS, SEIGO_TEST_REDIS, SEIGO_TEST_AMQP).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
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
                                        bool redis = false) {
    CoordinatorOptions o = testing::TestOptions();
    o.amqp = amqp;
    o.relay.lease_ms = lease_ms;
    o.relay.poll_interval_ms = 50;
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

}  // namespace
}  // namespace seigo
