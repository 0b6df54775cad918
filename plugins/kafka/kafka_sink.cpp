// The `kafka` sink: each event becomes one Kafka message whose value is the event's JSON bytes,
// produced with librdkafka to a topic and with a key rendered from templates. A batch counts as
// delivered only once the broker acknowledged every message of it (librdkafka's delivery reports).
// Options, defaults and the result mapping are documented in README.md and zctl-sink-plugin(7).
//
// Design notes
//   - Asynchronous completion: emit() hands every message of the batch to librdkafka with the
//     batch's record as the per-message opaque and returns PENDING. Delivery reports arrive as
//     events on librdkafka's main queue, served by the sink's poll thread; the report that brings
//     a batch's outstanding count to zero completes the batch, exactly once. emit() holds one
//     extra count while it produces, so a batch whose messages all fail synchronously, or whose
//     reports all arrive before emit() returns, is completed then: never twice, never early.
//   - Send at once: the host already batches (queue.batch_max) and keeps several batches of an
//     asynchronous sink in flight, so emit() returns as soon as the batch is produced and
//     librdkafka sends without lingering (linger.ms defaults to 0 here; `librdkafka:` may set
//     it). Producing the next batch overlaps waiting for this one's acknowledgements.
//   - Result of a batch: OK when every message was acknowledged. Otherwise RETRY when any message
//     failed transiently (timeout, broker down, retriable broker errors librdkafka gave up on),
//     else REJECT (every failure permanent: too large, invalid, unknown or invalid topic, not
//     authorised). A transient failure wins over a permanent one: the retry resends the whole
//     batch, the messages that can never be delivered fail again, and the batch is rejected
//     once nothing transient is left, so no event a retry could deliver is dropped with the
//     rest.
//   - The host waits for one pending batch at a time but gives up after its call_timeout and
//     retries; the old batch's messages may still be in librdkafka then. Each batch has its own
//     record, so a late completion is harmless (the host ignores it). message_timeout defaults
//     below the host's call_timeout so that normally librdkafka gives up first, with its reason.
//   - No allocation per message on the plugin's side: the key and topic are rendered into
//     reused buffers, topic handles are cached, and the placeholders that need the event's JSON
//     are read by a scanner that stops as soon as it has them. librdkafka copies each key and
//     value (the host's event bytes are only valid during emit()).
//   - destroy() fails what librdkafka still holds (purge), serves the resulting reports, and
//     completes any batch still outstanding with RETRY before it returns.
#include <zctl/sink.hpp>
#include <zctl/sink_config.hpp>

#include "plugin_config.hpp"

#include <librdkafka/rdkafka.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

using zctl::plugins::string_value;
using zctl::plugins::timeout_value;

namespace {

using zctl::sdk::Status;
using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = "1.0.0";

constexpr const char* kKeys[] = {"brokers",   "topic",           "key",       "acks", "compression",
                                 "client_id", "message_timeout", "librdkafka"};

// Fields a template may name: the envelope, then every scalar top-level field of the event
// catalogue (zctl-events(7)). A name outside this list is a typo, refused at validation.
constexpr const char* kPlaceholders[] = {
    // envelope
    "namespace", "eventType", "event_src_id", "timestamp", "seq",
    // node
    "version", "pid", "admin", "mesh", "dataDir", "reason", "test", "sink", "runId", "count",
    // cluster
    "leaderId", "lastLeaderId", "term", "index",
    // connection
    "remoteAddr", "localAddr", "connectedAt", "pendingStep", "protocolVersion", "nodeId", "graceMs", "action",
    "bytesIn", "detail", "periodMs", "offset", "joined", "source", "connections", "window", "windowMs", "limit"};

// librdkafka properties this sink sets from its own keys (or relies on); giving them under
// `librdkafka:` would silently fight the dedicated key, so they are refused with a pointer to it.
constexpr std::pair<const char*, const char*> kReservedProperties[] = {
    {"bootstrap.servers", "use 'brokers'"},
    {"metadata.broker.list", "use 'brokers'"},
    {"client.id", "use 'client_id'"},
    {"acks", "use 'acks'"},
    {"request.required.acks", "use 'acks'"},
    {"compression.codec", "use 'compression'"},
    {"compression.type", "use 'compression'"},
    {"message.timeout.ms", "use 'message_timeout'"},
    {"delivery.timeout.ms", "use 'message_timeout'"},
    {"delivery.report.only.error", "the sink needs a delivery report for every message"},
};

// Producer defaults of this sink, applied before `librdkafka:` so every one can be overridden.
// A batch is sent as soon as it is produced (see the design notes); TCP_NODELAY keeps the
// kernel from holding back the last, partial segment of a request.
constexpr std::pair<const char*, const char*> kProducerDefaults[] = {
    {"socket.nagle.disable", "true"},
    {"linger.ms", "0"},
};

constexpr std::size_t kMaxCachedTopics = 1024;
constexpr std::size_t kMaxTopicLength = 249;
constexpr int kPollTimeoutMs = 100;
constexpr int kHealthTimeoutMs = 2000;
constexpr auto kLogWindow = std::chrono::seconds(10);
constexpr int kLogLinesPerWindow = 20;

// ---------------------------------------------------------------------------------------------
// Templates

enum class Source : uint8_t { literal, event_namespace, event_type, seq, json };

struct Segment {
  Source source = Source::literal;
  std::string text;       // literal
  std::size_t field = 0;  // json: index into Template users' field list
};

struct Template {
  std::string text;  // as configured
  std::vector<Segment> segments;
  bool empty() const { return segments.empty(); }
  bool constant() const {
    return std::all_of(segments.begin(), segments.end(), [](const Segment& s) { return s.source == Source::literal; });
  }
};

bool is_topic_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

std::string closest_placeholder(std::string_view name) {
  std::string_view best;
  std::size_t best_distance = 3;
  for (std::string_view p : kPlaceholders) {
    const std::size_t d = zctl::sdk::edit_distance(name, p);
    if (d < best_distance) {
      best_distance = d;
      best = p;
    }
  }
  return std::string(best);
}

// Parses "{name}" placeholders, "{{" and "}}" for literal braces. `json_fields` collects the
// names that must be read from the event's JSON (shared by the topic and key templates).
Template parse_template(std::string_view key, std::string_view text, std::vector<std::string>& json_fields) {
  Template t;
  t.text = std::string(text);
  std::string literal;
  const auto flush_literal = [&] {
    if (!literal.empty()) t.segments.push_back(Segment{Source::literal, std::exchange(literal, {}), 0});
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      literal.push_back('{');
      ++i;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      literal.push_back('}');
      ++i;
    } else if (c == '}') {
      throw std::invalid_argument("'" + std::string(key) + "': unmatched '}' at position " + std::to_string(i + 1) +
                                  " (write '}}' for a literal brace)");
    } else if (c == '{') {
      const std::size_t close = text.find('}', i + 1);
      if (close == std::string_view::npos)
        throw std::invalid_argument("'" + std::string(key) + "': unmatched '{' at position " + std::to_string(i + 1) +
                                    " (write '{{' for a literal brace)");
      const std::string name(text.substr(i + 1, close - i - 1));
      if (std::find(std::begin(kPlaceholders), std::end(kPlaceholders), name) == std::end(kPlaceholders)) {
        std::string msg = "'" + std::string(key) + "': unknown placeholder '{" + name + "}'";
        const std::string best = closest_placeholder(name);
        msg += best.empty() ? " (placeholders: namespace, eventType, event_src_id, seq, or a top-level event field "
                              "such as remoteAddr)"
                            : " (did you mean '{" + best + "}'?)";
        throw std::invalid_argument(msg);
      }
      flush_literal();
      Segment s;
      if (name == "namespace") {
        s.source = Source::event_namespace;
      } else if (name == "eventType") {
        s.source = Source::event_type;
      } else if (name == "seq") {
        s.source = Source::seq;
      } else {
        s.source = Source::json;
        const auto it = std::find(json_fields.begin(), json_fields.end(), name);
        s.field = static_cast<std::size_t>(it - json_fields.begin());
        if (it == json_fields.end()) json_fields.push_back(name);
      }
      t.segments.push_back(std::move(s));
      i = close;
    } else {
      literal.push_back(c);
    }
  }
  flush_literal();
  return t;
}

void check_topic_template(const Template& t) {
  if (t.empty()) throw std::invalid_argument("'topic' must not be empty");
  for (const Segment& s : t.segments) {
    if (s.source != Source::literal) continue;
    for (char c : s.text) {
      if (!is_topic_char(c))
        throw std::invalid_argument("'topic': \"" + t.text +
                                    "\" is not a valid Kafka topic name: only letters, digits, '.', '_' and '-' "
                                    "are allowed besides {placeholders}");
    }
  }
  if (t.constant()) {
    const std::string& name = t.segments[0].text;
    if (name.size() > kMaxTopicLength || name == "." || name == "..")
      throw std::invalid_argument("'topic': \"" + t.text +
                                  "\" is not a valid Kafka topic name (1-249 characters, "
                                  "not '.' or '..')");
  }
}

// Reads the top-level fields a template needs from one event's JSON, stopping once it has them.
// Strings give their (unescaped) value, numbers and booleans their JSON text; null, objects,
// arrays and a field the event does not have give the empty string. A small scanner rather than
// a JSON parser: it only looks at the top level, skips values without decoding them, and the
// envelope fields come first in every event, so reading {event_src_id} stops after three keys.
// The host's events are valid JSON; on anything else it stops and leaves the rest empty.
class FieldReader {
 public:
  explicit FieldReader(const std::vector<std::string>& names) : names_(names), values_(names.size()) {}

  const std::vector<std::string>& read(std::string_view json) {
    for (auto& v : values_) v.clear();
    std::size_t found = 0, i = skip_ws(json, 0);
    if (i >= json.size() || json[i] != '{') return values_;
    ++i;
    while (found < names_.size()) {
      i = skip_ws(json, i);
      if (i >= json.size() || json[i] != '"') return values_;  // '}' (the end) or malformed
      std::size_t key_end = 0;
      bool key_escaped = false;
      if (!scan_string(json, i, key_end, key_escaped)) return values_;
      const std::string_view key = json.substr(i + 1, key_end - i - 2);
      i = skip_ws(json, key_end);
      if (i >= json.size() || json[i] != ':') return values_;
      i = skip_ws(json, i + 1);
      std::size_t wanted = names_.size();
      if (!key_escaped) {
        for (std::size_t k = 0; k < names_.size(); ++k) {
          if (names_[k] == key) wanted = k;
        }
      }
      std::size_t value_end = 0;
      if (i >= json.size()) return values_;
      if (json[i] == '"') {
        bool escaped = false;
        if (!scan_string(json, i, value_end, escaped)) return values_;
        if (wanted < names_.size()) {
          const std::string_view raw = json.substr(i + 1, value_end - i - 2);
          if (escaped)
            unescape(raw, values_[wanted]);
          else
            values_[wanted].assign(raw);
        }
      } else if (json[i] == '{' || json[i] == '[') {
        if (!skip_nested(json, i, value_end)) return values_;
      } else {
        value_end = i;
        while (value_end < json.size() && json[value_end] != ',' && json[value_end] != '}' && !is_ws(json[value_end]))
          ++value_end;
        const std::string_view raw = json.substr(i, value_end - i);
        if (wanted < names_.size() && raw != "null") values_[wanted].assign(raw);
      }
      if (wanted < names_.size()) ++found;
      i = skip_ws(json, value_end);
      if (i >= json.size() || json[i] != ',') return values_;
      ++i;
    }
    return values_;
  }

 private:
  static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  static std::size_t skip_ws(std::string_view s, std::size_t i) {
    while (i < s.size() && is_ws(s[i])) ++i;
    return i;
  }
  // s[i] is the opening quote; `end` is set past the closing one.
  static bool scan_string(std::string_view s, std::size_t i, std::size_t& end, bool& escaped) {
    for (std::size_t j = i + 1; j < s.size();) {
      const void* q = std::memchr(s.data() + j, '"', s.size() - j);
      if (q == nullptr) return false;
      const auto quote = static_cast<std::size_t>(static_cast<const char*>(q) - s.data());
      std::size_t backslashes = 0;  // an odd run of them right before it escapes the quote
      while (quote - backslashes > j && s[quote - backslashes - 1] == '\\') ++backslashes;
      if (backslashes > 0 || std::memchr(s.data() + j, '\\', quote - j) != nullptr) escaped = true;
      if (backslashes % 2 == 0) {
        end = quote + 1;
        return true;
      }
      j = quote + 1;
    }
    return false;
  }
  // s[i] is '{' or '['; `end` is set past the matching bracket.
  static bool skip_nested(std::string_view s, std::size_t i, std::size_t& end) {
    int depth = 0;
    for (std::size_t j = i; j < s.size(); ++j) {
      const char c = s[j];
      if (c == '"') {
        bool ignored = false;
        if (!scan_string(s, j, end, ignored)) return false;
        j = end - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        end = j + 1;
        return true;
      }
    }
    return false;
  }
  static unsigned hex4(std::string_view s, std::size_t i) {
    unsigned v = 0;
    for (std::size_t k = i; k < i + 4; ++k) {
      const char c = k < s.size() ? s[k] : 'x';
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        return 0xFFFD;  // not hex: the replacement character
    }
    return v;
  }
  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  static void unescape(std::string_view raw, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\' || i + 1 >= raw.size()) {
        out.push_back(raw[i]);
        continue;
      }
      const char c = raw[++i];
      switch (c) {
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          unsigned cp = hex4(raw, i + 1);
          i += 4;
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < raw.size() && raw[i + 1] == '\\' && raw[i + 2] == 'u') {
            const unsigned low = hex4(raw, i + 3);
            if (low >= 0xDC00 && low < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              i += 6;
            }
          }
          if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;  // a lone surrogate
          append_utf8(out, cp);
          break;
        }
        default:
          out.push_back(c);
          break;  // \" \\ \/
      }
    }
  }

  const std::vector<std::string>& names_;
  std::vector<std::string> values_;
};

void render(const Template& t, const zctl_sink_event& e, const std::vector<std::string>& fields, std::string& out) {
  out.clear();
  for (const Segment& s : t.segments) {
    switch (s.source) {
      case Source::literal:
        out += s.text;
        break;
      case Source::event_namespace:
        if (e.event_namespace != nullptr) out += e.event_namespace;
        break;
      case Source::event_type:
        if (e.event_type != nullptr) out += e.event_type;
        break;
      case Source::seq: {
        char buf[24];
        const auto r = std::to_chars(buf, buf + sizeof buf, e.seq);
        out.append(buf, r.ptr);
        break;
      }
      case Source::json:
        out += fields[s.field];
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Configuration

struct KafkaConfig {
  std::string brokers;  // comma-separated, as librdkafka wants them
  Template topic, key;
  std::vector<std::string> json_fields;  // placeholders read from the event's JSON
  std::string acks = "all";
  std::string compression = "none";
  std::string client_id = "zctl";
  std::chrono::milliseconds message_timeout{5000};              // below the host's default call_timeout (10s)
  std::vector<std::pair<std::string, std::string>> properties;  // `librdkafka:`, in order
};

[[noreturn]] void unknown_key(std::string_view key) {
  throw std::invalid_argument(zctl::sdk::unknown_key_message(key, kKeys));
}

// One bootstrap broker: HOST:PORT (or what else librdkafka accepts, e.g. SSL://HOST:PORT).
std::string broker_value(std::string_view s) {
  if (s.empty() || s.find_first_of(std::string_view(" \t\r\n,\0", 6)) != std::string_view::npos)
    throw std::invalid_argument(
        "'brokers' must be a non-empty list of HOST:PORT strings (or one string of them separated by commas)");
  return std::string(s);
}

std::string number_text(const rapidjson::Value& v) {
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsUint64()) return std::to_string(v.GetUint64());
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v.GetDouble());
  return std::string(buf, r.ptr);
}

KafkaConfig parse_config(const std::string& json) {
  const rapidjson::Document doc = zctl::plugins::parse_config_object(json);

  KafkaConfig cfg;
  std::string topic = "zctl.{namespace}", key = "{event_src_id}";
  bool have_brokers = false;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string_view name(it->name.GetString(), it->name.GetStringLength());
    const rapidjson::Value& v = it->value;
    if (name == "brokers") {
      have_brokers = true;
      if (v.IsArray() && !v.Empty()) {
        for (const auto& b : v.GetArray()) {
          const std::string_view text = b.IsString() ? std::string_view(b.GetString(), b.GetStringLength()) : "";
          cfg.brokers += (cfg.brokers.empty() ? "" : ",") + broker_value(text);
        }
      } else {
        // One string; "a:9092,b:9092" is split so that each part is checked.
        const std::string_view s = v.IsString() ? std::string_view(v.GetString(), v.GetStringLength()) : "";
        std::size_t start = 0;
        do {
          const std::size_t comma = std::min(s.find(',', start), s.size());
          cfg.brokers += (cfg.brokers.empty() ? "" : ",") + broker_value(s.substr(start, comma - start));
          start = comma + 1;
        } while (start <= s.size());
      }
    } else if (name == "topic") {
      topic = string_value(name, v);
    } else if (name == "key") {
      if (!v.IsString()) throw std::invalid_argument("'key' must be a string (\"\" for messages without a key)");
      key.assign(v.GetString(), v.GetStringLength());
    } else if (name == "acks") {
      const std::string s = v.IsString() ? std::string(v.GetString(), v.GetStringLength())
                            : v.IsInt()  ? std::to_string(v.GetInt())
                                         : std::string();
      if (s == "all" || s == "-1")
        cfg.acks = "all";
      else if (s == "1" || s == "0")
        cfg.acks = s;
      else
        throw std::invalid_argument("'acks' must be \"all\" (every in-sync replica), 1 (the leader) or 0 (none)");
    } else if (name == "compression") {
      const std::string s = v.IsString() ? std::string(v.GetString(), v.GetStringLength()) : std::string();
      if (s != "none" && s != "gzip" && s != "snappy" && s != "lz4" && s != "zstd")
        throw std::invalid_argument("'compression' must be \"none\", \"gzip\", \"snappy\", \"lz4\" or \"zstd\"");
      cfg.compression = s;
    } else if (name == "client_id") {
      cfg.client_id = string_value(name, v);
    } else if (name == "message_timeout") {
      if (!v.IsString()) throw std::invalid_argument("'message_timeout' must be a duration string such as \"5s\"");
      cfg.message_timeout = timeout_value(name, std::string_view(v.GetString(), v.GetStringLength()));
    } else if (name == "librdkafka") {
      if (!v.IsObject())
        throw std::invalid_argument("'librdkafka' must be a mapping of librdkafka properties to values");
      for (auto p = v.MemberBegin(); p != v.MemberEnd(); ++p) {
        const std::string prop(p->name.GetString(), p->name.GetStringLength());
        for (const auto& [reserved, why] : kReservedProperties) {
          if (prop == reserved) throw std::invalid_argument("'librdkafka': " + prop + " is set by the sink; " + why);
        }
        std::string value;
        if (p->value.IsString())
          value.assign(p->value.GetString(), p->value.GetStringLength());
        else if (p->value.IsBool())
          value = p->value.GetBool() ? "true" : "false";
        else if (p->value.IsNumber())
          value = number_text(p->value);
        else
          throw std::invalid_argument("'librdkafka': the value of " + prop + " must be a string, number or boolean");
        cfg.properties.emplace_back(prop, std::move(value));
      }
    } else {
      unknown_key(name);
    }
  }
  if (!have_brokers) throw std::invalid_argument("'brokers' is required (e.g. [\"kafka1:9092\", \"kafka2:9092\"])");
  cfg.topic = parse_template("topic", topic, cfg.json_fields);
  check_topic_template(cfg.topic);
  cfg.key = parse_template("key", key, cfg.json_fields);
  return cfg;
}

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

// The librdkafka configuration for `cfg`: every property set, so an unknown property or a bad
// value is reported here, without creating a client (nothing connects).
ConfPtr make_conf(const KafkaConfig& cfg) {
  ConfPtr conf(rd_kafka_conf_new());
  char err[512];
  const auto set = [&](const std::string& prefix, const std::string& name, const std::string& value) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      throw std::invalid_argument(prefix + err);
  };
  // librdkafka names an alias by its canonical property ("linger.ms" -> "queue.buffering.max.ms"),
  // so a passed-through property is named as the config wrote it, too.
  const auto set_property = [&](const std::string& name, const std::string& value) {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      throw std::invalid_argument("'librdkafka': " + name + ": \"" + value + "\": " + err);
  };
  set("'brokers': ", "bootstrap.servers", cfg.brokers);
  set("'client_id': ", "client.id", cfg.client_id);
  set("'acks': ", "acks", cfg.acks);
  set("'compression': ", "compression.codec", cfg.compression);
  set("'message_timeout': ", "message.timeout.ms", std::to_string(cfg.message_timeout.count()));
  for (const auto& [name, value] : kProducerDefaults) set("", name, value);
  for (const auto& [name, value] : cfg.properties) set_property(name, value);
  return conf;
}

// Errors after which the message can never be delivered as it is: retrying the batch would
// only fail again. Everything else (timeouts, transport, broker down, retriable broker errors
// that outlived librdkafka's own retries, purges at shutdown) is worth a retry.
bool is_permanent(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
      return true;
    default:
      return false;
  }
}

std::string error_text(rd_kafka_resp_err_t err) {
  return std::string(rd_kafka_err2str(err)) + " (" + rd_kafka_err2name(err) + ")";
}

// ---------------------------------------------------------------------------------------------
// The sink

class KafkaSink final : public zctl::sdk::Sink {
 public:
  static constexpr const char* config_schema = R"json({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "zctl kafka sink",
  "type": "object",
  "additionalProperties": false,
  "required": ["brokers"],
  "properties": {
    "brokers": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
                "description": "bootstrap brokers: HOST:PORT strings, or one comma-separated string"},
    "topic": {"type": "string", "default": "zctl.{namespace}",
              "description": "topic template: {namespace}, {eventType}, {event_src_id}, {seq} or a top-level event field"},
    "key": {"type": "string", "default": "{event_src_id}",
            "description": "message key template, same placeholders; a key that renders empty is sent as no key"},
    "acks": {"enum": ["all", "1", "0", 1, 0, -1], "default": "all",
             "description": "acknowledgements the leader waits for: all in-sync replicas, itself, none"},
    "compression": {"enum": ["none", "gzip", "snappy", "lz4", "zstd"], "default": "none"},
    "client_id": {"type": "string", "default": "zctl"},
    "message_timeout": {"type": "string", "default": "5s",
                        "description": "how long librdkafka may try to deliver a message, retries included"},
    "librdkafka": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]},
                   "description": "any librdkafka producer property, passed through verbatim"}
  }
})json";

  static void validate(const std::string& config_json) { (void)make_conf(parse_config(config_json)); }

  KafkaSink(const std::string& config_json, zctl::sdk::Host host)
      : cfg_(parse_config(config_json)), host_(host), fields_(cfg_.json_fields) {
    start_producer();  // throws std::invalid_argument: a config that cannot work (reject)
  }

  ~KafkaSink() override { stop_producer("the sink shut down"); }

  Status emit(const zctl::sdk::Batch& batch) override {
    if (batch.empty()) return Status::ok();
    if (rk_ != nullptr && fatal_.load()) {
      // A fatal error (idempotence or transactions) leaves the producer unusable: start anew.
      char why[512] = "";
      rd_kafka_fatal_error(rk_, why, sizeof why);
      host_.error(std::string("kafka: the producer hit a fatal error and is recreated: ") + why);
      stop_producer(std::string("the producer was recreated after a fatal error: ") + why);
    }
    if (rk_ == nullptr) start_producer();  // throws: the host retries the batch

    auto owned = std::make_unique<BatchRecord>();
    BatchRecord* rec = owned.get();
    rec->id = batch.id();
    rec->total = static_cast<uint32_t>(batch.size());
    // One count per message, plus one held by this call until every message is handed over.
    rec->outstanding.store(rec->total + 1);
    {
      std::lock_guard lock(mu_);
      records_.push_front(std::move(owned));
      rec->where = records_.begin();
    }

    // The messages' timestamp (CreateTime): when the batch was handed over, in milliseconds.
    batch_timestamp_ms_ =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    const zctl_sink_event* events = batch.raw_events();
    const std::vector<std::string> no_fields;
    for (uint32_t i = 0; i < rec->total; ++i) {
      const zctl_sink_event& e = events[i];
      const std::vector<std::string>& fields =
          cfg_.json_fields.empty() ? no_fields : fields_.read(std::string_view(e.json, e.json_len));
      render(cfg_.topic, e, fields, topic_buf_);
      render(cfg_.key, e, fields, key_buf_);
      const rd_kafka_resp_err_t err = produce(e, rec);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      if (is_permanent(err)) {
        // This message can never be delivered; the others still can.
        record_failure(rec, err, 1, topic_buf_, -1, invalid_topic_ ? "not a valid Kafka topic name" : nullptr);
        release(rec);
        continue;
      }
      // The batch will be retried as a whole: sending the rest now would only send it twice.
      const uint32_t not_sent = rec->total - i;
      record_failure(rec, err, not_sent, topic_buf_, -1, nullptr);
      rec->outstanding.fetch_sub(not_sent, std::memory_order_acq_rel);  // this call's count keeps it above 0
      break;
    }
    release(rec);  // this call's own count
    return Status::pending();
  }

  // Waits for everything handed to librdkafka to be acknowledged or failed.
  Status flush(uint32_t timeout_ms) override {
    if (rk_ == nullptr) return Status::ok();  // nothing handed over
    const rd_kafka_resp_err_t err = rd_kafka_flush(rk_, static_cast<int>(std::min<uint32_t>(timeout_ms, INT32_MAX)));
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::ok();
    return Status::retry(std::to_string(rd_kafka_outq_len(rk_)) + " message(s) still undelivered after " +
                         std::to_string(timeout_ms) + "ms: " + error_text(err));
  }

  // Healthy when a broker answers a metadata request within a short time.
  Status health() override {
    if (rk_ == nullptr) return Status::retry("kafka: no producer (it could not be recreated after a fatal error)");
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk_, 0, nullptr, &md, kHealthTimeoutMs);
    if (md != nullptr) rd_kafka_metadata_destroy(md);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::ok();
    return Status::retry("no Kafka broker answered within " + std::to_string(kHealthTimeoutMs) + "ms (brokers " +
                         cfg_.brokers + "): " + error_text(err));
  }

 private:
  struct BatchRecord {
    uint64_t id = 0;
    uint32_t total = 0;
    std::atomic<uint32_t> outstanding{0};
    // Under mu_:
    uint32_t failed_permanent = 0, failed_transient = 0;
    std::string first_permanent, first_transient;
    bool forced = false;  // completed at shutdown with reports still outstanding
    std::list<std::unique_ptr<BatchRecord>>::iterator where;
  };

  // Delivery reports and errors arrive as events on the main queue, served by the poll thread.
  // (With callbacks instead, rd_kafka_flush() in emit() would poll the same queue as the poll
  // thread and sleep through reports the other one took; in event mode flush() waits on
  // librdkafka's message count, which the poll thread brings down.)
  void start_producer() {
    ConfPtr conf = make_conf(cfg_);
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_events(conf.get(), RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR);
    rd_kafka_conf_set_log_cb(conf.get(), &KafkaSink::on_log);
    char err[512];
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf.get(), err, sizeof err);
    if (rk_ == nullptr) throw std::invalid_argument(std::string("cannot create the Kafka producer: ") + err);
    (void)conf.release();  // rd_kafka_new owns it now
    queue_ = rd_kafka_queue_get_main(rk_);
    fatal_ = false;
    polling_ = true;
    poller_ = std::thread([this] {
      while (polling_.load(std::memory_order_relaxed)) {
        rd_kafka_event_t* ev = rd_kafka_queue_poll(queue_, kPollTimeoutMs);
        if (ev == nullptr) continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_DR) {
          while (const rd_kafka_message_t* msg = rd_kafka_event_message_next(ev)) on_delivery(msg);
        } else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR) {
          on_error(rd_kafka_event_error(ev), rd_kafka_event_error_string(ev), rd_kafka_event_error_is_fatal(ev));
        }
        rd_kafka_event_destroy(ev);  // frees the reported messages: flush() sees the count drop
      }
    });
  }

  // Fails whatever librdkafka still holds, serves those reports, completes every batch still
  // outstanding (with RETRY) and destroys the producer. After it, no report refers to a record.
  void stop_producer(const std::string& why) {
    if (rk_ == nullptr) return;
    stop_reason_ = why;  // read by the reports of the purged messages
    rd_kafka_purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk_, 1000);  // serves the purged messages' reports (on this thread, too)
    polling_ = false;
    if (poller_.joinable()) poller_.join();
    rd_kafka_queue_destroy(queue_);
    queue_ = nullptr;
    std::vector<BatchRecord*> forced;
    {
      std::lock_guard lock(mu_);
      for (auto& r : records_) {
        r->forced = true;
        forced.push_back(r.get());
      }
    }
    for (BatchRecord* r : forced) host_.complete(r->id, Status::retry("kafka: not acknowledged before " + why));
    for (auto& [name, rkt] : topics_) rd_kafka_topic_destroy(rkt);
    topics_.clear();
    last_rkt_ = nullptr;
    rd_kafka_destroy(rk_);
    rk_ = nullptr;
    std::lock_guard lock(mu_);
    records_.clear();  // the forced ones; librdkafka is gone, nothing refers to them any more
  }

  // Hands one message to librdkafka. A full local queue is waited out (it drains as reports
  // arrive), within message_timeout.
  rd_kafka_resp_err_t produce(const zctl_sink_event& e, BatchRecord* rec) {
    invalid_topic_ = false;
    // Consecutive events mostly share their topic: that handle is reused without a lookup.
    rd_kafka_topic_t* rkt = last_rkt_ != nullptr && topic_buf_ == last_topic_ ? last_rkt_ : nullptr;
    std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)> once(nullptr, &rd_kafka_topic_destroy);
    if (rkt == nullptr) {
      if (topic_buf_.empty() || topic_buf_.size() > kMaxTopicLength || topic_buf_ == "." || topic_buf_ == ".." ||
          !std::all_of(topic_buf_.begin(), topic_buf_.end(), is_topic_char)) {
        invalid_topic_ = true;
        return RD_KAFKA_RESP_ERR__INVALID_ARG;
      }
      rkt = topic(topic_buf_);
      if (rkt != nullptr) {
        last_topic_ = topic_buf_;
        last_rkt_ = rkt;
      } else {
        // Past the cache's size a handle is taken for this message only (librdkafka keeps its
        // own per-topic state either way; the handle is a reference to it).
        once.reset(rd_kafka_topic_new(rk_, topic_buf_.c_str(), nullptr));
        rkt = once.get();
        if (rkt == nullptr) return rd_kafka_last_error();
      }
    }
    // rd_kafka_produceva: no variadic argument list to walk per message, and the batch's
    // timestamp given (otherwise librdkafka reads the wall clock for every message).
    rd_kafka_vu_t vu[6];
    vu[0].vtype = RD_KAFKA_VTYPE_RKT;
    vu[0].u.rkt = rkt;
    vu[1].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[1].u.i = RD_KAFKA_MSG_F_COPY;
    vu[2].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[2].u.mem.ptr = const_cast<char*>(e.json);
    vu[2].u.mem.size = e.json_len;
    vu[3].vtype = RD_KAFKA_VTYPE_KEY;
    vu[3].u.mem.ptr = key_buf_.empty() ? nullptr : key_buf_.data();
    vu[3].u.mem.size = key_buf_.size();
    vu[4].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[4].u.ptr = rec;
    vu[5].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
    vu[5].u.i64 = batch_timestamp_ms_;
    Clock::time_point give_up{};
    for (;;) {
      rd_kafka_error_t* error = rd_kafka_produceva(rk_, vu, 6);
      if (error == nullptr) return RD_KAFKA_RESP_ERR_NO_ERROR;
      const rd_kafka_resp_err_t err = rd_kafka_error_code(error);
      rd_kafka_error_destroy(error);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
      if (give_up == Clock::time_point{}) give_up = Clock::now() + cfg_.message_timeout;
      if (Clock::now() >= give_up) return err;
      // The poll thread frees queue space as reports arrive; meanwhile send what is queued.
      rd_kafka_flush(rk_, 10);
    }
  }

  // A cached topic handle, or nullptr past the cache's size.
  rd_kafka_topic_t* topic(const std::string& name) {
    if (const auto it = topics_.find(name); it != topics_.end()) return it->second;
    if (topics_.size() >= kMaxCachedTopics) return nullptr;
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk_, name.c_str(), nullptr);
    if (rkt != nullptr) topics_.emplace(name, rkt);
    return rkt;
  }

  void record_failure(BatchRecord* rec, rd_kafka_resp_err_t err, uint32_t count, std::string_view topic,
                      int32_t partition, const char* detail) {
    std::string text = std::string(topic);
    if (partition >= 0) text += " [" + std::to_string(partition) + "]";
    text += ": ";
    text += detail != nullptr ? detail : error_text(err);
    std::lock_guard lock(mu_);
    if (is_permanent(err)) {
      if (rec->failed_permanent == 0) rec->first_permanent = std::move(text);
      rec->failed_permanent += count;
    } else {
      if (rec->failed_transient == 0) rec->first_transient = std::move(text);
      rec->failed_transient += count;
    }
  }

  // Drops one count; the last one completes the batch.
  void release(BatchRecord* rec) {
    if (rec->outstanding.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::unique_ptr<BatchRecord> owned;
    Status status;
    {
      std::lock_guard lock(mu_);
      if (rec->forced) return;  // already completed at shutdown
      owned = std::move(*rec->where);
      records_.erase(rec->where);
      status = result_of(*rec);
    }
    host_.complete(rec->id, status);
  }

  static Status result_of(const BatchRecord& r) {
    if (r.failed_permanent == 0 && r.failed_transient == 0) return Status::ok();
    const uint32_t failed = r.failed_permanent + r.failed_transient;
    std::string text =
        "kafka: " + std::to_string(failed) + " of " + std::to_string(r.total) + " message(s) not delivered; ";
    if (r.failed_transient > 0) {
      text += "retrying: " + r.first_transient;
      if (r.failed_permanent > 0) text += "; also permanently failing: " + r.first_permanent;
      return Status::retry(std::move(text));
    }
    return Status::reject(text + r.first_permanent);
  }

  // Delivery reports and errors run on the poll thread; logs on librdkafka's own threads.
  void on_delivery(const rd_kafka_message_t* msg) {
    auto* rec = static_cast<BatchRecord*>(msg->_private);
    if (rec == nullptr) return;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Purges only come from stop_producer(), which says why.
      const bool purged = msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
      const std::string detail =
          purged ? "not acknowledged before " + stop_reason_ + " (" + rd_kafka_err2name(msg->err) + ")" : "";
      record_failure(rec, msg->err, 1, msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "?", msg->partition,
                     purged ? detail.c_str() : nullptr);
    }
    release(rec);
  }

  void on_error(rd_kafka_resp_err_t code, const char* reason, bool fatal) {
    if (fatal) {
      fatal_ = true;
      char why[512] = "";
      rd_kafka_fatal_error(rk_, why, sizeof why);
      log_limited(zctl::sdk::LogLevel::error, std::string("kafka: fatal producer error: ") + why);
      return;
    }
    log_limited(zctl::sdk::LogLevel::warn,
                std::string("kafka: ") + (reason != nullptr ? reason : "") + " (" + rd_kafka_err2name(code) + ")");
  }

  static void on_log(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
    auto* self = static_cast<KafkaSink*>(rd_kafka_opaque(rk));
    if (self == nullptr) return;
    // syslog levels: 0-3 error, 4 warning, 5 notice (e.g. CONFWARN: a property that does not
    // apply to a producer), 6 info, 7 debug (only with the `debug` property). Errors reach
    // on_error, which logs them, and librdkafka's info lines mostly narrate those errors
    // (disconnects); here they would only be said twice.
    if (level <= 3 || level == 6) return;
    std::string msg =
        std::string("kafka: librdkafka ") + (fac != nullptr ? fac : "") + ": " + (buf != nullptr ? buf : "");
    if (level >= 7) {
      // Only with the `debug` property, which asks for all of it: not rate-limited.
      self->host_.debug(msg);
      return;
    }
    self->log_limited(level == 4 ? zctl::sdk::LogLevel::warn : zctl::sdk::LogLevel::info, std::move(msg));
  }

  // At most kLogLinesPerWindow lines per kLogWindow; the rest are counted and summed up in one
  // line when the next window opens, so a broker that stays down cannot flood the node's log.
  void log_limited(zctl::sdk::LogLevel level, std::string msg) {
    uint64_t suppressed = 0;
    {
      std::lock_guard lock(log_mu_);
      const auto now = Clock::now();
      if (now - log_window_start_ >= kLogWindow) {
        suppressed = std::exchange(log_suppressed_, 0);
        log_window_start_ = now;
        log_lines_ = 0;
      }
      if (log_lines_ >= kLogLinesPerWindow) {
        ++log_suppressed_;
        return;
      }
      ++log_lines_;
    }
    if (suppressed > 0)
      host_.warn("kafka: " + std::to_string(suppressed) + " librdkafka message(s) suppressed in the last " +
                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kLogWindow).count()) + "s");
    host_.log(level, msg);
  }

  const KafkaConfig cfg_;
  zctl::sdk::Host host_;

  rd_kafka_t* rk_ = nullptr;
  rd_kafka_queue_t* queue_ = nullptr;  // the main queue: delivery reports and errors
  std::atomic<bool> fatal_{false};
  std::string stop_reason_;
  std::atomic<bool> polling_{false};
  std::thread poller_;

  std::mutex mu_;  // records_ and the failure fields of every record
  std::list<std::unique_ptr<BatchRecord>> records_;

  // Worker thread only (emit):
  FieldReader fields_;
  std::string topic_buf_, key_buf_;
  bool invalid_topic_ = false;
  int64_t batch_timestamp_ms_ = 0;
  std::unordered_map<std::string, rd_kafka_topic_t*> topics_;
  std::string last_topic_;
  rd_kafka_topic_t* last_rkt_ = nullptr;  // topics_[last_topic_]

  std::mutex log_mu_;
  Clock::time_point log_window_start_ = Clock::now();
  int log_lines_ = 0;
  uint64_t log_suppressed_ = 0;
};

}  // namespace

ZCTL_SINK_PLUGIN(KafkaSink, "kafka", kVersion,
                 "Produces each event to Kafka (librdkafka); delivered once the broker acknowledged it",
                 ZCTL_SINK_CAP_ASYNC_COMPLETION | ZCTL_SINK_CAP_PIPELINE);
