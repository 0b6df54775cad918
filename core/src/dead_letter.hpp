// A sink's dead-letter file (`dead_letter.path`): one JSON line per event
// the sink gave up on (rejected by the plugin, or out of attempts), with
// why, so an operator can inspect and replay them.
//
// Line: {"sink":..,"result":"rejected"|"retries_exhausted","reason":..,
//        "attempts":N,"at":RFC3339,"event":<the event's own JSON>}
// When the file would grow past max_bytes it moves to <path>.1 (replacing
// an older one) and a new file starts.
//
// Threads: the sink's worker thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "zctl/core/event.hpp"

namespace zctl {

class DeadLetterFile {
 public:
  // Opens (creating) the file for appending; throws std::runtime_error.
  DeadLetterFile(std::string sink, std::string path, uint64_t max_bytes);
  ~DeadLetterFile();
  DeadLetterFile(const DeadLetterFile&) = delete;
  DeadLetterFile& operator=(const DeadLetterFile&) = delete;

  // Appends one line per event; returns false (and says why in `error`)
  // when the file cannot be written.
  bool write(const std::deque<EventPtr>& events, std::string_view result, std::string_view reason,
             uint32_t attempts, std::string& error);
  // logrotate: starts a new file at the same path.
  void reopen();

  const std::string& path() const { return path_; }

 private:
  void open_file();

  std::string sink_;
  std::string path_;
  uint64_t max_bytes_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace zctl
