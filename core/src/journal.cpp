#include "zctl/core/journal.hpp"

#include <stdexcept>

namespace zctl {

Journal::Journal(size_t capacity) : ring_(capacity == 0 ? 1 : capacity) {}

void Journal::append(EventPtr event) {
  std::lock_guard lock(mutex_);
  if (count_ > 0 && event->seq != ring_[(head_ + count_ - 1) % ring_.size()]->seq + 1) {
    throw std::logic_error("journal: seq must follow the last appended one");
  }
  if (count_ < ring_.size()) {
    ring_[(head_ + count_) % ring_.size()] = std::move(event);
    ++count_;
  } else {
    ring_[head_] = std::move(event);
    head_ = (head_ + 1) % ring_.size();
  }
}

uint64_t Journal::read_from(uint64_t from_seq, size_t max, std::vector<EventPtr>& out) const {
  std::lock_guard lock(mutex_);
  if (count_ == 0) return 0;
  const uint64_t oldest = ring_[head_]->seq;
  // The bus numbers events of one run contiguously, so the position is direct.
  size_t start = 0;
  if (from_seq > oldest) {
    const uint64_t delta = from_seq - oldest;
    start = delta < count_ ? static_cast<size_t>(delta) : count_;
  }
  for (size_t i = start; i < count_ && max > 0; ++i, --max) {
    out.push_back(ring_[(head_ + i) % ring_.size()]);
  }
  return oldest;
}

uint64_t Journal::oldest_seq() const {
  std::lock_guard lock(mutex_);
  return count_ == 0 ? 0 : ring_[head_]->seq;
}

uint64_t Journal::newest_seq() const {
  std::lock_guard lock(mutex_);
  return count_ == 0 ? 0 : ring_[(head_ + count_ - 1) % ring_.size()]->seq;
}

size_t Journal::size() const {
  std::lock_guard lock(mutex_);
  return count_;
}

}  // namespace zctl
