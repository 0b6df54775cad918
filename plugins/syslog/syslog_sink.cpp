// The `syslog` sink: each event becomes one syslog message (RFC 5424 or RFC 3164) whose MSG is the
// event's JSON, sent over UDP, TCP (RFC 6587 framing), TLS (RFC 5425) or a unix datagram socket.
// Options, defaults and the structured data are documented in README.md and zctl-sink-plugin(7).
//
// Design notes
//   - Synchronous: emit() returns once every message of the batch is handed to the kernel (or
//     to OpenSSL and then the kernel), so the host's retry, backoff and metrics see the real
//     outcome of the send. Syslog has no acknowledgements; "delivered" means "written".
//   - Plain POSIX sockets, blocking with SO_SNDTIMEO/SO_RCVTIMEO set to `timeout`; connect() is
//     non-blocking plus poll() so it is bounded by the same timeout. No event loop is needed for
//     one socket driven by one thread.
//   - One connection per instance for tcp/tls, kept across batches. Before a batch is written on
//     a kept connection it is checked for end-of-file without blocking: a syslog receiver never
//     sends anything on it, so readable-and-empty means the receiver closed it (e.g. it was
//     restarted) and the sink reconnects before writing instead of writing into a dead socket.
//   - Any failure closes the connection and returns RETRY: the host resends the whole batch and
//     the sink reconnects on the next call. Messages written before the failure are sent again
//     (at-least-once; receivers dedupe on src + seq, both in the structured data).
//   - All calls except the constructor/destructor come from the sink's single worker thread; no
//     locking is needed.
#include <zctl/sink.hpp>
#include <zctl/sink_config.hpp>

#include "openssl_error.hpp"
#include "plugin_config.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using zctl::plugins::openssl_error;
using zctl::plugins::string_value;
using zctl::plugins::timeout_value;

namespace {

using zctl::sdk::Status;

// SD-ID of the structured data element: RFC 5424 §7.2.2 wants name@<private enterprise number>;
// 32473 is the number IANA reserves for documentation and examples (RFC 5612).
constexpr const char* kSdId = "zctl@32473";
constexpr std::size_t kMaxUdpPayload = 65507;  // 65535 - 8 (UDP header) - 20 (IPv4 header)

constexpr const char* kKeys[] = {"transport", "address", "format",  "framing",   "facility", "app_name",
                                 "hostname",  "timeout", "ca_file", "cert_file", "key_file", "verify"};

enum class Transport { udp, tcp, tls, unix_dgram };
enum class Format { rfc5424, rfc3164 };
enum class Framing { octet_counting, non_transparent };

struct SyslogConfig {
  Transport transport = Transport::udp;
  std::string address;  // as configured (or the default), for messages
  std::string host;     // udp/tcp/tls, without brackets for IPv6
  std::string port;
  std::string path;  // unix
  Format format = Format::rfc5424;
  Framing framing = Framing::octet_counting;
  int facility = 3;  // daemon
  std::string app_name = "zctl";
  std::string hostname;  // empty: the short host name, looked up when the sink is created
  std::chrono::milliseconds timeout{5000};
  std::string ca_file, cert_file, key_file;
  bool verify = true;
};

const std::pair<const char*, int> kFacilities[] = {
    {"kern", 0},    {"user", 1},    {"mail", 2},    {"daemon", 3},    {"auth", 4},    {"syslog", 5},  {"lpr", 6},
    {"news", 7},    {"uucp", 8},    {"cron", 9},    {"authpriv", 10}, {"ftp", 11},    {"local0", 16}, {"local1", 17},
    {"local2", 18}, {"local3", 19}, {"local4", 20}, {"local5", 21},   {"local6", 22}, {"local7", 23},
};

// ---------------------------------------------------------------------------------------------
// Configuration

[[noreturn]] void unknown_key(std::string_view key) {
  throw std::invalid_argument(zctl::sdk::unknown_key_message(key, kKeys));
}



// Printable US-ASCII without spaces, 1..max characters: what RFC 5424 allows in HOSTNAME,
// APP-NAME, PROCID and MSGID (and what RFC 3164 parsers cope with).
bool is_printusascii(std::string_view s, std::size_t max) {
  return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), [](char c) { return c > 32 && c < 127; });
}

// "host:port", "[v6]:port", "host" (default port) for udp/tcp/tls.
void parse_address(SyslogConfig& cfg, const std::string& a, const char* default_port) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("'address' " + why + ": \"" + a + "\"");
  };
  std::string host = a, port;
  if (!a.empty() && a.front() == '[') {
    const std::size_t close = a.find(']');
    if (close == std::string::npos) throw bad("has an unterminated IPv6 address");
    host = a.substr(1, close - 1);
    const std::string after = a.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw bad("has garbage after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) throw bad("has an empty port");
    }
    in6_addr ignored{};
    if (inet_pton(AF_INET6, host.c_str(), &ignored) != 1) throw bad("has an invalid IPv6 address");
  } else {
    const std::size_t colon = a.rfind(':');
    if (colon != std::string::npos) {
      if (a.find(':') != colon) throw bad("must be HOST:PORT; write an IPv6 address as [ADDR]:PORT");
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
      if (port.empty()) throw bad("has an empty port");
    }
    const bool host_ok = !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
    if (!host_ok) throw bad("has no valid host name (HOST:PORT)");
  }
  if (!port.empty()) {
    const bool digits =
        port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535) throw bad("has an invalid port (1-65535)");
  }
  cfg.host = host;
  cfg.port = port.empty() ? default_port : port;
}

SyslogConfig parse_config(const std::string& json) {
  const rapidjson::Document doc = zctl::plugins::parse_config_object(json);

  SyslogConfig cfg;
  bool have_framing = false, have_tls_option = false;
  std::string address;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string_view key(it->name.GetString(), it->name.GetStringLength());
    const rapidjson::Value& v = it->value;
    const std::string s = v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : std::string();
    if (key == "transport") {
      if (s == "udp")
        cfg.transport = Transport::udp;
      else if (s == "tcp")
        cfg.transport = Transport::tcp;
      else if (s == "tls")
        cfg.transport = Transport::tls;
      else if (s == "unix")
        cfg.transport = Transport::unix_dgram;
      else
        throw std::invalid_argument("'transport' must be \"udp\", \"tcp\", \"tls\" or \"unix\"");
    } else if (key == "address") {
      address = string_value(key, v);
    } else if (key == "format") {
      if (s == "rfc5424")
        cfg.format = Format::rfc5424;
      else if (s == "rfc3164")
        cfg.format = Format::rfc3164;
      else
        throw std::invalid_argument("'format' must be \"rfc5424\" or \"rfc3164\"");
    } else if (key == "framing") {
      have_framing = true;
      if (s == "octet_counting")
        cfg.framing = Framing::octet_counting;
      else if (s == "non_transparent")
        cfg.framing = Framing::non_transparent;
      else
        throw std::invalid_argument(
            "'framing' must be \"octet_counting\" (RFC 6587 LEN SP MSG) or \"non_transparent\" (MSG LF)");
    } else if (key == "facility") {
      const auto f =
          std::find_if(std::begin(kFacilities), std::end(kFacilities), [&](const auto& p) { return s == p.first; });
      if (f == std::end(kFacilities))
        throw std::invalid_argument(
            "'facility' must be one of kern user mail daemon auth syslog lpr news uucp cron authpriv ftp "
            "local0 ... local7");
      cfg.facility = f->second;
    } else if (key == "app_name") {
      cfg.app_name = string_value(key, v);
      if (!is_printusascii(cfg.app_name, 48))
        throw std::invalid_argument("'app_name' must be 1-48 printable ASCII characters without spaces");
    } else if (key == "hostname") {
      cfg.hostname = string_value(key, v);
      if (!is_printusascii(cfg.hostname, 255))
        throw std::invalid_argument("'hostname' must be 1-255 printable ASCII characters without spaces");
    } else if (key == "timeout") {
      if (!v.IsString()) throw std::invalid_argument("'timeout' must be a duration string such as \"5s\"");
      cfg.timeout = timeout_value(key, s);
    } else if (key == "ca_file") {
      cfg.ca_file = string_value(key, v);
      have_tls_option = true;
    } else if (key == "cert_file") {
      cfg.cert_file = string_value(key, v);
      have_tls_option = true;
    } else if (key == "key_file") {
      cfg.key_file = string_value(key, v);
      have_tls_option = true;
    } else if (key == "verify") {
      if (!v.IsBool()) throw std::invalid_argument("'verify' must be true or false");
      cfg.verify = v.GetBool();
      have_tls_option = true;
    } else {
      unknown_key(key);
    }
  }
  const bool stream = cfg.transport == Transport::tcp || cfg.transport == Transport::tls;
  if (have_framing && !stream) throw std::invalid_argument("'framing' only applies to transport tcp or tls");
  if (have_tls_option && cfg.transport != Transport::tls)
    throw std::invalid_argument("'ca_file', 'cert_file', 'key_file' and 'verify' only apply to transport tls");
  if (cfg.cert_file.empty() != cfg.key_file.empty())
    throw std::invalid_argument(
        "'cert_file' and 'key_file' must be given together (the client certificate and its key)");
  switch (cfg.transport) {
    case Transport::unix_dgram:
      cfg.path = address.empty() ? "/dev/log" : address;
      if (cfg.path.size() >= sizeof(sockaddr_un{}.sun_path))
        throw std::invalid_argument("'address' is too long for a unix socket path: " + cfg.path);
      cfg.address = cfg.path;
      break;
    case Transport::udp:
    case Transport::tcp:
      cfg.address = address.empty() ? "127.0.0.1:514" : address;
      parse_address(cfg, cfg.address, "514");
      break;
    case Transport::tls:
      cfg.address = address.empty() ? "127.0.0.1:6514" : address;
      parse_address(cfg, cfg.address, "6514");
      break;
  }
  return cfg;
}

void check_readable(std::string_view key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("'" + std::string(key) + "': cannot read " + path + ": " + std::strerror(errno));
}

void check_files(const SyslogConfig& cfg) {
  if (!cfg.ca_file.empty()) check_readable("ca_file", cfg.ca_file);
  if (!cfg.cert_file.empty()) check_readable("cert_file", cfg.cert_file);
  if (!cfg.key_file.empty()) check_readable("key_file", cfg.key_file);
}

// ---------------------------------------------------------------------------------------------
// Messages

constexpr int kWarning = 4, kError = 3, kNotice = 5, kInfo = 6;

int severity_of(std::string_view ns, std::string_view type) {
  if (ns == "connection" && (type == "stray" || type == "protocol_error" || type == "flood" || type == "rejected"))
    return kWarning;
  if (ns == "cluster" && type == "state.is_leaderless") return kError;
  if (ns == "cluster" && type == "state.has_leader") return kNotice;
  if (ns == "sink" && (type == "unhealthy" || type == "dropped")) return kWarning;
  return kInfo;
}

// PARAM-VALUE escaping, RFC 5424 §6.3.3: '"', '\' and ']' get a backslash.
void append_param_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '"' || c == '\\' || c == ']') out.push_back('\\');
    out.push_back(c);
  }
}

// Replaces what a header field may not hold (spaces, control characters, non-ASCII) with '_'.
std::string header_token(std::string_view v, std::size_t max) {
  std::string out(v.substr(0, max));
  for (char& c : out) {
    if (c <= 32 || c >= 127) c = '_';
  }
  return out.empty() ? "-" : out;
}

// "2025-01-10T13:54:48.151522421-05:00" -> at most 6 fraction digits (RFC 5424 TIME-SECFRAC).
std::string rfc5424_timestamp(std::string_view ts) {
  const std::size_t dot = ts.find('.');
  if (ts.size() < 20 || ts[10] != 'T') return {};
  if (dot == std::string_view::npos) return std::string(ts);
  std::size_t end = dot + 1;
  while (end < ts.size() && ts[end] >= '0' && ts[end] <= '9') ++end;
  const std::size_t digits = std::min<std::size_t>(end - dot - 1, 6);
  return std::string(ts.substr(0, dot + 1 + digits)) + std::string(ts.substr(end));
}

std::string now_rfc5424() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us));
  return buf;
}

// RFC 3164 TIMESTAMP: "Mmm dd hh:mm:ss" in local time, day padded with a space.
std::string now_rfc3164() {
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s %2d %02d:%02d:%02d", kMonths[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string short_host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "-";
  std::string name(buf);
  name = name.substr(0, name.find('.'));
  return header_token(name, 255);
}

// ---------------------------------------------------------------------------------------------
// Sockets

std::string errno_text(int e) { return std::strerror(e); }


std::string format_ms(std::chrono::milliseconds d) {
  return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s" : std::to_string(d.count()) + "ms";
}

void set_io_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// Connects within `timeout`; returns the connected blocking socket or -1 with `why` set.
int connect_with_timeout(int fd, const sockaddr* addr, socklen_t len, std::chrono::milliseconds timeout,
                         std::string& why) {
  const int flags = fcntl(fd, F_GETFL, 0);
  (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  if (connect(fd, addr, len) != 0) {
    if (errno != EINPROGRESS) {
      why = errno_text(errno);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    const int n = poll(&p, 1, static_cast<int>(timeout.count()));
    if (n == 0) {
      why = "timed out after " + format_ms(timeout);
      return -1;
    }
    int err = 0;
    socklen_t err_len = sizeof err;
    if (n < 0)
      err = errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0)
      err = errno;
    if (err != 0) {
      why = errno_text(err);
      return -1;
    }
  }
  (void)fcntl(fd, F_SETFL, flags);
  return fd;
}

// ---------------------------------------------------------------------------------------------
// The sink

class SyslogSink final : public zctl::sdk::Sink {
 public:
  static constexpr const char* config_schema = R"json({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "zctl syslog sink",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "transport": {"enum": ["udp", "tcp", "tls", "unix"], "default": "udp", "description": "how messages travel"},
    "address": {"type": "string", "description": "HOST:PORT for udp/tcp (default 127.0.0.1:514) and tls (default 127.0.0.1:6514); a socket path for unix (default /dev/log)"},
    "format": {"enum": ["rfc5424", "rfc3164"], "default": "rfc5424", "description": "syslog message format"},
    "framing": {"enum": ["octet_counting", "non_transparent"], "default": "octet_counting",
                "description": "tcp/tls only: RFC 6587 LEN SP MSG, or MSG LF"},
    "facility": {"enum": ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
                          "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"], "default": "daemon"},
    "app_name": {"type": "string", "default": "zctl", "description": "APP-NAME (RFC 5424) or TAG (RFC 3164)"},
    "hostname": {"type": "string", "description": "HOSTNAME field (default: the short host name)"},
    "timeout": {"type": "string", "default": "5s", "description": "limit for connect, the TLS handshake and each send"},
    "ca_file": {"type": "string", "description": "tls: PEM CA certificates to verify the server with (default: the system's)"},
    "cert_file": {"type": "string", "description": "tls: PEM client certificate (chain), with key_file"},
    "key_file": {"type": "string", "description": "tls: PEM private key of cert_file"},
    "verify": {"type": "boolean", "default": true, "description": "tls: verify the server's certificate and host name"}
  }
})json";

  static void validate(const std::string& config_json) { check_files(parse_config(config_json)); }

  SyslogSink(const std::string& config_json, zctl::sdk::Host host) : cfg_(parse_config(config_json)), host_(host) {
    if (cfg_.hostname.empty()) cfg_.hostname = short_host_name();
    procid_ = std::to_string(static_cast<long long>(getpid()));
    if (cfg_.transport == Transport::tls) tls_ctx_ = make_tls_context();  // throws: reject
  }

  ~SyslogSink() override { close(); }

  Status emit(const zctl::sdk::Batch& batch) override {
    if (batch.empty()) return Status::ok();
    const bool datagrams = cfg_.transport == Transport::udp || cfg_.transport == Transport::unix_dgram;
    messages_.clear();
    for (const zctl::sdk::Event& e : batch) {
      messages_.push_back(format_message(e));
      const std::string& m = messages_.back();
      if (cfg_.transport == Transport::udp && m.size() > kMaxUdpPayload)
        return Status::reject("event seq " + std::to_string(e.seq) + ": the syslog message is " +
                              std::to_string(m.size()) + " bytes, more than a UDP datagram can carry (" +
                              std::to_string(kMaxUdpPayload) + "); use transport tcp or tls");
      if (!datagrams && cfg_.framing == Framing::non_transparent && m.find('\n') != std::string::npos)
        return Status::reject("event seq " + std::to_string(e.seq) +
                              ": the message contains a line feed, which non_transparent framing cannot carry; "
                              "use framing octet_counting");
    }
    if (fd_ >= 0 && !datagrams && peer_closed()) {
      host_.debug("syslog " + cfg_.address + ": the receiver closed the connection; reconnecting");
      close();
    }
    if (fd_ < 0) {
      std::string why;
      if (!open(why)) {
        close();
        return Status::retry("syslog " + transport_name() + " " + cfg_.address + ": " + why);
      }
    }
    return datagrams ? send_datagrams(batch) : send_stream();
  }

  // SIGHUP: re-reads the TLS files (rotation) and reconnects.
  Status reopen() override {
    if (cfg_.transport == Transport::tls) {
      try {
        tls_ctx_ = make_tls_context();
      } catch (const std::exception& e) {
        return Status::retry(std::string("reload failed, keeping the previous TLS files: ") + e.what());
      }
    }
    close();
    return Status::ok();
  }

 private:
  std::string transport_name() const {
    switch (cfg_.transport) {
      case Transport::udp:
        return "udp";
      case Transport::tcp:
        return "tcp";
      case Transport::tls:
        return "tls";
      case Transport::unix_dgram:
        return "unix";
    }
    return "?";
  }

  std::string format_message(const zctl::sdk::Event& e) {
    const std::string_view ns = e.event_namespace, type = e.event_type;
    const int pri = cfg_.facility * 8 + severity_of(ns, type);
    // The envelope fields the header and the structured data need; the JSON itself is sent as is.
    std::string timestamp, src;
    doc_.Parse<rapidjson::kParseStopWhenDoneFlag>(e.json.data(), e.json.size());
    if (!doc_.HasParseError() && doc_.IsObject()) {
      const auto ts = doc_.FindMember("timestamp");
      if (ts != doc_.MemberEnd() && ts->value.IsString())
        timestamp.assign(ts->value.GetString(), ts->value.GetStringLength());
      const auto id = doc_.FindMember("event_src_id");
      if (id != doc_.MemberEnd() && id->value.IsString())
        src.assign(id->value.GetString(), id->value.GetStringLength());
    }
    std::string m;
    m.reserve(e.json.size() + 200);
    m += "<" + std::to_string(pri) + ">";
    if (cfg_.format == Format::rfc5424) {
      std::string ts = rfc5424_timestamp(timestamp);
      if (ts.empty()) ts = now_rfc5424();
      std::string msgid = std::string(ns) + "/" + std::string(type);
      m += "1 " + ts + " " + cfg_.hostname + " " + cfg_.app_name + " " + procid_ + " " + header_token(msgid, 32) +
           " [" + kSdId + " namespace=\"";
      append_param_value(m, ns);
      m += "\" eventType=\"";
      append_param_value(m, type);
      m += "\" seq=\"" + std::to_string(e.seq) + "\"";
      if (!src.empty()) {
        m += " src=\"";
        append_param_value(m, src);
        m += "\"";
      }
      m += "] ";
    } else {
      m += now_rfc3164() + " " + cfg_.hostname + " " + cfg_.app_name.substr(0, 32) + "[" + procid_ + "]: ";
    }
    m.append(e.json);
    return m;
  }

  bool open(std::string& why) {
    if (cfg_.transport == Transport::unix_dgram) {
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path, cfg_.path.data(), cfg_.path.size());
      fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd_ < 0) {
        why = "socket: " + errno_text(errno);
        return false;
      }
      set_io_timeout(fd_, cfg_.timeout);
      if (::connect(fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
        why = "connecting: " + errno_text(errno);
        return false;
      }
      return true;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = cfg_.transport == Transport::udp ? SOCK_DGRAM : SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(cfg_.host.c_str(), cfg_.port.c_str(), &hints, &res);
    if (rc != 0) {
      why = "resolving " + cfg_.host + ": " + gai_strerror(rc);
      return false;
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, &freeaddrinfo);
    why = "no address for " + cfg_.host;
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      close();
      fd_ = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd_ < 0) {
        why = "socket: " + errno_text(errno);
        continue;
      }
      std::string step;
      if (connect_with_timeout(fd_, ai->ai_addr, ai->ai_addrlen, cfg_.timeout, step) < 0) {
        why = "connecting: " + step;
        continue;
      }
      set_io_timeout(fd_, cfg_.timeout);
      if (cfg_.transport == Transport::udp) return true;
      const int one = 1;
      (void)setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (cfg_.transport == Transport::tcp) return true;
      if (handshake(why)) return true;
    }
    return false;
  }

  bool handshake(std::string& why) {
    ssl_ = SSL_new(tls_ctx_.get());
    if (ssl_ == nullptr) {
      why = "TLS: " + openssl_error();
      return false;
    }
    SSL_set_fd(ssl_, fd_);
    in6_addr ip6{};
    in_addr ip4{};
    const bool is_ip =
        inet_pton(AF_INET, cfg_.host.c_str(), &ip4) == 1 || inet_pton(AF_INET6, cfg_.host.c_str(), &ip6) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(ssl_, cfg_.host.c_str());
    if (cfg_.verify) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
      const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, cfg_.host.c_str())
                           : X509_VERIFY_PARAM_set1_host(param, cfg_.host.c_str(), 0);
      if (ok != 1) {
        why = "TLS: cannot set the expected peer name";
        return false;
      }
    }
    ERR_clear_error();
    errno = 0;
    if (SSL_connect(ssl_) != 1) {
      const long verify = SSL_get_verify_result(ssl_);
      why = "TLS handshake failed: " +
            (verify != X509_V_OK ? std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify)
                                 : openssl_error());
      if (errno == EAGAIN || errno == EWOULDBLOCK) why = "TLS handshake timed out after " + format_ms(cfg_.timeout);
      return false;
    }
    return true;
  }

  std::shared_ptr<SSL_CTX> make_tls_context() const {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
    if (!ctx) throw std::runtime_error("TLS: " + openssl_error());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_AUTO_RETRY);
    if (cfg_.verify) {
      const int ok = cfg_.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx.get())
                                          : SSL_CTX_load_verify_locations(ctx.get(), cfg_.ca_file.c_str(), nullptr);
      if (ok != 1)
        throw std::invalid_argument(cfg_.ca_file.empty()
                                        ? "cannot load the system's CA certificates: " + openssl_error()
                                        : "'ca_file': " + cfg_.ca_file +
                                              " holds no usable PEM certificate: " + openssl_error());
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    } else {
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
    if (!cfg_.cert_file.empty()) {
      if (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg_.cert_file.c_str()) != 1)
        throw std::invalid_argument("'cert_file': " + cfg_.cert_file +
                                    " holds no usable PEM certificate: " + openssl_error());
      if (SSL_CTX_use_PrivateKey_file(ctx.get(), cfg_.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
        throw std::invalid_argument("'key_file': " + cfg_.key_file + " holds no usable PEM key: " + openssl_error());
      if (SSL_CTX_check_private_key(ctx.get()) != 1)
        throw std::invalid_argument("'key_file': " + cfg_.key_file + " does not match 'cert_file' " + cfg_.cert_file);
    }
    return ctx;
  }

  // True when a kept connection was closed by the receiver (or is broken). Never blocks. Bytes
  // the receiver sent (TLS session tickets; a plain syslog receiver sends nothing) are consumed.
  bool peer_closed() {
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      const int n = poll(&p, 1, 0);
      if (n == 0) return false;
      if (n < 0 || (p.revents & (POLLERR | POLLNVAL)) != 0) return true;
      const ssize_t peeked = recv(fd_, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
      if (peeked == 0) return true;
      if (peeked < 0) return !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
      if (ssl_ == nullptr) {
        (void)recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        continue;
      }
      // TLS: let OpenSSL process the records; this may be a ticket, or a close_notify.
      const int flags = fcntl(fd_, F_GETFL, 0);
      (void)fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
      ERR_clear_error();
      const int r = SSL_read(ssl_, buf, sizeof buf);
      const int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      (void)fcntl(fd_, F_SETFL, flags);
      if (err == SSL_ERROR_WANT_READ && r <= 0) return false;
      if (err != SSL_ERROR_NONE) return true;
    }
  }

  Status send_datagrams(const zctl::sdk::Batch& batch) {
    for (std::size_t i = 0; i < messages_.size(); ++i) {
      const std::string& m = messages_[i];
      if (::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) < 0) {
        const int e = errno;
        close();
        if (e == EMSGSIZE)
          return Status::reject("event seq " + std::to_string(batch[i].seq) + ": the syslog message is " +
                                std::to_string(m.size()) + " bytes, too large for one datagram on " + transport_name() +
                                " " + cfg_.address);
        const std::string what =
            (e == EAGAIN || e == EWOULDBLOCK) ? "timed out after " + format_ms(cfg_.timeout) : errno_text(e);
        return Status::retry("syslog " + transport_name() + " " + cfg_.address + ": sending: " + what);
      }
    }
    return Status::ok();
  }

  Status send_stream() {
    out_.clear();
    for (const std::string& m : messages_) {
      if (cfg_.framing == Framing::octet_counting) {
        out_ += std::to_string(m.size());
        out_.push_back(' ');
        out_ += m;
      } else {
        out_ += m;
        out_.push_back('\n');
      }
    }
    std::size_t done = 0;
    while (done < out_.size()) {
      ssize_t n;
      int e = 0;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int r =
            SSL_write(ssl_, out_.data() + done, static_cast<int>(std::min<std::size_t>(out_.size() - done, 1 << 30)));
        n = r;
        if (r <= 0) e = errno;
      } else {
        n = ::send(fd_, out_.data() + done, out_.size() - done, MSG_NOSIGNAL);
        if (n < 0) e = errno;
      }
      if (n <= 0) {
        if (e == EINTR) continue;
        std::string what = (e == EAGAIN || e == EWOULDBLOCK) ? "timed out after " + format_ms(cfg_.timeout)
                           : e != 0                          ? errno_text(e)
                                                             : "TLS: " + openssl_error();
        close();
        return Status::retry("syslog " + transport_name() + " " + cfg_.address + ": sending: " + what);
      }
      done += static_cast<std::size_t>(n);
    }
    return Status::ok();
  }

  void close() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  SyslogConfig cfg_;
  zctl::sdk::Host host_;
  std::string procid_;
  std::shared_ptr<SSL_CTX> tls_ctx_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;  // tls: the session on fd_
  rapidjson::Document doc_;
  std::vector<std::string> messages_;
  std::string out_;
};

}  // namespace

ZCTL_SINK_PLUGIN(SyslogSink, "syslog", "1.0.0",
                 "Sends each event as an RFC 5424 or RFC 3164 syslog message over UDP, TCP, TLS or a unix socket",
                 ZCTL_SINK_CAP_REOPEN);
