/* Header-only helpers for reading a sink plugin's configuration (C++17).
 *
 * Plugins receive their `config:` subtree as JSON and report every problem
 * from validate() as one clear sentence. These helpers keep the wording of
 * an unknown key the same in every plugin, and the same as zctl.yaml's own:
 *   unknown key 'pth' (did you mean 'path'?)
 *   unknown key 'x' (known keys: path max_size_mb ...)
 * Pure functions, no state, no allocation beyond the returned string.
 */
#ifndef ZCTL_SINK_CONFIG_HPP
#define ZCTL_SINK_CONFIG_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zctl::sdk {

/* Levenshtein distance between two keys. */
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0u : 1u)});
      diag = up;
    }
  }
  return row[b.size()];
}

/* The sentence for a key that is not one of `known`: the closest known key
 * when it is at most two edits away or `key` (3+ characters) is a prefix of
 * it, else the list of known keys. `Keys` is any range of C strings or
 * string_views. */
template <typename Keys>
std::string unknown_key_message(std::string_view key, const Keys& known) {
  std::string message = "unknown key '" + std::string(key) + "'";
  std::string_view best;
  std::size_t best_distance = 3;
  for (std::string_view k : known) {
    const std::size_t d = edit_distance(key, k);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  if (best.empty() && key.size() >= 3) {
    for (std::string_view k : known) {
      if (k.substr(0, key.size()) == key) {
        best = k;
        break;
      }
    }
  }
  if (!best.empty()) return message + " (did you mean '" + std::string(best) + "'?)";
  message += " (known keys:";
  for (std::string_view k : known) message += " " + std::string(k);
  return message + ")";
}

/* A duration written as in zctl.yaml: numbers with units ms, s, m, h,
 * combinable ("500ms", "10s", "1m30s", "1.5s"). Milliseconds, or nullopt
 * when the text is not such a duration. */
inline std::optional<std::int64_t> parse_duration_ms(std::string_view s) {
  if (s.empty()) return std::nullopt;
  double ms = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t start = i;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    const std::string_view number = s.substr(start, i - start);
    const std::size_t unit_start = i;
    while (i < s.size() && s[i] >= 'a' && s[i] <= 'z') ++i;
    const std::string_view unit = s.substr(unit_start, i - unit_start);
    if (number.empty() || number.size() > 12 || std::count(number.begin(), number.end(), '.') > 1 ||
        number.front() == '.' || number.back() == '.') {
      return std::nullopt;
    }
    double scale = 0;
    if (unit == "ms") {
      scale = 1.0;
    } else if (unit == "s") {
      scale = 1000.0;
    } else if (unit == "m") {
      scale = 60000.0;
    } else if (unit == "h") {
      scale = 3600000.0;
    } else {
      return std::nullopt;
    }
    ms += std::stod(std::string(number)) * scale;
  }
  return static_cast<std::int64_t>(ms);
}

}  // namespace zctl::sdk

#endif /* ZCTL_SINK_CONFIG_HPP */
