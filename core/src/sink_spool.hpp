// A sink's on-disk FIFO of undelivered events (`spool.dir`), so events that
// cannot be delivered yet survive a restart or a `kill -9` of the node.
//
// Layout of the directory (one directory per sink; it must not be shared):
//   <20-digit offset>.seg  records; the name is the logical offset of the
//                          segment's first byte, so offsets grow across files
//   cursor                 the committed position: the first event that is
//                          not yet delivered, rejected or given up on
// A record is a 12-byte header (magic, payload length, CRC-32 of the
// payload) and the payload (seq, timestamp, namespace, type, event JSON).
//
// Durability: append() returns after write(2), so the records are in the
// kernel's page cache and survive the process being killed; a power loss
// may lose what the kernel had not written back yet. A record torn by a
// crash fails its CRC and is cut off, with what follows it, on open.
//
// Delivery is at-least-once: the cursor moves past a batch only after it
// is finished, so a crash in between delivers the batch again.
//
// Threads: one owner thread (the sink's worker) calls everything except
// events() and bytes(), which any thread may read.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "zctl/core/event.hpp"

namespace zctl {

class SpoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class SinkSpool {
 public:
  // Opens or creates `dir` and recovers what an earlier run left in it.
  // Up to `resident_max_events` of the events this process appends are
  // also kept in memory (the sink's queue.max_events), so a sink that
  // keeps up never reads its own spool back from disk.
  // Throws SpoolError when the directory cannot be used.
  SinkSpool(std::string dir, uint64_t max_bytes, uint64_t resident_max_events = 100000);
  ~SinkSpool();
  SinkSpool(const SinkSpool&) = delete;
  SinkSpool& operator=(const SinkSpool&) = delete;

  // What open() found: undelivered events from an earlier run, and bytes
  // cut off after a torn or corrupt record.
  uint64_t recovered_events() const { return recovered_events_; }
  uint64_t discarded_bytes() const { return discarded_bytes_; }

  // Bytes `event` takes in the spool.
  static uint64_t record_size(const Event& event);
  // Whether `bytes` more fit under max_bytes.
  bool fits(uint64_t bytes) const { return live_bytes() + bytes <= max_bytes_; }

  // Appends events[0..n) with one write. The caller checks fits() first;
  // appending never refuses. Throws SpoolError on an I/O error, after
  // cutting the segment back so nothing half-written stays.
  void append(const EventPtr* events, size_t n);

  // Discards the oldest events not in the batch in flight until `bytes`
  // more fit or nothing is left to discard; returns how many it discarded.
  uint64_t drop_oldest(uint64_t bytes);

  // Up to `max` of the oldest undelivered events, marked in flight; empty
  // when nothing is spooled. Only one batch is in flight at a time: a
  // second call before finish_batch() returns the same events again.
  std::deque<EventPtr> take_batch(size_t max);
  // The batch in flight is done with (delivered, rejected or given up on):
  // the cursor moves past it and fully consumed segments are deleted.
  void finish_batch();

  uint64_t events() const { return events_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  const std::string& dir() const { return dir_; }

 private:
  struct Segment {
    int fd = -1;
    uint64_t size = 0;
  };
  struct Record {
    EventPtr event;
    uint64_t end = 0;  // offset just past the record
  };

  void recover();
  // The record this process appended at `pos`, if it is still in memory.
  std::deque<Record>::const_iterator resident_at(uint64_t pos) const;
  bool read_record(uint64_t pos, Record& out, std::string* problem);
  const char* read_bytes(uint64_t pos, uint64_t len);
  std::map<uint64_t, Segment>::iterator segment_at(uint64_t pos);
  void open_segment(uint64_t start, bool create);
  void delete_consumed_segments();
  std::map<uint64_t, Segment>::iterator remove_segment(std::map<uint64_t, Segment>::iterator it);
  // Cuts everything from `pos` on (a damaged record); returns the bytes cut.
  uint64_t cut_from(uint64_t pos);
  void write_cursor();
  uint64_t live_bytes() const;
  void publish();

  std::string dir_;
  uint64_t max_bytes_;
  uint64_t resident_max_events_;
  uint64_t segment_bytes_;
  int cursor_fd_ = -1;
  std::map<uint64_t, Segment> segments_;  // by start offset; the last one is appended to
  uint64_t committed_ = 0;                // persisted in `cursor`
  uint64_t tail_ = 0;                     // end of the last record
  // The batch in flight spans [committed_, in_flight_end_); drop_oldest()
  // meanwhile discards from there on, up to skip_to_.
  bool in_flight_ = false;
  uint64_t in_flight_end_ = 0;
  uint64_t in_flight_count_ = 0;
  uint64_t skip_to_ = 0;
  uint64_t event_count_ = 0;  // records in [committed_, tail_) not skipped
  // Events appended by this process, newest last, so a healthy sink reads
  // its batches from memory; anything older comes from disk.
  std::deque<Record> resident_;
  // Read buffer over one segment.
  std::vector<char> buffer_;
  uint64_t buffer_start_ = 0;
  uint64_t buffer_len_ = 0;
  uint64_t recovered_events_ = 0;
  uint64_t discarded_bytes_ = 0;
  std::atomic<uint64_t> events_{0};
  std::atomic<uint64_t> bytes_{0};
};

namespace detail {
// CRC-32C of spool records: hardware where the CPU has it, else a table;
// the two always agree.
uint32_t crc32c(const char* data, size_t len);
uint32_t crc32c_portable(const char* data, size_t len);
}  // namespace detail

}  // namespace zctl
