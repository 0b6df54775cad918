#include "sink_spool.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "zctl/core/log.hpp"

namespace zctl {

namespace {

constexpr uint32_t kRecordMagic = 0x5a535231;  // "ZSR1"
constexpr uint32_t kCursorMagic = 0x5a534331;  // "ZSC1"
constexpr uint64_t kHeaderBytes = 12;          // magic, payload length, crc
constexpr uint64_t kFixedPayloadBytes = 8 + 8 + 2 + 2;
constexpr uint64_t kReadChunk = 1 << 20;

// CRC-32C (Castagnoli): the SSE 4.2 instruction where the CPU has it, a
// table otherwise; both give the same values, so a spool moves between
// machines.
uint32_t crc32c_table_entry(uint32_t byte) {
  uint32_t crc = byte;
  for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  return crc;
}

}  // namespace

namespace detail {

uint32_t crc32c_portable(const char* data, size_t len) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) t[i] = crc32c_table_entry(i);
    return t;
  }();
  uint32_t crc = ~0u;
  for (size_t i = 0; i < len; ++i) crc = table[(crc ^ static_cast<uint8_t>(data[i])) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const char* data, size_t len) {
  uint64_t crc = 0xffffffffu;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    crc = __builtin_ia32_crc32di(crc, word);
  }
  auto crc32 = static_cast<uint32_t>(crc);
  for (; i < len; ++i) crc32 = __builtin_ia32_crc32qi(crc32, static_cast<unsigned char>(data[i]));
  return ~crc32;
}
#endif

uint32_t crc32c(const char* data, size_t len) {
#if defined(__x86_64__)
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return crc32c_sse42(data, len);
#endif
  return crc32c_portable(data, len);
}

}  // namespace detail

namespace {

uint32_t checksum(const char* data, size_t len) { return detail::crc32c(data, len); }

template <typename T>
void put(std::string& out, T value) {
  char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  out.append(raw, sizeof(T));
}

template <typename T>
T get(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string segment_name(uint64_t start) {
  char name[32];
  std::snprintf(name, sizeof name, "%020llu.seg", static_cast<unsigned long long>(start));
  return name;
}

bool parse_segment_name(const std::string& name, uint64_t& start) {
  if (name.size() != 24 || name.compare(20, 4, ".seg") != 0) return false;
  if (!std::all_of(name.begin(), name.begin() + 20, [](char c) { return c >= '0' && c <= '9'; })) return false;
  start = std::stoull(name.substr(0, 20));
  return true;
}

}  // namespace

uint64_t SinkSpool::record_size(const Event& e) {
  return kHeaderBytes + kFixedPayloadBytes + e.event_namespace.size() + e.event_type.size() + e.json.size();
}

SinkSpool::SinkSpool(std::string dir, uint64_t max_bytes, uint64_t resident_max_events)
    : dir_(std::move(dir)),
      max_bytes_(max_bytes),
      resident_max_events_(std::max<uint64_t>(resident_max_events, 1)),
      segment_bytes_(std::clamp<uint64_t>(max_bytes / 4, 64ull << 10, 64ull << 20)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw SpoolError("cannot create spool directory " + dir_ + ": " + ec.message());
  const std::string cursor_path = dir_ + "/cursor";
  cursor_fd_ = ::open(cursor_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (cursor_fd_ < 0) throw SpoolError(errno_text("cannot open", cursor_path));
  // Two writers would interleave records and fight over the cursor.
  if (::flock(cursor_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string error = errno == EWOULDBLOCK ? "spool directory " + dir_ + " is in use by another sink or process"
                                                   : errno_text("cannot lock", cursor_path);
    ::close(cursor_fd_);
    throw SpoolError(error);
  }
  try {
    recover();
  } catch (...) {
    for (auto& [start, segment] : segments_) ::close(segment.fd);
    ::close(cursor_fd_);
    throw;
  }
}

SinkSpool::~SinkSpool() {
  for (auto& [start, segment] : segments_) ::close(segment.fd);
  if (cursor_fd_ >= 0) ::close(cursor_fd_);
}

void SinkSpool::open_segment(uint64_t start, bool create) {
  const std::string path = dir_ + "/" + segment_name(start);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
  if (fd < 0) throw SpoolError(errno_text(create ? "cannot create" : "cannot open", path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string error = errno_text("cannot stat", path);
    ::close(fd);
    throw SpoolError(error);
  }
  segments_[start] = Segment{fd, static_cast<uint64_t>(st.st_size)};
}

void SinkSpool::recover() {
  std::vector<uint64_t> starts;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    uint64_t start = 0;
    if (entry.is_regular_file() && parse_segment_name(entry.path().filename().string(), start)) starts.push_back(start);
  }
  std::sort(starts.begin(), starts.end());
  for (const uint64_t start : starts) open_segment(start, false);

  char raw[16];
  const ssize_t got = ::pread(cursor_fd_, raw, sizeof raw, 0);
  bool cursor_valid = false;
  if (got == static_cast<ssize_t>(sizeof raw) && get<uint32_t>(raw) == kCursorMagic &&
      get<uint32_t>(raw + 4) == checksum(raw + 8, 8)) {
    committed_ = get<uint64_t>(raw + 8);
    cursor_valid = true;
  } else if (got > 0) {
    // Redelivering everything spooled is better than losing any of it.
    log_warn("spool " + dir_ + ": the cursor file is damaged; delivering every spooled event again");
  }
  if (segments_.empty()) {
    tail_ = committed_;
    publish();
    return;
  }
  const uint64_t first = segments_.begin()->first;
  if (!cursor_valid || committed_ < first) committed_ = first;

  // Segments must follow each other without gaps; anything after a gap or
  // a bad record cannot be trusted to be whole.
  uint64_t count = 0;
  std::string problem;
  auto cut_at = segments_.end();
  for (auto it = segments_.begin(); it != segments_.end(); ++it) {
    const uint64_t end = it->first + it->second.size;
    auto next = std::next(it);
    if (next != segments_.end() && next->first != end) {
      problem = "segment " + segment_name(next->first) + " does not follow " + segment_name(it->first);
      cut_at = next;
      break;
    }
  }
  const uint64_t data_end =
      cut_at == segments_.end() ? segments_.rbegin()->first + segments_.rbegin()->second.size
                                : std::prev(cut_at)->first + std::prev(cut_at)->second.size;
  if (committed_ > data_end) committed_ = data_end;  // everything was delivered
  uint64_t pos = committed_;
  while (pos < data_end) {
    Record record;
    std::string bad;
    if (!read_record(pos, record, &bad)) {
      problem = bad;
      break;
    }
    ++count;
    pos = record.end;
  }
  uint64_t discarded = 0;
  for (auto it = cut_at; it != segments_.end();) {
    discarded += it->second.size;
    it = remove_segment(it);
  }
  if (pos < data_end) discarded += cut_from(pos);
  buffer_len_ = 0;
  if (discarded > 0) {
    discarded_bytes_ = discarded;
    log_error("spool " + dir_ + ": " + (problem.empty() ? std::string("unreadable data") : problem) + "; cut off " +
              std::to_string(discarded) + " byte(s) after offset " + std::to_string(pos) +
              " (a write torn by a crash, or damage on disk)");
  }
  tail_ = pos;
  event_count_ = count;
  recovered_events_ = count;
  delete_consumed_segments();
  write_cursor();
  publish();
}

std::map<uint64_t, SinkSpool::Segment>::iterator SinkSpool::remove_segment(std::map<uint64_t, Segment>::iterator it) {
  ::close(it->second.fd);
  const std::string path = dir_ + "/" + segment_name(it->first);
  if (::unlink(path.c_str()) != 0) log_warn("spool " + dir_ + ": " + errno_text("cannot delete", path));
  return segments_.erase(it);
}

uint64_t SinkSpool::cut_from(uint64_t pos) {
  auto it = segment_at(pos);
  if (it == segments_.end()) return 0;
  uint64_t discarded = 0;
  for (auto later = std::next(it); later != segments_.end();) {
    discarded += later->second.size;
    later = remove_segment(later);
  }
  discarded += it->first + it->second.size - pos;
  if (::ftruncate(it->second.fd, static_cast<off_t>(pos - it->first)) != 0) {
    throw SpoolError(errno_text("cannot truncate", dir_ + "/" + segment_name(it->first)));
  }
  it->second.size = pos - it->first;
  tail_ = pos;
  buffer_len_ = 0;
  while (!resident_.empty() && resident_.back().end > pos) resident_.pop_back();
  return discarded;
}

std::map<uint64_t, SinkSpool::Segment>::iterator SinkSpool::segment_at(uint64_t pos) {
  auto it = segments_.upper_bound(pos);
  if (it == segments_.begin()) return segments_.end();
  return std::prev(it);
}

const char* SinkSpool::read_bytes(uint64_t pos, uint64_t len) {
  if (buffer_len_ > 0 && pos >= buffer_start_ && pos + len <= buffer_start_ + buffer_len_) {
    return buffer_.data() + (pos - buffer_start_);
  }
  auto it = segment_at(pos);
  if (it == segments_.end()) return nullptr;
  const uint64_t segment_end = it->first + it->second.size;
  if (pos + len > segment_end) return nullptr;
  const uint64_t n = std::min(segment_end - pos, std::max(len, kReadChunk));
  buffer_.resize(n);
  uint64_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(it->second.fd, buffer_.data() + done, n - done, static_cast<off_t>(pos - it->first + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      buffer_len_ = 0;
      return nullptr;
    }
    done += static_cast<uint64_t>(r);
  }
  buffer_start_ = pos;
  buffer_len_ = n;
  return buffer_.data();
}

std::deque<SinkSpool::Record>::const_iterator SinkSpool::resident_at(uint64_t pos) const {
  const auto it = std::lower_bound(resident_.begin(), resident_.end(), pos,
                                   [](const Record& r, uint64_t p) { return r.end <= p; });
  return it != resident_.end() && it->end - record_size(*it->event) == pos ? it : resident_.end();
}

bool SinkSpool::read_record(uint64_t pos, Record& out, std::string* problem) {
  // This process's own appends are still in memory.
  if (const auto resident = resident_at(pos); resident != resident_.end()) {
    out = *resident;
    return true;
  }
  const auto fail = [&](const std::string& why) {
    if (problem) *problem = why + " at offset " + std::to_string(pos);
    return false;
  };
  const char* header = read_bytes(pos, kHeaderBytes);
  if (!header) return fail("truncated record header");
  if (get<uint32_t>(header) != kRecordMagic) return fail("bad record magic");
  const uint32_t len = get<uint32_t>(header + 4);
  const uint32_t crc = get<uint32_t>(header + 8);
  if (len < kFixedPayloadBytes) return fail("record too short");
  const char* payload = read_bytes(pos + kHeaderBytes, len);
  if (!payload) return fail("truncated record");
  if (checksum(payload, len) != crc) return fail("record checksum mismatch");
  const uint16_t ns_len = get<uint16_t>(payload + 16);
  const uint16_t type_len = get<uint16_t>(payload + 18);
  if (kFixedPayloadBytes + ns_len + type_len > len) return fail("record fields overrun it");
  auto event = std::make_shared<Event>();
  event->seq = get<uint64_t>(payload);
  event->time = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(get<int64_t>(payload + 8))));
  const char* p = payload + kFixedPayloadBytes;
  event->event_namespace.assign(p, ns_len);
  event->event_type.assign(p + ns_len, type_len);
  event->json.assign(p + ns_len + type_len, len - kFixedPayloadBytes - ns_len - type_len);
  out.event = std::move(event);
  out.end = pos + kHeaderBytes + len;
  return true;
}

void SinkSpool::append(const EventPtr* events, size_t n) {
  if (n == 0) return;
  std::string out;
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) total += record_size(*events[i]);
  out.reserve(total);
  for (size_t i = 0; i < n; ++i) {
    const Event& e = *events[i];
    const size_t header_at = out.size();
    put<uint32_t>(out, kRecordMagic);
    put<uint32_t>(out, static_cast<uint32_t>(record_size(e) - kHeaderBytes));
    put<uint32_t>(out, 0);  // crc, below
    const size_t payload_at = out.size();
    put<uint64_t>(out, e.seq);
    put<int64_t>(out, std::chrono::duration_cast<std::chrono::nanoseconds>(e.time.time_since_epoch()).count());
    put<uint16_t>(out, static_cast<uint16_t>(e.event_namespace.size()));
    put<uint16_t>(out, static_cast<uint16_t>(e.event_type.size()));
    out += e.event_namespace;
    out += e.event_type;
    out += e.json;
    const uint32_t crc = checksum(out.data() + payload_at, out.size() - payload_at);
    std::memcpy(out.data() + header_at + 8, &crc, sizeof crc);
  }
  if (segments_.empty() || segments_.rbegin()->second.size >= segment_bytes_) open_segment(tail_, true);
  auto& [start, segment] = *segments_.rbegin();
  uint64_t done = 0;
  while (done < out.size()) {
    const ssize_t w = ::pwrite(segment.fd, out.data() + done, out.size() - done, static_cast<off_t>(segment.size + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string error = errno_text("cannot write", dir_ + "/" + segment_name(start));
      // Cut back, so the next append does not follow half a record.
      if (::ftruncate(segment.fd, static_cast<off_t>(segment.size)) != 0) {
        log_error("spool " + dir_ + ": " + errno_text("cannot truncate", segment_name(start)));
      }
      buffer_len_ = 0;
      throw SpoolError(error);
    }
    done += static_cast<uint64_t>(w);
  }
  segment.size += out.size();
  for (size_t i = 0; i < n; ++i) {
    tail_ += record_size(*events[i]);
    resident_.push_back(Record{events[i], tail_});
  }
  while (resident_.size() > resident_max_events_) resident_.pop_front();
  event_count_ += n;
  publish();
}

uint64_t SinkSpool::drop_oldest(uint64_t bytes) {
  uint64_t dropped = 0;
  while (!fits(bytes)) {
    const uint64_t from = in_flight_ ? skip_to_ : committed_;
    if (from >= tail_) break;
    Record record;
    if (!read_record(from, record, nullptr)) break;
    (in_flight_ ? skip_to_ : committed_) = record.end;
    --event_count_;
    ++dropped;
  }
  if (dropped > 0 && !in_flight_) {
    write_cursor();
    delete_consumed_segments();
  }
  publish();
  return dropped;
}

std::deque<EventPtr> SinkSpool::take_batch(size_t max) {
  if (in_flight_) {
    std::deque<EventPtr> again;
    for (uint64_t pos = committed_; pos < in_flight_end_;) {
      Record record;
      if (!read_record(pos, record, nullptr)) break;
      again.push_back(record.event);
      pos = record.end;
    }
    return again;
  }
  std::deque<EventPtr> batch;
  uint64_t pos = committed_;
  while (batch.size() < max && pos < tail_) {
    // A run of this process's own appends: walk them in memory.
    if (auto resident = resident_at(pos); resident != resident_.end()) {
      for (; resident != resident_.end() && batch.size() < max; ++resident) {
        batch.push_back(resident->event);
        pos = resident->end;
      }
      continue;
    }
    Record record;
    std::string problem;
    if (!read_record(pos, record, &problem)) {
      // Damaged after open() checked it (the disk, or someone else):
      // nothing past this point can be read, so deliver what came before.
      log_error("spool " + dir_ + ": " + problem + "; " + std::to_string(event_count_ - batch.size()) +
                " spooled event(s) from here on are unreadable and skipped");
      try {
        cut_from(pos);
      } catch (const SpoolError& e) {
        log_error("spool " + dir_ + ": " + e.what());
      }
      tail_ = pos;
      event_count_ = batch.size();
      break;
    }
    batch.push_back(record.event);
    pos = record.end;
  }
  if (!batch.empty()) {
    in_flight_ = true;
    in_flight_end_ = pos;
    skip_to_ = pos;
    in_flight_count_ = batch.size();
  }
  publish();
  return batch;
}

void SinkSpool::finish_batch() {
  if (!in_flight_) return;
  in_flight_ = false;
  committed_ = std::max(in_flight_end_, skip_to_);
  event_count_ -= in_flight_count_;
  while (!resident_.empty() && resident_.front().end <= committed_) resident_.pop_front();
  write_cursor();
  delete_consumed_segments();
  publish();
}

void SinkSpool::delete_consumed_segments() {
  while (segments_.size() > 1 && std::next(segments_.begin())->first <= committed_) remove_segment(segments_.begin());
}

void SinkSpool::write_cursor() {
  char raw[16];
  const uint32_t magic = kCursorMagic;
  std::memcpy(raw, &magic, 4);
  std::memcpy(raw + 8, &committed_, 8);
  const uint32_t crc = checksum(raw + 8, 8);
  std::memcpy(raw + 4, &crc, 4);
  // 16 bytes at offset 0 never straddle a page, so a crash leaves the old
  // or the new cursor, and a damaged one only means redelivery.
  if (::pwrite(cursor_fd_, raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) {
    log_error("spool " + dir_ + ": " + errno_text("cannot write", "cursor") + " (delivered events may be sent again)");
  }
}

uint64_t SinkSpool::live_bytes() const {
  const uint64_t skipped = in_flight_ && skip_to_ > in_flight_end_ ? skip_to_ - in_flight_end_ : 0;
  return tail_ - committed_ - skipped;
}

void SinkSpool::publish() {
  events_.store(event_count_, std::memory_order_relaxed);
  bytes_.store(live_bytes(), std::memory_order_relaxed);
}

}  // namespace zctl
