// `seigo`: the command-line tool (doc/cli.md).
//   seigo status  --shards URL,...   in-doubt transactions
//   seigo recover --shards URL,...   one resolver pass
//   seigo demo setup|run|audit ...   the trade demo
//   seigo demo raid setup|run|audit  the raid demo (shards + Redis)
//   seigo demo gacha setup|run|consume|audit  the gacha demo (shards + RabbitMQ)
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "amqp/amqp_connection.h"
#include "mariadb/mariadb_participant.h"
#include "tools/cli.h"

namespace seigo::cli {

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Code::kInvalidArgument: return kExitUsage;
    case Code::kUnavailable:
    case Code::kUnsupported: return kExitUnavailable;
    default: return kExitFailed;
  }
}

std::unique_ptr<Coordinator> OpenForTool(const Common& c, int* exit_code, bool background,
                                         bool prepare_schema,
                                         const std::function<void(CoordinatorOptions&)>& tweak) {
  CoordinatorOptions o;
  o.prepare_schema = prepare_schema;
  o.shards = c.shards;
  o.redis = c.redis;
  o.amqp = c.amqp;
  o.redis_allow_unsafe_durability = c.redis_unsafe_durability;
  o.lock_wait_timeout_s = c.lock_wait_timeout_s;
  o.protocol.txn_timeout_ms = c.txn_timeout_ms;
  o.resolver_interval_ms = background ? 1'000 : 0;
  if (tweak) tweak(o);
  Result<std::unique_ptr<Coordinator>> r = Coordinator::Open(o);
  if (!r.ok()) {
    std::fprintf(stderr, "seigo: %s\n", r.status().ToString().c_str());
    *exit_code = ExitCodeFor(r.status());
    return nullptr;
  }
  return std::move(*r);
}

void RunClients(int clients, std::chrono::steady_clock::time_point start,
                std::chrono::steady_clock::time_point end, const std::function<void(int)>& client,
                const std::function<std::string(double)>& progress,
                const std::atomic<bool>* stop) {
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) threads.emplace_back(client, i);
  const bool tty = isatty(STDERR_FILENO);
  while (std::chrono::steady_clock::now() < end && (stop == nullptr || !stop->load())) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double el =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%s%s%s", tty ? "\r" : "", progress(el).c_str(), tty ? "   " : "\n");
  }
  for (std::thread& t : threads) t.join();
  if (tty) std::fprintf(stderr, "\n");
}

int FinishInDoubtBeforeSetup(Coordinator& c) {
  ResolveReport rr = c.Recover();
  if (rr.pending.empty() && rr.complete) return kExitOk;
  std::fprintf(stderr,
               "seigo: %zu transaction(s) still in doubt; run `seigo recover` after their "
               "deadline (see `seigo status`) before setting up the demo again\n",
               rr.pending.size());
  return rr.complete ? kExitInDoubt : kExitUnavailable;
}

std::string Format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

namespace {

// A participant as the CLI names it: shard i is "i", Redis instance j (participant
// shards + j) is "r<j>".
std::string Part(uint32_t i, size_t shards) {
  return i < shards ? std::to_string(i) : "r" + std::to_string(i - shards);
}

std::string Shards(const std::vector<uint32_t>& v, size_t shards) {
  std::string s;
  for (uint32_t i : v) s += (s.empty() ? "" : ",") + Part(i, shards);
  return s;
}

int PrintStatus(const Common& c) {
  int rc = kExitOk;
  // Changes nothing: no tables created, no shard claimed, no resolver pass, and no relay (the
  // broker is asked about queue depths below, on a connection of its own).
  Common no_relay = c;
  no_relay.amqp.clear();
  auto coord = OpenForTool(no_relay, &rc, /*background=*/false, /*prepare_schema=*/false);
  if (!coord) return rc;
  InDoubtReport r = coord->InDoubt();
  for (const Status& e : r.errors) std::fprintf(stderr, "seigo: %s\n", e.ToString().c_str());
  std::printf("%-32s  %-7s  %-9s  %-8s  %-9s  %-10s  %s\n", "GID", "DECIDER", "PREPARED",
              "STATE", "AGE", "DEADLINE", "DECISION");
  auto secs = [](int64_t ms, bool sign) {
    char b[32];
    std::snprintf(b, sizeof b, sign ? "%+.1fs" : "%.1fs", static_cast<double>(ms) / 1000.0);
    return std::string(b);
  };
  for (const InDoubtTx& t : r.txs) {
    std::string decision = t.decision ? OutcomeName(t.decision->outcome)
                           : t.decision_error.ok() ? "none"
                                                   : "? " + t.decision_error.ToString();
    const char* state = t.decision ? "decided" : t.overdue_ms >= 0 ? "overdue" : "running";
    const size_t n = coord->shard_map().size();
    std::printf("%-32s  %-7s  %-9s  %-8s  %-9s  %-10s  %s\n", t.gid.c_str(),
                Part(t.decider, n).c_str(), Shards(t.prepared_on, n).c_str(), state, secs(t.age_ms, false).c_str(),
                secs(t.overdue_ms, true).c_str(), decision.c_str());
  }
  std::printf("%zu in doubt\n", r.txs.size());
  // Who waits for whom among seigo transactions of every process, as each process's deadlock
  // detector publishes it (doc/deadlocks.md): waits longer than its check_after_ms.
  DeadlockReport w = coord->LockWaits();
  for (const Status& e : w.errors) {
    std::fprintf(stderr, "seigo: lock waits: %s\n", e.ToString().c_str());
  }
  if (!w.waits.empty()) {
    std::printf("\n%-32s  %-5s  %-32s  %s\n", "WAITER (run)", "SHARD", "WAITS FOR (run)",
                "WAITED");
    for (const WaitEdge& e : w.waits) {
      std::printf("%-32s  %-5u  %-32s  %s\n", e.waiter.c_str(), e.shard, e.holder.c_str(),
                  secs(e.waited_ms, false).c_str());
    }
  }
  std::printf("%zu lock wait(s) between seigo transactions\n", w.waits.size());
  // Committed messages the broker has not confirmed yet, per shard (doc/outbox.md): a growing
  // count or age means the relay cannot reach the broker.
  std::printf("\n%-5s  %-8s  %-9s  %-6s  %-5s  %s\n", "SHARD", "OUTBOX", "OLDEST", "DEAD",
              "TRIES", "LAST ERROR");
  uint64_t pending = 0;
  int64_t oldest = 0;
  std::vector<Result<OutboxStats>> outbox = coord->OutboxStatus();
  for (size_t s = 0; s < outbox.size(); ++s) {
    if (!outbox[s].ok()) {
      std::printf("%-5zu  ?         %s\n", s, outbox[s].status().ToString().c_str());
      continue;
    }
    const OutboxStats& o = *outbox[s];
    pending += o.pending;
    oldest = std::max(oldest, o.oldest_age_ms);
    std::printf("%-5zu  %-8llu  %-9s  %-6llu  %-5d  %s\n", s,
                static_cast<unsigned long long>(o.pending), secs(o.oldest_age_ms, false).c_str(),
                static_cast<unsigned long long>(o.dead), o.max_tries,
                o.last_error.substr(0, 120).c_str());
  }
  std::printf("%llu message(s) waiting in outboxes, oldest %s\n",
              static_cast<unsigned long long>(pending), secs(oldest, false).c_str());
  // The consumers' queues (registered by seigo::Consumer on shard 0) and their dead-letter
  // queues: a message there failed its handler max_tries times or was malformed.
  bool broker_ok = true;
  Result<QueryResult> queues =
      coord->QueryShard(0, "SELECT queue FROM seigo_queue ORDER BY queue");
  if (queues.ok() && !queues->rows.empty() && c.amqp.empty()) {
    std::printf("\n%zu consumer queue(s) registered; pass --amqp (or set SEIGO_AMQP) to see "
                "their depths\n", queues->rows.size());
  } else if (queues.ok() && !queues->rows.empty()) {
    Result<amqp::AmqpUrl> url = amqp::AmqpUrl::Parse(c.amqp);
    if (!url.ok()) {
      std::fprintf(stderr, "seigo: %s\n", url.status().ToString().c_str());
      return kExitUsage;
    }
    amqp::Connection conn(*url, 5'000);
    std::printf("\n%-40s  %-8s  %s\n", "QUEUE", "READY", "DEAD-LETTERED (<queue>.dead)");
    uint64_t dead_total = 0;
    for (const auto& row : queues->rows) {
      const std::string q = row[0].value_or("");
      Result<uint32_t> depth = conn.QueueDepth(q);
      Result<uint32_t> dead = conn.QueueDepth(q + ".dead");
      auto show = [&](const Result<uint32_t>& d) {
        return d.ok() ? std::to_string(*d) : "? " + d.status().ToString();
      };
      if (!depth.ok() || !dead.ok()) broker_ok = false;
      if (dead.ok()) dead_total += *dead;
      std::printf("%-40s  %-8s  %s\n", q.c_str(), show(depth).c_str(), show(dead).c_str());
    }
    std::printf("%llu message(s) in dead-letter queues\n",
                static_cast<unsigned long long>(dead_total));
  }
  return r.errors.empty() && broker_ok ? kExitOk : kExitUnavailable;
}

int Recover(const Common& c) {
  int rc = kExitOk;
  auto coord = OpenForTool(c, &rc);
  if (!coord) return rc;
  ResolveReport r = coord->Recover();
  for (const std::string& g : r.fenced) std::printf("%s  decided abort (deadline passed)\n", g.c_str());
  for (const ResolveReport::Applied& a : r.applied) {
    std::printf("%s  shard %s  %s\n", a.gid.c_str(), Part(a.shard, coord->shard_map().size()).c_str(),
                a.outcome == Outcome::kCommit ? "committed" : "rolled back");
  }
  for (const ResolveReport::Pending& p : r.pending) {
    std::printf("%s  shards %s  still in doubt: %s\n", p.gid.c_str(),
                Shards(p.shards, coord->shard_map().size()).c_str(),
                p.reason.c_str());
  }
  for (const ResolveReport::Limbo& l : r.limbo) {
    std::printf("%s  shard %s  LIMBO: %s\n", l.gid.c_str(),
                Part(l.shard, coord->shard_map().size()).c_str(), l.message.c_str());
  }
  for (const Status& e : r.errors) std::fprintf(stderr, "seigo: %s\n", e.ToString().c_str());
  size_t committed = 0, rolled_back = 0;
  for (const auto& a : r.applied) (a.outcome == Outcome::kCommit ? committed : rolled_back)++;
  std::printf("recover: %zu branch(es) committed, %zu rolled back, %zu transaction(s) still in "
              "doubt, %zu decision row(s) forgotten%s\n",
              committed, rolled_back, r.pending.size(), r.forgotten,
              r.complete ? "" : " (some shards could not be scanned)");
  if (!r.limbo.empty()) return kExitLimbo;
  if (!r.complete) return kExitUnavailable;
  return r.pending.empty() ? kExitOk : kExitInDoubt;
}

// `seigo outbox dead`: every shard's dead-letter records.
int OutboxDead(const Common& c, size_t limit) {
  int rc = kExitOk;
  Common no_relay = c;  // changes nothing: no relay claiming and publishing meanwhile
  no_relay.amqp.clear();
  auto coord = OpenForTool(no_relay, &rc, /*background=*/false, /*prepare_schema=*/false);
  if (!coord) return rc;
  std::printf("%-5s  %-44s  %-24s  %-24s  %-9s  %s\n", "SHARD", "MESSAGE ID", "EXCHANGE",
              "ROUTING KEY", "DEAD FOR", "REASON");
  std::vector<Result<std::vector<DeadRecord>>> dead = coord->DeadLetters(limit);
  size_t n = 0;
  bool complete = true;
  for (size_t s = 0; s < dead.size(); ++s) {
    if (!dead[s].ok()) {
      std::fprintf(stderr, "seigo: shard %zu: %s\n", s, dead[s].status().ToString().c_str());
      complete = false;
      continue;
    }
    Result<QueryResult> clock = coord->QueryShard(static_cast<uint32_t>(s),
                                                  std::string("SELECT ") + mariadb::ServerNowMsSql());
    int64_t now_ms = 0;  // the shard's clock: dead_ms is by it
    if (clock.ok()) {
      Result<int64_t> v = clock->Int(0, 0);
      if (v.ok()) now_ms = *v;
    }
    for (const DeadRecord& d : *dead[s]) {
      ++n;
      char age[32];
      std::snprintf(age, sizeof age, "%.0fs",
                    now_ms > 0 ? static_cast<double>(now_ms - d.dead_ms) / 1000.0 : 0.0);
      std::printf("%-5zu  %-44s  %-24s  %-24s  %-9s  %s\n", s, d.entry.message_id().c_str(),
                  d.entry.msg.exchange.empty() ? "(default)" : d.entry.msg.exchange.c_str(),
                  d.entry.msg.routing_key.c_str(), age, d.reason.substr(0, 160).c_str());
    }
  }
  std::printf("%zu dead letter(s)%s\n", n, complete ? "" : " (some shards could not be read)");
  return complete ? kExitOk : kExitUnavailable;
}

// `seigo outbox resend`: dead letters back into their outbox, for the relays to publish.
int OutboxResend(const Common& c, const std::vector<std::string>& ids, bool all) {
  if (all == !ids.empty()) {
    std::fprintf(stderr, "seigo: outbox resend: name message ids or pass --all (not both)\n");
    return kExitUsage;
  }
  int rc = kExitOk;
  Common no_relay = c;  // the running applications' relays publish them
  no_relay.amqp.clear();
  auto coord = OpenForTool(no_relay, &rc);
  if (!coord) return rc;
  Result<size_t> n = coord->ResendDeadLetters(ids, all);
  if (!n.ok()) {
    std::fprintf(stderr, "seigo: %s\n", n.status().ToString().c_str());
    return ExitCodeFor(n.status());
  }
  std::printf("%zu dead letter(s) back in the outbox, with new message ids (header %s = the "
              "old id); a relay publishes them at its next poll\n", *n, kResentFromHeader);
  return kExitOk;
}

}  // namespace
}  // namespace seigo::cli

int main(int argc, char** argv) {
  using namespace seigo::cli;
  CLI::App app{"seigo: atomic transactions across sharded MariaDB/MySQL (see doc/cli.md)"};
  app.require_subcommand(1);
  Common common;
  // Not CLI11's envname(): it would let $SEIGO_SHARDS overwrite an explicit --shards through
  // the other subcommands' options, which share `common`. See ResolveShards below.
  std::vector<CLI::Option*> shard_options, redis_options, amqp_options;
  auto add_common = [&](CLI::App* sub) {
    shard_options.push_back(sub->add_option("--shards", common.shards,
        "comma-separated shard URLs, in shard order (mysql://user:pass@host:port/db,...); "
        "default $SEIGO_SHARDS"));
    redis_options.push_back(sub->add_option("--redis", common.redis,
        "comma-separated Redis URLs, in instance order (redis://[:pass@]host:port[/db],...); "
        "default $SEIGO_REDIS"));
    amqp_options.push_back(sub->add_option(
        "--amqp", common.amqp,
        "RabbitMQ URL amqp://user:password@host:port/vhost; default $SEIGO_AMQP"));
    sub->add_flag("--redis-unsafe-durability", common.redis_unsafe_durability,
                  "DEVELOPMENT ONLY: accept Redis instances that do not fsync every write "
                  "(a crash can then break atomicity)");
    sub->add_option("--lock-wait-timeout", common.lock_wait_timeout_s,
                    "innodb_lock_wait_timeout of seigo's connections, seconds")
        ->check(CLI::Range(1, 3600));
    sub->add_option("--txn-timeout-ms", common.txn_timeout_ms,
                    "deadline of each transaction attempt, ms")
        ->check(CLI::Range(100, 3'600'000));
  };

  CLI::App* status = app.add_subcommand("status", "list in-doubt transactions");
  add_common(status);
  CLI::App* recover = app.add_subcommand("recover", "one resolver pass; prints what it did");
  add_common(recover);

  CLI::App* outbox = app.add_subcommand("outbox", "the outboxes' dead letters");
  outbox->require_subcommand(1);
  size_t dead_limit = 1000;
  CLI::App* odead = outbox->add_subcommand("dead", "list every shard's dead-letter records");
  add_common(odead);
  odead->add_option("--limit", dead_limit, "at most this many per shard")
      ->check(CLI::Range(1, 1'000'000));
  CLI::App* oresend = outbox->add_subcommand(
      "resend", "put dead letters back into the outbox (after fixing what killed them)");
  add_common(oresend);
  std::vector<std::string> resend_ids;
  bool resend_all = false;
  oresend->add_option("message_ids", resend_ids, "message ids <gid>-<seq> (seigo outbox dead)");
  oresend->add_flag("--all", resend_all, "every dead letter (up to 10,000 per shard)");

  CLI::App* demo = app.add_subcommand("demo", "the trade demo");
  demo->require_subcommand(1);
  int64_t players = 1000;
  int items = 10;
  CLI::App* setup = demo->add_subcommand("setup", "create and seed the demo schema on every shard");
  add_common(setup);
  setup->add_option("--players", players, "number of players")->check(CLI::Range(2, 10'000'000));
  setup->add_option("--items", items, "number of item kinds")->check(CLI::Range(1, 1000));
  int clients = 8;
  double seconds = 10;
  std::string mode = "seigo";
  CLI::App* run = demo->add_subcommand("run", "concurrent random cross-shard trades");
  add_common(run);
  run->add_option("--clients", clients, "client threads")->check(CLI::Range(1, 1024));
  run->add_option("--seconds", seconds, "duration")->check(CLI::Range(0.1, 86400.0));
  run->add_option("--mode", mode, "seigo (atomic) or naive (two local transactions)")
      ->check(CLI::IsMember({"seigo", "naive"}));
  CLI::App* audit = demo->add_subcommand("audit", "check the demo's invariants");
  add_common(audit);

  CLI::App* raid = demo->add_subcommand("raid", "the raid demo: stamina on shards, boss HP in Redis");
  raid->require_subcommand(1);
  int64_t raid_players = 1000, bosses = 3, start_hp = 10'000'000;
  CLI::App* rsetup = raid->add_subcommand("setup", "create raid_players/raid_log, set boss HP");
  add_common(rsetup);
  rsetup->add_option("--players", raid_players, "number of players")->check(CLI::Range(1, 10'000'000));
  rsetup->add_option("--bosses", bosses, "number of bosses")->check(CLI::Range(1, 1'000'000));
  rsetup->add_option("--hp", start_hp, "each boss's starting HP")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 52));
  CLI::App* rrun = raid->add_subcommand("run", "concurrent attacks");
  add_common(rrun);
  rrun->add_option("--clients", clients, "client threads")->check(CLI::Range(1, 1024));
  rrun->add_option("--seconds", seconds, "duration")->check(CLI::Range(0.1, 86400.0));
  rrun->add_option("--mode", mode, "seigo (atomic) or naive (two separate writes)")
      ->check(CLI::IsMember({"seigo", "naive"}));
  CLI::App* raudit = raid->add_subcommand("audit", "check HP, stamina and raid_log agree");
  add_common(raudit);

  CLI::App* gacha = demo->add_subcommand(
      "gacha", "the gacha demo: gold and grants on shards, events through RabbitMQ");
  gacha->require_subcommand(1);
  int64_t gacha_players = 1000, gacha_gold = 100'000;
  CLI::App* gsetup = gacha->add_subcommand("setup", "create the gacha tables, declare the queue");
  add_common(gsetup);
  gsetup->add_option("--players", gacha_players, "number of players")
      ->check(CLI::Range(1, 10'000'000));
  gsetup->add_option("--gold", gacha_gold, "each player's starting gold")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 50));
  CLI::App* grun = gacha->add_subcommand("run", "concurrent pulls, each publishing an event");
  add_common(grun);
  grun->add_option("--clients", clients, "client threads")->check(CLI::Range(1, 1024));
  grun->add_option("--seconds", seconds, "duration")->check(CLI::Range(0.1, 86400.0));
  grun->add_option("--mode", mode, "seigo (outbox) or naive (commit, then publish)")
      ->check(CLI::IsMember({"seigo", "naive"}));
  double idle_exit = 0;
  int prefetch = 32;
  CLI::App* gconsume = gacha->add_subcommand("consume", "the collection service: apply events");
  add_common(gconsume);
  gconsume->add_option("--mode", mode, "seigo (inbox, ack after commit) or naive (auto-ack)")
      ->check(CLI::IsMember({"seigo", "naive"}));
  gconsume->add_option("--idle-exit", idle_exit,
                       "exit after this many seconds without an event (0 = run until SIGTERM)")
      ->check(CLI::Range(0.0, 86400.0));
  gconsume->add_option("--prefetch", prefetch, "unacknowledged deliveries at once")
      ->check(CLI::Range(1, 65535));
  CLI::App* gaudit = gacha->add_subcommand("audit", "check gold, grants, events and collection");
  add_common(gaudit);

  std::string check_url = "http://127.0.0.1:8640", check_warn, check_crit;
  int check_timeout = 10;
  CLI::App* check = app.add_subcommand(
      "check", "nagios/Icinga plugin: seigod's in-doubt, hung, backlog, outbox lag, resolver");
  check->add_option("--url", check_url, "seigod's base URL");
  check->add_option("-w,--warning", check_warn,
                    "warning thresholds name=value,... (in_doubt, age s, hung, backlog, "
                    "outbox_lag s, resolver s)");
  check->add_option("-c,--critical", check_crit, "critical thresholds, the same names");
  check->add_option("--timeout", check_timeout, "seconds")->check(CLI::Range(1, 300));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // `seigo check` is a nagios plugin: a bad command line is UNKNOWN (3) on stdout, which is
    // what nagios shows, not the CLI's usage exit 2.
    if (check->parsed() || (argc > 1 && std::string(argv[1]) == "check")) {
      std::printf("SEIGO UNKNOWN - bad command line: %s\n", e.what());
      return 3;
    }
    app.exit(e);
    return kExitUsage;
  }
  // Nagios exit codes (0-3), and no shards needed: it asks seigod.
  if (check->parsed()) return Check(check_url, check_warn, check_crit, check_timeout);
  bool given = false;
  for (CLI::Option* o : shard_options) given = given || o->count() > 0;
  if (!given) {
    const char* env = std::getenv("SEIGO_SHARDS");
    if (env == nullptr || *env == '\0') {
      std::fprintf(stderr, "seigo: no shards: pass --shards URL,URL,... or set SEIGO_SHARDS\n");
      return kExitUsage;
    }
    common.shards = env;
  }
  given = false;
  for (CLI::Option* o : redis_options) given = given || o->count() > 0;
  if (!given) {
    const char* env = std::getenv("SEIGO_REDIS");
    if (env != nullptr) common.redis = env;
  }
  given = false;
  for (CLI::Option* o : amqp_options) given = given || o->count() > 0;
  if (!given) {
    const char* env = std::getenv("SEIGO_AMQP");
    if (env != nullptr) common.amqp = env;
  }
  if (status->parsed()) return seigo::cli::PrintStatus(common);
  if (recover->parsed()) return seigo::cli::Recover(common);
  if (odead->parsed()) return seigo::cli::OutboxDead(common, dead_limit);
  if (oresend->parsed()) return seigo::cli::OutboxResend(common, resend_ids, resend_all);
  if (setup->parsed()) return DemoSetup(common, players, items);
  if (run->parsed()) return DemoRun(common, clients, seconds, mode);
  if (audit->parsed()) return DemoAudit(common);
  if (rsetup->parsed()) return RaidSetup(common, raid_players, bosses, start_hp);
  if (rrun->parsed()) return RaidRun(common, clients, seconds, mode);
  if (raudit->parsed()) return RaidAudit(common);
  if (gsetup->parsed()) return GachaSetup(common, gacha_players, gacha_gold);
  if (grun->parsed()) return GachaRun(common, clients, seconds, mode);
  if (gconsume->parsed()) return GachaConsume(common, mode, idle_exit, prefetch);
  if (gaudit->parsed()) return GachaAudit(common);
  return kExitUsage;
}
