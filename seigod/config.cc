// Reading seigod.toml (doc/seigod.md, "Configuration").
#include "seigod/config.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

namespace seigod {
namespace {

using seigo::Result;
using seigo::Status;

std::string PercentEncode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The URL with any password in its user-info replaced by ***. Works for mysql://, redis:// and
// amqp:// alike: user-info is what stands before the last '@' of the authority.
std::string Redact(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return "<unparsable URL>";
  size_t start = scheme + 3;
  size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  std::string_view info = url.substr(start, at - start);
  size_t colon = info.find(':');
  if (colon == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, start)) + std::string(info.substr(0, colon)) + ":***" +
         std::string(url.substr(at));
}

// The password inside a URL's user-info, "" if none.
std::string PasswordIn(std::string_view url) {
  size_t scheme = url.find("://");
  size_t at = url.rfind('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme + 3) return "";
  std::string_view info = url.substr(scheme + 3, at - scheme - 3);
  size_t colon = info.find(':');
  return colon == std::string_view::npos ? "" : std::string(info.substr(colon + 1));
}

// Puts `password` into the user-info of `url` ("scheme://user@host" -> "scheme://user:pw@host").
std::string WithPassword(std::string_view url, const std::string& password, bool encode) {
  size_t start = url.find("://") + 3;
  std::string pw = encode ? PercentEncode(password) : password;
  size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < start) {
    return std::string(url.substr(0, start)) + ":" + pw + "@" + std::string(url.substr(start));
  }
  return std::string(url.substr(0, at)) + ":" + pw + std::string(url.substr(at));
}

class Loader {
 public:
  Loader(const toml::table& root, std::string origin) : root_(root), origin_(std::move(origin)) {}

  Status Load(Config* c) {
    static const std::set<std::string> kSections = {"server", "shards", "redis", "amqp",
                                                    "statements"};
    for (const auto& [k, v] : root_) {
      if (!kSections.count(std::string(k.str())) || !v.is_table()) {
        return Bad(std::string(k.str()), "unknown section (expected [server], [shards], [redis], "
                                         "[amqp] or [statements])");
      }
    }
    SEIGO_RETURN_IF_ERROR(Server(c));
    SEIGO_RETURN_IF_ERROR(Stores(c));
    if (const toml::table* st = root_["statements"].as_table()) {
      for (const auto& [k, v] : *st) {
        std::string name(k.str());
        if (!v.is_string() || v.as_string()->get().empty()) {
          return Bad("statements." + name, "must be a non-empty string of SQL");
        }
        if (name.empty() || name.size() > 64) return Bad("statements." + name, "bad name");
        c->statements[name] = v.as_string()->get();
      }
    }
    return Status::OK();
  }

 private:
  Status Bad(const std::string& key, const std::string& what) {
    return Status::InvalidArgument(origin_ + ": " + key + ": " + what);
  }

  Status CheckKeys(const toml::table& t, const std::string& section,
                   const std::set<std::string>& known) {
    for (const auto& [k, v] : t) {
      if (!known.count(std::string(k.str()))) {
        return Bad(section + "." + std::string(k.str()), "unknown key");
      }
    }
    return Status::OK();
  }

  template <typename T>
  Status Int(const toml::table& t, const std::string& section, const char* key, T* out,
             int64_t min, int64_t max, int64_t scale = 1) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return Status::OK();
    if (!n->is_integer()) return Bad(section + "." + key, "must be an integer");
    int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      return Bad(section + "." + key, "must be in [" + std::to_string(min) + ", " +
                                          std::to_string(max) + "]");
    }
    *out = static_cast<T>(v * scale);
    return Status::OK();
  }

  // A secret from `password_file` (its first line) or `password_env`.
  Status Secret(const toml::table& t, const std::string& section, std::string* out, bool* given) {
    const toml::node* file = t.get("password_file");
    const toml::node* env = t.get("password_env");
    *given = false;
    if (file && env) return Bad(section, "password_file and password_env: give one");
    if (file) {
      if (!file->is_string()) return Bad(section + ".password_file", "must be a string");
      std::ifstream in(file->as_string()->get());
      if (!in) return Bad(section + ".password_file", "cannot read " + file->as_string()->get());
      std::getline(in, *out);
      while (!out->empty() && (out->back() == '\r' || out->back() == ' ')) out->pop_back();
      *given = true;
    } else if (env) {
      if (!env->is_string()) return Bad(section + ".password_env", "must be a string");
      const char* v = std::getenv(env->as_string()->get().c_str());
      if (v == nullptr) {
        return Bad(section + ".password_env",
                   "environment variable " + env->as_string()->get() + " is not set");
      }
      *out = v;
      *given = true;
    }
    return Status::OK();
  }

  Status Server(Config* c) {
    const toml::table* t = root_["server"].as_table();
    if (t == nullptr) return Status::OK();
    SEIGO_RETURN_IF_ERROR(CheckKeys(
        *t, "server",
        {"listen", "admin_token_file", "admin_token_env", "max_body_bytes", "max_steps",
         "max_timeout_ms", "default_timeout_ms", "allow_raw_sql", "hung_threshold_s",
         "monitor_interval_ms", "idempotency_retention_s", "threads", "session_idle_ms",
         "max_sessions", "stop_grace_ms", "lock_wait_timeout_s", "max_connections_per_shard"}));
    if (const toml::node* l = t->get("listen")) {
      if (!l->is_string()) return Bad("server.listen", "must be a string host:port");
      const std::string& s = l->as_string()->get();
      size_t colon = s.rfind(':');
      if (colon == std::string::npos || colon == 0) return Bad("server.listen", "want host:port");
      c->host = s.substr(0, colon);
      if (c->host.size() > 2 && c->host.front() == '[' && c->host.back() == ']') {
        c->host = c->host.substr(1, c->host.size() - 2);  // [::1]:8640
      }
      char* end = nullptr;
      long p = std::strtol(s.c_str() + colon + 1, &end, 10);
      if (*end != '\0' || p < 1 || p > 65535 || end == s.c_str() + colon + 1) {
        return Bad("server.listen", "bad port in '" + s + "'");
      }
      c->port = static_cast<int>(p);
    }
    toml::table token_src;
    if (const toml::node* n = t->get("admin_token_file")) token_src.insert("password_file", *n);
    if (const toml::node* n = t->get("admin_token_env")) token_src.insert("password_env", *n);
    bool given = false;
    SEIGO_RETURN_IF_ERROR(Secret(token_src, "server.admin_token", &c->admin_token, &given));
    if (given && c->admin_token.size() < 16) {
      return Bad("server.admin_token", "must be at least 16 characters");
    }
    if (given) c->secrets.push_back(c->admin_token);
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "max_body_bytes", &c->max_body_bytes, 1024, 64 << 20));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "max_steps", &c->max_steps, 1, 10'000));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "max_timeout_ms", &c->max_timeout_ms, 10, 3'600'000));
    SEIGO_RETURN_IF_ERROR(
        Int(*t, "server", "default_timeout_ms", &c->default_timeout_ms, 10, 3'600'000));
    SEIGO_RETURN_IF_ERROR(
        Int(*t, "server", "hung_threshold_s", &c->hung_threshold_ms, 1, 86'400, 1000));
    SEIGO_RETURN_IF_ERROR(
        Int(*t, "server", "monitor_interval_ms", &c->monitor_interval_ms, 50, 600'000));
    // At least an hour: far beyond any request's deadline and the resolver's fence window, so a
    // record is never collected while a resend of its request may still come.
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "idempotency_retention_s",
                              &c->idempotency_retention_ms, 3600, 365 * 86'400, 1000));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "threads", &c->threads, 1, 1024));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "session_idle_ms", &c->session_idle_ms, 10, 600'000));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "max_sessions", &c->max_sessions, 1, 100'000));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "stop_grace_ms", &c->stop_grace_ms, 0, 600'000));
    SEIGO_RETURN_IF_ERROR(
        Int(*t, "server", "lock_wait_timeout_s", &c->lock_wait_timeout_s, 1, 3600));
    SEIGO_RETURN_IF_ERROR(Int(*t, "server", "max_connections_per_shard",
                              &c->max_connections_per_shard, 0, 100'000));
    if (const toml::node* n = t->get("allow_raw_sql")) {
      if (!n->is_boolean()) return Bad("server.allow_raw_sql", "must be true or false");
      c->allow_raw_sql = n->as_boolean()->get();
    }
    if (c->default_timeout_ms > c->max_timeout_ms) c->default_timeout_ms = c->max_timeout_ms;
    return Status::OK();
  }

  // One store section: its URLs with the password put in.
  Status Urls(const char* section, const char* scheme, const char* alt_scheme, bool list,
              bool encode, std::vector<std::string>* urls, std::vector<std::string>* redacted,
              Config* c) {
    const toml::table* t = root_[section].as_table();
    if (t == nullptr) return Status::OK();
    std::string sec = section;
    SEIGO_RETURN_IF_ERROR(CheckKeys(
        *t, sec, {list ? "urls" : "url", "password_file", "password_env"}));
    std::vector<std::string> raw;
    if (list) {
      const toml::array* a = t->get_as<toml::array>("urls");
      if (a == nullptr || a->empty()) return Bad(sec + ".urls", "must be a non-empty array");
      for (const toml::node& n : *a) {
        if (!n.is_string()) return Bad(sec + ".urls", "every entry must be a string");
        raw.push_back(n.as_string()->get());
      }
    } else {
      const toml::node* n = t->get("url");
      if (n == nullptr || !n->is_string()) return Bad(sec + ".url", "must be a string");
      raw.push_back(n->as_string()->get());
    }
    std::string password;
    bool given = false;
    SEIGO_RETURN_IF_ERROR(Secret(*t, sec, &password, &given));
    if (given && !password.empty()) c->secrets.push_back(password);
    for (size_t i = 0; i < raw.size(); ++i) {
      const std::string& u = raw[i];
      std::string where = sec + (list ? ".urls[" + std::to_string(i) + "]" : ".url");
      if (u.rfind(scheme, 0) != 0 && (alt_scheme == nullptr || u.rfind(alt_scheme, 0) != 0)) {
        return Bad(where, std::string("must start with ") + scheme);  // not echoed: may hold a password
      }
      std::string inline_pw = PasswordIn(u);
      if (!inline_pw.empty()) {
        c->secrets.push_back(inline_pw);
        if (given) return Bad(where, "has a password and " + sec + " names one too: give one");
        c->warnings.push_back(where + " holds a password: prefer password_file or password_env");
      }
      urls->push_back(given ? WithPassword(u, password, encode) : u);
      redacted->push_back(Redact(urls->back()));
    }
    return Status::OK();
  }

  Status Stores(Config* c) {
    if (root_["shards"].as_table() == nullptr) return Bad("shards", "missing: [shards] urls = [...]");
    SEIGO_RETURN_IF_ERROR(Urls("shards", "mysql://", "mariadb://", true, true, &c->shard_urls,
                               &c->redacted_shards, c));
    SEIGO_RETURN_IF_ERROR(Urls("redis", "redis://", nullptr, true, false, &c->redis_urls,
                               &c->redacted_redis, c));
    std::vector<std::string> amqp, amqp_redacted;
    SEIGO_RETURN_IF_ERROR(Urls("amqp", "amqp://", nullptr, false, true, &amqp, &amqp_redacted, c));
    if (!amqp.empty()) {
      c->amqp_url = amqp[0];
      c->redacted_amqp = amqp_redacted[0];
    }
    return Status::OK();
  }

  const toml::table& root_;
  std::string origin_;
};

}  // namespace

Result<Config> ParseConfig(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return Status::InvalidArgument(os.str());
  }
  Config c;
  Status s = Loader(root, origin).Load(&c);
  if (!s.ok()) return Status(s.code(), Scrub(s.message(), c.secrets));
  return c;
}

Result<Config> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("cannot read the config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

std::string Scrub(std::string text, const std::vector<std::string>& secrets) {
  for (const std::string& s : secrets) {
    if (s.size() < 3) continue;  // too short to tell apart from ordinary text
    for (const std::string& form : {s, PercentEncode(s)}) {
      for (size_t p; (p = text.find(form)) != std::string::npos;) text.replace(p, form.size(), "***");
    }
  }
  return text;
}

}  // namespace seigod
