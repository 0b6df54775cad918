// The `webhook` sink: each batch is one HTTP(S) POST of the events as a JSON array or as NDJSON.
// Options, defaults and the signature scheme are documented in README.md and zctl-sink-plugin(7).
//
// Design notes
//   - Synchronous from the host's point of view: emit() returns only once the server answered (or
//     the timeout passed), so the host's retry, backoff and metrics see the real HTTP outcome. The
//     I/O itself is Asio's asynchronous operations run on a private io_context until a deadline,
//     because that is the only way to bound resolve, connect, the TLS handshake, the write and the
//     read by one timeout; at the deadline the socket is closed and the operation aborts.
//   - The body is the event bytes joined as they come from the host (never re-serialised), into a
//     buffer reused from batch to batch.
//   - One keep-alive connection per instance. A reused connection the server had already closed
//     fails before any response byte arrives; that case alone is retried at once on a fresh
//     connection, within the same deadline (a duplicate is possible, as with any retry; receivers
//     dedupe on event_src_id + seq).
//   - All calls except the constructor/destructor come from the sink's single worker thread; no
//     locking is needed.
#include <zctl/sink.hpp>
#include <zctl/sink_config.hpp>

#include "openssl_error.hpp"
#include "plugin_config.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <locale>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

using zctl::plugins::openssl_error;
using zctl::plugins::string_value;
using zctl::plugins::timeout_value;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using zctl::sdk::Status;
using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = "1.0.0";
constexpr const char* kSignatureHeader = "X-Zctl-Signature";
constexpr std::size_t kMaxSecretBytes = 64 * 1024;
constexpr std::size_t kResponseBodyLimit = 64 * 1024;  // larger bodies are not read to the end
constexpr std::size_t kSnippetBytes = 200;
constexpr uint32_t kMaxRetryAfterSeconds = 3600;

constexpr const char* kKeys[] = {"url",     "format",  "headers",   "bearer_token_file", "hmac_secret_file",
                                 "timeout", "ca_file", "cert_file", "key_file",          "verify"};

enum class Format { json, ndjson };

struct Url {
  bool tls = false;
  std::string host;     // without brackets for an IPv6 literal
  std::string port;     // always set
  std::string target;   // path and query, at least "/"
  std::string display;  // scheme://authority/path, without the query (it may hold secrets)
};

struct WebhookConfig {
  Url url;
  Format format = Format::json;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string bearer_token_file;
  std::string hmac_secret_file;
  std::chrono::milliseconds timeout{5000};  // below the host's default call_timeout (10s)
  std::string ca_file, cert_file, key_file;
  bool verify = true;
};

// ---------------------------------------------------------------------------------------------
// Configuration

[[noreturn]] void unknown_key(std::string_view key) {
  throw std::invalid_argument(zctl::sdk::unknown_key_message(key, kKeys));
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

Url parse_url(std::string_view s) {
  const auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("'url' " + why + ": \"" + std::string(s) + "\"");
  };
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) throw bad("must not contain spaces or control characters");
  }
  Url u;
  std::string_view rest;
  if (s.size() >= 7 && iequals(s.substr(0, 7), "http://")) {
    rest = s.substr(7);
  } else if (s.size() >= 8 && iequals(s.substr(0, 8), "https://")) {
    u.tls = true;
    rest = s.substr(8);
  } else {
    throw bad("must start with http:// or https://");
  }
  if (rest.find('#') != std::string_view::npos) throw bad("must not contain a fragment ('#')");
  const std::size_t end_of_authority = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, end_of_authority);
  std::string_view path =
      end_of_authority == std::string_view::npos ? std::string_view() : rest.substr(end_of_authority);
  if (authority.find('@') != std::string_view::npos)
    throw bad("must not contain credentials (user@); use headers or bearer_token_file");
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) throw bad("has an unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw bad("has garbage after the IPv6 address");
      port = after.substr(1);
    }
    error_code ec;
    (void)asio::ip::make_address_v6(std::string(host), ec);
    if (ec) throw bad("has an invalid IPv6 address");
  } else {
    const std::size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    const bool host_ok = !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
    if (!host_ok) throw bad("has no valid host name");
  }
  if (host.empty()) throw bad("has no host");
  if (authority.find(':') != std::string_view::npos && port.empty() && authority.back() == ':')
    throw bad("has an empty port");
  if (!port.empty()) {
    const bool digits =
        port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535)
      throw bad("has an invalid port (1-65535)");
  }
  u.host = std::string(host);
  u.port = !port.empty() ? std::string(port) : (u.tls ? "443" : "80");
  u.target = path.empty() ? "/" : (path.front() == '?' ? "/" + std::string(path) : std::string(path));
  std::string_view shown_path = path.substr(0, path.find('?'));
  u.display = std::string(u.tls ? "https://" : "http://") + std::string(authority) + std::string(shown_path);
  return u;
}


bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}


// Reads a whole small file, e.g. a secret. Throws with the option's name, the path and the cause.
std::string read_file(std::string_view key, const std::string& path, std::size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("'" + std::string(key) + "': cannot read " + path + ": " + std::strerror(errno));
  std::string data;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    data.append(buf, static_cast<std::size_t>(in.gcount()));
    if (data.size() > limit)
      throw std::invalid_argument("'" + std::string(key) + "': " + path + " is larger than " + std::to_string(limit) +
                                  " bytes");
  }
  if (in.bad()) throw std::invalid_argument("'" + std::string(key) + "': cannot read " + path);
  return data;
}

// A secret file's content without surrounding whitespace (the trailing newline editors add).
std::string read_secret(std::string_view key, const std::string& path) {
  std::string s = read_file(key, path, kMaxSecretBytes);
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.back())) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && space(s[start])) ++start;
  s.erase(0, start);
  if (s.empty()) throw std::invalid_argument("'" + std::string(key) + "': " + path + " is empty");
  return s;
}

WebhookConfig parse_config(const std::string& json) {
  const rapidjson::Document doc = zctl::plugins::parse_config_object(json);

  WebhookConfig cfg;
  bool have_url = false;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string_view key(it->name.GetString(), it->name.GetStringLength());
    const rapidjson::Value& v = it->value;
    if (key == "url") {
      cfg.url = parse_url(string_value(key, v));
      have_url = true;
    } else if (key == "format") {
      const std::string s = v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : std::string();
      if (s == "json")
        cfg.format = Format::json;
      else if (s == "ndjson")
        cfg.format = Format::ndjson;
      else
        throw std::invalid_argument(
            "'format' must be \"json\" (an array per request) or \"ndjson\" (one event per line)");
    } else if (key == "headers") {
      if (!v.IsObject()) throw std::invalid_argument("'headers' must be a mapping of header names to string values");
      for (auto h = v.MemberBegin(); h != v.MemberEnd(); ++h) {
        const std::string name(h->name.GetString(), h->name.GetStringLength());
        if (name.empty() || !std::all_of(name.begin(), name.end(), is_token_char))
          throw std::invalid_argument("'headers': \"" + name + "\" is not a valid HTTP header name");
        for (const char* reserved : {"Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Upgrade"}) {
          if (iequals(name, reserved))
            throw std::invalid_argument("'headers': " + name + " is set by the sink and cannot be configured");
        }
        if (!h->value.IsString() && !h->value.IsNumber())
          throw std::invalid_argument("'headers': the value of " + name + " must be a string");
        std::string value;
        if (h->value.IsString()) {
          value.assign(h->value.GetString(), h->value.GetStringLength());
        } else {
          std::ostringstream os;
          if (h->value.IsInt64())
            os << h->value.GetInt64();
          else if (h->value.IsUint64())
            os << h->value.GetUint64();
          else
            os << h->value.GetDouble();
          value = os.str();
        }
        if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
          throw std::invalid_argument("'headers': the value of " + name + " must not contain CR, LF or NUL");
        cfg.headers.emplace_back(name, std::move(value));
      }
    } else if (key == "bearer_token_file") {
      cfg.bearer_token_file = string_value(key, v);
    } else if (key == "hmac_secret_file") {
      cfg.hmac_secret_file = string_value(key, v);
    } else if (key == "timeout") {
      if (!v.IsString()) throw std::invalid_argument("'timeout' must be a duration string such as \"10s\"");
      cfg.timeout = timeout_value(key, std::string_view(v.GetString(), v.GetStringLength()));
    } else if (key == "ca_file") {
      cfg.ca_file = string_value(key, v);
    } else if (key == "cert_file") {
      cfg.cert_file = string_value(key, v);
    } else if (key == "key_file") {
      cfg.key_file = string_value(key, v);
    } else if (key == "verify") {
      if (!v.IsBool()) throw std::invalid_argument("'verify' must be true or false");
      cfg.verify = v.GetBool();
    } else {
      unknown_key(key);
    }
  }
  if (!have_url) throw std::invalid_argument("'url' is required");
  for (const auto& [name, value] : cfg.headers) {
    (void)value;
    if (!cfg.bearer_token_file.empty() && iequals(name, "Authorization"))
      throw std::invalid_argument("'headers': Authorization conflicts with bearer_token_file; give only one");
    if (!cfg.hmac_secret_file.empty() && iequals(name, kSignatureHeader))
      throw std::invalid_argument(std::string("'headers': ") + kSignatureHeader +
                                  " is set by the sink when hmac_secret_file is given");
  }
  if (!cfg.url.tls) {
    for (const auto& [key, value] : {std::pair<const char*, bool>{"ca_file", !cfg.ca_file.empty()},
                                     {"cert_file", !cfg.cert_file.empty()},
                                     {"key_file", !cfg.key_file.empty()}}) {
      if (value) throw std::invalid_argument(std::string("'") + key + "' only applies to an https:// url");
    }
  }
  if (cfg.cert_file.empty() != cfg.key_file.empty())
    throw std::invalid_argument(
        "'cert_file' and 'key_file' must be given together (the client certificate and its key)");
  return cfg;
}

// Checks that every file the config names can be read now (validate has no other side effects).
void check_files(const WebhookConfig& cfg) {
  if (!cfg.bearer_token_file.empty()) (void)read_secret("bearer_token_file", cfg.bearer_token_file);
  if (!cfg.hmac_secret_file.empty()) (void)read_secret("hmac_secret_file", cfg.hmac_secret_file);
  if (!cfg.ca_file.empty()) (void)read_file("ca_file", cfg.ca_file, 16u << 20);
  if (!cfg.cert_file.empty()) (void)read_file("cert_file", cfg.cert_file, 16u << 20);
  if (!cfg.key_file.empty()) (void)read_file("key_file", cfg.key_file, 16u << 20);
}

// ---------------------------------------------------------------------------------------------
// Helpers for a request


// Lower-case hex of HMAC-SHA256(secret, "<t>.<body>"), without copying the body.
std::string sign(const std::string& secret, const std::string& timestamp, const std::string& body) {
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr), &EVP_MAC_free);
  if (!mac) throw std::runtime_error("HMAC not available: " + openssl_error());
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(mac.get()), &EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t out_len = 0;
  if (!ctx || !EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), params) ||
      !EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(timestamp.data()), timestamp.size()) ||
      !EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>("."), 1) ||
      !EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(body.data()), body.size()) ||
      !EVP_MAC_final(ctx.get(), out, &out_len, sizeof out))
    throw std::runtime_error("HMAC-SHA256 failed: " + openssl_error());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(out_len * 2);
  for (std::size_t i = 0; i < out_len; ++i) {
    hex.push_back(kHex[out[i] >> 4]);
    hex.push_back(kHex[out[i] & 0xf]);
  }
  return hex;
}

// Retry-After as delay-seconds or an HTTP-date, in milliseconds, capped at an hour; 0 when absent
// or unparsable.
uint32_t retry_after_ms(std::string_view value) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return 0;
  uint64_t seconds = 0;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    for (char c : value) {
      seconds = seconds * 10 + static_cast<uint64_t>(c - '0');
      if (seconds > kMaxRetryAfterSeconds) break;
    }
  } else {
    std::tm tm{};
    std::istringstream in{std::string(value)};
    in.imbue(std::locale::classic());
    in >> std::get_time(&tm, "%a, %d %b %Y %H:%M:%S GMT");  // IMF-fixdate, the only form senders use
    if (in.fail()) return 0;
    const std::time_t at = timegm(&tm);
    const std::time_t now = std::time(nullptr);
    if (at <= now) return 0;
    seconds = static_cast<uint64_t>(at - now);
  }
  return static_cast<uint32_t>(std::min<uint64_t>(seconds, kMaxRetryAfterSeconds) * 1000);
}

// The start of a response body for an error message: printable ASCII, whitespace collapsed.
std::string snippet(std::string_view body) {
  std::string out;
  bool space = false;
  for (char ch : body) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = !out.empty();
      continue;
    }
    if (out.size() >= kSnippetBytes) {
      out += "...";
      break;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c >= 0x20 && c < 0x7f ? ch : '?');
  }
  return out;
}

std::string error_text(const error_code& ec) {
  if (ec == asio::error::operation_aborted) return "timed out";
  if (ec.category() == asio::error::get_ssl_category()) {
    std::string msg = ec.message();
    if (const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value())); reason && msg.empty())
      msg = reason;
    return "TLS: " + msg;
  }
  return ec.message();
}

// ---------------------------------------------------------------------------------------------
// The sink

class WebhookSink final : public zctl::sdk::Sink {
 public:
  static constexpr const char* config_schema = R"json({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "zctl webhook sink",
  "type": "object",
  "additionalProperties": false,
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "pattern": "^[hH][tT][tT][pP][sS]?://", "description": "http:// or https:// URL to POST each batch to"},
    "format": {"enum": ["json", "ndjson"], "default": "json",
               "description": "json: one JSON array per request; ndjson: one event per line"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                "description": "extra request headers"},
    "bearer_token_file": {"type": "string", "description": "file whose content is sent as Authorization: Bearer <token>"},
    "hmac_secret_file": {"type": "string",
                         "description": "file with the HMAC-SHA256 key for X-Zctl-Signature: t=<unix seconds>,v1=<hex of HMAC(key, t + \".\" + body)>"},
    "timeout": {"type": "string", "default": "5s", "description": "limit for one request: connect, TLS, send and response"},
    "ca_file": {"type": "string", "description": "PEM CA certificates to verify the server with (default: the system's)"},
    "cert_file": {"type": "string", "description": "PEM client certificate (chain), with key_file"},
    "key_file": {"type": "string", "description": "PEM private key of cert_file"},
    "verify": {"type": "boolean", "default": true, "description": "verify the server's certificate and host name"}
  }
})json";

  static void validate(const std::string& config_json) { check_files(parse_config(config_json)); }

  WebhookSink(const std::string& config_json, zctl::sdk::Host host) : cfg_(parse_config(config_json)), host_(host) {
    load_secrets_and_tls();  // throws std::invalid_argument: a config that cannot work (reject)
  }

  ~WebhookSink() override { close(); }

  Status emit(const zctl::sdk::Batch& batch) override {
    if (batch.empty()) return Status::ok();
    build_body(batch);
    const auto deadline = Clock::now() + cfg_.timeout;
    for (int round = 0;; ++round) {
      const bool reused = connected_;
      std::string where;
      bool stale = false;
      std::optional<Status> result = exchange(deadline, where, stale);
      if (result) return *result;
      close();
      // A kept-alive connection the server closed meanwhile: once more on a fresh one.
      if (reused && stale && round == 0 && Clock::now() < deadline) {
        host_.debug("webhook " + cfg_.url.display + ": kept-alive connection was closed by the server; reconnecting");
        continue;
      }
      return Status::retry("POST " + cfg_.url.display + ": " + where);
    }
  }

  // SIGHUP: re-reads the token, the HMAC secret and the TLS files (rotation) and reconnects.
  Status reopen() override {
    try {
      load_secrets_and_tls();
    } catch (const std::exception& e) {
      return Status::retry(std::string("reload failed, keeping the previous credentials: ") + e.what());
    }
    close();
    return Status::ok();
  }

 private:
  void load_secrets_and_tls() {
    std::string token, secret;
    if (!cfg_.bearer_token_file.empty()) token = read_secret("bearer_token_file", cfg_.bearer_token_file);
    if (!cfg_.hmac_secret_file.empty()) secret = read_secret("hmac_secret_file", cfg_.hmac_secret_file);
    std::unique_ptr<ssl::context> tls;
    if (cfg_.url.tls) tls = make_tls_context();
    token_ = std::move(token);
    hmac_secret_ = std::move(secret);
    close();  // a live connection uses the old TLS context
    tls_ctx_ = std::move(tls);
  }

  std::unique_ptr<ssl::context> make_tls_context() const {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                     ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    error_code ec;
    if (cfg_.verify) {
      if (!cfg_.ca_file.empty()) {
        ctx->load_verify_file(cfg_.ca_file, ec);
        if (ec)
          throw std::invalid_argument("'ca_file': " + cfg_.ca_file +
                                      " holds no usable PEM certificate: " + ec.message());
      } else {
        ctx->set_default_verify_paths(ec);
        if (ec) throw std::invalid_argument("cannot load the system's CA certificates: " + ec.message());
      }
      ctx->set_verify_mode(ssl::verify_peer);
    } else {
      ctx->set_verify_mode(ssl::verify_none);
    }
    if (!cfg_.cert_file.empty()) {
      ctx->use_certificate_chain_file(cfg_.cert_file, ec);
      if (ec)
        throw std::invalid_argument("'cert_file': " + cfg_.cert_file +
                                    " holds no usable PEM certificate: " + ec.message());
      ctx->use_private_key_file(cfg_.key_file, ssl::context::pem, ec);
      if (ec) throw std::invalid_argument("'key_file': " + cfg_.key_file + " holds no usable PEM key: " + ec.message());
      if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
        throw std::invalid_argument("'key_file': " + cfg_.key_file + " does not match 'cert_file' " + cfg_.cert_file);
    }
    return ctx;
  }

  void build_body(const zctl::sdk::Batch& batch) {
    body_.clear();
    body_.reserve(batch.json_bytes() + batch.size() + 2);
    if (cfg_.format == Format::json) {
      body_.push_back('[');
      bool first = true;
      for (const zctl::sdk::Event& e : batch) {
        if (!first) body_.push_back(',');
        first = false;
        body_.append(e.json);
      }
      body_.push_back(']');
    } else {
      for (const zctl::sdk::Event& e : batch) {
        body_.append(e.json);
        body_.push_back('\n');
      }
    }
  }

  http::request<http::string_body> make_request() {
    http::request<http::string_body> req{http::verb::post, cfg_.url.target, 11};
    const bool default_port = cfg_.url.port == (cfg_.url.tls ? "443" : "80");
    const bool v6 = cfg_.url.host.find(':') != std::string::npos;
    const std::string host = v6 ? "[" + cfg_.url.host + "]" : cfg_.url.host;
    req.set(http::field::host, default_port ? host : host + ":" + cfg_.url.port);
    req.set(http::field::user_agent, std::string("zctl-webhook/") + kVersion);
    req.set(http::field::content_type, cfg_.format == Format::json ? "application/json" : "application/x-ndjson");
    req.keep_alive(true);
    for (const auto& [name, value] : cfg_.headers) req.set(name, value);
    if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
    // The request owns a copy of the body: Beast's string_body needs its own std::string, and
    // swapping ours in and out again keeps the buffer's capacity for the next batch.
    req.body().swap(body_);
    if (!hmac_secret_.empty()) {
      const std::string t = std::to_string(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
              .count());
      req.set(kSignatureHeader, "t=" + t + ",v1=" + sign(hmac_secret_, t, req.body()));
    }
    req.prepare_payload();
    return req;
  }

  // Runs the io_context until the operation started last completes (`done`) or the deadline
  // passes; then the socket is closed, which aborts the operation, and false is returned.
  bool run(Clock::time_point deadline, const bool& done) {
    ioc_.restart();
    ioc_.run_until(deadline);
    if (done) return true;
    error_code ignored;
    resolver_.cancel();
    if (tls_stream_) tls_stream_->lowest_layer().close(ignored);
    socket_.close(ignored);
    ioc_.restart();
    ioc_.run();  // the aborted handlers
    return false;
  }

  // Connects when needed, sends the request and reads the response. Returns the batch's status,
  // or nullopt for a transport failure described in `where` (stale: the failure came from a
  // kept-alive connection before any response byte).
  std::optional<Status> exchange(Clock::time_point deadline, std::string& where, bool& stale) {
    if (!connected_ && !connect(deadline, where)) return std::nullopt;

    auto req = make_request();
    const auto give_body_back = [&] { body_.swap(req.body()); };

    bool done = false;
    error_code ec;
    const auto on_io = [&](error_code e, std::size_t) {
      ec = e;
      done = true;
    };
    if (tls_stream_)
      http::async_write(*tls_stream_, req, on_io);
    else
      http::async_write(socket_, req, on_io);
    if (!run(deadline, done) || ec) {
      give_body_back();
      where = done ? "sending the request: " + error_text(ec)
                   : "timed out after " + format_ms(cfg_.timeout) + " sending the request";
      stale = done;
      return std::nullopt;
    }
    give_body_back();

    http::response_parser<http::string_body> parser;
    parser.body_limit(kResponseBodyLimit);
    done = false;
    if (tls_stream_)
      http::async_read(*tls_stream_, buffer_, parser, on_io);
    else
      http::async_read(socket_, buffer_, parser, on_io);
    const bool finished = run(deadline, done);
    if (!finished || (ec && !(ec == http::error::body_limit && parser.is_header_done()))) {
      stale = finished && !parser.got_some() &&
              (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
               ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated);
      where = finished ? "reading the response: " + error_text(ec)
                       : "timed out after " + format_ms(cfg_.timeout) + " waiting for the response";
      return std::nullopt;
    }
    const bool complete = !ec;
    const auto& res = parser.get();
    if (!complete || !res.keep_alive()) close();
    return classify(res);
  }

  bool connect(Clock::time_point deadline, std::string& where) {
    buffer_.clear();
    bool done = false;
    error_code ec;
    tcp::resolver::results_type endpoints;
    resolver_.async_resolve(cfg_.url.host, cfg_.url.port, [&](error_code e, tcp::resolver::results_type r) {
      ec = e;
      endpoints = std::move(r);
      done = true;
    });
    if (!run(deadline, done) || ec) {
      where = done ? "resolving " + cfg_.url.host + ": " + error_text(ec)
                   : "timed out after " + format_ms(cfg_.timeout) + " resolving " + cfg_.url.host;
      return false;
    }
    const std::string peer = cfg_.url.host + ":" + cfg_.url.port;
    if (cfg_.url.tls) {
      tls_stream_ = std::make_unique<ssl::stream<tcp::socket>>(ioc_, *tls_ctx_);
      error_code not_ip;
      (void)asio::ip::make_address(cfg_.url.host, not_ip);
      if (not_ip && !SSL_set_tlsext_host_name(tls_stream_->native_handle(), cfg_.url.host.c_str())) {
        where = "cannot set TLS SNI: " + openssl_error();
        return false;
      }
      if (cfg_.verify) tls_stream_->set_verify_callback(ssl::host_name_verification(cfg_.url.host));
    }
    tcp::socket& sock = tls_stream_ ? tls_stream_->next_layer() : socket_;
    done = false;
    asio::async_connect(sock, endpoints, [&](error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (!run(deadline, done) || ec) {
      where = done ? "connecting to " + peer + ": " + error_text(ec)
                   : "timed out after " + format_ms(cfg_.timeout) + " connecting to " + peer;
      return false;
    }
    error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);
    if (tls_stream_) {
      done = false;
      tls_stream_->async_handshake(ssl::stream_base::client, [&](error_code e) {
        ec = e;
        done = true;
      });
      if (!run(deadline, done) || ec) {
        where = done ? "TLS handshake with " + peer + " failed: " + error_text(ec)
                     : "timed out after " + format_ms(cfg_.timeout) + " in the TLS handshake with " + peer;
        return false;
      }
    }
    connected_ = true;
    return true;
  }

  Status classify(const http::response<http::string_body>& res) const {
    const unsigned code = res.result_int();
    if (code >= 200 && code < 300) return Status::ok();
    std::string text = cfg_.url.display + " answered " + std::to_string(code);
    if (!res.reason().empty()) text += " " + std::string(res.reason());
    const std::string body = snippet(res.body());
    if (!body.empty()) text += ": " + body;
    if (code == 429 || code == 408 || code >= 500) {
      const auto it = res.find(http::field::retry_after);
      const uint32_t after =
          it != res.end() ? retry_after_ms(std::string_view(it->value().data(), it->value().size())) : 0;
      if (after > 0) text += " (Retry-After: " + format_ms(std::chrono::milliseconds(after)) + ")";
      return Status::retry(std::move(text), after);
    }
    if (code >= 300 && code < 400) {
      const auto it = res.find(http::field::location);
      if (it != res.end()) text += " (redirects are not followed; Location: " + std::string(it->value()) + ")";
    }
    return Status::reject(std::move(text));
  }

  void close() {
    error_code ignored;
    if (tls_stream_) {
      tls_stream_->lowest_layer().close(ignored);
      tls_stream_.reset();
    }
    socket_.close(ignored);
    connected_ = false;
  }

  static std::string format_ms(std::chrono::milliseconds d) {
    return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s" : std::to_string(d.count()) + "ms";
  }

  WebhookConfig cfg_;
  zctl::sdk::Host host_;
  std::string token_, hmac_secret_;
  std::string body_;
  asio::io_context ioc_{1};
  tcp::resolver resolver_{ioc_};
  std::unique_ptr<ssl::context> tls_ctx_;
  tcp::socket socket_{ioc_};                              // http://
  std::unique_ptr<ssl::stream<tcp::socket>> tls_stream_;  // https://, one per connection
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

}  // namespace

ZCTL_SINK_PLUGIN(WebhookSink, "webhook", "1.0.0", "POSTs event batches as JSON or NDJSON to an HTTP(S) endpoint",
                 ZCTL_SINK_CAP_REOPEN);
