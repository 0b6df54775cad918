#include "zctl/core/event.hpp"

#include <array>
#include <ctime>

#include "zctl/core/detail/json_text.hpp"

namespace zctl {

namespace {

// localtime_r takes a lock and reads the zone; events arrive far more often
// than once a second, so each thread keeps the formatted seconds it saw last.
// Four slots, by second: a stray event formats its connection's start (the
// grace period ago) and its own time, which in one slot would evict each
// other on every event.
struct SecondCache {
  std::time_t second = -1;
  char date_time[20] = {};  // "YYYY-MM-DDTHH:MM:SS"
  char offset[16] = {};     // "+HH:MM"
};

const SecondCache& cached_second(std::time_t second) {
  thread_local std::array<SecondCache, 4> caches;
  SecondCache& cache = caches[static_cast<size_t>(second) % caches.size()];
  if (cache.second != second) {
    std::tm local{};
    localtime_r(&second, &local);
    std::strftime(cache.date_time, sizeof cache.date_time, "%Y-%m-%dT%H:%M:%S", &local);
    const long offset_minutes = local.tm_gmtoff / 60;
    const int abs_minutes = static_cast<int>((offset_minutes < 0 ? -offset_minutes : offset_minutes) % (24 * 60));
    std::snprintf(cache.offset, sizeof cache.offset, "%c%02d:%02d", offset_minutes < 0 ? '-' : '+',
                  abs_minutes / 60, abs_minutes % 60);
    cache.second = second;
  }
  return cache;
}

template <typename Out>
void append_rfc3339(Out& out, std::chrono::system_clock::time_point time) {
  const auto ns_since_epoch =
      std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
  std::time_t second = static_cast<std::time_t>(ns_since_epoch / 1000000000);
  long nanos = static_cast<long>(ns_since_epoch % 1000000000);
  if (nanos < 0) {  // before 1970: floor, not truncate
    nanos += 1000000000;
    --second;
  }
  const SecondCache& cache = cached_second(second);
  char frac[11];
  frac[0] = '.';
  for (int i = 9; i >= 1; --i) {
    frac[i] = static_cast<char>('0' + nanos % 10);
    nanos /= 10;
  }
  out.append(cache.date_time, 19);
  out.append(frac, 10);
  out.append(cache.offset, 6);
}

}  // namespace

std::string format_rfc3339(std::chrono::system_clock::time_point time) {
  std::string out;
  out.reserve(36);
  append_rfc3339(out, time);
  return out;
}

std::string serialize_event(std::string_view event_namespace, std::string_view event_type,
                            std::string_view source_id, std::chrono::system_clock::time_point time,
                            uint64_t seq, const EventFields& fields) {
  // Composed in place, then copied once into an exactly sized string.
  InlineBuffer<640> out;
  out.append(std::string_view("{\"namespace\":\""));
  out.append(event_namespace);
  out.append(std::string_view("\",\"eventType\":\""));
  out.append(event_type);
  out.append(std::string_view("\",\"event_src_id\":"));
  json::append_string(out, source_id);
  out.append(std::string_view(",\"timestamp\":\""));
  append_rfc3339(out, time);
  out.append(std::string_view("\",\"seq\":"));
  json::append_integer(out, seq);
  out.append(fields.json_members());
  out.push_back('}');
  return std::string(out.view());
}

}  // namespace zctl
