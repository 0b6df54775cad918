// Bounded in-memory journal of the most recent events, in seq order.
// Thread-safe: one writer (the EventBus, under its lock) and any number of
// readers (watch streams on the admin thread).
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "zctl/core/event.hpp"

namespace zctl {

class Journal {
 public:
  explicit Journal(size_t capacity);

  void append(EventPtr event);  // seq must be the last appended + 1 (the bus numbers contiguously)

  // Appends to `out` up to `max` events with seq >= from_seq.
  // Returns the oldest seq the journal still holds (0 when empty), so the
  // caller can tell whether events before it were lost.
  uint64_t read_from(uint64_t from_seq, size_t max, std::vector<EventPtr>& out) const;

  uint64_t oldest_seq() const;  // 0 when empty
  uint64_t newest_seq() const;  // 0 when empty
  size_t size() const;
  size_t capacity() const { return ring_.size(); }

 private:
  mutable std::mutex mutex_;
  std::vector<EventPtr> ring_;
  size_t head_ = 0;  // index of the oldest entry
  size_t count_ = 0;
};

}  // namespace zctl
