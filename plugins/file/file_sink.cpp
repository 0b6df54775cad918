// The `file` sink: every event as one JSON line, size-based rotation, reopen on SIGHUP.
// Options and their defaults are documented in README.md and zctl-sink-plugin(7).
//
// Design notes
//   - One writev() per IOV_MAX/2 events straight from the host's event bytes (json, "\n" pairs):
//     no copy into a staging buffer and no allocation once the iovec vector has grown.
//   - A batch is all or nothing: if a write or (with fsync) a sync fails, the bytes of that batch
//     already written are truncated away again, so the host's retry neither duplicates lines nor
//     leaves a torn one.
//   - Rotation happens between batches, never inside one, so a file only exceeds max_size_mb when
//     a single batch is larger than that.
//   - All calls except the constructor/destructor come from the sink's single worker thread; no
//     locking is needed.
#include <zctl/sink.hpp>
#include <zctl/sink_config.hpp>

#include "plugin_config.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using zctl::sdk::Status;
using Clock = std::chrono::steady_clock;

enum class FsyncMode { never, batch, interval };

struct FileSinkConfig {
  std::string path;
  uint64_t max_bytes = 100ull << 20;  // max_size_mb * MiB; 0 = never rotate
  uint32_t max_backups = 5;
  FsyncMode fsync = FsyncMode::never;
  uint32_t fsync_interval_ms = 1000;
  mode_t mode = 0640;
};

constexpr const char* kKeys[] = {"path", "max_size_mb", "max_backups", "fsync",
                                 "fsync_interval_ms", "mode"};
constexpr double kMaxSizeMbLimit = 1024.0 * 1024.0;  // 1 TiB
constexpr uint32_t kMaxBackupsLimit = 1000;
constexpr uint32_t kMaxFsyncIntervalMs = 3600 * 1000;
constexpr auto kRotationBackoff = std::chrono::seconds(30);

std::string errno_text(int err) { return std::system_category().message(err); }

[[noreturn]] void unknown_key(std::string_view key) {
  throw std::invalid_argument(zctl::sdk::unknown_key_message(key, kKeys));
}

mode_t parse_mode(std::string_view s) {
  const bool ok = (s.size() == 3 || s.size() == 4) &&
                  std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '7'; }) &&
                  (s.size() == 3 || s[0] == '0');
  if (!ok)
    throw std::invalid_argument("'mode' must be an octal permission string from \"000\" to "
                                "\"0777\", such as \"0640\"; got \"" + std::string(s) + "\"");
  mode_t mode = 0;
  for (char c : s) mode = static_cast<mode_t>(mode * 8 + static_cast<mode_t>(c - '0'));
  return mode;
}

FileSinkConfig parse_config(const std::string& json) {
  const rapidjson::Document doc = zctl::plugins::parse_config_object(json);

  FileSinkConfig cfg;
  bool have_path = false;
  bool have_interval = false;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string_view key(it->name.GetString(), it->name.GetStringLength());
    const rapidjson::Value& v = it->value;
    if (key == "path") {
      if (!v.IsString() || v.GetStringLength() == 0)
        throw std::invalid_argument("'path' must be a non-empty string");
      cfg.path.assign(v.GetString(), v.GetStringLength());
      if (cfg.path.find('\0') != std::string::npos)
        throw std::invalid_argument("'path' must not contain a NUL character");
      if (cfg.path.back() == '/') throw std::invalid_argument("'path' names a directory: " + cfg.path);
      have_path = true;
    } else if (key == "max_size_mb") {
      if (!v.IsNumber() || !(v.GetDouble() >= 0.0) || v.GetDouble() > kMaxSizeMbLimit)
        throw std::invalid_argument("'max_size_mb' must be a number from 0 (never rotate) to 1048576");
      const double bytes = std::round(v.GetDouble() * 1048576.0);
      cfg.max_bytes = v.GetDouble() > 0.0 ? std::max<uint64_t>(1, static_cast<uint64_t>(bytes)) : 0;
    } else if (key == "max_backups") {
      if (!v.IsUint() || v.GetUint() > kMaxBackupsLimit)
        throw std::invalid_argument("'max_backups' must be an integer from 0 to 1000");
      cfg.max_backups = v.GetUint();
    } else if (key == "fsync") {
      const std::string_view s = v.IsString() ? std::string_view(v.GetString(), v.GetStringLength())
                                              : std::string_view();
      if (s == "never") cfg.fsync = FsyncMode::never;
      else if (s == "batch") cfg.fsync = FsyncMode::batch;
      else if (s == "interval") cfg.fsync = FsyncMode::interval;
      else throw std::invalid_argument("'fsync' must be one of \"never\", \"batch\", \"interval\"");
    } else if (key == "fsync_interval_ms") {
      if (!v.IsUint() || v.GetUint() == 0 || v.GetUint() > kMaxFsyncIntervalMs)
        throw std::invalid_argument("'fsync_interval_ms' must be an integer from 1 to 3600000");
      cfg.fsync_interval_ms = v.GetUint();
      have_interval = true;
    } else if (key == "mode") {
      if (!v.IsString())
        throw std::invalid_argument("'mode' must be a string such as \"0640\" (JSON has no octal "
                                    "numbers)");
      cfg.mode = parse_mode(std::string_view(v.GetString(), v.GetStringLength()));
    } else {
      unknown_key(key);
    }
  }
  if (!have_path) throw std::invalid_argument("'path' is required");
  if (have_interval && cfg.fsync != FsyncMode::interval)
    throw std::invalid_argument("'fsync_interval_ms' only applies with fsync: \"interval\"");
  return cfg;
}

// Creates every missing directory above `path` (mode 0750, minus the umask).
bool make_parent_dirs(const std::string& path, std::string& err) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return true;
  const std::string dir = path.substr(0, slash);
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0750) != 0 && errno != EEXIST) {
      err = "cannot create directory " + prefix + ": " + errno_text(errno);
      return false;
    }
  }
  return true;
}

class FileSink final : public zctl::sdk::Sink {
 public:
  static constexpr const char* config_schema = R"({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "zctl file sink",
  "type": "object",
  "additionalProperties": false,
  "required": ["path"],
  "properties": {
    "path": {"type": "string", "minLength": 1, "description": "file to append JSON lines to"},
    "max_size_mb": {"type": "number", "minimum": 0, "maximum": 1048576, "default": 100,
                    "description": "rotate before the file would exceed this size (MiB); 0 = never"},
    "max_backups": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 5,
                    "description": "rotated files kept as path.1 ... path.N"},
    "fsync": {"enum": ["never", "batch", "interval"], "default": "never",
              "description": "when to fsync besides flush, rotation, reopen and close"},
    "fsync_interval_ms": {"type": "integer", "minimum": 1, "maximum": 3600000, "default": 1000,
                          "description": "with fsync: interval, the least time between fsyncs"},
    "mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0640",
             "description": "permissions of a file the sink creates"}
  }
})";

  static void validate(const std::string& config_json) { (void)parse_config(config_json); }

  FileSink(const std::string& config_json, zctl::sdk::Host host)
      : cfg_(parse_config(config_json)), host_(host) {
    std::string err;
    if (!open_file(err)) throw zctl::sdk::TransientError(err);
  }

  ~FileSink() override { close_file(); }

  Status emit(const zctl::sdk::Batch& batch) override {
    if (batch.empty()) return Status::ok();
    std::string err;
    if (fd_ < 0 && !open_file(err)) return Status::retry(err);

    iov_.clear();
    iov_.reserve(batch.size() * 2);
    uint64_t bytes = 0;
    for (const zctl_sink_event* e = batch.raw_events(), *end = e + batch.size(); e != end; ++e) {
      iov_.push_back(iovec{const_cast<char*>(e->json), e->json_len});
      iov_.push_back(iovec{const_cast<char*>(&kNewline), 1});
      bytes += e->json_len + 1u;
    }

    if (cfg_.max_bytes > 0 && rotatable_) rotate_if_needed(bytes);
    if (fd_ < 0 && !open_file(err)) return Status::retry(err);

    uint64_t written = 0;
    if (!write_iovecs(written, err)) {
      undo(written);
      return Status::retry(err);
    }
    size_ += written;
    dirty_ = true;

    const bool sync_now =
        cfg_.fsync == FsyncMode::batch ||
        (cfg_.fsync == FsyncMode::interval &&
         Clock::now() - last_sync_ >= std::chrono::milliseconds(cfg_.fsync_interval_ms));
    if (sync_now && !sync(err)) {
      undo(written);
      return Status::retry(err);
    }
    return Status::ok();
  }

  Status flush(uint32_t /*timeout_ms*/) override {
    std::string err;
    if (!sync(err)) return Status::retry(err);
    return Status::ok();
  }

  // Healthy while the file is open; when it is not (a failed open, reopen or rotation), health
  // tries to open it so the sink recovers without waiting for the next batch.
  Status health() override {
    std::string err;
    if (fd_ < 0 && !open_file(err)) return Status::retry(err);
    return Status::ok();
  }

  Status reopen() override {
    close_file();
    rotation_blocked_until_ = Clock::time_point();
    std::string err;
    if (!open_file(err)) return Status::retry(err);
    return Status::ok();
  }

 private:
  static constexpr char kNewline = '\n';

  bool open_file(std::string& err) {
    const char* path = cfg_.path.c_str();
    int fd = ::open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
    for (int attempt = 0; fd < 0 && errno == ENOENT && attempt < 3; ++attempt) {
      if (!make_parent_dirs(cfg_.path, err)) return false;
      fd = ::open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_CREAT | O_EXCL, cfg_.mode);
      if (fd >= 0) {
        (void)::fchmod(fd, cfg_.mode);  // the configured mode exactly, not mode & ~umask
      } else if (errno == EEXIST) {
        fd = ::open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
      }
    }
    if (fd < 0) {
      err = "cannot open " + cfg_.path + ": " + errno_text(errno);
      return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      err = "cannot stat " + cfg_.path + ": " + errno_text(errno);
      ::close(fd);
      return false;
    }
    fd_ = fd;
    size_ = static_cast<uint64_t>(st.st_size);
    // Never rename a device or a FIFO (e.g. path: /dev/stdout).
    rotatable_ = S_ISREG(st.st_mode);
    dirty_ = false;
    last_sync_ = Clock::now();
    return true;
  }

  void close_file() {
    if (fd_ < 0) return;
    std::string err;
    if (!sync(err)) host_.warn(err);
    ::close(fd_);
    fd_ = -1;
  }

  bool sync(std::string& err) {
    if (fd_ < 0 || !dirty_) return true;
    if (::fdatasync(fd_) != 0 && errno != EINVAL) {  // EINVAL: not syncable, e.g. a pipe
      err = "fsync of " + cfg_.path + " failed: " + errno_text(errno);
      return false;
    }
    dirty_ = false;
    last_sync_ = Clock::now();
    return true;
  }

  bool write_iovecs(uint64_t& written, std::string& err) {
    std::size_t idx = 0;
    const std::size_t count = iov_.size();
    while (idx < count) {
      const int n_iov = static_cast<int>(std::min<std::size_t>(count - idx, IOV_MAX));
      const ssize_t n = ::writev(fd_, &iov_[idx], n_iov);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = "write to " + cfg_.path + " failed: " + errno_text(errno);
        return false;
      }
      if (n == 0) {
        err = "write to " + cfg_.path + " made no progress";
        return false;
      }
      written += static_cast<uint64_t>(n);
      // Skip what was written; a partial write leaves a partly consumed iovec.
      auto left = static_cast<std::size_t>(n);
      while (idx < count && left >= iov_[idx].iov_len) left -= iov_[idx++].iov_len;
      if (left > 0) {
        iov_[idx].iov_base = static_cast<char*>(iov_[idx].iov_base) + left;
        iov_[idx].iov_len -= left;
      }
    }
    return true;
  }

  // Removes the last `written` bytes (a failed batch) so a retry does not duplicate them.
  void undo(uint64_t written) {
    if (written == 0 || fd_ < 0 || !rotatable_) return;
    struct stat st {};
    if (::fstat(fd_, &st) == 0 && static_cast<uint64_t>(st.st_size) >= written) {
      const off_t keep = st.st_size - static_cast<off_t>(written);
      if (::ftruncate(fd_, keep) == 0) {
        size_ = static_cast<uint64_t>(keep);
        return;
      }
    }
    host_.warn("cannot remove a partly written batch from " + cfg_.path + ": " +
               errno_text(errno) + "; a retry may duplicate lines");
  }

  void rotate_if_needed(uint64_t incoming) {
    if (size_ == 0 || size_ + incoming <= cfg_.max_bytes) return;
    if (Clock::now() < rotation_blocked_until_) return;
    // Someone may have truncated the file (logrotate copytruncate): trust the file, not size_.
    struct stat st {};
    if (::fstat(fd_, &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
    if (size_ == 0 || size_ + incoming <= cfg_.max_bytes) return;

    close_file();
    const std::string& p = cfg_.path;
    bool ok = true;
    if (cfg_.max_backups == 0) {
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
        host_.error("cannot remove " + p + " for rotation: " + errno_text(errno));
        ok = false;
      }
    } else {
      for (uint32_t i = cfg_.max_backups - 1; i >= 1; --i) {
        const std::string from = p + "." + std::to_string(i);
        const std::string to = p + "." + std::to_string(i + 1);
        if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT)
          host_.warn("cannot rename " + from + " to " + to + ": " + errno_text(errno));
      }
      const std::string first = p + ".1";
      if (::rename(p.c_str(), first.c_str()) != 0 && errno != ENOENT) {
        host_.error("cannot rotate " + p + " to " + first + ": " + errno_text(errno) +
                    "; appending to the current file, next attempt in 30s");
        ok = false;
      }
    }
    if (!ok) rotation_blocked_until_ = Clock::now() + kRotationBackoff;
    std::string err;
    if (!open_file(err)) host_.error(err);  // emit retries the open and reports it
  }

  FileSinkConfig cfg_;
  zctl::sdk::Host host_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool rotatable_ = true;
  bool dirty_ = false;
  Clock::time_point last_sync_{};
  Clock::time_point rotation_blocked_until_{};
  std::vector<iovec> iov_;
};

}  // namespace

ZCTL_SINK_PLUGIN(FileSink, "file", "1.0.0", "Appends events as JSON lines to a file, with size rotation",
                 ZCTL_SINK_CAP_REOPEN);
