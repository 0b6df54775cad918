// Events: the one thing every part of zctl produces or consumes.
//
// An Event is immutable once built and shared by pointer between the
// journal, every sink queue and every watch stream, so its JSON is
// serialised exactly once and every consumer sees the same bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/detail/json_text.hpp"
#include "zctl/core/inline_buffer.hpp"

namespace zctl {

struct Event {
  uint64_t seq = 0;
  std::string event_namespace;  // "cluster", "connection", "node", "sink"
  std::string event_type;       // e.g. "state.has_leader"
  std::chrono::system_clock::time_point time;
  std::string json;  // the complete object, no trailing newline
};

using EventPtr = std::shared_ptr<const Event>;

// The fields an event carries after the envelope, in insertion order.
// Keys (like namespaces and types) are identifiers written in our code --
// letters, digits, '_', '.', '-' -- and are not escaped; values are.
// Values are serialised as they are added, so building an event costs one
// growing string instead of a node per field.
class EventFields {
 public:
  EventFields& add(std::string_view k, std::string_view value) {
    key(k);
    json::append_string(members_, value);
    return *this;
  }
  EventFields& add(std::string_view k, const char* value) { return add(k, std::string_view(value)); }
  EventFields& add(std::string_view k, const std::string& value) { return add(k, std::string_view(value)); }
  EventFields& add(std::string_view k, bool value) {
    key(k);
    members_.append(value ? std::string_view("true") : std::string_view("false"));
    return *this;
  }
  EventFields& add(std::string_view k, int64_t value) {
    key(k);
    json::append_integer(members_, value);
    return *this;
  }
  EventFields& add(std::string_view k, uint64_t value) {
    key(k);
    json::append_integer(members_, value);
    return *this;
  }
  EventFields& add(std::string_view k, int value) { return add(k, static_cast<int64_t>(value)); }
  EventFields& add(std::string_view k, unsigned value) { return add(k, static_cast<uint64_t>(value)); }
  EventFields& add(std::string_view k, double value) {
    key(k);
    json::append_double(members_, value);
    return *this;
  }
  EventFields& add_null(std::string_view k) {
    key(k);
    members_.append(std::string_view("null"));
    return *this;
  }
  // `json_text` must be one complete JSON value (array, object, ...).
  EventFields& add_raw(std::string_view k, std::string_view json_text) {
    key(k);
    members_.append(json_text);
    return *this;
  }

  // The members so far, each as `,"key":value`.
  std::string_view json_members() const { return members_.view(); }

 private:
  // Keys are identifiers chosen by our code, so they are copied, not escaped.
  void key(std::string_view k) {
    members_.append(",\"", 2);
    members_.append(k);
    members_.append("\":", 2);
  }
  InlineBuffer<384> members_;  // a typical event's fields fit without allocating
};

// RFC 3339 with nanoseconds and the local UTC offset,
// e.g. "2025-01-10T13:54:48.151522421-05:00". Thread-safe.
std::string format_rfc3339(std::chrono::system_clock::time_point time);

// Builds the complete event JSON: envelope (namespace, eventType,
// event_src_id, timestamp, seq) followed by `fields`.
std::string serialize_event(std::string_view event_namespace, std::string_view event_type,
                            std::string_view source_id, std::chrono::system_clock::time_point time,
                            uint64_t seq, const EventFields& fields);

}  // namespace zctl
