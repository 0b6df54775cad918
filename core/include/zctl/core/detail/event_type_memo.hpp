// A small memo keyed by (namespace, eventType): few distinct types exist, so
// a linear scan over "ns/type" keys beats hashing on the event hot path.
// Not thread-safe; the owner provides the locking.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zctl::detail {

template <typename Value>
class EventTypeMemo {
 public:
  const Value* find(std::string_view event_namespace, std::string_view event_type) const {
    const size_t key_size = event_namespace.size() + 1 + event_type.size();
    for (const auto& [key, value] : entries_) {
      if (key.size() == key_size && key.compare(0, event_namespace.size(), event_namespace) == 0 &&
          key.compare(event_namespace.size() + 1, std::string::npos, event_type) == 0) {
        return &value;
      }
    }
    return nullptr;
  }

  const Value& insert(std::string_view event_namespace, std::string_view event_type, Value value) {
    std::string key;
    key.reserve(event_namespace.size() + 1 + event_type.size());
    key.append(event_namespace).append("/").append(event_type);
    return entries_.emplace_back(std::move(key), std::move(value)).second;
  }

  void clear() { entries_.clear(); }

 private:
  std::vector<std::pair<std::string, Value>> entries_;
};

}  // namespace zctl::detail
