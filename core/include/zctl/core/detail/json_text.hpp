// Minimal append-only JSON text helpers for the event hot path, where a DOM
// or a generic writer would cost more than the event itself. Inline so that
// EventFields::add folds constant keys into plain stores.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace zctl::json {

// Appends `text` as a quoted JSON string with RFC 8259 escaping. Bytes >= 0x80
// pass through unchanged (callers hand us UTF-8).
namespace detail {
// 1 for bytes that need escaping in a JSON string: controls, '"' and '\\'.
struct EscapeTable {
  bool needs[256] = {};
  constexpr EscapeTable() {
    for (int c = 0; c < 0x20; ++c) needs[c] = true;
    needs[static_cast<unsigned char>('"')] = true;
    needs[static_cast<unsigned char>('\\')] = true;
  }
};
inline constexpr EscapeTable kEscape{};

// True when any of the 8 bytes in `w` needs escaping (SWAR: exact for the
// "any byte" question, which is all the caller asks).
inline bool word_needs_escape(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHighs = 0x8080808080808080ULL;
  const uint64_t below_space = (w - kOnes * 0x20) & ~w & kHighs;
  const uint64_t q = w ^ (kOnes * '"');
  const uint64_t quote = (q - kOnes) & ~q & kHighs;
  const uint64_t b = w ^ (kOnes * '\\');
  const uint64_t backslash = (b - kOnes) & ~b & kHighs;
  return (below_space | quote | backslash) != 0;
}
}  // namespace detail

// Output types: std::string or InlineBuffer (append(ptr, n), push_back(c)).

template <typename Out>
inline void append_string(Out& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t run_start = 0;
  size_t i = 0;
  // Most text needs no escaping: skip it a word at a time.
  while (i + 8 <= text.size()) {
    uint64_t w;
    std::memcpy(&w, text.data() + i, 8);
    if (detail::word_needs_escape(w)) break;
    i += 8;
  }
  if (i < text.size() && i + 8 > text.size() && text.size() >= 8) {
    // The tail as the last whole word, overlapping bytes already checked.
    uint64_t w;
    std::memcpy(&w, text.data() + text.size() - 8, 8);
    if (!detail::word_needs_escape(w)) i = text.size();
  }
  for (; i < text.size() && !detail::kEscape.needs[static_cast<unsigned char>(text[i])]; ++i) {
  }
  out.push_back('"');
  if (i == text.size()) {  // the common case: nothing to escape
    out.append(text.data(), text.size());
    out.push_back('"');
    return;
  }
  for (; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (!detail::kEscape.needs[c]) continue;
    out.append(text.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"': out.append("\\\"", 2); break;
      case '\\': out.append("\\\\", 2); break;
      case '\n': out.append("\\n", 2); break;
      case '\r': out.append("\\r", 2); break;
      case '\t': out.append("\\t", 2); break;
      default:
        out.append("\\u00", 4);
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xF]);
    }
  }
  out.append(text.data() + run_start, text.size() - run_start);
  out.push_back('"');
}

template <typename Out, typename Integer>
inline void append_integer(Out& out, Integer value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  (void)ec;
  out.append(buf, static_cast<size_t>(end - buf));
}

template <typename Out>
inline void append_double(Out& out, double value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  (void)ec;
  out.append(buf, static_cast<size_t>(end - buf));
}

inline std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_string(out, text);
  return out;
}

}  // namespace zctl::json
