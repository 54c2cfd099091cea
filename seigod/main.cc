// seigod: seigo as an HTTP/JSON service (doc/seigod.md).
//
//   seigod --config /etc/seigo/seigod.toml
//
// Exit codes: 0 stopped by SIGTERM/SIGINT after draining; 1 could not start; 2 usage.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "seigod/config.h"
#include "seigod/service.h"

namespace {

using seigod::Reply;
using seigod::Service;

struct Route {
  const char* method;
  std::regex pattern;
  const char* name;  // the metrics label
  std::function<Reply(const httplib::Request&, const std::smatch&)> handle;
};

void Send(const Reply& r, httplib::Response* res) {
  res->status = r.status;
  if (r.retry_after_s > 0) res->set_header("Retry-After", std::to_string(r.retry_after_s));
  res->set_header("Cache-Control", "no-store");
  res->set_content(r.body, r.content_type.c_str());
}

int Usage(const char* why) {
  if (why) std::fprintf(stderr, "seigod: %s\n", why);
  std::fprintf(stderr,
               "usage: seigod --config FILE [--check-config]\n"
               "  Serves seigo transactions over HTTP (doc/seigod.md).\n"
               "  --check-config  read and check FILE, print a summary, exit (0 ok, 1 bad)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check-config") {
      check_only = true;
    } else if (a == "-h" || a == "--help") {
      Usage(nullptr);
      return 0;
    } else {
      return Usage(("unknown argument '" + a + "'").c_str());
    }
  }
  if (config_path.empty()) return Usage("--config is required");
  seigo::Result<seigod::Config> config = seigod::LoadConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "seigod: %s\n", config.status().message().c_str());
    return 1;
  }
  for (const std::string& w : config->warnings) std::fprintf(stderr, "seigod: warning: %s\n", w.c_str());
  if (check_only) {
    std::printf("%s: %zu shard(s), %zu redis instance(s), %s, %zu statement(s), listen %s:%d\n",
                config_path.c_str(), config->shard_urls.size(), config->redis_urls.size(),
                config->amqp_url.empty() ? "no broker" : config->redacted_amqp.c_str(),
                config->statements.size(), config->host.c_str(), config->port);
    return 0;
  }

  // SIGTERM/SIGINT go to one thread (sigwait below): block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  httplib::Server http;
  // httplib's default sets SO_REUSEPORT, which lets a second seigod bind the same port and
  // take half the connections (a session lives in one process): only SO_REUSEADDR, so that a
  // port in use is an error at start (exit 1).
  socket_t listener = INVALID_SOCKET;
  http.set_socket_options([&listener](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listener = sock;
  });
  // Before the bind: the listening socket's options are what accepted sockets get. Without
  // TCP_NODELAY, a keep-alive response (headers, then body: two writes) waits ~40 ms for the
  // client's delayed ACK.
  http.set_tcp_nodelay(true);
  if (!http.bind_to_port(config->host, config->port)) {
    std::fprintf(stderr, "seigod: cannot listen on %s:%d: %s\n", config->host.c_str(),
                 config->port, std::strerror(errno));
    return 1;
  }
  // Debian's libcpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled
  // into the library): 32 clients connecting at once overflowed it and some of their first
  // requests failed with a reset (found by the benchmark). listen() again raises it.
  if (listener != INVALID_SOCKET && ::listen(listener, SOMAXCONN) != 0) {
    std::fprintf(stderr, "seigod: warning: cannot raise the listen backlog: %s\n",
                 std::strerror(errno));
  }
  seigo::Result<std::unique_ptr<Service>> started = Service::Start(*config);
  if (!started.ok()) {
    std::fprintf(stderr, "seigod: cannot start: %s\n", started.status().ToString().c_str());
    return 1;
  }
  Service* svc = started->get();

  using M = std::smatch;
  using Req = httplib::Request;
  std::vector<Route> routes;
  auto add = [&](const char* method, const char* pattern, const char* name, auto fn) {
    routes.push_back({method, std::regex(pattern), name, fn});
  };
  add("POST", "/v1/transactions", "/v1/transactions",
      [&](const Req& q, const M&) { return svc->Transact(q.body); });
  // httplib has percent-decoded req.path already: a key may hold any byte, '/' included.
  add("GET", "/v1/transactions/(.+)", "/v1/transactions/{key}",
      [&](const Req&, const M& m) { return svc->GetRecord(m[1]); });
  add("POST", "/v1/sessions", "/v1/sessions",
      [&](const Req& q, const M&) { return svc->BeginSession(q.body); });
  add("POST", "/v1/sessions/([^/]+)/steps", "/v1/sessions/{id}/steps",
      [&](const Req& q, const M& m) { return svc->SessionSteps(m[1], q.body); });
  add("POST", "/v1/sessions/([^/]+)/commit", "/v1/sessions/{id}/commit",
      [&](const Req&, const M& m) { return svc->EndSession(m[1], true); });
  add("POST", "/v1/sessions/([^/]+)/abort", "/v1/sessions/{id}/abort",
      [&](const Req&, const M& m) { return svc->EndSession(m[1], false); });
  add("GET", "/v1/in-doubt", "/v1/in-doubt", [&](const Req&, const M&) { return svc->InDoubt(); });
  add("POST", "/v1/in-doubt/([^/]+)/resolve", "/v1/in-doubt/{gid}/resolve",
      [&](const Req& q, const M& m) {
        return svc->Resolve(m[1], q.get_header_value("Authorization"));
      });
  add("GET", "/v1/status", "/v1/status", [&](const Req&, const M&) { return svc->GetStatus(); });
  add("GET", "/metrics", "/metrics", [&](const Req&, const M&) { return svc->GetMetrics(); });
  add("GET", "/healthz", "/healthz", [&](const Req&, const M&) {
    return Reply{200, "{\"ok\":true}", "application/json", 0};
  });
  add("GET", "/readyz", "/readyz", [&](const Req&, const M&) { return svc->Ready(); });
  add("GET", "/", "/", [&](const Req&, const M&) { return svc->Page(); });

  auto dispatch = [&](const httplib::Request& req, httplib::Response& res) {
    // A POST carries JSON: a browser's "simple" cross-site POST (text/plain, a form) is
    // refused before anything runs. An empty body needs no type.
    if (req.method == "POST" && !(req.body.empty() && !req.has_header("Content-Type"))) {
      std::string type = req.get_header_value("Content-Type");
      for (char& ch : type) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (type.rfind("application/json", 0) != 0) {
        Reply out = svc->Error(415, "unsupported_media_type",
                               "a POST must be Content-Type: application/json");
        svc->CountRequest("other", out.status);
        Send(out, &res);
        return;
      }
    }
    bool path_known = false;
    for (const Route& r : routes) {
      std::smatch m;
      if (!std::regex_match(req.path, m, r.pattern)) continue;
      path_known = true;
      if (req.method != r.method) continue;
      Reply out = r.handle(req, m);
      svc->CountRequest(r.name, out.status);
      Send(out, &res);
      return;
    }
    Reply out = path_known ? svc->Error(405, "method_not_allowed",
                                        req.method + " is not allowed on " + req.path.substr(0, 100))
                           : svc->Error(404, "not_found", "no such path: " + req.path.substr(0, 100));
    svc->CountRequest("other", out.status);
    Send(out, &res);
  };
  for (const char* m : {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
    std::string method = m;
    if (method == "GET") http.Get(".*", dispatch);
    else if (method == "POST") http.Post(".*", dispatch);
    else if (method == "PUT") http.Put(".*", dispatch);
    else if (method == "DELETE") http.Delete(".*", dispatch);
    else if (method == "PATCH") http.Patch(".*", dispatch);
    else http.Options(".*", dispatch);
  }
  // Errors httplib answers by itself (413 over max_body_bytes, 400 unparsable HTTP) get a JSON
  // body too.
  http.set_error_handler([&](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    Reply out = res.status == 413
                    ? svc->Error(413, "body_too_large",
                                 "the request body is larger than server.max_body_bytes (" +
                                     std::to_string(config->max_body_bytes) + ")")
                    : svc->Error(res.status, "bad_request", "the HTTP request was not understood");
    svc->CountRequest("other", out.status);
    Send(out, &res);
  });
  http.set_exception_handler([&](const httplib::Request&, httplib::Response& res,
                                 std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    svc->Log("internal error: " + what);
    Send(svc->Error(500, "internal", "internal error: " + what), &res);
  });
  http.set_payload_max_length(config->max_body_bytes);
  const int threads = config->threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_keep_alive_max_count(100'000);
  // Each open connection holds a worker thread (cpp-httplib's model): idle keep-alive
  // connections are closed soon, so that they cannot starve new clients of threads.
  http.set_keep_alive_timeout(5);

  std::atomic<bool> listen_returned{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (listen_returned) return;  // main's own wake-up: the listener already ended
    svc->Log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
             ": stopping (new transactions get 503 stopping; finishing the ones started)");
    svc->BeginStop();
    if (config->stop_grace_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(config->stop_grace_ms));
    }
    // A signal that came while the service was starting must not be lost: stop() does
    // nothing until the listener runs.
    while (!http.is_running() && !listen_returned) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    http.stop();
  });
  std::string stores = std::to_string(config->shard_urls.size()) + " shard(s)";
  if (!config->redis_urls.empty()) stores += ", " + std::to_string(config->redis_urls.size()) + " redis";
  if (!config->amqp_url.empty()) stores += ", broker " + config->redacted_amqp;
  svc->Log("listening on http://" + config->host + ":" + std::to_string(config->port) + " (" +
           stores + ", " + std::to_string(config->statements.size()) + " statement(s))");
  http.listen_after_bind();
  listen_returned = true;
  pthread_kill(signals.native_handle(), SIGTERM);  // wakes sigwait if no signal came
  signals.join();
  svc->Stop();
  started->reset();  // drains phase 2 and the relay, closes the stores
  std::fprintf(stderr, "seigod: stopped\n");
  return 0;
}
