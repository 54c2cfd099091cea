// `seigo check`: a nagios / Icinga plugin for seigod (doc/cli.md, doc/seigod.md).
//
// Reads seigod's GET /v1/status and prints one status line with perfdata:
//   SEIGO CRITICAL - 3 in doubt (oldest 131.2 s), 1 hung, ... | in_doubt=3;5;20 ...
// Exit codes are nagios's, not the rest of the CLI's: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
// (seigod unreachable, an unreadable answer, bad thresholds).
#include <cstdio>
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

}  // namespace

int Check(const std::string& url, const std::string& warn, const std::string& crit,
          int timeout_s) {
  std::vector<Metric> metrics = {
      {"in_doubt", "", 5, 20},      {"age", "s", 60, 300},      {"hung", "", 1, 1},
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
  for (const Metric& m : metrics) {
    double x = v[m.name];
    Level l = x >= m.crit ? kCritical : x >= m.warn ? kWarning : kOk;
    if (l != kOk) {
      char b[128];
      std::snprintf(b, sizeof b, "%s %.1f%s >= %.1f%s", m.name, x, m.unit,
                    l == kCritical ? m.crit : m.warn, m.unit);
      why.push_back(b);
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
  char line[512];
  std::snprintf(line, sizeof line,
                "%.0f in doubt (oldest %.1f s), %.0f hung, phase-2 backlog %.0f, outbox lag "
                "%.1f s, resolver %.1f s ago",
                v["in_doubt"], v["age"], v["hung"], v["backlog"], v["outbox_lag"], v["resolver"]);
  std::string out = std::string("SEIGO ") + LevelName(level) + " - " + line;
  for (const std::string& w : why) out += "; " + w;
  out += " |";
  for (const Metric& m : metrics) {
    char p[128];
    std::snprintf(p, sizeof p, " %s=%g%s;%g;%g", m.name, v[m.name], m.unit, m.warn, m.crit);
    out += p;
  }
  std::printf("%s\n", out.c_str());
  return level;
}

}  // namespace seigo::cli
