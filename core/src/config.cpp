// YAML configuration loader. yaml-cpp and rapidjson stay inside this file;
// the rest of core sees only the plain structs of config.hpp.
//
// The document is walked by hand (no YAML::convert<>) so that every problem is
// reported with its own line:column and dotted key path, and so that one bad
// value does not hide the next one.
#include "zctl/core/config.hpp"

#include <arpa/inet.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <span>

namespace zctl {
namespace {

// ---------------------------------------------------------------------------
// Text helpers

// Quotes a user value for a message; long values are cut so one error stays
// one line.
std::string shown(std::string_view text) {
  constexpr size_t kMaxShown = 60;
  std::string out = "'";
  if (text.size() > kMaxShown) {
    out.append(text.substr(0, kMaxShown)).append("...");
  } else {
    out.append(text);
  }
  return out + "'";
}

std::string join(std::span<const std::string_view> words, std::string_view separator) {
  std::string out;
  for (const auto& word : words) {
    if (!out.empty()) out.append(separator);
    out.append(word);
  }
  return out;
}

// "a", "a or b", "a, b or c".
std::string one_of(std::span<const std::string_view> words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out.append(i + 1 == words.size() ? " or " : ", ");
    out.append(words[i]);
  }
  return out;
}

// Booleans as the YAML 1.2 core schema spells them; "yes"/"on" are YAML 1.1
// and stay strings.
std::optional<bool> parse_yaml_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || is_digit(c); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// Folds the usual spelling slips onto one form so that "gracePeriod",
// "Grace-Period" and "grace_period" compare equal.
std::string fold_key(std::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    // A camelCase boundary: an upper-case letter after a lower-case one or a digit.
    const bool upper = c >= 'A' && c <= 'Z';
    if (upper && i > 0 && is_lower_alnum(key[i - 1])) out.push_back('_');
    out.push_back(c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The closest candidate, if it is close enough to be a likely typo. Short
// words get a tighter bound so "x" does not suggest "id".
std::optional<std::string_view> closest_match(std::string_view given,
                                              std::span<const std::string_view> candidates) {
  const std::string folded = fold_key(given);
  const size_t max_distance = folded.size() <= 3 ? 1 : 2;
  std::optional<std::string_view> best;
  size_t best_distance = max_distance + 1;
  for (const auto& candidate : candidates) {
    const size_t distance = edit_distance(folded, fold_key(candidate));
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string did_you_mean(std::string_view given, std::span<const std::string_view> candidates) {
  const auto match = closest_match(given, candidates);
  return match ? " (did you mean '" + std::string(*match) + "'?)" : std::string();
}

// Strict unsigned decimal: digits only, no sign, no spaces, no overflow.
std::optional<uint64_t> parse_unsigned(std::string_view text) {
  uint64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, status] = std::from_chars(text.data(), end, value);
  if (text.empty() || !is_digit(text.front()) || status != std::errc() || stop != end) {
    return std::nullopt;
  }
  return value;
}

// ---------------------------------------------------------------------------
// Enumerations: one table per enum serves parsing, messages and to_string().

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

constexpr std::array<EnumName<StrayAction>, 3> kStrayActions = {{
    {"none", StrayAction::none},
    {"log", StrayAction::log},
    {"disconnect", StrayAction::disconnect},
}};

constexpr std::array<EnumName<WhenFull>, 3> kWhenFull = {{
    {"block", WhenFull::block},
    {"drop_newest", WhenFull::drop_newest},
    {"drop_oldest", WhenFull::drop_oldest},
}};

// Event namespaces of SPEC §5, accepted in sinks[].filter.namespaces.
constexpr std::array<std::string_view, 4> kEventNamespaces = {"cluster", "connection", "node",
                                                              "sink"};

// A set of accepted spellings and how to turn one into a value.
template <typename T>
struct Choice {
  std::vector<std::string_view> names;  // for messages and suggestions
  std::function<std::optional<T>(std::string_view)> parse;
};

template <typename E, size_t N>
Choice<E> enum_choice(const std::array<EnumName<E>, N>& table) {
  Choice<E> choice;
  for (const auto& entry : table) choice.names.push_back(entry.name);
  choice.parse = [&table](std::string_view text) -> std::optional<E> {
    for (const auto& entry : table) {
      if (entry.name == text) return entry.value;
    }
    return std::nullopt;
  };
  return choice;
}

template <typename E, size_t N>
std::string_view enum_name(const std::array<EnumName<E>, N>& table, E value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "?";
}

Choice<LogLevel> log_level_choice() {
  Choice<LogLevel> choice;
  for (int level = static_cast<int>(LogLevel::trace); level <= static_cast<int>(LogLevel::off);
       ++level) {
    choice.names.push_back(to_string(static_cast<LogLevel>(level)));
  }
  choice.parse = parse_log_level;
  return choice;
}

Choice<std::string> namespace_choice() {
  Choice<std::string> choice;
  choice.names.assign(kEventNamespaces.begin(), kEventNamespaces.end());
  choice.parse = [](std::string_view text) -> std::optional<std::string> {
    if (std::find(kEventNamespaces.begin(), kEventNamespaces.end(), text) ==
        kEventNamespaces.end()) {
      return std::nullopt;
    }
    return std::string(text);
  };
  return choice;
}

// ---------------------------------------------------------------------------
// HOST:PORT validation

bool is_hostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t label_start = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i < host.size() && host[i] != '.') {
      if (!is_alnum(host[i]) && host[i] != '-') return false;
      continue;
    }
    const std::string_view label = host.substr(label_start, i - label_start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    label_start = i + 1;
  }
  return true;
}

// ---------------------------------------------------------------------------
// The document walker

// One value in the document, with what an error about it needs.
struct Item {
  YAML::Node node;
  std::string path;  // dotted key path
  YAML::Mark mark;   // where an error about this value points
};

// "12:5", for pointing back at an earlier spot in the same file.
std::string position(const YAML::Mark& mark) {
  return std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string child_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return shown(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

bool is_known(const YAML::Mark& mark) { return mark.line >= 0 && mark.column >= 0; }

// Whether "0s" is a meaningful value for a duration field.
enum class ZeroDuration { allowed, rejected };

// Remembers where each name was first used, for "duplicate ..." messages.
class FirstSeen {
 public:
  // Records `name` at `mark`, or returns where it was seen before.
  std::optional<YAML::Mark> add(const std::string& name, const YAML::Mark& mark) {
    const auto earlier = std::find_if(seen_.begin(), seen_.end(),
                                      [&](const auto& entry) { return entry.first == name; });
    if (earlier != seen_.end()) return earlier->second;
    seen_.emplace_back(name, mark);
    return std::nullopt;
  }

 private:
  std::vector<std::pair<std::string, YAML::Mark>> seen_;
};

// What `expected ..., got ...` says for each reader; kept together so the
// man page and messages stay in step.
constexpr std::string_view kDurationHint = "a duration like 500ms, 30s or 1m";
constexpr std::string_view kSizeHint = "a size like 65536, 64KiB or 1GiB";
constexpr std::string_view kAddressHint = "HOST:PORT like 0.0.0.0:6262 or \"[::1]:6262\"";
constexpr std::string_view kRaftAddressHint = "an IPv4 HOST:PORT like 10.0.0.1:6263";

class ConfigReader {
 public:
  using Reader = std::function<void(const Item&)>;
  struct Field {
    std::string_view key;
    Reader read;
  };

  std::vector<ConfigError> errors;

  void error(const YAML::Mark& mark, std::string path, std::string message) {
    ConfigError e;
    if (is_known(mark)) {
      e.line = mark.line + 1;
      e.column = mark.column + 1;
    }
    e.path = std::move(path);
    e.message = std::move(message);
    errors.push_back(std::move(e));
  }
  void error(const Item& item, std::string message) {
    error(item.mark, item.path, std::move(message));
  }
  void expected(const Item& item, std::string_view what) {
    error(item, "expected " + std::string(what) + ", got " + describe(item.node));
  }

  // --- structure

  // Reads a mapping whose keys are all listed in `fields`. A missing value
  // (`tls:` alone) means "all defaults".
  void mapping(const Item& item, std::initializer_list<Field> fields) {
    if (item.node.IsNull()) return;
    if (!item.node.IsMap()) return expected(item, "a mapping");
    std::vector<std::string_view> names;
    for (const auto& field : fields) names.push_back(field.key);
    for_each_entry(
        item, [&](const std::string& key, const YAML::Node& key_node, const Item& value) {
          const auto field = std::find_if(fields.begin(), fields.end(),
                                          [&](const Field& f) { return f.key == key; });
          if (field == fields.end()) {
            const std::string hint = did_you_mean(key, names);
            error(key_node.Mark(), item.path,
                  "unknown key " + shown(key) +
                      (hint.empty() ? " (known keys: " + join(names, ", ") + ")" : hint));
            return;
          }
          field->read(value);
        });
  }

  // Calls `visit` for every entry with a string key; reports non-string and
  // duplicate keys (yaml-cpp keeps duplicates, the later would silently win).
  void for_each_entry(
      const Item& item,
      const std::function<void(const std::string&, const YAML::Node&, const Item&)>& visit) {
    FirstSeen keys;
    for (const auto& entry : item.node) {
      const YAML::Node& key_node = entry.first;
      if (!key_node.IsScalar()) {
        error(key_node.Mark(), item.path, "keys must be strings, got " + describe(key_node));
        continue;
      }
      const std::string& key = key_node.Scalar();
      const std::string path = child_path(item.path, key);
      if (const auto earlier = keys.add(key, key_node.Mark())) {
        error(key_node.Mark(), path,
              "duplicate key " + shown(key) + " (first given at " + position(*earlier) + ")");
        continue;
      }
      // yaml-cpp marks an empty value at the next token, often on the next
      // line; the key is where the user will look.
      const YAML::Node& value = entry.second;
      visit(key, key_node, Item{value, path, value.IsNull() ? key_node.Mark() : value.Mark()});
    }
  }

  // Reads a list; a missing value means an empty list.
  void sequence(const Item& item, std::string_view element_hint, const Reader& read_element) {
    if (item.node.IsNull()) return;
    if (!item.node.IsSequence()) return expected(item, "a list of " + std::string(element_hint));
    size_t index = 0;
    for (const auto& element : item.node) {
      const YAML::Mark mark = is_known(element.Mark()) ? element.Mark() : item.mark;
      read_element(Item{element, item.path + "[" + std::to_string(index) + "]", mark});
      ++index;
    }
  }

  // --- scalars: each returns true when `out` was set

  std::optional<std::string> scalar(const Item& item, std::string_view what) {
    if (!item.node.IsScalar()) {
      expected(item, what);
      return std::nullopt;
    }
    return item.node.Scalar();
  }

  bool string(const Item& item, std::string& out) {
    auto text = scalar(item, "a string");
    if (text) out = std::move(*text);
    return text.has_value();
  }

  bool non_empty_string(const Item& item, std::string& out) {
    std::string text;
    if (!string(item, text)) return false;
    if (text.empty()) {
      error(item, "must not be empty");
      return false;
    }
    out = std::move(text);
    return true;
  }

  bool boolean(const Item& item, bool& out) {
    return choice(item, out, Choice<bool>{{"true", "false"}, parse_yaml_bool});
  }

  // One value out of a fixed set; the message lists the set.
  template <typename T>
  bool choice(const Item& item, T& out, const Choice<T>& allowed) {
    const std::string expectation = one_of(allowed.names);
    const auto text = scalar(item, expectation);
    if (!text) return false;
    const auto value = allowed.parse(*text);
    if (!value) {
      error(item, "expected " + expectation + ", got " + shown(*text) +
                      did_you_mean(*text, allowed.names));
      return false;
    }
    out = *value;
    return true;
  }

  // A whole number (`parse` = parse_unsigned) or a size (`parse` = parse_size)
  // within [min, max]; max defaults to what `Int` can hold.
  template <typename Int>
  bool number(const Item& item, Int& out, uint64_t min,
              uint64_t max = std::numeric_limits<Int>::max()) {
    return bounded(item, out, min, max, "a whole number", parse_unsigned);
  }
  template <typename Int>
  bool size(const Item& item, Int& out, uint64_t min,
            uint64_t max = std::numeric_limits<Int>::max()) {
    return bounded(item, out, min, max, kSizeHint, parse_size);
  }

  bool duration(const Item& item, Duration& out, ZeroDuration zero) {
    const auto text = scalar(item, kDurationHint);
    if (!text) return false;
    const auto value = parse_duration(*text);
    if (!value) {
      std::string message = "expected " + std::string(kDurationHint) + ", got " + shown(*text);
      if (parse_unsigned(*text)) message += " (a duration needs a unit: ms, s, m or h)";
      error(item, std::move(message));
      return false;
    }
    if (zero == ZeroDuration::rejected && value->count() == 0) {
      error(item, "must be longer than 0s");
      return false;
    }
    out = *value;
    return true;
  }

  bool address(const Item& item, std::string& out, AddressUse use) {
    const auto text = scalar(item, kAddressHint);
    if (!text) return false;
    if (const auto problem = address_problem(*text, use)) {
      error(item, "invalid address " + shown(*text) + ": " + *problem + "; expected " +
                      std::string(use == AddressUse::raft ? kRaftAddressHint : kAddressHint));
      return false;
    }
    out = *text;
    return true;
  }

  // A list whose elements are each read by `read_element` into a T.
  template <typename T>
  void list(const Item& item, std::vector<T>& out, std::string_view element_hint,
            const std::function<bool(const Item&, T&)>& read_element) {
    std::vector<T> values;
    sequence(item, element_hint, [&](const Item& element) {
      T value{};
      if (read_element(element, value)) values.push_back(std::move(value));
    });
    out = std::move(values);
  }

  // A sink's opaque `config:` subtree, converted to compact JSON.
  bool json(const Item& item, std::string& out) {
    if (item.node.IsNull()) {
      out = "{}";
      return true;
    }
    if (!item.node.IsMap()) {
      expected(item, "a mapping");
      return false;
    }
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                      rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>
        writer(buffer);
    const size_t errors_before = errors.size();
    write_json(item, writer);
    if (errors.size() != errors_before) return false;
    out.assign(buffer.GetString(), buffer.GetSize());
    return true;
  }

 private:
  template <typename Int>
  bool bounded(const Item& item, Int& out, uint64_t min, uint64_t max, std::string_view hint,
               std::optional<uint64_t> (*parse)(std::string_view)) {
    const auto text = scalar(item, hint);
    if (!text) return false;
    const auto value = parse(*text);
    if (!value) {
      expected(item, hint);
      return false;
    }
    if (*value < min || *value > max) {
      const std::string limit =
          *value < min ? "at least " + std::to_string(min) : "at most " + std::to_string(max);
      error(item, "must be " + limit + ", got " + *text);
      return false;
    }
    out = static_cast<Int>(*value);
    return true;
  }

  template <typename Writer>
  void write_json(const Item& item, Writer& writer) {
    const YAML::Node& node = item.node;
    bool ok = true;
    switch (node.Type()) {
      case YAML::NodeType::Map:
        writer.StartObject();
        for_each_entry(item, [&](const std::string& key, const YAML::Node&, const Item& value) {
          if (!writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()))) {
            error(value.mark, value.path, "key is not valid UTF-8");
          }
          write_json(value, writer);
        });
        writer.EndObject();
        break;
      case YAML::NodeType::Sequence:
        writer.StartArray();
        sequence(item, "values", [&](const Item& element) { write_json(element, writer); });
        writer.EndArray();
        break;
      case YAML::NodeType::Scalar:
        ok = write_json_scalar(node, writer);
        break;
      default:
        writer.Null();
    }
    if (!ok) error(item, "value is not valid UTF-8");
  }

  // JSON numbers (RFC 8259 grammar) are passed through exactly as written.
  static bool is_json_number(std::string_view text) {
    size_t i = 0;
    const auto digits = [&] {
      const size_t start = i;
      while (i < text.size() && is_digit(text[i])) ++i;
      return i > start;
    };
    if (i < text.size() && text[i] == '-') ++i;
    if (i < text.size() && text[i] == '0') {
      ++i;
    } else if (!digits()) {
      return false;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      if (!digits()) return false;
    }
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
      ++i;
      if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
      if (!digits()) return false;
    }
    return i == text.size();
  }

  // Plain scalars follow the YAML 1.2 core schema; quoted and explicitly
  // tagged scalars (yaml-cpp tag "!" or "tag:...") are always strings.
  template <typename Writer>
  static bool write_json_scalar(const YAML::Node& node, Writer& writer) {
    const std::string& text = node.Scalar();
    const auto as_string = [&] {
      return writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
    };
    if (node.Tag() != "?") return as_string();
    if (const auto flag = parse_yaml_bool(text)) return writer.Bool(*flag);
    if (text == "null" || text == "Null" || text == "NULL" || text == "~") return writer.Null();
    if (is_json_number(text)) {
      return writer.RawValue(text.data(), text.size(), rapidjson::kNumberType);
    }
    // Remaining YAML numbers: 0x1F, 0o17, +5, 007, .5, 1.
    const bool negative = !text.empty() && text[0] == '-';
    const std::string_view unsigned_part =
        std::string_view(text).substr(!text.empty() && (text[0] == '+' || negative) ? 1 : 0);
    for (const auto& [prefix, base] : {std::pair<std::string_view, int>{"0x", 16}, {"0o", 8}}) {
      if (text.starts_with(prefix) && text.size() > prefix.size()) {
        uint64_t value = 0;
        const auto* end = text.data() + text.size();
        const auto [stop, status] = std::from_chars(text.data() + prefix.size(), end, value, base);
        if (status == std::errc() && stop == end) return writer.Uint64(value);
      }
    }
    const bool yaml_float_chars =
        !unsigned_part.empty() &&
        std::all_of(unsigned_part.begin(), unsigned_part.end(),
                    [](char c) {
                      return is_digit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' ||
                             c == '-';
                    }) &&
        std::any_of(unsigned_part.begin(), unsigned_part.end(), is_digit) &&
        (is_digit(unsigned_part.front()) || unsigned_part.front() == '.');
    if (yaml_float_chars) {
      char* end = nullptr;
      const double value = std::strtod(text.c_str(), &end);
      if (end == text.c_str() + text.size() && std::isfinite(value)) {
        const bool integral = unsigned_part.find_first_of(".eE") == std::string_view::npos;
        const auto whole = integral ? parse_unsigned(unsigned_part) : std::nullopt;
        if (whole && !negative) return writer.Uint64(*whole);
        if (whole && *whole <= uint64_t{1} << 63) {
          return writer.Int64(static_cast<int64_t>(0 - *whole));
        }
        return writer.Double(value);
      }
    }
    return as_string();
  }
};

// ---------------------------------------------------------------------------
// Sections

void read_tls(ConfigReader& r, const Item& item, TlsConfig& tls) {
  r.mapping(item, {
                      {"cert_file", [&](const Item& v) { r.string(v, tls.cert_file); }},
                      {"key_file", [&](const Item& v) { r.string(v, tls.key_file); }},
                      {"ca_file", [&](const Item& v) { r.string(v, tls.ca_file); }},
                      {"require_client_cert",
                       [&](const Item& v) { r.boolean(v, tls.require_client_cert); }},
                  });
  // Half a TLS setup would otherwise silently run in clear text, or fail
  // only when the first client connects.
  if (tls.cert_file.empty() && (!tls.key_file.empty() || !tls.ca_file.empty())) {
    r.error(item, "cert_file is required when key_file or ca_file is set");
  } else if (!tls.cert_file.empty() && tls.key_file.empty()) {
    r.error(item, "key_file is required when cert_file is set");
  } else if (tls.enabled() && tls.require_client_cert && tls.ca_file.empty()) {
    r.error(item,
            "ca_file is required to verify client certificates "
            "(or set require_client_cert: false)");
  }
}

bool is_sink_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return is_lower_alnum(c) || c == '_' || c == '-';
  });
}

// Node and cluster ids travel in mesh frames, file names and metric labels.
bool read_id(ConfigReader& r, const Item& item, std::string& out, std::string_view what) {
  std::string id;
  if (!r.string(item, id)) return false;
  if (!is_node_id(id)) {
    r.error(item, "invalid " + std::string(what) + " " + shown(id) + ": use 1 to 64 letters, digits, '_' and '-'");
    return false;
  }
  out = id;
  return true;
}

void read_node(ConfigReader& r, const Item& item, NodeConfig& node) {
  r.mapping(item, {
                      {"id", [&](const Item& v) { read_id(r, v, node.id, "node id"); }},
                      {"data_dir", [&](const Item& v) { r.non_empty_string(v, node.data_dir); }},
                  });
}

void read_mesh(ConfigReader& r, const Item& item, MeshConfig& mesh) {
  const auto stray = [&](const Item& v) {
    r.mapping(
        v, {
               {"grace_period",
                [&](const Item& d) {
                  r.duration(d, mesh.stray.grace_period, ZeroDuration::rejected);
                }},
               {"action",
                [&](const Item& a) { r.choice(a, mesh.stray.action, enum_choice(kStrayActions)); }},
               {"log_level",
                [&](const Item& l) { r.choice(l, mesh.stray.log_level, log_level_choice()); }},
           });
  };
  const auto flood = [&](const Item& v) {
    r.mapping(
        v, {
               {"window",
                [&](const Item& d) { r.duration(d, mesh.flood.window, ZeroDuration::rejected); }},
               {"max_connections_per_source",
                [&](const Item& n) { r.number(n, mesh.flood.max_connections_per_source, 1); }},
           });
  };
  r.mapping(item,
            {
                {"listen", [&](const Item& v) { r.address(v, mesh.listen, AddressUse::listen); }},
                // A byte count, so a size suffix (64KiB) is accepted too.
                {"max_frame_bytes", [&](const Item& v) { r.size(v, mesh.max_frame_bytes, 64); }},
                {"max_pending", [&](const Item& v) { r.number(v, mesh.max_pending, 1); }},
                {"max_pending_per_source",
                 [&](const Item& v) { r.number(v, mesh.max_pending_per_source, 1); }},
                {"tls", [&](const Item& v) { read_tls(r, v, mesh.tls); }},
                {"join_token_file", [&](const Item& v) { r.string(v, mesh.join_token_file); }},
                {"stray", stray},
                {"flood", flood},
            });
}

void read_cluster(ConfigReader& r, const Item& item, ClusterConfig& cluster) {
  std::optional<Item> heartbeat_item;
  std::optional<Item> join_item;
  r.mapping(
      item,
      {
          {"id", [&](const Item& v) { read_id(r, v, cluster.id, "cluster id"); }},
          {"allowed_nodes",
           [&](const Item& v) {
             r.list<std::string>(v, cluster.allowed_nodes, "node ids",
                                 [&](const Item& e, std::string& out) { return read_id(r, e, out, "node id"); });
           }},
          {"raft_listen",
           [&](const Item& v) { r.address(v, cluster.raft_listen, AddressUse::raft); }},
          {"bootstrap", [&](const Item& v) { r.boolean(v, cluster.bootstrap); }},
          {"join",
           [&](const Item& v) {
             join_item = v;
             r.list<std::string>(v, cluster.join, "HOST:PORT addresses",
                                 [&](const Item& e, std::string& out) {
                                   return r.address(e, out, AddressUse::peer);
                                 });
           }},
          {"election_timeout",
           [&](const Item& v) { r.duration(v, cluster.election_timeout, ZeroDuration::rejected); }},
          {"heartbeat",
           [&](const Item& v) {
             heartbeat_item = v;
             r.duration(v, cluster.heartbeat, ZeroDuration::rejected);
           }},
          {"leader_stability",
           [&](const Item& v) { r.duration(v, cluster.leader_stability, ZeroDuration::allowed); }},
      });
  if (cluster.heartbeat >= cluster.election_timeout) {
    r.error(heartbeat_item ? *heartbeat_item : item,
            "heartbeat (" + format_duration(cluster.heartbeat) +
                ") must be shorter than election_timeout (" +
                format_duration(cluster.election_timeout) + ")");
  }
  if (cluster.bootstrap && !cluster.join.empty()) {
    r.error(join_item ? *join_item : item,
            "bootstrap: true starts a new cluster and cannot be combined with join");
  }
}

void read_admin(ConfigReader& r, const Item& item, AdminConfig& admin) {
  r.mapping(item,
            {
                {"listen", [&](const Item& v) { r.address(v, admin.listen, AddressUse::listen); }},
                {"token_file", [&](const Item& v) { r.string(v, admin.token_file); }},
                {"tls", [&](const Item& v) { read_tls(r, v, admin.tls); }},
            });
}

// Sink names label metrics and events, so they are restricted and unique.
void read_sink_name(ConfigReader& r, const Item& item, std::string& out, FirstSeen& sink_names) {
  std::string name;
  if (!r.string(item, name)) return;
  if (!is_sink_name(name)) {
    return r.error(
        item, "invalid sink name " + shown(name) + ": use lowercase letters, digits, '_' and '-'");
  }
  if (const auto earlier = sink_names.add(name, item.mark)) {
    return r.error(item, "duplicate sink name " + shown(name) + " (first defined at " +
                             position(*earlier) + ")");
  }
  out = name;
}

void read_sink(ConfigReader& r, const Item& item, SinkConfig& sink, FirstSeen& sink_names, FirstSeen& spool_dirs) {
  if (!item.node.IsMap()) return r.expected(item, "a sink mapping with at least name and plugin");
  bool has_name = false;
  bool has_plugin = false;
  std::optional<Item> retry_max_item;
  const auto filter = [&](const Item& v) {
    r.mapping(v, {
                     {"namespaces",
                      [&](const Item& l) {
                        r.list<std::string>(l, sink.filter.namespaces, "event namespaces",
                                            [&](const Item& e, std::string& out) {
                                              return r.choice(e, out, namespace_choice());
                                            });
                      }},
                     {"types",
                      [&](const Item& l) {
                        r.list<std::string>(l, sink.filter.types, "event type patterns",
                                            [&](const Item& e, std::string& out) {
                                              return r.non_empty_string(e, out);
                                            });
                      }},
                 });
  };
  const auto queue = [&](const Item& v) {
    r.mapping(
        v, {
               {"max_events", [&](const Item& n) { r.number(n, sink.queue.max_events, 1); }},
               {"when_full",
                [&](const Item& w) { r.choice(w, sink.queue.when_full, enum_choice(kWhenFull)); }},
               {"block_timeout",
                [&](const Item& d) {
                  r.duration(d, sink.queue.block_timeout, ZeroDuration::allowed);
                }},
               {"batch_max", [&](const Item& n) { r.number(n, sink.queue.batch_max, 1); }},
           });
  };
  const auto retry = [&](const Item& v) {
    r.mapping(
        v, {
               {"initial",
                [&](const Item& d) { r.duration(d, sink.retry.initial, ZeroDuration::rejected); }},
               {"max",
                [&](const Item& d) {
                  retry_max_item = d;
                  r.duration(d, sink.retry.max, ZeroDuration::rejected);
                }},
               {"max_attempts", [&](const Item& n) { r.number(n, sink.retry.max_attempts, 0); }},
           });
  };
  const auto spool = [&](const Item& v) {
    r.mapping(v, {
                     {"dir",
                      [&](const Item& s) {
                        if (!r.non_empty_string(s, sink.spool.dir)) return;
                        // One spool holds one sink's events in one order.
                        if (const auto earlier = spool_dirs.add(sink.spool.dir, s.mark)) {
                          r.error(s, "spool directory " + shown(sink.spool.dir) + " is already used by another sink (at " +
                                         position(*earlier) + ")");
                        }
                      }},
                     {"max_bytes", [&](const Item& s) { r.size(s, sink.spool.max_bytes, 1); }},
                 });
  };
  const auto dead_letter = [&](const Item& v) {
    r.mapping(v, {
                     {"path", [&](const Item& s) { r.non_empty_string(s, sink.dead_letter.path); }},
                     {"max_bytes", [&](const Item& s) { r.size(s, sink.dead_letter.max_bytes, 4096); }},
                 });
  };
  r.mapping(item,
            {
                {"name",
                 [&](const Item& v) {
                   has_name = true;
                   read_sink_name(r, v, sink.name, sink_names);
                 }},
                {"plugin",
                 [&](const Item& v) {
                   has_plugin = true;
                   r.non_empty_string(v, sink.plugin);
                 }},
                {"filter", filter},
                {"queue", queue},
                {"retry", retry},
                {"spool", spool},
                {"dead_letter", dead_letter},
                {"call_timeout",
                 [&](const Item& v) { r.duration(v, sink.call_timeout, ZeroDuration::rejected); }},
                {"config", [&](const Item& v) { r.json(v, sink.config_json); }},
            });
  if (!has_name) r.error(item, "missing required key 'name'");
  if (!has_plugin) r.error(item, "missing required key 'plugin'");
  if (sink.retry.initial > sink.retry.max) {
    r.error(retry_max_item ? *retry_max_item : item,
            "retry.max (" + format_duration(sink.retry.max) + ") must not be shorter than " +
                "retry.initial (" + format_duration(sink.retry.initial) + ")");
  }
}

void read_sinks(ConfigReader& r, const Item& item, std::vector<SinkConfig>& sinks) {
  FirstSeen sink_names;
  FirstSeen spool_dirs;
  r.sequence(item, "sink mappings", [&](const Item& element) {
    SinkConfig sink;
    read_sink(r, element, sink, sink_names, spool_dirs);
    sinks.push_back(std::move(sink));
  });
}

void read_config(ConfigReader& r, const Item& root, Config& config) {
  r.mapping(root, {
                      {"node", [&](const Item& v) { read_node(r, v, config.node); }},
                      {"mesh", [&](const Item& v) { read_mesh(r, v, config.mesh); }},
                      {"cluster", [&](const Item& v) { read_cluster(r, v, config.cluster); }},
                      {"admin", [&](const Item& v) { read_admin(r, v, config.admin); }},
                      {"events",
                       [&](const Item& v) {
                         r.mapping(v, {{"journal_size", [&](const Item& n) {
                                          r.number(n, config.events.journal_size, 1);
                                        }}});
                       }},
                      {"plugins",
                       [&](const Item& v) {
                         r.mapping(v, {{"path", [&](const Item& l) {
                                          r.list<std::string>(l, config.plugins.path, "directories",
                                                              [&](const Item& e, std::string& out) {
                                                                return r.non_empty_string(e, out);
                                                              });
                                        }}});
                       }},
                      {"sinks",
                       [&](const Item& v) {
                         config.sinks_given = true;
                         read_sinks(r, v, config.sinks);
                       }},
                  });
}

// ---------------------------------------------------------------------------
// Defaults that depend on the machine

std::string short_host_name() {
  std::array<char, 256> buffer{};
  if (gethostname(buffer.data(), buffer.size() - 1) != 0) return "zctl";
  std::string name(buffer.data());
  name = name.substr(0, name.find('.'));
  for (char& c : name) {
    if (!is_alnum(c) && c != '_' && c != '-') c = '_';
  }
  return name.empty() ? "zctl" : name;
}

std::string json_object_with_path(const std::string& path) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  writer.Key("path");
  writer.String(path.data(), static_cast<rapidjson::SizeType>(path.size()));
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

std::optional<std::string> address_problem(std::string_view text, AddressUse use) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') return "missing ':PORT'";
    port = text.substr(close + 2);
    in6_addr ignored{};
    if (inet_pton(AF_INET6, std::string(host).c_str(), &ignored) != 1) {
      return "'" + std::string(host) + "' is not an IPv6 address";
    }
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return "missing ':PORT'";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return "an IPv6 address must be in brackets, e.g. \"[::1]:6262\"";
    }
    if (host.empty()) return "missing host (use 0.0.0.0 for all interfaces)";
    const bool looks_numeric =
        std::all_of(host.begin(), host.end(), [](char c) { return is_digit(c) || c == '.'; });
    if (looks_numeric) {
      in_addr ignored{};
      if (inet_pton(AF_INET, std::string(host).c_str(), &ignored) != 1) {
        return "'" + std::string(host) + "' is not an IPv4 address";
      }
    } else if (use != AddressUse::peer && host != "localhost") {
      // Bound without a DNS lookup (see net_address.cpp).
      return "a listen address needs an IP address or localhost, not '" + std::string(host) + "'";
    } else if (!is_hostname(host)) {
      return "'" + std::string(host) + "' is not a valid host name";
    }
  }
  const auto number = port.size() <= 5 ? parse_unsigned(port) : std::nullopt;
  if (!number || *number > 65535) return "port must be a number from 0 to 65535";
  if (*number == 0 && use == AddressUse::peer) return "port 0 is only valid for listen addresses";
  if (use == AddressUse::raft) {
    in_addr ipv4{};
    if (inet_pton(AF_INET, std::string(host).c_str(), &ipv4) != 1) {
      return "the raft address must be an IPv4 address (the other members dial it)";
    }
    if (ipv4.s_addr == INADDR_ANY) return "the raft address is what the other members dial; 0.0.0.0 is not one";
    if (*number == 0) return "the raft address is stored in the log; it needs a fixed port, not 0";
  }
  return std::nullopt;
}

bool is_node_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// ---------------------------------------------------------------------------
// Public API

std::string format_config_error(const ConfigError& error, std::string_view source_name) {
  std::string out(source_name);
  if (error.line > 0) {
    out += (out.empty() ? "" : ":") + std::to_string(error.line);
    if (error.column > 0) out += ":" + std::to_string(error.column);
  }
  if (!out.empty()) out += ": ";
  if (!error.path.empty()) out += error.path + ": ";
  return out + error.message;
}

ConfigParseResult parse_config(std::string_view yaml_text) {
  ConfigReader reader;
  Config config;
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml_text));
    // A stray trailing "---" yields an empty extra document; only content counts.
    const auto extra =
        std::find_if(documents.begin() + (documents.empty() ? 0 : 1), documents.end(),
                     [](const YAML::Node& d) { return !d.IsNull(); });
    if (extra != documents.end()) {
      reader.error(extra->Mark(), "",
                   "expected one YAML document, found " + std::to_string(documents.size()));
    }
    // No document at all (empty text, only comments) is the all-defaults config.
    if (!documents.empty()) {
      read_config(reader, Item{documents[0], "", documents[0].Mark()}, config);
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp reads the whole text before the walk, so a syntax error is
    // the only error: nothing after it could be trusted.
    reader.error(e.mark, "", e.msg);
  }
  // Cross-field checks run after their section; file order reads best.
  std::stable_sort(reader.errors.begin(), reader.errors.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  ConfigParseResult result;
  result.errors = std::move(reader.errors);
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

ConfigParseResult load_config_file(const std::string& path) {
  const auto unreadable = [&](int error_number) {
    ConfigParseResult result;
    result.errors.push_back(
        ConfigError{0, 0, "", "cannot read file: " + std::string(std::strerror(error_number))});
    return result;
  };
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return unreadable(errno);
  std::string text;
  std::array<char, 16384> chunk{};
  size_t got = 0;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), file)) > 0) {
    text.append(chunk.data(), got);
  }
  const bool failed = std::ferror(file) != 0;
  const int read_errno = errno;  // e.g. EISDIR: fopen() accepts a directory
  std::fclose(file);
  if (failed) return unreadable(read_errno);
  return parse_config(text);
}

void resolve_defaults(Config& config, const std::string& executable_dir) {
  namespace fs = std::filesystem;
  if (config.node.id.empty()) config.node.id = short_host_name();
  if (config.node.data_dir.empty()) config.node.data_dir = "./zctl-data/" + config.node.id;
  if (config.plugins.path.empty()) {
    if (const char* env = std::getenv("ZCTL_PLUGIN_PATH")) {
      std::string_view rest(env);
      while (!rest.empty()) {
        const size_t colon = rest.find(':');
        const std::string_view entry = rest.substr(0, colon);
        if (!entry.empty()) config.plugins.path.emplace_back(entry);
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      }
    }
    // Same relative layout in the build tree and the install tree
    // (bin/zctl next to lib/zctl/plugins).
    if (!executable_dir.empty()) {
      config.plugins.path.push_back((fs::path(executable_dir) / ".." / "lib" / "zctl" / "plugins")
                                        .lexically_normal()
                                        .string());
    }
  }
  // sinks.empty() keeps a second call from adding a second default sink.
  if (!config.sinks_given && config.sinks.empty()) {
    SinkConfig sink;
    sink.name = "events";
    sink.plugin = "file";
    sink.config_json =
        json_object_with_path((fs::path(config.node.data_dir) / "events.jsonl").string());
    config.sinks.push_back(std::move(sink));
  }
}

std::optional<Duration> parse_duration(std::string_view text) {
  struct Unit {
    std::string_view name;
    int64_t milliseconds;
  };
  // Largest first: components must appear in this order, each at most once.
  constexpr std::array<Unit, 4> kUnits = {
      {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}}};
  if (text.empty()) return std::nullopt;
  int64_t total = 0;
  size_t next_unit = 0;  // index of the largest unit still allowed
  while (!text.empty()) {
    const size_t digits_end = std::find_if_not(text.begin(), text.end(), is_digit) - text.begin();
    const size_t unit_end =
        std::find_if(text.begin() + static_cast<ptrdiff_t>(digits_end), text.end(), is_digit) -
        text.begin();
    const auto amount = parse_unsigned(text.substr(0, digits_end));
    const std::string_view unit_name = text.substr(digits_end, unit_end - digits_end);
    const auto unit = std::find_if(kUnits.begin() + static_cast<ptrdiff_t>(next_unit), kUnits.end(),
                                   [&](const Unit& u) { return u.name == unit_name; });
    if (!amount || unit == kUnits.end()) return std::nullopt;
    int64_t part = 0;
    if (*amount > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(static_cast<int64_t>(*amount), unit->milliseconds, &part) ||
        __builtin_add_overflow(total, part, &total)) {
      return std::nullopt;
    }
    next_unit = static_cast<size_t>(unit - kUnits.begin()) + 1;
    text.remove_prefix(unit_end);
  }
  return Duration(total);
}

std::optional<uint64_t> parse_size(std::string_view text) {
  struct Suffix {
    std::string_view name;
    uint64_t multiplier;
  };
  constexpr std::array<Suffix, 7> kSuffixes = {{{"B", 1},
                                                {"KB", 1'000},
                                                {"MB", 1'000'000},
                                                {"GB", 1'000'000'000},
                                                {"KiB", 1ull << 10},
                                                {"MiB", 1ull << 20},
                                                {"GiB", 1ull << 30}}};
  const size_t digits_end = std::find_if_not(text.begin(), text.end(), is_digit) - text.begin();
  const auto amount = parse_unsigned(text.substr(0, digits_end));
  const std::string_view suffix = text.substr(digits_end);
  if (!amount) return std::nullopt;
  uint64_t multiplier = 1;
  if (!suffix.empty()) {
    const auto match = std::find_if(kSuffixes.begin(), kSuffixes.end(),
                                    [&](const Suffix& s) { return s.name == suffix; });
    if (match == kSuffixes.end()) return std::nullopt;
    multiplier = match->multiplier;
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(*amount, multiplier, &bytes)) return std::nullopt;
  return bytes;
}

std::string format_duration(Duration d) {
  const int64_t count = d.count();
  // Magnitude as unsigned so that the most negative value does not overflow.
  const uint64_t magnitude =
      count < 0 ? 0 - static_cast<uint64_t>(count) : static_cast<uint64_t>(count);
  const std::string sign = count < 0 ? "-" : "";
  if (magnitude % 1000 != 0) return sign + std::to_string(magnitude) + "ms";
  uint64_t seconds = magnitude / 1000;
  if (seconds == 0) return "0s";
  std::string out = sign;
  for (const auto& [unit, size] :
       {std::pair<const char*, uint64_t>{"h", 3600}, {"m", 60}, {"s", 1}}) {
    if (seconds >= size) {
      out += std::to_string(seconds / size) + unit;
      seconds %= size;
    }
  }
  return out;
}

std::string_view to_string(StrayAction action) { return enum_name(kStrayActions, action); }
std::string_view to_string(WhenFull when_full) { return enum_name(kWhenFull, when_full); }

}  // namespace zctl
