// Allocates event sequence numbers that are never reused, across restarts
// and crashes.
//
// The file <data_dir>/seq records a reservation: numbers up to `reserved`
// may have been handed out. A clean close() also records the last number
// used, so the next run continues contiguously; after a crash the next run
// starts above the reservation (a gap, never a reuse).
//
// Not thread-safe: the EventBus calls it under its own lock.
#pragma once

#include <cstdint>
#include <string>

namespace zctl {

class SeqStore {
 public:
  static constexpr uint64_t kDefaultBlock = 1'000'000;

  // Throws std::runtime_error naming the file when it cannot be read or written.
  explicit SeqStore(std::string path, uint64_t block = kDefaultBlock);
  ~SeqStore();
  SeqStore(const SeqStore&) = delete;
  SeqStore& operator=(const SeqStore&) = delete;

  uint64_t next();                      // the next number, persisting a new reservation when needed
  uint64_t last() const { return next_ - 1; }  // 0 before the first event ever
  bool recovered_from_crash() const { return recovered_from_crash_; }
  void close();                         // records a clean stop; idempotent

 private:
  void write_state(uint64_t reserved, bool clean);

  std::string path_;
  uint64_t block_;
  uint64_t next_ = 1;
  uint64_t reserved_ = 0;
  bool recovered_from_crash_ = false;
  bool closed_ = false;
};

}  // namespace zctl
