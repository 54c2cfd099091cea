// seigod's service: the HTTP endpoints' logic (doc/seigod.md) over one seigo::Coordinator, the
// monitor thread behind /metrics, /v1/status, /readyz and the hung-transaction report, and the
// interactive sessions. The HTTP glue (seigod/main.cc) only routes requests here.
#ifndef SEIGOD_SERVICE_H_
#define SEIGOD_SERVICE_H_

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "seigo/coordinator.h"
#include "seigod/config.h"

namespace seigod {

struct Reply {
  int status = 200;
  std::string body;  // JSON unless content_type says otherwise
  std::string content_type = "application/json";
  int64_t retry_after_s = 0;  // > 0: a Retry-After header
};

class Service {
 public:
  // Opens the coordinator (with its resolver and relay) and starts the monitor. Errors are
  // scrubbed of passwords.
  static seigo::Result<std::unique_ptr<Service>> Start(const Config& config);
  ~Service();  // Stop(), then closes the coordinator (drains phase 2 and the relay)

  Reply Transact(const std::string& body);
  Reply GetRecord(const std::string& key);
  Reply InDoubt();
  Reply Resolve(const std::string& gid, const std::string& authorization);
  Reply GetStatus();
  Reply GetMetrics();
  Reply Ready();
  Reply Page();
  Reply BeginSession(const std::string& body);
  Reply SessionSteps(const std::string& id, const std::string& body);
  Reply EndSession(const std::string& id, bool commit);
  // An error reply: {"error": {"code": code, "message": message}}.
  Reply Error(int status, const std::string& code, const std::string& message);

  // Counts one HTTP request for seigo_http_requests_total.
  void CountRequest(const std::string& route, int status);
  // Logs one line to stderr (scrubbed of secrets).
  void Log(const std::string& line);

  // SIGTERM's first step: /readyz fails and new transactions and sessions are answered 503
  // `stopping`; what is running goes on.
  void BeginStop();
  // Refuses new sessions, rolls back the open ones, waits for their threads, stops the
  // monitor. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace seigod

#endif  // SEIGOD_SERVICE_H_
