// `seigo check`: a nagios / Icinga plugin for seigod (doc/cli.md, doc/seigod.md).
//
// Reads seigod's GET /v1/status and prints one status line with perfdata:
//   SEIGO CRITICAL - 3 in doubt (oldest 131.2 s), 1 hung, ... | in_doubt=3;5;20 ...
// Thresholds follow the Nagios plugin guidelines: "N" means OK while the value <= N, an alert
// when it is > N. A stale status (the monitor stuck) or an incomplete in-doubt scan is at least
// WARNING; a store down or `ready: false` is CRITICAL.
// Exit codes are nagios's, not the rest of the CLI's: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
// (seigod unreachable, an unreadable answer, bad thresholds).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace seigo::cli {
namespace {

using json = nlohmann::json;

enum Level { kOk = 0, kWarning = 1, kCritical = 2, kUnknown = 3 };
const char* LevelName(Level l) {
  switch (l) {
    case kOk: return "OK";
    case kWarning: return "WARNING";
    case kCritical: return "CRITICAL";
    default: return "UNKNOWN";
  }
}

struct Metric {
  const char* name;  // the threshold key and perfdata label
  const char* unit;  // perfdata unit ("" or "s")
  double warn, crit;
};

// "in_doubt=5,age=60" over the defaults. False (and *err) on a bad list.
bool ParseThresholds(const std::string& spec, std::vector<Metric>* metrics, bool crit,
                     std::string* err) {
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() : comma + 1;
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      *err = "threshold '" + item + "' is not name=value";
      return false;
    }
    std::string name = item.substr(0, eq);
    char* end = nullptr;
    double v = std::strtod(item.c_str() + eq + 1, &end);
    if (end == item.c_str() + eq + 1 || *end != '\0' || v < 0) {
      *err = "threshold '" + item + "' needs a number >= 0";
      return false;
    }
    bool found = false;
    for (Metric& m : *metrics) {
      if (name == m.name) {
        (crit ? m.crit : m.warn) = v;
        found = true;
      }
    }
    if (!found) {
      *err = "unknown threshold '" + name +
             "' (in_doubt, age, hung, backlog, outbox_lag, resolver)";
      return false;
    }
  }
  return true;
}

// A number in plain decimal, without trailing zeros: 60, 0.5, 1000000.
std::string Plain(double x) {
  char b[64];
  std::snprintf(b, sizeof b, "%.3f", x);
  std::string t = b;
  while (!t.empty() && t.back() == '0') t.pop_back();
  if (!t.empty() && t.back() == '.') t.pop_back();
  return t == "-0" ? "0" : t;
}

// A metric's value with its unit: counts as integers, seconds with 3 decimals (1.300s).
std::string Value(const Metric& m, double x) {
  char b[64];
  std::snprintf(b, sizeof b, m.unit[0] == '\0' ? "%.0f" : "%.3f", x);
  return std::string(b) + m.unit;
}

// /v1/status older than this (its now_ms - monitor_ms): seigod's monitor thread is stuck.
constexpr double kStaleS = 60;

}  // namespace

int Check(const std::string& url, const std::string& warn, const std::string& crit,
          int timeout_s) {
  std::vector<Metric> metrics = {
      {"in_doubt", "", 5, 20},      {"age", "s", 60, 300},      {"hung", "", 0, 0},
      {"backlog", "", 10, 100},     {"outbox_lag", "s", 30, 300}, {"resolver", "s", 10, 60},
  };
  std::string err;
  if (!ParseThresholds(warn, &metrics, false, &err) || !ParseThresholds(crit, &metrics, true, &err)) {
    std::printf("SEIGO UNKNOWN - %s\n", err.c_str());
    return kUnknown;
  }
  httplib::Client cli(url);
  if (!cli.is_valid()) {
    std::printf("SEIGO UNKNOWN - bad --url '%s'\n", url.c_str());
    return kUnknown;
  }
  cli.set_connection_timeout(timeout_s, 0);
  cli.set_read_timeout(timeout_s, 0);
  httplib::Result res = cli.Get("/v1/status");
  if (!res) {
    std::printf("SEIGO UNKNOWN - cannot reach seigod at %s: %s\n", url.c_str(),
                httplib::to_string(res.error()).c_str());
    return kUnknown;
  }
  json s = json::parse(res->body, nullptr, false);
  if (res->status != 200 || s.is_discarded() || !s.contains("in_doubt")) {
    std::printf("SEIGO UNKNOWN - %s answered HTTP %d without a status\n", url.c_str(),
                res->status);
    return kUnknown;
  }
  std::map<std::string, double> v;
  try {
    v["in_doubt"] = s["in_doubt"]["count"].get<double>();
    v["age"] = s["in_doubt"]["oldest_age_ms"].get<double>() / 1000.0;
    v["hung"] = s["in_doubt"]["hung"].get<double>();
    v["backlog"] = s["in_doubt"]["phase2_backlog"].get<double>();
    v["outbox_lag"] = s["outbox"]["oldest_age_ms"].get<double>() / 1000.0;
    double r = s["resolver"]["last_pass_age_ms"].get<double>();
    // Never passed yet: as old as the process.
    v["resolver"] = r < 0 ? s["uptime_s"].get<double>() : r / 1000.0;
  } catch (const json::exception& e) {
    std::printf("SEIGO UNKNOWN - unreadable status: %s\n", e.what());
    return kUnknown;
  }
  Level level = kOk;
  std::vector<std::string> why;
  // The plugin guidelines' threshold "N" is the range 0..N: OK while the value <= N, an alert
  // once it is above.
  for (const Metric& m : metrics) {
    double x = v[m.name];
    Level l = x > m.crit ? kCritical : x > m.warn ? kWarning : kOk;
    if (l != kOk) {
      why.push_back(std::string(m.name) + " " + Value(m, x) + " > " +
                    Plain(l == kCritical ? m.crit : m.warn) + m.unit);
    }
    level = std::max(level, l);
  }
  std::string down;
  for (const json& st : s.value("stores", json::array())) {
    if (!st.value("up", true)) down += (down.empty() ? "" : ", ") + st.value("store", "?");
  }
  if (!down.empty()) {
    why.push_back("down: " + down);
    level = kCritical;
  }
  if (s.contains("ready") && s["ready"].is_boolean() && !s["ready"].get<bool>()) {
    why.push_back("not ready (a store did not answer the last monitor pass, or seigod is "
                  "stopping)");
    level = kCritical;
  }
  const json& errors = s["in_doubt"].contains("errors") ? s["in_doubt"]["errors"] : json();
  if (errors.is_array() && !errors.empty()) {
    std::string first = errors[0].is_string() ? errors[0].get<std::string>() : errors[0].dump();
    if (first.size() > 200) first = first.substr(0, 200) + "...";
    why.push_back("in-doubt scan incomplete (" + std::to_string(errors.size()) +
                  " error(s)): " + first);
    level = std::max(level, kWarning);
  }
  if (s.contains("now_ms") && s["now_ms"].is_number() && s.contains("monitor_ms") &&
      s["monitor_ms"].is_number()) {
    double stale_s = (s["now_ms"].get<double>() - s["monitor_ms"].get<double>()) / 1000.0;
    if (stale_s > kStaleS) {
      char b[160];
      std::snprintf(b, sizeof b,
                    "status is %.0f s old (seigod's monitor is stuck)",
                    stale_s);
      why.push_back(b);
      level = std::max(level, kWarning);
    }
  }
  char line[512];
  std::snprintf(line, sizeof line,
                "%.0f in doubt (oldest %.1f s), %.0f hung, phase-2 backlog %.0f, outbox lag "
                "%.1f s, resolver %.1f s ago",
                v["in_doubt"], v["age"], v["hung"], v["backlog"], v["outbox_lag"], v["resolver"]);
  std::string out = std::string("SEIGO ") + LevelName(level) + " - " + line;
  for (std::string w : why) {
    // An error text must not end the plugin output early ('|' starts perfdata) or add lines.
    for (char& ch : w) {
      if (ch == '|') ch = '/';
      if (ch == '\n' || ch == '\r') ch = ' ';
    }
    out += "; " + w;
  }
  // Perfdata: plain decimals (never %g's 1e+06), label=value[unit];warn;crit.
  out += " |";
  for (const Metric& m : metrics) {
    out += std::string(" ") + m.name + "=" + Value(m, v[m.name]) + ";" + Plain(m.warn) + ";" +
           Plain(m.crit);
  }
  std::printf("%s\n", out.c_str());
  return level;
}

}  // namespace seigo::cli
