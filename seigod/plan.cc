// Declarative transactions: parsing and running (doc/seigod.md, "Transactions").
#include "seigod/plan.h"

#include <algorithm>
#include <set>

namespace seigod {
namespace {

using seigo::Code;
using seigo::KvOp;
using seigo::Status;
using seigo::Value;

const char* TypeName(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_float: return "a fractional number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

class Parser {
 public:
  Parser(const PlanContext& ctx, bool declarative) : ctx_(ctx), declarative_(declarative) {}

  std::optional<PlanError> Parse(const json& body, Plan* plan) {
    if (!body.is_object()) return Err("the request must be a JSON object");
    static const std::set<std::string> kDeclarative = {"steps", "idempotency_key", "timeout_ms",
                                                       "read_only"};
    static const std::set<std::string> kInteractive = {"steps"};
    for (const auto& [k, v] : body.items()) {
      if (!(declarative_ ? kDeclarative : kInteractive).count(k)) {
        return Err("unknown field '" + Clip(k) + "'");
      }
    }
    if (declarative_) {
      if (auto e = Options(body, plan)) return e;
    } else {
      plan->read_only = ctx_.session_read_only;
    }
    auto it = body.find("steps");
    if (it == body.end() || !it->is_array()) return Err("'steps' must be an array of steps");
    if (it->empty()) return Err("'steps' is empty: a transaction needs at least one step");
    if (it->size() > ctx_.config->max_steps) {
      return Err("too many steps: " + std::to_string(it->size()) + " (at most " +
                 std::to_string(ctx_.config->max_steps) + ")");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      Step s;
      s.index = i;
      step_ = static_cast<int>(i);
      if (auto e = ParseStep((*it)[i], plan->read_only, &s)) return e;
      plan->steps.push_back(std::move(s));
    }
    step_ = -1;
    plan->order.resize(plan->steps.size());
    for (size_t i = 0; i < plan->order.size(); ++i) plan->order[i] = i;
    if (declarative_) {
      // Canonical order: stores by index (SQL shards, then key-value instances), request order
      // within a store; messages last. Two declarative transactions thus lock their stores in
      // the same order and cannot deadlock across stores.
      auto rank = [&](size_t i) {
        const Step& s = plan->steps[i];
        return s.kind == Step::Kind::kPublish ? UINT64_MAX : uint64_t{s.store};
      };
      std::stable_sort(plan->order.begin(), plan->order.end(),
                       [&](size_t a, size_t b) { return rank(a) < rank(b); });
    }
    return std::nullopt;
  }

 private:
  std::optional<PlanError> Err(std::string m) const { return PlanError{std::move(m), step_}; }
  static std::string Clip(const std::string& s) { return s.size() > 64 ? s.substr(0, 64) + "..." : s; }

  std::optional<PlanError> Options(const json& body, Plan* plan) {
    plan->timeout_ms = ctx_.config->default_timeout_ms;
    if (auto t = body.find("timeout_ms"); t != body.end()) {
      if (!t->is_number_integer() || t->get<int64_t>() <= 0) {
        return Err("'timeout_ms' must be a positive integer");
      }
      plan->timeout_ms = std::min(t->get<int64_t>(), ctx_.config->max_timeout_ms);
    }
    if (auto r = body.find("read_only"); r != body.end()) {
      if (!r->is_boolean()) return Err("'read_only' must be true or false");
      plan->read_only = r->get<bool>();
    }
    if (auto k = body.find("idempotency_key"); k != body.end()) {
      if (!k->is_string() || k->get_ref<const std::string&>().empty() ||
          k->get_ref<const std::string&>().size() > 200) {
        return Err("'idempotency_key' must be a string of 1 to 200 bytes");
      }
      if (plan->read_only) {
        return Err("'idempotency_key' with 'read_only': a read-only transaction changes nothing "
                   "and needs no key");
      }
      plan->idempotency_key = k->get<std::string>();
    }
    // The hash covers what the transaction does (steps, read_only), not how long the client
    // lets it take: a resend with the time that remains is the same request.
    json what = {{"steps", body.value("steps", json())}, {"read_only", plan->read_only}};
    plan->body_hash = BodyHash(Dump(what));
    return std::nullopt;
  }

  std::optional<PlanError> Fields(const json& step, const std::set<std::string>& known,
                                  const char* kind) {
    for (const auto& [k, v] : step.items()) {
      if (!known.count(k)) return Err("unknown field '" + Clip(k) + "' in a " + kind + " step");
    }
    return std::nullopt;
  }

  std::optional<PlanError> String(const json& step, const char* field, std::string* out,
                                  bool required) {
    auto it = step.find(field);
    if (it == step.end()) {
      if (required) return Err(std::string("'") + field + "' is required");
      return std::nullopt;
    }
    if (!it->is_string()) {
      return Err(std::string("'") + field + "' must be a string, not " + TypeName(*it));
    }
    *out = it->get<std::string>();
    return std::nullopt;
  }

  std::optional<PlanError> Integer(const json& step, const char* field, int64_t* out,
                                   bool required) {
    auto it = step.find(field);
    if (it == step.end()) {
      if (required) return Err(std::string("'") + field + "' is required");
      return std::nullopt;
    }
    if (!it->is_number_integer() ||
        (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX})) {
      return Err(std::string("'") + field + "' must be a 64-bit integer, not " + TypeName(*it));
    }
    *out = it->get<int64_t>();
    return std::nullopt;
  }

  std::optional<PlanError> ParseStep(const json& j, bool read_only, Step* s) {
    if (!j.is_object()) return Err("a step must be a JSON object");
    if (auto n = j.find("name"); n != j.end()) {
      if (!n->is_string() || n->get_ref<const std::string&>().size() > 200) {
        return Err("'name' must be a string of at most 200 bytes");
      }
      s->name = n->get<std::string>();
    }
    int kinds = j.contains("sql") + j.contains("raw_sql") + j.contains("redis") +
                j.contains("publish");
    if (kinds != 1) {
      return Err("a step must have exactly one of 'sql', 'raw_sql', 'redis', 'publish'");
    }
    if (j.contains("redis")) return KvStep(j, read_only, s);
    if (j.contains("publish")) return PublishStep(j, read_only, s);
    return SqlStep(j, s);
  }

  std::optional<PlanError> SqlStep(const json& j, Step* s) {
    s->kind = Step::Kind::kSql;
    if (auto e = Fields(j, {"sql", "raw_sql", "key", "shard", "params", "expect_rows", "expect",
                            "reason", "return", "name"},
                        "sql")) {
      return e;
    }
    if (j.contains("sql")) {
      if (auto e = String(j, "sql", &s->statement, true)) return e;
      auto it = ctx_.config->statements.find(s->statement);
      if (it == ctx_.config->statements.end()) {
        return Err("unknown statement '" + Clip(s->statement) + "' (not in the catalog)");
      }
      s->sql = it->second;
    } else {
      if (!ctx_.config->allow_raw_sql) {
        return Err("'raw_sql' is not enabled on this server (server.allow_raw_sql); name a "
                   "statement of the catalog with 'sql'");
      }
      if (auto e = String(j, "raw_sql", &s->sql, true)) return e;
      if (s->sql.empty()) return Err("'raw_sql' is empty");
    }
    bool has_key = j.contains("key"), has_shard = j.contains("shard");
    if (has_key == has_shard) return Err("a sql step needs exactly one of 'key' and 'shard'");
    if (has_key) {
      const json& k = j["key"];
      if (k.is_number_unsigned()) {
        s->store = ctx_.shards->ShardFor(k.get<uint64_t>());
      } else if (k.is_number_integer()) {
        s->store = ctx_.shards->ShardFor(k.get<int64_t>());
      } else if (k.is_string()) {
        s->store = ctx_.shards->ShardForString(k.get<std::string>());
      } else {
        return Err(std::string("unknown shard key type: 'key' must be an integer or a string, "
                               "not ") + TypeName(k));
      }
    } else {
      int64_t shard = 0;
      if (auto e = Integer(j, "shard", &shard, true)) return e;
      if (shard < 0 || static_cast<size_t>(shard) >= ctx_.shards->size()) {
        return Err("'shard' " + std::to_string(shard) + " does not exist (there are " +
                   std::to_string(ctx_.shards->size()) + ")");
      }
      s->store = static_cast<uint32_t>(shard);
    }
    if (auto p = j.find("params"); p != j.end()) {
      if (!p->is_array()) return Err("'params' must be an array");
      for (size_t i = 0; i < p->size(); ++i) {
        const json& v = (*p)[i];
        switch (v.type()) {
          case json::value_t::null: s->params.emplace_back(nullptr); break;
          case json::value_t::boolean: s->params.emplace_back(v.get<bool>()); break;
          case json::value_t::number_unsigned:
            s->params.emplace_back(static_cast<unsigned long long>(v.get<uint64_t>()));
            break;
          case json::value_t::number_integer:
            s->params.emplace_back(static_cast<long long>(v.get<int64_t>()));
            break;
          case json::value_t::number_float: s->params.emplace_back(v.get<double>()); break;
          case json::value_t::string: s->params.emplace_back(v.get<std::string>()); break;
          default:
            return Err("params[" + std::to_string(i) + "] is " + TypeName(v) +
                       ": parameters are null, booleans, numbers or strings");
        }
      }
    }
    if (j.contains("expect_rows")) {
      int64_t rows = 0;
      if (auto e = Integer(j, "expect_rows", &rows, true)) return e;
      if (rows < 0) return Err("'expect_rows' must not be negative");
      s->expect_rows = static_cast<uint64_t>(rows);
    }
    if (auto x = j.find("expect"); x != j.end()) {
      if (!x->is_object() || x->empty()) {
        return Err("'expect' must be a non-empty object: column -> expected value");
      }
      for (const auto& [col, v] : x->items()) {
        if (v.is_array() || v.is_object()) {
          return Err("expect['" + Clip(col) + "'] must be null, a boolean, a number or a string");
        }
        s->expect.emplace_back(col, v);
      }
    }
    if (auto e = String(j, "reason", &s->reason, false)) return e;
    if (auto r = j.find("return"); r != j.end()) {
      if (!r->is_boolean()) return Err("'return' must be true or false");
      s->ret = r->get<bool>();
    }
    return std::nullopt;
  }

  std::optional<PlanError> KvStep(const json& j, bool read_only, Step* s) {
    s->kind = Step::Kind::kKv;
    if (ctx_.redis_instances == 0) return Err("no Redis instances are configured ([redis])");
    if (auto e = Fields(j, {"redis", "key", "field", "member", "value", "score", "count", "delta",
                            "min", "max", "reason", "name"},
                        "redis")) {
      return e;
    }
    std::string kind;
    if (auto e = String(j, "redis", &kind, true)) return e;
    KvOp& op = s->op;
    struct KindInfo {
      KvOp::Kind kind;
      std::vector<const char*> needs;
    };
    static const std::vector<std::pair<std::string, KindInfo>> kKinds = {
        {"get", {KvOp::Kind::kGet, {}}},
        {"set", {KvOp::Kind::kSet, {"value"}}},
        {"del", {KvOp::Kind::kDel, {}}},
        {"hget", {KvOp::Kind::kHGet, {"field"}}},
        {"hset", {KvOp::Kind::kHSet, {"field", "value"}}},
        {"hdel", {KvOp::Kind::kHDel, {"field"}}},
        {"zscore", {KvOp::Kind::kZScore, {"member"}}},
        {"zadd", {KvOp::Kind::kZAdd, {"member", "score"}}},
        {"zrem", {KvOp::Kind::kZRem, {"member"}}},
        {"ztop", {KvOp::Kind::kZTop, {"count"}}},
        {"incr", {KvOp::Kind::kIncr, {"delta", "min", "max"}}},
    };
    const KindInfo* info = nullptr;
    for (const auto& [name, ki] : kKinds) {
      if (name == kind) info = &ki;
    }
    if (info == nullptr) {
      return Err("unknown redis operation '" + Clip(kind) +
                 "' (get, set, del, hget, hset, hdel, zscore, zadd, zrem, ztop, incr)");
    }
    op.kind = info->kind;
    if (auto e = String(j, "key", &op.key, true)) return e;
    if (op.key.empty()) return Err("'key' is empty");
    std::set<std::string> allowed = {"redis", "key", "name"};
    for (const char* n : info->needs) allowed.insert(n);
    if (op.kind == KvOp::Kind::kIncr) allowed.insert("reason");
    for (const auto& [k, v] : j.items()) {
      if (!allowed.count(k)) return Err("'" + Clip(k) + "' does not apply to redis " + kind);
    }
    if (read_only && !seigo::KvOpReads(op.kind)) {
      return Err("redis " + kind + " writes: not allowed in a read-only transaction");
    }
    if (j.contains("field")) {
      if (auto e = String(j, "field", &op.field, true)) return e;
    }
    if (j.contains("member")) {
      if (auto e = String(j, "member", &op.field, true)) return e;
    }
    if (j.contains("value")) {
      if (auto e = String(j, "value", &op.value, true)) return e;
    }
    if (j.contains("score")) {
      if (!j["score"].is_number()) return Err("'score' must be a number");
      op.score = j["score"].get<double>();
    }
    if (j.contains("count")) {
      if (auto e = Integer(j, "count", &op.count, true)) return e;
      if (op.count < 1 || op.count > 10'000) return Err("'count' must be in [1, 10000]");
    }
    if (op.kind == KvOp::Kind::kIncr) {
      if (auto e = Integer(j, "delta", &op.delta, true)) return e;
      if (auto e = Integer(j, "min", &op.min, true)) return e;
      if (auto e = Integer(j, "max", &op.max, true)) return e;
      if (op.min > op.max) return Err("'min' is above 'max'");
      if (auto e = String(j, "reason", &op.reason, false)) return e;
    }
    s->store = static_cast<uint32_t>(
        ctx_.shards->size() +
        seigo::ShardMap::KvInstanceFor(op.key, static_cast<uint32_t>(ctx_.redis_instances)));
    return std::nullopt;
  }

  std::optional<PlanError> PublishStep(const json& j, bool read_only, Step* s) {
    s->kind = Step::Kind::kPublish;
    if (auto e = Fields(j, {"publish", "name"}, "publish")) return e;
    if (!ctx_.have_broker) return Err("no broker is configured ([amqp]): nothing can be published");
    if (read_only) return Err("publish: not allowed in a read-only transaction");
    const json& p = j["publish"];
    if (!p.is_object()) return Err("'publish' must be an object");
    if (auto e = Fields(p, {"exchange", "routing_key", "body", "content_type", "type", "headers"},
                        "publish")) {
      return e;
    }
    if (auto e = String(p, "exchange", &s->msg.exchange, false)) return e;
    if (auto e = String(p, "routing_key", &s->msg.routing_key, true)) return e;
    if (auto e = String(p, "body", &s->msg.body, true)) return e;
    if (auto e = String(p, "content_type", &s->msg.content_type, false)) return e;
    if (auto e = String(p, "type", &s->msg.type, false)) return e;
    if (auto h = p.find("headers"); h != p.end()) {
      if (!h->is_object()) return Err("'headers' must be an object of strings");
      for (const auto& [k, v] : h->items()) {
        if (!v.is_string()) return Err("header '" + Clip(k) + "' must be a string");
        s->msg.headers.emplace_back(k, v.get<std::string>());
      }
    }
    if (s->msg.body.size() > seigo::kMaxMessageBodyBytes) {
      return Err("the message body is larger than " +
                 std::to_string(seigo::kMaxMessageBodyBytes) + " bytes");
    }
    return std::nullopt;
  }

  const PlanContext& ctx_;
  bool declarative_;
  int step_ = -1;
};

// "expected X, got Y" for one column of an `expect` guard, or "" if it holds.
std::string CompareCell(const std::optional<std::string>& cell, const json& want) {
  auto show = [&]() {
    if (!cell) return std::string("NULL");
    std::string q(1, '\'');
    q.append(*cell, 0, std::min<size_t>(cell->size(), 100));
    q.push_back('\'');
    return q;
  };
  if (want.is_null()) return cell ? "expected NULL, got " + show() : "";
  if (!cell) return "expected " + Dump(want) + ", got NULL";
  bool equal = false;
  if (want.is_string()) {
    equal = *cell == want.get<std::string>();
  } else if (want.is_boolean()) {
    bool b = false;
    equal = seigo::detail::ParseCell(*cell, &b).ok() && b == want.get<bool>();
  } else if (want.is_number_unsigned()) {
    uint64_t u = 0;
    equal = seigo::detail::ParseCell(*cell, &u).ok() && u == want.get<uint64_t>();
  } else if (want.is_number_integer()) {
    int64_t i = 0;
    equal = seigo::detail::ParseCell(*cell, &i).ok() && i == want.get<int64_t>();
  } else if (want.is_number_float()) {
    double d = 0;
    equal = seigo::detail::ParseCell(*cell, &d).ok() && d == want.get<double>();
  }
  return equal ? "" : "expected " + Dump(want) + ", got " + show();
}

json Cell(const std::optional<std::string>& c) { return c ? TextOrBase64(*c) : json(nullptr); }

// What the rows a request returns may add up to (cells' bytes): the response, and the
// idempotency record that holds it, stay well inside MEDIUMBLOB and max_allowed_packet (16 MiB).
constexpr size_t kMaxResultBytes = 8 << 20;

Status RunSql(seigo::Tx& tx, const Step& s, json* out, size_t* result_bytes) {
  std::span<const Value> params(s.params);
  seigo::Result<seigo::QueryResult> r = tx.ExecOn(s.store, s.sql, params);
  if (!r.ok()) return r.status();
  auto guard = [&](const std::string& what) {
    std::string m = s.reason.empty() ? std::string("guard failed") : s.reason;
    return tx.Fail(Status(Code::kGuardFailed, m + " (" + what + ")")
                       .WithShard(static_cast<int>(s.store)));
  };
  if (s.expect_rows && r->affected_rows != *s.expect_rows) {
    return guard("expected " + std::to_string(*s.expect_rows) + " row(s), got " +
                 std::to_string(r->affected_rows));
  }
  if (!s.expect.empty()) {
    if (r->rows.empty()) return guard("expected a row, got none");
    for (const auto& [col, want] : s.expect) {
      seigo::Result<size_t> c = r->Column(col);
      if (!c.ok()) {
        return tx.Fail(Status::InvalidArgument("'expect' names column '" + col +
                                               "', which the statement does not return"));
      }
      std::string diff = CompareCell(r->rows[0][*c], want);
      if (!diff.empty()) return guard(col + ": " + diff);
    }
  }
  (*out)["affected_rows"] = r->affected_rows;
  if (r->last_insert_id != 0) (*out)["last_insert_id"] = r->last_insert_id;
  if (s.ret) {
    for (const auto& row : r->rows) {
      for (const auto& c : row) *result_bytes += (c ? c->size() : 0) + 8;
    }
    if (*result_bytes > kMaxResultBytes) {
      return tx.Fail(Status::InvalidArgument(
          "the rows returned add up to more than " + std::to_string(kMaxResultBytes >> 20) +
          " MiB: return fewer rows or columns (or page with LIMIT)"));
    }
    (*out)["columns"] = r->columns;
    json rows = json::array();
    for (const auto& row : r->rows) {
      json jr = json::array();
      for (const auto& c : row) jr.push_back(Cell(c));
      rows.push_back(std::move(jr));
    }
    (*out)["rows"] = std::move(rows);
  }
  return Status::OK();
}

Status RunKv(seigo::Tx& tx, const Step& s, json* out) {
  seigo::Result<seigo::KvReply> r = tx.KvOn(s.store, s.op);
  if (!r.ok()) return r.status();
  if (s.op.kind == KvOp::Kind::kZTop) {
    json m = json::array();
    for (const auto& sm : r->members) {
      m.push_back({{"member", TextOrBase64(sm.member)}, {"score", sm.score}});
    }
    (*out)["members"] = std::move(m);
  } else if (seigo::KvOpReads(s.op.kind)) {
    (*out)["value"] = Cell(r->value);
  }
  return Status::OK();
}

}  // namespace

std::optional<PlanError> ParsePlan(const json& body, const PlanContext& ctx, bool declarative,
                                   Plan* out) {
  return Parser(ctx, declarative).Parse(body, out);
}

Status RunSteps(seigo::Tx& tx, const Plan& plan, std::vector<json>* results, int* failed_step) {
  results->assign(plan.steps.size(), json::object());
  size_t result_bytes = 0;
  for (size_t i : plan.order) {
    const Step& s = plan.steps[i];
    json& out = (*results)[i];
    if (!s.name.empty()) out["name"] = s.name;
    Status st;
    switch (s.kind) {
      case Step::Kind::kSql: st = RunSql(tx, s, &out, &result_bytes); break;
      case Step::Kind::kKv: st = RunKv(tx, s, &out); break;
      case Step::Kind::kPublish: {
        seigo::Result<std::string> id = tx.Publish(s.msg);
        if (id.ok()) out["message_id"] = *id;
        st = id.status();
        break;
      }
    }
    if (!st.ok()) {
      *failed_step = static_cast<int>(i);
      return st;
    }
  }
  return Status::OK();
}

bool ParseJson(const std::string& text, json* out, std::string* error) {
  // Nesting depth outside strings, before the parser sees it.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        *error = "the JSON is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
        return false;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  *out = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    *error = "malformed JSON";
    return false;
  }
  return true;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {
bool ValidUtf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t k = 1; k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and beyond U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}
}  // namespace

json TextOrBase64(const std::string& bytes) {
  if (ValidUtf8(bytes)) return bytes;
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += b64[(v >> k) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    out += b64[(v >> 18) & 63];
    out += b64[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? b64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return json{{"base64", out}};
}

std::string BodyHash(const std::string& text) {
  uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
  for (unsigned char c : text) {
    a = (a ^ c) * 0x100000001b3ull;
    b = (b ^ c) * 0x100000001b3ull;
    b ^= b >> 29;
  }
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return buf;
}

}  // namespace seigod
