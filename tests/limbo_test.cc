// Regression tests for seigo's defences against the MariaDB "limbo branch" (doc/limbo-branch.md),
// against the real shards that scripts/test.sh starts.
//
// The race: while a connection that owns a prepared XA branch is being torn down, the server
// already hands its XID to other connections, but InnoDB still ties the transaction to the dying
// thread. An XA COMMIT / XA ROLLBACK by XID in that window answers OK, is binlogged, and commits
// or rolls back nothing: InnoDB keeps the branch prepared, with its locks, hidden from XA RECOVER
// until the server restarts. The window lasts microseconds; these tests hold it open with gdb
// (tests/gdb_hold.sh: non-stop mode, a one-shot breakpoint on ha_close_connection for the
// owner's connection id, so only the owner's server thread stops and the rest of shard 1 keeps
// serving, other connections' teardowns included).
//
// Requirements: gdb (scripts/install-deps.sh installs it) and the right to ptrace mariadbd (root,
// as scripts/test.sh runs the servers, or CAP_SYS_PTRACE). Without them the tests FAIL, saying
// why; they are never skipped. Each test takes a few seconds (test 2 and 3 restart shard 1).
//
// Whatever happens, a test leaves the shards running and without prepared or hidden branches:
// its Scene (RAII) releases gdb, closes the owner connection, stops the INNODB_TRX reader,
// finishes every branch the test made by its decision (restarting shard 1 if one is hidden
// inside InnoDB), and deletes their decision rows and markers.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/protocol.h"
#include "mariadb/mariadb_participant.h"
#include "seigo/env.h"
#include "tests/db_test_util.h"

namespace seigo::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

constexpr uint32_t kShard = 1;  // the branch shard whose owner thread gdb holds; shard 0 decides
// Longer than InnoDB's INNODB_TRX cache time (100 ms, trx0i_s.cc CACHE_MIN_IDLE_TIME_NS): a read
// after such a pause gets a fresh snapshot, unless another client read it in between.
constexpr Ms kFreshTrx = 150ms;

std::string EnvVar(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

bool WaitFor(const std::function<bool()>& pred, Ms timeout, Ms step = 50ms) {
  const auto end = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(step);
  }
}

// Starts argv (argv[0] an absolute path) with stdin /dev/null, stdout and stderr appended to
// `log`, and NO other file descriptor of this process. This process holds MariaDB connections:
// a child that inherited one of their sockets would keep it open after the test closed the
// connection (a mariadbd restarted by servers.sh would keep it for good), and the server would
// not see the disconnect these tests are about.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid != 0) return pid;  // the parent (or -1)
  // The child of a multi-threaded process: async-signal-safe calls only.
  const int in = open("/dev/null", O_RDONLY);
  const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0) _exit(126);
  dup2(in, 0);
  dup2(out, 1);
  dup2(out, 2);
  close_range(3, ~0U, 0);
  execv(args[0], args.data());
  _exit(127);
}

// The exit status of child `pid` (128 + signal if killed), or -1 if it still runs after `timeout`.
int WaitChild(pid_t pid, Ms timeout) {
  int status = 0;
  const bool ended = WaitFor(
      [&] {
        const pid_t r = waitpid(pid, &status, WNOHANG);
        return r == pid || (r < 0 && errno != EINTR);
      },
      timeout, 20ms);
  if (!ended) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -2;
}

// Runs `cmd` with bash (as Spawn does); its exit status, its output in *output.
int Shell(const std::string& cmd, std::string* output) {
  char tmpl[] = "/tmp/seigo-limbo-sh.XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) return -1;
  close(fd);
  const pid_t pid = Spawn({"/bin/bash", "-c", cmd}, tmpl);
  int st = pid < 0 ? -1 : WaitChild(pid, 180s);
  if (st == -1 && pid > 0) {
    kill(pid, SIGTERM);
    WaitChild(pid, 10s);
  }
  *output = ReadFile(tmpl);
  unlink(tmpl);
  return st;
}

std::string GdbHoldScript() {
  std::string s = EnvVar("SEIGO_GDB_HOLD_SCRIPT");
  if (!s.empty()) return s;
  return (std::filesystem::path(__FILE__).parent_path() / "gdb_hold.sh").string();
}

// One run of tests/gdb_hold.sh: gdb attached to a mariadbd with a one-shot breakpoint at the start
// of connection teardown (after the XID was released, before InnoDB detached the transaction).
// The next server thread that closes a connection stops there until Release(). The destructor
// releases; the script also lets go on its own after `max_hold_s`, even if this process dies.
class GdbHold {
 public:
  GdbHold() = default;
  GdbHold(const GdbHold&) = delete;
  GdbHold& operator=(const GdbHold&) = delete;
  ~GdbHold() { Release(); }

  // Attaches gdb to `mariadbd` and sets the breakpoint for the thread of connection
  // `connection` (0: any), unless `defer_breakpoint`: then it only attaches (which stops the
  // whole server for a moment) and SetBreakpoint() sets it later (which does not). Returns ""
  // when done, else why not (gdb missing, ptrace refused, ...) with the script's log.
  std::string Attach(pid_t mariadbd, bool defer_breakpoint, uint64_t connection,
                     int max_hold_s = 45) {
    const std::string script = GdbHoldScript();
    if (!Exists(script)) return "no " + script + " (set SEIGO_GDB_HOLD_SCRIPT)";
    char tmpl[] = "/tmp/seigo-limbo-gdb.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return "mkdtemp failed";
    dir_ = tmpl;
    std::vector<std::string> argv = {"/bin/bash", script};
    if (defer_breakpoint) argv.push_back("--wait-arm");
    if (connection != 0) {
      argv.push_back("--connection");
      argv.push_back(std::to_string(connection));
    }
    for (const std::string& a : {std::to_string(mariadbd), dir_, std::to_string(max_hold_s)}) {
      argv.push_back(a);
    }
    pid_ = Spawn(argv, dir_ + "/script.log");
    if (pid_ < 0) return "fork failed";
    // Attaching loads mariadbd's symbols: about 1 s, much more on a loaded machine.
    return WaitForFile(defer_breakpoint ? "attached" : "armed", 90s);
  }

  std::string SetBreakpoint(uint64_t connection) {
    if (pid_ <= 0) return "not attached";
    { std::ofstream(dir_ + "/arm") << connection << "\n"; }
    return WaitForFile("armed", 30s);
  }

  bool WaitHit(Ms timeout) {
    return WaitFor([&] { return Exists(dir_ + "/hit") || Exists(dir_ + "/done"); }, timeout) &&
           Exists(dir_ + "/hit");
  }

  bool active() const { return pid_ > 0; }

 private:
  std::string WaitForFile(const std::string& name, Ms timeout) {
    WaitFor([&] { return Exists(dir_ + "/" + name) || Exists(dir_ + "/done"); }, timeout);
    if (Exists(dir_ + "/" + name)) return "";
    std::string why = Exists(dir_ + "/error") ? ReadFile(dir_ + "/error")
                                              : "no " + name + " after " +
                                                    std::to_string(timeout.count()) + " ms";
    Release();
    return why + "\n--- gdb_hold.sh output:\n" + log_;
  }

 public:

  // Lets the held thread go and waits until gdb has detached and quit. Idempotent.
  void Release() {
    if (pid_ <= 0) return;
    { std::ofstream(dir_ + "/release") << "1\n"; }
    int st = WaitChild(pid_, 30s);
    if (st == -1) {
      kill(pid_, SIGTERM);  // the script's trap detaches gdb
      st = WaitChild(pid_, 20s);
    }
    log_ = ReadFile(dir_ + "/script.log") + "--- gdb.log (tail):\n" +
           Tail(ReadFile(dir_ + "/gdb.log"), 3000);
    if (st == -1) {
      ADD_FAILURE() << "gdb_hold.sh (pid " << pid_ << ") does not end: gdb may still be attached "
                    << "to mariadbd; see " << dir_ << "\n" << log_;
      kill(pid_, SIGKILL);  // gdb then reads EOF on its command pipe, detaches and quits
      WaitChild(pid_, 5s);
      pid_ = -1;
      return;
    }
    if (st == 2) {
      ADD_FAILURE() << "gdb_hold.sh let go on its own (its time limit): the test held the thread "
                       "longer than expected\n" << log_;
    }
    pid_ = -1;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Log() const {
    return pid_ > 0 ? ReadFile(dir_ + "/script.log") + "--- gdb.log (tail):\n" +
                          Tail(ReadFile(dir_ + "/gdb.log"), 3000)
                    : log_;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  std::string log_;
};

// Reads information_schema.INNODB_TRX every ~10 ms on its own connection. InnoDB refills that
// cache only when nobody has read it for 100 ms (doc/limbo-branch.md), so the snapshot of the
// first read stays in force for every client of the server for as long as this runs.
class TrxCacheFreezer {
 public:
  explicit TrxCacheFreezer(std::unique_ptr<mariadb::MariaDbParticipant> p) : p_(std::move(p)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~TrxCacheFreezer() {
    stop_ = true;
    thread_.join();
  }
  uint64_t reads() const { return reads_; }
  // The longest time between two reads since the first: >= 100 ms means the cache may have been
  // refreshed in between.
  int64_t max_gap_ms() const { return max_gap_ms_; }
  std::string last_error() const {
    std::lock_guard<std::mutex> l(mu_);
    return last_error_;
  }

 private:
  void Loop() {
    Clock::time_point last{};
    while (!stop_) {
      Result<QueryResult> r = p_->Query("SELECT COUNT(*) FROM information_schema.INNODB_TRX");
      const Clock::time_point now = Clock::now();
      if (r.ok()) {
        if (reads_ > 0) {
          max_gap_ms_ = std::max<int64_t>(
              max_gap_ms_, std::chrono::duration_cast<Ms>(now - last).count());
        }
        last = now;
        ++reads_;
      } else {
        std::lock_guard<std::mutex> l(mu_);
        last_error_ = r.status().ToString();
        max_gap_ms_ = 1'000'000;  // a failed read leaves a gap of unknown size
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  std::unique_ptr<mariadb::MariaDbParticipant> p_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> reads_{0};
  std::atomic<int64_t> max_gap_ms_{0};
  mutable std::mutex mu_;
  std::string last_error_;
  std::thread thread_;
};

std::string XidSql(const Xid& x) {
  return "'" + x.Gtrid() + "','" + x.Bqual() + "'," + std::to_string(Xid::kFormatId);
}

bool Applied(const ResolveReport& r, const std::string& gid, Outcome o) {
  return std::any_of(r.applied.begin(), r.applied.end(), [&](const ResolveReport::Applied& a) {
    return a.gid == gid && a.shard == kShard && a.outcome == o;
  });
}
bool AppliedAny(const ResolveReport& r, const std::string& gid) {
  return std::any_of(r.applied.begin(), r.applied.end(),
                     [&](const ResolveReport::Applied& a) { return a.gid == gid; });
}
const ResolveReport::Limbo* LimboOf(const ResolveReport& r, const std::string& gid) {
  for (const ResolveReport::Limbo& l : r.limbo) {
    if (l.gid == gid && l.shard == kShard) return &l;
  }
  return nullptr;
}
const ResolveReport::Pending* PendingOf(const ResolveReport& r, const std::string& gid) {
  for (const ResolveReport::Pending& p : r.pending) {
    if (p.gid == gid) return &p;
  }
  return nullptr;
}

std::string Describe(const ResolveReport& r) {
  std::ostringstream o;
  o << "report: applied=" << r.applied.size() << " pending=" << r.pending.size()
    << " limbo=" << r.limbo.size() << " fenced=" << r.fenced.size()
    << " forgotten=" << r.forgotten << " complete=" << r.complete;
  for (const auto& p : r.pending) o << "\n  pending " << p.gid << ": " << p.reason;
  for (const auto& l : r.limbo) o << "\n  limbo " << l.gid << " shard " << l.shard << ": "
                                  << l.message;
  for (const auto& e : r.errors) o << "\n  error " << e.ToString();
  return o.str();
}

const char* TraceName(BranchTrace t) {
  switch (t) {
    case BranchTrace::kNone: return "none";
    case BranchTrace::kOpen: return "open";
    case BranchTrace::kCommitted: return "committed";
  }
  return "?";
}

class Limbo : public ::testing::Test {
 protected:
  // Everything one scenario sets up, undone by the destructor whatever happened.
  class Scene {
   public:
    explicit Scene(Limbo* t) : t_(t) {}
    Scene(const Scene&) = delete;
    Scene& operator=(const Scene&) = delete;
    ~Scene() {
      hold.Release();
      owner.reset();  // closes the owner connection (if the test did not get that far)
      freezer.reset();
      for (const auto& [xid, outcome] : branches_) t_->FinishLeftover(xid, outcome);
    }
    // A branch this scene made, and how to finish it if the test does not.
    void Track(const Xid& xid, Outcome outcome) { branches_.emplace_back(xid, outcome); }

    GdbHold hold;
    std::unique_ptr<Session> owner;  // the connection that prepared the branch
    uint64_t owner_id = 0;           // its server thread id (CONNECTION_ID())
    std::unique_ptr<TrxCacheFreezer> freezer;

   private:
    Limbo* t_;
    std::vector<std::pair<Xid, Outcome>> branches_;
  };

  void SetUp() override {
    ASSERT_FALSE(TestShards().empty())
        << "SEIGO_TEST_SHARDS is not set: run the tests with scripts/test.sh, which starts the "
           "MariaDB shards they need";
    ASSERT_FALSE(EnvVar("SEIGO_STATE_DIR").empty() || EnvVar("SEIGO_SERVERS_SCRIPT").empty())
        << "SEIGO_STATE_DIR and SEIGO_SERVERS_SCRIPT are not set: run the tests with "
           "scripts/test.sh (these tests find mariadbd's pid and restart a shard)";
    CoordinatorOptions o = TestOptions();
    // The smallest retention the library allows (the default is 120 s): a decision whose
    // deadline is ~100 s old is then a garbage-collection candidate, which is what tests 2 and
    // 3 need.
    o.resolver.decision_retention_ms = kMinDecisionRetentionMs;
    Result<std::unique_ptr<Coordinator>> c = Coordinator::Open(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coord_ = std::move(*c);
    ASSERT_GE(coord_->shard_map().size(), 2u) << "these tests need at least 2 shards";
    deployment_ = coord_->deployment();
    owner_p_ = OpenParticipant(kShard);
    other_ = OpenParticipant(kShard);
    ASSERT_TRUE(owner_p_ && other_);
  }

  std::unique_ptr<mariadb::MariaDbParticipant> OpenParticipant(uint32_t shard) {
    mariadb::Config c;
    c.url = coord_->shard_map().shard(shard);
    c.index = shard;
    c.lock_wait_timeout_s = 1;
    std::string dep = deployment_;
    auto p = mariadb::MariaDbParticipant::Open(c, false, &dep);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(*p) : nullptr;
  }

  void FreshTable(const std::string& t) {
    // A bounded metadata-lock wait: a branch left behind by a crashed earlier run would hold it.
    for (const std::string& sql :
         {"SET STATEMENT lock_wait_timeout=10 FOR DROP TABLE IF EXISTS " + t,
          "CREATE TABLE " + t + " (k BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB"}) {
      auto r = coord_->QueryShard(kShard, sql);
      ASSERT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
    }
  }

  // A branch on shard 1 decided by shard 0, whose deadline is `deadline_from_now_ms` away.
  Xid NewXid(int64_t deadline_from_now_ms) {
    const int64_t now = DefaultEnv()->NowMs();
    return Xid{deployment_, core::NewGid(DefaultEnv()), 0, now + deadline_from_now_ms - 10'000,
               now + deadline_from_now_ms, kShard};
  }

  // The decision row a decider (commit) or a resolver's fence (abort) would have written.
  void WriteDecision(const Xid& xid, Outcome o) {
    auto r = coord_->QueryShard(
        0, std::string("INSERT INTO seigo_decision (gid, outcome, shards, deadline_ms, "
                       "decided_ms) VALUES (?, ?, '0,1', ?, ") + mariadb::ServerNowMsSql() + ")",
        {xid.gid, o == Outcome::kCommit ? "C" : "A", xid.deadline_ms});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  bool DecisionExists(const std::string& gid) {
    auto r = coord_->QueryShard(0, "SELECT COUNT(*) FROM seigo_decision WHERE gid = ?", {gid});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && *r->Int(0, 0) > 0;
  }

  // Committed rows with key k in table t on shard 1 (a consistent read: never waits on locks).
  int64_t Rows(const std::string& t, int64_t k) {
    auto r = coord_->QueryShard(kShard, "SELECT COUNT(*) FROM " + t + " WHERE k = ?", {k});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r->Int(0, 0) : -1;
  }
  int64_t ValueAt(const std::string& t, int64_t k) {
    auto r = coord_->QueryShard(kShard, "SELECT v FROM " + t + " WHERE k = ?", {k});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && !r->rows.empty() ? *r->Int(0, 0) : -1;
  }

  BranchTrace Probe(const std::string& gid) {
    const std::string g[] = {gid};
    auto r = other_->ProbeBranches(g);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && r->size() == 1 ? (*r)[0] : BranchTrace::kNone;
  }

  bool Listed(const std::string& gid) {  // in shard 1's XA RECOVER
    auto r = other_->RecoverPrepared();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && std::any_of(r->begin(), r->end(), [&](const Xid& x) { return x.gid == gid; });
  }

  bool InDoubt(const std::string& gid) {
    InDoubtReport r = coord_->InDoubt();
    return std::any_of(r.txs.begin(), r.txs.end(), [&](const InDoubtTx& t) { return t.gid == gid; });
  }

  // The owner's server thread: in PROCESSLIST? tied to a trx in INNODB_TRX? (After a pause, so
  // that INNODB_TRX is fresh unless a freezer runs.)
  std::pair<int64_t, int64_t> OwnerState(uint64_t owner_id) {
    std::this_thread::sleep_for(kFreshTrx);
    const Value v[] = {owner_id, owner_id};
    auto r = other_->Query(
        "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?),"
        " (SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?)",
        v);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {-1, -1};
    return {*r->Int(0, 0), *r->Int(0, 1)};
  }

  // Prepares `xid` on shard 1 through owner_p_ with one insert (k, v) into t; the session stays
  // open in scene->owner.
  void PrepareBranch(Scene* scene, const Xid& xid, const std::string& t, int64_t k, int64_t v) {
    auto s = owner_p_->Acquire();
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    scene->owner = std::move(*s);
    ASSERT_TRUE(scene->owner->BeginBranch(xid).ok());
    auto id = scene->owner->Execute("SELECT CONNECTION_ID()", {});
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    scene->owner_id = static_cast<uint64_t>(*id->Int(0, 0));
    const Value row[] = {k, v};
    auto ins = scene->owner->Execute("INSERT INTO " + t + " (k, v) VALUES (?, ?)", row);
    ASSERT_TRUE(ins.ok()) << ins.status().ToString();
    Status p = scene->owner->Prepare(xid);  // writes the marker inside the branch, then prepares
    ASSERT_TRUE(p.ok()) << p.ToString();
  }

  pid_t ShardPid(uint32_t shard) {
    const std::string f =
        EnvVar("SEIGO_STATE_DIR") + "/mariadb-" + std::to_string(shard) + "/mariadbd.pid";
    return static_cast<pid_t>(std::atol(ReadFile(f).c_str()));
  }

  // gdb on shard 1's mariadbd, with the breakpoint for the owner's thread set unless
  // `defer_breakpoint`.
  void AttachGdb(Scene* scene, bool defer_breakpoint) {
    const pid_t pid = ShardPid(kShard);
    ASSERT_GT(pid, 0) << "no pid file for shard " << kShard << " under $SEIGO_STATE_DIR";
    const std::string err = scene->hold.Attach(pid, defer_breakpoint, scene->owner_id);
    ASSERT_TRUE(err.empty()) << "gdb could not hold shard " << kShard << "'s mariadbd (pid " << pid
                       << "). These tests need gdb (scripts/install-deps.sh) and the right to "
                          "ptrace mariadbd (root or CAP_SYS_PTRACE):\n" << err;
  }

  // With gdb armed: the owner disconnects and its server thread stops in the window (the XID
  // is free, InnoDB still ties the branch to the thread). `check_trx`: prove from INNODB_TRX
  // that the held thread is the owner's (impossible while a freezer runs).
  void CloseOwnerIntoTheWindow(Scene* scene, bool check_trx) {
    scene->owner.reset();  // the owner disconnects (COM_QUIT); its server thread tears down
    ASSERT_TRUE(scene->hold.WaitHit(20s))
        << "no server thread stopped at the breakpoint within 20 s\n" << scene->hold.Log();
    auto [in_processlist, attached] = OwnerState(scene->owner_id);
    ASSERT_EQ(in_processlist, 0) << "the owner (thread " << scene->owner_id
                                 << ") is still in PROCESSLIST: gdb holds another thread";
    if (check_trx) {
      ASSERT_EQ(attached, 1)
          << "INNODB_TRX no longer ties a transaction to the owner (thread " << scene->owner_id
          << "): the thread gdb holds is not the owner's (another connection of shard " << kShard
          << " closed first?), or its teardown already ended\n" << scene->hold.Log();
    }
  }

  void RestartShard(uint32_t shard) {
    std::string out;
    const int st = Shell("\"$SEIGO_SERVERS_SCRIPT\" crash " + std::to_string(shard), &out);
    ASSERT_EQ(st, 0) << "servers.sh crash " << shard << " failed:\n" << out;
  }

  // Clean-up of one branch (Scene): finishes it by `outcome` if it is prepared; restarts shard 1
  // if it stays open without being listed by XA RECOVER (a limbo branch); then deletes its
  // decision row and marker. Reports a failure if it cannot.
  void FinishLeftover(const Xid& xid, Outcome outcome) {
    bool restarted = false;
    int hidden = 0;
    std::string last;
    const bool clean = WaitFor(
        [&] {
          const std::string g[] = {xid.gid};
          auto trace = other_->ProbeBranches(g);
          auto listed = other_->RecoverPrepared();
          if (!trace.ok() || !listed.ok()) {
            last = !trace.ok() ? trace.status().ToString() : listed.status().ToString();
            return false;
          }
          const bool in_recover = std::any_of(listed->begin(), listed->end(),
                                              [&](const Xid& x) { return x.gid == xid.gid; });
          if (in_recover) {
            hidden = 0;
            Status s = outcome == Outcome::kCommit ? other_->CommitXid(xid)
                                                   : other_->RollbackXid(xid);
            last = "XA RECOVER lists it; finishing: " + s.ToString();
            return false;  // look again
          }
          if ((*trace)[0] != BranchTrace::kOpen) return true;
          // Open but not listed: the owner's teardown is still running, or a limbo branch.
          last = "open, not in XA RECOVER";
          if (++hidden >= 3 && !restarted) {
            std::string out;
            const int st =
                Shell("\"$SEIGO_SERVERS_SCRIPT\" crash " + std::to_string(kShard), &out);
            EXPECT_EQ(st, 0) << "clean-up: servers.sh crash " << kShard << " failed:\n" << out;
            restarted = true;
            hidden = 0;
          }
          return false;
        },
        60s, 300ms);
    EXPECT_TRUE(clean) << "clean-up: could not finish the branch of gid " << xid.gid
                       << " on shard " << kShard << ": " << last;
    const std::string g[] = {xid.gid};
    Status f = other_->ForgetBranches(g);
    EXPECT_TRUE(f.ok()) << "clean-up: " << f.ToString();
    auto d = coord_->QueryShard(0, "DELETE FROM seigo_decision WHERE gid = ?", {xid.gid});
    EXPECT_TRUE(d.ok()) << "clean-up: " << d.status().ToString();
  }

  std::unique_ptr<Coordinator> coord_;
  std::string deployment_;
  std::unique_ptr<mariadb::MariaDbParticipant> owner_p_;  // the process that prepares
  // Stands for another process (a resolver elsewhere): it has no in-process knowledge of the
  // owner, only what the server and the branch's marker say.
  std::unique_ptr<mariadb::MariaDbParticipant> other_;
};

// Commit by XID from another process while the owner's teardown is held in the window: seigo
// must answer kBusy (retry later), never OK; once the teardown has ended it commits for real.
//
// Before ff1d49a: CommitXid checked the owner only when the same MariaDbParticipant object had
// prepared the branch (an in-memory "orphan" table, then PROCESSLIST only). From any other
// object or process it ran XA COMMIT at once, which in this window answered OK and left a limbo
// branch: this test failed at the first CommitXid (OK instead of kBusy).
TEST_F(Limbo, CommitByXidWaitsWhileTheOwnerConnectionIsStillClosing) {
  const std::string t = "t_limbo_wait";
  ASSERT_NO_FATAL_FAILURE(FreshTable(t));
  Scene scene(this);
  // Deadline 5 s ago: due for the resolver, but not "hung" (that needs deadline + 60 s).
  const Xid xid = NewXid(-5'000);
  scene.Track(xid, Outcome::kCommit);
  ASSERT_NO_FATAL_FAILURE(WriteDecision(xid, Outcome::kCommit));
  ASSERT_NO_FATAL_FAILURE(PrepareBranch(&scene, xid, t, 7, 70));
  ASSERT_NO_FATAL_FAILURE(AttachGdb(&scene, /*defer_breakpoint=*/false));
  ASSERT_NO_FATAL_FAILURE(CloseOwnerIntoTheWindow(&scene, /*check_trx=*/true));

  for (int i = 0; i < 3; ++i) {
    Status s = other_->CommitXid(xid);
    ASSERT_FALSE(s.ok()) << "CommitXid returned OK while the owner's teardown was held: the "
                            "server only pretended to commit (limbo branch)";
    EXPECT_TRUE(s.Is(Code::kBusy)) << "call " << i << ": " << s.ToString();
    std::this_thread::sleep_for(kFreshTrx);
  }
  // The resolver's path (decision on shard 0, branch listed by XA RECOVER): not applied, not
  // limbo, pending.
  ResolveReport r = coord_->Recover();
  EXPECT_FALSE(AppliedAny(r, xid.gid)) << Describe(r);
  EXPECT_EQ(LimboOf(r, xid.gid), nullptr) << Describe(r);
  EXPECT_NE(PendingOf(r, xid.gid), nullptr) << Describe(r);
  EXPECT_EQ(Rows(t, 7), 0);
  EXPECT_EQ(Probe(xid.gid), BranchTrace::kOpen);

  scene.hold.Release();  // the owner's teardown ends; InnoDB detaches the branch
  Status last;
  const bool committed = WaitFor(
      [&] {
        last = other_->CommitXid(xid);
        EXPECT_FALSE(last.Is(Code::kCorruption)) << last.ToString();
        return last.ok() || last.Is(Code::kCorruption);
      },
      15s, 200ms);
  ASSERT_TRUE(committed && last.ok()) << "CommitXid after the release: " << last.ToString();
  EXPECT_EQ(ValueAt(t, 7), 70) << "the branch's write is not visible after CommitXid said OK";
  EXPECT_EQ(Probe(xid.gid), BranchTrace::kCommitted);
  EXPECT_FALSE(Listed(xid.gid));
  EXPECT_FALSE(InDoubt(xid.gid));
  EXPECT_TRUE(other_->CommitXid(xid).ok()) << "a repeated CommitXid is idempotent";
}

// A real limbo branch, made by a plain XA COMMIT by XID from another client in the window
// (an operator, another transaction manager, old seigo): the server answers OK, XA RECOVER
// stops listing the branch, its write stays invisible. seigo must neither lose the decision nor
// stay silent: every resolver pass reports it (ResolveReport::limbo) and garbage collection keeps
// the decision although it is past retention. After the operator's remedy (restart the server,
// recover) the branch commits and the decision can go.
//
// Before ff1d49a: ResolveReport had no `limbo`, so nothing was reported. Its GC forgot an expired
// decision unless some InnoDB transaction on some shard had started before the decision's
// deadline (any client's transaction counted). Here the branch started after its (artificial)
// deadline, so the decision was forgotten in the first pass, and after the restart the branch
// was prepared with no decision: the resolver past the fence window rolled back a transaction
// whose commit had been decided.
TEST_F(Limbo, HiddenBranchKeepsItsDecisionAndIsReportedUntilARestartFinishesIt) {
  const std::string t = "t_limbo_hidden";
  ASSERT_NO_FATAL_FAILURE(FreshTable(t));
  Scene scene(this);
  // 100 s past the deadline: GC would collect the decision (retention >= 60 s).
  const Xid xid = NewXid(-100'000);
  scene.Track(xid, Outcome::kCommit);
  ASSERT_NO_FATAL_FAILURE(WriteDecision(xid, Outcome::kCommit));
  ASSERT_NO_FATAL_FAILURE(PrepareBranch(&scene, xid, t, 11, 110));
  ASSERT_NO_FATAL_FAILURE(AttachGdb(&scene, /*defer_breakpoint=*/false));
  ASSERT_NO_FATAL_FAILURE(CloseOwnerIntoTheWindow(&scene, /*check_trx=*/true));

  auto raw = coord_->QueryShard(kShard, "XA COMMIT " + XidSql(xid));
  ASSERT_TRUE(raw.ok()) << "XA COMMIT in the window did not answer OK (" << raw.status().ToString()
                        << "): the MariaDB race did not happen (fixed server?)";
  scene.hold.Release();
  EXPECT_TRUE(WaitFor([&] { return OwnerState(scene.owner_id).second == 0; }, 10s))
      << "the owner's transaction is still tied to its thread after the release";

  // The limbo branch: hidden from XA RECOVER, its write invisible, its marker open.
  EXPECT_FALSE(Listed(xid.gid)) << "XA RECOVER lists the branch: no limbo branch was made";
  EXPECT_EQ(Rows(t, 11), 0) << "the write is visible: the XA COMMIT did commit (fixed server?)";
  EXPECT_EQ(Probe(xid.gid), BranchTrace::kOpen) << "seigo's marker does not show the branch open";
  Status again = other_->CommitXid(xid);
  EXPECT_FALSE(again.ok()) << "CommitXid of a limbo branch returned OK";

  for (int pass = 0; pass < 2; ++pass) {
    ResolveReport r = coord_->Recover();
    const ResolveReport::Limbo* l = LimboOf(r, xid.gid);
    ASSERT_NE(l, nullptr) << "pass " << pass << " did not report the hidden branch\n"
                          << Describe(r);
    EXPECT_NE(l->message.find("restart"), std::string::npos) << l->message;
    EXPECT_FALSE(AppliedAny(r, xid.gid)) << Describe(r);
    EXPECT_TRUE(DecisionExists(xid.gid)) << "GC forgot the decision of a hidden branch";
  }
  EXPECT_EQ(Rows(t, 11), 0);
  EXPECT_FALSE(InDoubt(xid.gid)) << "XA RECOVER does not list it, so status cannot either";

  // The remedy: restart the server (InnoDB's recovery brings the branch back into XA RECOVER),
  // then recover.
  ASSERT_NO_FATAL_FAILURE(RestartShard(kShard));
  ResolveReport r;
  const bool applied = WaitFor(
      [&] {
        r = coord_->Recover();
        return Applied(r, xid.gid, Outcome::kCommit);
      },
      20s, 200ms);
  ASSERT_TRUE(applied) << "no resolver pass committed the branch after the restart\n"
                       << Describe(r);
  EXPECT_EQ(LimboOf(r, xid.gid), nullptr) << Describe(r);
  EXPECT_EQ(ValueAt(t, 11), 110) << "the branch's write is not visible after the commit";
  EXPECT_FALSE(Listed(xid.gid));
  EXPECT_FALSE(InDoubt(xid.gid));
  // Now the decision may go (with the branch's committed marker).
  const bool forgotten = WaitFor(
      [&] {
        r = coord_->Recover();
        EXPECT_EQ(LimboOf(r, xid.gid), nullptr) << Describe(r);
        return !DecisionExists(xid.gid);
      },
      10s, 200ms);
  EXPECT_TRUE(forgotten) << "the decision was not garbage-collected after the commit\n"
                         << Describe(r);
  EXPECT_EQ(Probe(xid.gid), BranchTrace::kNone) << TraceName(Probe(xid.gid));
  EXPECT_EQ(ValueAt(t, 11), 110);
}

// seigo's own rollback by XID (a resolver pass applying an abort decision) lands in the window
// and the server answers OK without rolling anything back. The owner check before it
// (CheckOwner) cannot see the owner: it has left PROCESSLIST, and INNODB_TRX is kept stale by
// a reader that polls it every 10 ms (the cache caveat of doc/limbo-branch.md). So this is
// the last line of defence: the marker read after the XA ROLLBACK shows the branch still open,
// and the pass must report limbo, not "applied"; GC keeps the decision; after a restart the
// branch rolls back for real.
//
// Before ff1d49a: RollbackXid returned the XA ROLLBACK's OK, the pass reported the branch as
// applied (rolled back), GC then forgot the decision, and after a restart the branch was
// prepared again: a later XA COMMIT could have committed it (doc/limbo-branch.md).
TEST_F(Limbo, RollbackByXidThatDidNotTakeEffectIsNotReportedAsDone) {
  const std::string t = "t_limbo_rollback";
  ASSERT_NO_FATAL_FAILURE(FreshTable(t));
  std::vector<std::string> inconclusive;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    Scene scene(this);
    const Xid xid = NewXid(-100'000);
    scene.Track(xid, Outcome::kAbort);
    ASSERT_NO_FATAL_FAILURE(WriteDecision(xid, Outcome::kAbort));
    // gdb's attach stops the whole server for a moment, which would let the cache refresh:
    // attach first, freeze, prepare, then set the breakpoint (no stop).
    ASSERT_NO_FATAL_FAILURE(AttachGdb(&scene, /*defer_breakpoint=*/true));
    // Freeze INNODB_TRX before the branch exists: its frozen snapshot has no trx of the owner.
    scene.freezer = std::make_unique<TrxCacheFreezer>(OpenParticipant(kShard));
    ASSERT_TRUE(WaitFor([&] { return scene.freezer->reads() >= 5; }, 10s))
        << scene.freezer->last_error();
    ASSERT_NO_FATAL_FAILURE(PrepareBranch(&scene, xid, t, 21 + attempt, 210));
    const std::string err = scene.hold.SetBreakpoint(scene.owner_id);
    ASSERT_TRUE(err.empty()) << "gdb could not set the breakpoint: " << err;
    ASSERT_NO_FATAL_FAILURE(CloseOwnerIntoTheWindow(&scene, /*check_trx=*/false));

    ResolveReport r = coord_->Recover();
    ASSERT_FALSE(AppliedAny(r, xid.gid))
        << "the resolver reported the rollback as applied, but the server did not roll the "
           "branch back (limbo) — unless gdb held another connection's thread, not the "
           "owner's\n" << Describe(r);
    if (LimboOf(r, xid.gid) == nullptr) {
      // The owner check saw the owner after all (the cache was refreshed: the reader paused
      // >= 100 ms on this loaded machine), so nothing was attempted. Try again.
      const ResolveReport::Pending* p = PendingOf(r, xid.gid);
      inconclusive.push_back("attempt " + std::to_string(attempt) + ": longest pause between " +
                             "INNODB_TRX reads " + std::to_string(scene.freezer->max_gap_ms()) +
                             " ms; " + (p ? p->reason : Describe(r)));
      ASSERT_NE(p, nullptr) << "neither applied, limbo nor pending\n" << Describe(r);
      std::cout << "[ note     ] inconclusive, trying again: " << inconclusive.back() << "\n";
      continue;  // the Scene rolls the branch back
    }
    const ResolveReport::Limbo* l = LimboOf(r, xid.gid);
    EXPECT_NE(l->message.find("restart"), std::string::npos) << l->message;

    scene.hold.Release();
    scene.freezer.reset();
    EXPECT_TRUE(WaitFor([&] { return OwnerState(scene.owner_id).second == 0; }, 10s));
    EXPECT_FALSE(Listed(xid.gid)) << "XA RECOVER lists the branch: no limbo branch was made";
    EXPECT_EQ(Probe(xid.gid), BranchTrace::kOpen);
    Status again = other_->RollbackXid(xid);
    EXPECT_FALSE(again.ok()) << "RollbackXid of a limbo branch returned OK (\"nothing left\")";

    r = coord_->Recover();
    EXPECT_NE(LimboOf(r, xid.gid), nullptr) << "GC did not report the hidden branch\n"
                                            << Describe(r);
    EXPECT_FALSE(AppliedAny(r, xid.gid)) << Describe(r);
    EXPECT_TRUE(DecisionExists(xid.gid)) << "GC forgot the decision of a hidden branch";

    ASSERT_NO_FATAL_FAILURE(RestartShard(kShard));
    const bool applied = WaitFor(
        [&] {
          r = coord_->Recover();
          return Applied(r, xid.gid, Outcome::kAbort);
        },
        20s, 200ms);
    ASSERT_TRUE(applied) << "no resolver pass rolled the branch back after the restart\n"
                         << Describe(r);
    EXPECT_EQ(Rows(t, 21 + attempt), 0) << "the rolled-back write is visible";
    EXPECT_EQ(Probe(xid.gid), BranchTrace::kNone);
    EXPECT_FALSE(Listed(xid.gid));
    EXPECT_FALSE(InDoubt(xid.gid));
    const bool forgotten = WaitFor(
        [&] {
          r = coord_->Recover();
          return !DecisionExists(xid.gid);
        },
        10s, 200ms);
    EXPECT_TRUE(forgotten) << Describe(r);
    return;
  }
  std::string why;
  for (const std::string& s : inconclusive) why += "\n  " + s;
  FAIL() << "could not keep INNODB_TRX stale through the window in 3 attempts, so the rollback "
            "by XID never ran in it:" << why;
}

}  // namespace
}  // namespace seigo::testing
