#include "dead_letter.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "zctl/core/detail/json_text.hpp"
#include "zctl/core/log.hpp"

namespace zctl {

DeadLetterFile::DeadLetterFile(std::string sink, std::string path, uint64_t max_bytes)
    : sink_(std::move(sink)), path_(std::move(path)), max_bytes_(max_bytes) {
  open_file();
}

DeadLetterFile::~DeadLetterFile() {
  if (fd_ >= 0) ::close(fd_);
}

void DeadLetterFile::open_file() {
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) throw std::runtime_error("cannot open dead-letter file " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  size_ = static_cast<uint64_t>(st.st_size);
}

void DeadLetterFile::reopen() {
  try {
    open_file();
  } catch (const std::exception& e) {
    log_error("sink " + sink_ + ": " + e.what() + " (still writing to the previous file)");
  }
}

bool DeadLetterFile::write(const std::deque<EventPtr>& events, std::string_view result, std::string_view reason,
                           uint32_t attempts, std::string& error) {
  std::string prefix = "{\"sink\":";
  json::append_string(prefix, sink_);
  prefix += ",\"result\":";
  json::append_string(prefix, result);
  prefix += ",\"reason\":";
  json::append_string(prefix, reason);
  prefix += ",\"attempts\":";
  json::append_integer(prefix, static_cast<uint64_t>(attempts));
  prefix += ",\"at\":";
  json::append_string(prefix, format_rfc3339(std::chrono::system_clock::now()));
  prefix += ",\"event\":";
  std::string out;
  for (const auto& e : events) {
    out += prefix;
    out += e->json;
    out += "}\n";
  }
  if (size_ > 0 && size_ + out.size() > max_bytes_) {
    const std::string backup = path_ + ".1";
    if (::rename(path_.c_str(), backup.c_str()) != 0) {
      log_warn("sink " + sink_ + ": cannot move dead-letter file to " + backup + ": " + std::strerror(errno));
    } else {
      try {
        open_file();
      } catch (const std::exception& e) {
        error = e.what();
        return false;
      }
    }
  }
  // O_APPEND and one write per batch: lines of concurrent writers never mix.
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t w = ::write(fd_, out.data() + done, out.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      error = "cannot write dead-letter file " + path_ + ": " + std::strerror(errno);
      return false;
    }
    done += static_cast<size_t>(w);
  }
  size_ += out.size();
  return true;
}

}  // namespace zctl
