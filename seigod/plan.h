// A declarative transaction (doc/seigod.md, "Transactions"): the JSON a client posts, checked
// and resolved into steps on stores, and run inside one seigo transaction.
//
// Parsing is pure (no store is touched): every bad input is found before anything runs, and
// answered with a 400 that names the step and the field.
#ifndef SEIGOD_PLAN_H_
#define SEIGOD_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "seigo/kv.h"
#include "seigo/message.h"
#include "seigo/participant.h"
#include "seigo/shard_map.h"
#include "seigo/status.h"
#include "seigo/transaction.h"
#include "seigod/config.h"

namespace seigod {

using json = nlohmann::json;

struct Step {
  enum class Kind { kSql, kKv, kPublish };
  Kind kind = Kind::kSql;
  size_t index = 0;       // position in the request
  std::string name;       // the client's label, echoed
  uint32_t store = 0;     // shard index (kSql) or participant index (kKv)
  // kSql
  std::string statement;  // the catalog name ("" for raw SQL)
  std::string sql;
  std::vector<seigo::Value> params;
  std::optional<uint64_t> expect_rows;
  std::vector<std::pair<std::string, json>> expect;  // column -> expected value
  std::string reason;
  bool ret = false;
  // kKv
  seigo::KvOp op;
  // kPublish
  seigo::Message msg;
};

struct Plan {
  std::vector<Step> steps;          // request order
  std::vector<size_t> order;        // execution order: indexes into steps (canonical)
  std::string idempotency_key;      // "" = none
  std::string body_hash;            // of the request without the key (32 hex digits)
  int64_t timeout_ms = 0;
  bool read_only = false;
};

// A parse failure: what is wrong, and the step it is in (-1 = the request as a whole).
struct PlanError {
  std::string message;
  int step = -1;
};

struct PlanContext {
  const Config* config = nullptr;
  const seigo::ShardMap* shards = nullptr;
  size_t redis_instances = 0;
  bool have_broker = false;
  bool session_read_only = false;  // interactive steps: the session's RunOptions::read_only
};

// JSON in and out, safely: a body nested deeper than kMaxJsonDepth is refused before it is
// parsed (nlohmann's copy and dump recurse: a deep body would overflow a worker's stack), and
// Dump never throws on bytes that are not UTF-8 (they become U+FFFD; cells and Redis values
// that are not UTF-8 are sent as {"base64": ...} by TextOrBase64).
inline constexpr int kMaxJsonDepth = 32;
bool ParseJson(const std::string& text, json* out, std::string* error);
std::string Dump(const json& j);
json TextOrBase64(const std::string& bytes);

// Parses a POST /v1/transactions body (`declarative`: steps are put in canonical order) or an
// interactive session's steps request (kept in request order; no idempotency key, no timeout).
std::optional<PlanError> ParsePlan(const json& body, const PlanContext& ctx, bool declarative,
                                   Plan* out);

// Runs the steps in plan.order on `tx`. results[i] is step i's result (request order). On a
// failure returns it, with *failed_step = the step's request index.
seigo::Status RunSteps(seigo::Tx& tx, const Plan& plan, std::vector<json>* results,
                       int* failed_step);

// 32 hex digits identifying `text` (two independent 64-bit FNV-1a hashes): tells a resent
// request from a different one under the same idempotency key.
std::string BodyHash(const std::string& text);

}  // namespace seigod

#endif  // SEIGOD_PLAN_H_
