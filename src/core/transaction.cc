#include "seigo/transaction.h"

namespace seigo {

const char* TxStateName(TxState s) {
  switch (s) {
    case TxState::kCommitted: return "committed";
    case TxState::kAborted: return "aborted";
    case TxState::kGaveUp: return "gave_up";
    case TxState::kOutcomeUnknown: return "outcome_unknown";
  }
  return "unknown";
}

Status Tx::ExpectOn(uint32_t shard, uint64_t rows, std::string_view sql,
                    std::span<const Value> params, std::string_view reason) {
  Result<QueryResult> r = ExecOn(shard, sql, params);
  if (!r.ok()) return r.status();
  if (r->affected_rows == rows) return Status::OK();
  std::string m = reason.empty() ? std::string("guard failed") : std::string(reason);
  m += " (expected " + std::to_string(rows) + " row(s), got " +
       std::to_string(r->affected_rows) + ")";
  if (reason.empty()) m += ": " + std::string(sql.substr(0, 200));
  return Fail(Status(Code::kGuardFailed, std::move(m)).WithShard(static_cast<int>(shard))
                  .WithStatement(sql));
}

namespace {
KvOp Op(KvOp::Kind kind, std::string_view key) {
  KvOp op;
  op.kind = kind;
  op.key = std::string(key);
  return op;
}
}  // namespace

uint32_t KvTx::StoreFor(std::string_view key) const { return tx_->KvStoreFor(key); }

Result<std::optional<std::string>> KvTx::Get(std::string_view key) {
  Result<KvReply> r = tx_->KvOn(StoreFor(key), Op(KvOp::Kind::kGet, key));
  if (!r.ok()) return r.status();
  return std::move(r->value);
}

Result<std::optional<int64_t>> KvTx::GetInt(std::string_view key) {
  Result<std::optional<std::string>> v = Get(key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<int64_t>();
  int64_t n = 0;
  Status s = detail::ParseCell(**v, &n);
  if (!s.ok()) return Status::InvalidArgument("key " + std::string(key) + ": " + s.message());
  return std::optional<int64_t>(n);
}

Status KvTx::Set(std::string_view key, std::string_view value) {
  KvOp op = Op(KvOp::Kind::kSet, key);
  op.value = std::string(value);
  return tx_->KvOn(StoreFor(key), op).status();
}

Status KvTx::Del(std::string_view key) {
  return tx_->KvOn(StoreFor(key), Op(KvOp::Kind::kDel, key)).status();
}

Result<std::optional<std::string>> KvTx::HGet(std::string_view key, std::string_view field) {
  KvOp op = Op(KvOp::Kind::kHGet, key);
  op.field = std::string(field);
  Result<KvReply> r = tx_->KvOn(StoreFor(key), op);
  if (!r.ok()) return r.status();
  return std::move(r->value);
}

Status KvTx::HSet(std::string_view key, std::string_view field, std::string_view value) {
  KvOp op = Op(KvOp::Kind::kHSet, key);
  op.field = std::string(field);
  op.value = std::string(value);
  return tx_->KvOn(StoreFor(key), op).status();
}

Status KvTx::HDel(std::string_view key, std::string_view field) {
  KvOp op = Op(KvOp::Kind::kHDel, key);
  op.field = std::string(field);
  return tx_->KvOn(StoreFor(key), op).status();
}

Result<std::optional<double>> KvTx::ZScore(std::string_view key, std::string_view member) {
  KvOp op = Op(KvOp::Kind::kZScore, key);
  op.field = std::string(member);
  Result<KvReply> r = tx_->KvOn(StoreFor(key), op);
  if (!r.ok()) return r.status();
  if (!r->value) return std::optional<double>();
  double d = 0;
  Status s = detail::ParseCell(*r->value, &d);
  if (!s.ok()) return s;
  return std::optional<double>(d);
}

Status KvTx::ZAdd(std::string_view key, std::string_view member, double score) {
  KvOp op = Op(KvOp::Kind::kZAdd, key);
  op.field = std::string(member);
  op.score = score;
  return tx_->KvOn(StoreFor(key), op).status();
}

Status KvTx::ZRem(std::string_view key, std::string_view member) {
  KvOp op = Op(KvOp::Kind::kZRem, key);
  op.field = std::string(member);
  return tx_->KvOn(StoreFor(key), op).status();
}

Result<std::vector<ScoredMember>> KvTx::ZTop(std::string_view key, int64_t n) {
  KvOp op = Op(KvOp::Kind::kZTop, key);
  op.count = n;
  Result<KvReply> r = tx_->KvOn(StoreFor(key), op);
  if (!r.ok()) return r.status();
  return std::move(r->members);
}

Status KvTx::Incr(std::string_view key, int64_t delta, int64_t min, int64_t max,
                  std::string_view reason) {
  KvOp op = Op(KvOp::Kind::kIncr, key);
  op.delta = delta;
  op.min = min;
  op.max = max;
  op.reason = std::string(reason);
  return tx_->KvOn(StoreFor(key), op).status();
}

}  // namespace seigo
