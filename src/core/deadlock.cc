// Cross-shard deadlock detection (doc/deadlocks.md).
//
// Why breaking a cycle this way keeps every transaction atomic: the victim's statement is
// interrupted while it waits for a row lock, i.e. before its attempt reached XA PREPARE on any
// shard (statements run before the commit protocol starts, and the protocol's own statements
// never wait for row locks). Its coordinator sees kConflict and rolls the attempt back as
// after a server-detected deadlock. The interrupt names the statement by the store's query id,
// so one that finished in the meantime is not touched (the store answers kNotFound): a
// detector never interrupts a later statement of the same connection, such as a commit.
//
// Why every transaction eventually commits: a Run keeps the priority of its first attempt
// across retries, and a victim is always the youngest of its cycle, so the oldest Run waiting
// is never a victim of this detector. Every Run becomes the oldest once those before it have
// finished.
#include "core/deadlock.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

namespace seigo::core {
namespace {

// How long a victim of another process must have been published (by the store's clock) before
// this process breaks the cycle itself: its own process has had tens of passes by then.
constexpr int64_t kForeignVictimGraceMs = 300;

// How long (by the store's clock, from its first publication) a wait the lock-wait snapshot does
// not show is presumed to be a lock wait: two snapshot turns (110 ms each) and some slack.
constexpr int64_t kPresumeForMs = 300;

struct Node {
  std::string txn;
  int64_t priority_ms = 0;
  size_t store = 0;  // where its statement waits
  uint64_t thread = 0, query = 0;
  int64_t since_ms = 0;      // the publishing process's clock
  int64_t published_for_ms = 0;  // how long it has been published, by the store's clock
};

// Finds one cycle among the nodes not removed; empty = none. Deterministic (node order).
std::vector<size_t> FindCycle(const std::vector<std::set<size_t>>& adj,
                              const std::vector<bool>& removed) {
  const size_t n = adj.size();
  std::vector<int> color(n, 0);  // 0 new, 1 on the path, 2 done
  std::vector<size_t> path;
  std::vector<size_t> cycle;
  // Iterative DFS: (node, next neighbour iterator).
  for (size_t root = 0; root < n && cycle.empty(); ++root) {
    if (removed[root] || color[root] != 0) continue;
    std::vector<std::pair<size_t, std::set<size_t>::const_iterator>> stack;
    stack.push_back({root, adj[root].begin()});
    color[root] = 1;
    path.push_back(root);
    while (!stack.empty() && cycle.empty()) {
      auto& [v, it] = stack.back();
      if (it == adj[v].end()) {
        color[v] = 2;
        path.pop_back();
        stack.pop_back();
        continue;
      }
      const size_t w = *it++;
      if (removed[w]) continue;
      if (color[w] == 1) {
        auto at = std::find(path.begin(), path.end(), w);
        cycle.assign(at, path.end());
      } else if (color[w] == 0) {
        color[w] = 1;
        path.push_back(w);
        stack.push_back({w, adj[w].begin()});
      }
    }
    path.clear();
  }
  return cycle;
}

}  // namespace

WaitGraph AnalyzeWaits(std::span<const std::string> store_ids, std::span<const LockWaits> waits,
                       int64_t now_ms, const std::set<RunWait>* disproved) {
  WaitGraph g;
  std::unordered_map<std::string, size_t> store_of;
  for (size_t i = 0; i < store_ids.size(); ++i) {
    if (!store_ids[i].empty()) store_of.emplace(store_ids[i], i);
  }
  // Nodes: the transactions whose statement still runs (the store returns only published rows
  // whose thread runs that very statement now). A row whose statement the store's lock-wait
  // snapshot shows waiting is EXACT: the snapshot says whom it waits for. A row published
  // before a FRESH snapshot (one that refreshed InnoDB's cache) that does not show it is not
  // waiting for a lock (a slow statement): no node. Any other row is PRESUMED waiting — also
  // one an old snapshot should show but does not: another client reading the cache more often
  // than every 100 ms keeps it from refreshing, and then an absent wait proves nothing.
  std::vector<Node> nodes;
  std::vector<bool> exact;
  std::map<std::string, size_t> node_of;                // txn -> node
  std::map<std::pair<size_t, uint64_t>, size_t> owner;  // (store, thread) -> node
  std::vector<std::set<size_t>> stores_of;              // node -> stores it has connections on
  for (size_t s = 0; s < waits.size(); ++s) {
    std::set<std::pair<uint64_t, uint64_t>> waiting;
    for (const LockWaits::Edge& e : waits[s].edges) waiting.insert({e.waiter, e.waiter_query});
    for (const LockWaits::Published& p : waits[s].published) {
      if (p.txn.empty()) continue;
      const bool in_snapshot = waiting.count({p.thread, p.query}) != 0;
      if (!in_snapshot && waits[s].snapshot_fresh && waits[s].snapshot_ms >= p.published_ms) {
        continue;
      }
      auto [it, fresh] = node_of.emplace(p.txn, nodes.size());
      if (!fresh) continue;  // one waiting statement per transaction (statements run in turn)
      nodes.push_back({p.txn, p.priority_ms, s, p.thread, p.query, p.since_ms,
                       std::max<int64_t>(0, waits[s].now_ms - p.published_ms)});
      exact.push_back(in_snapshot);
      stores_of.emplace_back();
      const size_t id = it->second;
      owner[{s, p.thread}] = id;
      stores_of[id].insert(s);
      // "store@thread,store@thread": every connection of the transaction's current attempt.
      size_t pos = 0;
      while (pos < p.threads.size()) {
        size_t comma = p.threads.find(',', pos);
        if (comma == std::string::npos) comma = p.threads.size();
        const std::string item = p.threads.substr(pos, comma - pos);
        pos = comma + 1;
        const size_t at = item.rfind('@');
        if (at == std::string::npos) continue;
        auto st = store_of.find(item.substr(0, at));
        if (st == store_of.end()) continue;  // a store this process does not use
        const uint64_t thread = std::strtoull(item.c_str() + at + 1, nullptr, 10);
        if (thread == 0) continue;
        owner[{st->second, thread}] = id;
        stores_of[id].insert(st->second);
      }
    }
  }
  std::vector<std::set<size_t>> adj(nodes.size());
  std::map<std::pair<size_t, size_t>, std::set<size_t>> edge_stores;
  std::set<std::pair<size_t, size_t>> exact_edges;
  auto add_edge = [&](size_t a, size_t b, size_t store, uint64_t holder_thread) {
    if (a == b) return;
    if (holder_thread != 0) exact_edges.insert({a, b});
    if (adj[a].insert(b).second) {
      const Node& w = nodes[a];
      g.edges.push_back({static_cast<uint32_t>(store), w.txn, nodes[b].txn, w.thread,
                         holder_thread, std::max<int64_t>(0, now_ms - w.since_ms)});
    }
    edge_stores[{a, b}].insert(store);
  };
  // Exact edges: the snapshot's waiter -> holder threads, between known transactions.
  for (size_t s = 0; s < waits.size(); ++s) {
    for (const LockWaits::Edge& e : waits[s].edges) {
      auto a = owner.find({s, e.waiter});
      auto b = owner.find({s, e.holder});
      if (a == owner.end() || b == owner.end() || !exact[a->second]) continue;
      const Node& w = nodes[a->second];
      if (w.store != s || w.thread != e.waiter || w.query != e.waiter_query) continue;
      add_edge(a->second, b->second, s, e.holder);
    }
  }
  // Presumed edges, for waits too new for the snapshot (InnoDB refreshes it at most every
  // 100 ms): T, waiting on store s, may be waiting for any waiting transaction U that waits on
  // ANOTHER store and has a connection on s. Every cross-shard cycle of two (and every one
  // whose consecutive members wait on different stores) is among these at once; longer local
  // chains are found exactly a snapshot later. The price is an occasional cycle that is not
  // one: two transactions that wait at once, each on a store where the other has a branch.
  // Its youngest then retries for nothing — never a wrong commit, and never the oldest.
  // A wait is presumed only while it is young (kPresumeForMs of publication): long enough for
  // the snapshot to show it. After that only the snapshot speaks for it — an old wait that the
  // snapshot still does not show (the cache kept old by another client) would otherwise be
  // presumed forever, and a stuck waiter (behind a crashed coordinator's prepared branch, say)
  // would make every retry of a younger Run that waits behind it look like a cycle.
  for (size_t a = 0; a < nodes.size(); ++a) {
    if (exact[a] || nodes[a].published_for_ms > kPresumeForMs) continue;
    if (disproved != nullptr && disproved->count({nodes[a].txn, nodes[a].store}) != 0) continue;
    for (size_t b = 0; b < nodes.size(); ++b) {
      if (b == a || nodes[b].store == nodes[a].store) continue;
      if (stores_of[b].count(nodes[a].store)) add_edge(a, b, nodes[a].store, 0);
    }
  }
  std::vector<bool> removed(nodes.size(), false);
  for (;;) {
    std::vector<size_t> cycle = FindCycle(adj, removed);
    if (cycle.empty()) break;
    size_t victim = cycle[0];
    for (size_t v : cycle) {
      if (std::tie(nodes[v].priority_ms, nodes[v].txn) >
          std::tie(nodes[victim].priority_ms, nodes[victim].txn)) {
        victim = v;
      }
    }
    std::set<size_t> stores;
    bool presumed = false;
    for (size_t i = 0; i < cycle.size(); ++i) {
      const std::pair<size_t, size_t> e{cycle[i], cycle[(i + 1) % cycle.size()]};
      const auto& es = edge_stores[e];
      stores.insert(es.begin(), es.end());
      presumed = presumed || !exact_edges.count(e);
    }
    const Node& v = nodes[victim];
    DeadlockVictim dv;
    dv.store = v.store;
    dv.thread = v.thread;
    dv.query = v.query;
    dv.report.victim = v.txn;
    dv.report.shard = static_cast<uint32_t>(v.store);
    dv.report.waited_ms = std::max<int64_t>(0, now_ms - v.since_ms);
    dv.published_for_ms = v.published_for_ms;
    dv.presumed = presumed;
    for (size_t c : cycle) {
      if (c == victim) continue;
      dv.others.push_back({nodes[c].store, nodes[c].thread, nodes[c].query});
      dv.others_txn.push_back(nodes[c].txn);
    }
    dv.report.cross_shard = stores.size() > 1;
    dv.report.cycle.push_back(v.txn);
    for (size_t c : cycle) {
      if (c != victim) dv.report.cycle.push_back(nodes[c].txn);
    }
    g.victims.push_back(std::move(dv));
    removed[victim] = true;  // its wait is gone once interrupted; look for the next cycle
  }
  return g;
}

DeadlockReport DetectDeadlocks(std::span<Participant* const> participants, Env* env,
                               const DeadlockOptions& options, bool force, bool break_cycles,
                               DetectorState* state) {
  DeadlockReport report;
  const size_t n = participants.size();

  const int64_t now = env->NowMs();
  std::vector<std::string> ids(n);
  std::vector<std::vector<LocalWait>> mine(n);
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    ids[i] = participants[i]->store_id();
    if (ids[i].empty()) continue;
    mine[i] = participants[i]->LongStatements(now - options.check_after_ms);
    any = any || !mine[i].empty();
  }
  if (!any && !force) return report;
  report.ran = true;
  std::vector<LockWaits> waits(n);
  std::vector<Status> read(n);
  env->ForEach(n, [&](size_t i) {
    if (!ids[i].empty()) read[i] = participants[i]->ReadLockWaits(mine[i], &waits[i]);
  });
  for (size_t i = 0; i < n; ++i) {
    if (!read[i].ok()) {
      report.errors.push_back(read[i].Annotate(participants[i]->name()));
      waits[i] = {};
    }
  }
  std::set<RunWait> disproved;
  if (state != nullptr) {
    // Still waiting in the same statement 30 ms (three passes) after the cycle was broken at
    // someone else: that member did not wait for the victim (see DetectorState).
    std::set<WaitKey> live;
    std::set<RunWait> live_runs;
    for (size_t i = 0; i < n; ++i) {
      for (const LockWaits::Published& p : waits[i].published) {
        live.insert({i, p.thread, p.query});
        live_runs.insert({p.txn, i});
      }
    }
    const int64_t t = env->NowMs();
    for (auto it = state->suspects.begin(); it != state->suspects.end();) {
      if (!live.count(it->first)) {
        it = state->suspects.erase(it);
      } else if (t - it->second.first >= 30) {
        state->disproved[{it->second.second, std::get<0>(it->first)}] = t + 2'000;
        it = state->suspects.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = state->disproved.begin(); it != state->disproved.end();) {
      if (live_runs.count(it->first)) it->second = std::max(it->second, t + 2'000);
      if (it->second < t) {
        it = state->disproved.erase(it);
      } else {
        disproved.insert(it->first);
        ++it;
      }
    }
  }
  WaitGraph g = AnalyzeWaits(ids, waits, env->NowMs(), state != nullptr ? &disproved : nullptr);
  for (WaitEdge& e : g.edges) e.shard = participants[e.shard]->index();
  report.waits = std::move(g.edges);
  if (!break_cycles) return report;
  for (DeadlockVictim& v : g.victims) {
    // Every process whose transactions are in a cycle sees it. The victim's own process breaks
    // it (one interrupt, counted once); another process steps in only when the victim has
    // waited well past that (its process is stalled, or cannot reach this store).
    const bool own = std::any_of(mine[v.store].begin(), mine[v.store].end(),
                                 [&](const LocalWait& w) { return w.thread == v.thread; });
    // By the store's clock: processes' clocks differ.
    if (!own && v.published_for_ms < kForeignVictimGraceMs) continue;

    Status s = participants[v.store]->BreakWait(v.thread, v.query);
    v.report.shard = participants[v.store]->index();
    if (s.ok()) {
      if (state != nullptr && v.presumed) {
        for (size_t i = 0; i < v.others.size(); ++i) {
          state->suspects.emplace(v.others[i], std::make_pair(env->NowMs(), v.others_txn[i]));
        }
      }
      report.broken.push_back(std::move(v.report));
    } else if (!s.Is(Code::kNotFound)) {  // kNotFound: it stopped waiting meanwhile
      report.errors.push_back(s.Annotate(participants[v.store]->name()));
    }
  }
  return report;
}

}  // namespace seigo::core
