// Event pipeline throughput: emit -> seq -> JSON -> journal -> sink queue ->
// worker -> file plugin -> bytes in the page cache, against a baseline loop
// that fwrite()s the same number of pre-serialised lines of the same size.
// Also reports journal memory per entry, and the cost of a sink spool
// (spool.dir): the same pipeline with every event written to the spool
// and read back, against the pipeline without one.
//
//   zctl_bench_pipeline [--events N] [--runs R] [--dir DIR] [--pipeline-only 1|spooled]
//
// --pipeline-only runs just the pipeline once, without or with a spool
// (for profiling it alone).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "stray_event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/seq_store.hpp"
#include "zctl/core/sink_host.hpp"

using namespace zctl;
using bench::stray_fields;
using Clock = std::chrono::steady_clock;

namespace {

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

double baseline_fwrite(const std::vector<std::string>& lines, const std::string& path) {
  const auto start = Clock::now();
  FILE* f = std::fopen(path.c_str(), "w");
  for (const auto& line : lines) std::fwrite(line.data(), 1, line.size(), f);
  std::fclose(f);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// `prepared`: the caller's fields are built before the clock starts (a pool
// cycled through), so the figure is emit() to bytes on disk; otherwise each
// event's fields are built inside the timed loop too.
double pipeline(uint64_t n, const std::string& dir, uint64_t& bytes_out, bool prepared, bool spooled = false) {
  std::vector<EventFields> pool;
  if (prepared) {
    pool.reserve(4096);
    for (uint64_t i = 0; i < 4096; ++i) pool.push_back(stray_fields(i));
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  SeqStore seq(dir + "/seq");
  Journal journal(100000);
  MetricsRegistry metrics;
  EventBus bus("bench-node", seq, journal, metrics);
  PluginHost plugins({ZCTL_PLUGIN_DIR});
  SinkHost sinks(plugins, metrics, bus);
  SinkConfig sink;
  sink.name = "events";
  sink.plugin = "file";
  sink.config_json = "{\"path\":\"" + dir + "/events.jsonl\",\"max_size_mb\":0}";
  sink.queue.max_events = 100000;
  sink.queue.when_full = WhenFull::block;
  sink.queue.block_timeout = std::chrono::seconds(30);
  sink.queue.batch_max = 1000;
  if (spooled) sink.spool.dir = dir + "/spool";
  sinks.start({sink});
  bus.attach(&sinks);
  const auto start = Clock::now();
  if (prepared) {
    for (uint64_t i = 0; i < n; ++i) bus.emit("connection", "stray", pool[i % pool.size()]);
  } else {
    for (uint64_t i = 0; i < n; ++i) bus.emit("connection", "stray", stray_fields(i));
  }
  while (sinks.status()[0].delivered < n) std::this_thread::sleep_for(std::chrono::microseconds(200));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  bus.detach(&sinks);
  sinks.stop(std::chrono::seconds(5));
  bytes_out = std::filesystem::file_size(dir + "/events.jsonl");
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n = 1000000;
  int runs = 3;
  std::string dir = "/tmp/zctl-bench-pipeline";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--events") n = std::stoull(argv[i + 1]);
    else if (flag == "--runs") runs = std::stoi(argv[i + 1]);
    else if (flag == "--dir") dir = argv[i + 1];
    else if (flag == "--pipeline-only") {
      uint64_t bytes = 0;
      const double t = pipeline(n, dir, bytes, true, std::string(argv[i + 1]) == "spooled");
      std::printf("pipeline emit->file    %.3f s  %.2f M events/s\n", t, n / t / 1e6);
      return 0;
    }
  }

  // Journal memory first, while the heap is fresh: fill a journal with
  // realistic events and measure the RSS it adds.
  const size_t journal_entries = 100000;
  const long rss_before = rss_kib();
  double per_entry = 0;
  {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    SeqStore seq(dir + "/seq");
    Journal journal(journal_entries);
    MetricsRegistry metrics;
    EventBus bus("bench-node", seq, journal, metrics);
    for (size_t i = 0; i < journal_entries; ++i) bus.emit("connection", "stray", stray_fields(i));
    per_entry = static_cast<double>(rss_kib() - rss_before) * 1024.0 / journal_entries;
  }
  std::filesystem::remove_all(dir);

  // Baseline input: the same events, serialised up front.
  std::vector<std::string> lines;
  lines.reserve(n);
  const auto now = std::chrono::system_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    lines.push_back(serialize_event("connection", "stray", "bench-node", now, i + 1, stray_fields(i)) + "\n");
  }
  uint64_t baseline_bytes = 0;
  for (const auto& l : lines) baseline_bytes += l.size();

  std::vector<double> base_times, pipe_times, built_times, spool_times;
  uint64_t pipe_bytes = 0;
  for (int r = 0; r < runs; ++r) {
    std::filesystem::create_directories(dir);
    base_times.push_back(baseline_fwrite(lines, dir + "-baseline.jsonl"));
    pipe_times.push_back(pipeline(n, dir, pipe_bytes, true));
    built_times.push_back(pipeline(n, dir, pipe_bytes, false));
    uint64_t spooled_bytes = 0;
    spool_times.push_back(pipeline(n, dir, spooled_bytes, true, true));
    if (spooled_bytes != pipe_bytes) {
      std::cerr << "spooled pipeline wrote " << spooled_bytes << " bytes, without a spool " << pipe_bytes << "\n";
      return 1;
    }
    std::filesystem::remove(dir + "-baseline.jsonl");
  }
  lines.clear();
  lines.shrink_to_fit();
  std::sort(base_times.begin(), base_times.end());
  std::sort(pipe_times.begin(), pipe_times.end());
  std::sort(built_times.begin(), built_times.end());
  std::sort(spool_times.begin(), spool_times.end());
  const double base = base_times[base_times.size() / 2];
  const double pipe = pipe_times[pipe_times.size() / 2];
  const double built = built_times[built_times.size() / 2];
  const double spooled = spool_times[spool_times.size() / 2];
  if (pipe_bytes < baseline_bytes * 9 / 10) {
    std::cerr << "pipeline wrote " << pipe_bytes << " bytes, expected about " << baseline_bytes << "\n";
    return 1;
  }

  std::filesystem::remove_all(dir);

  std::printf("events                 %llu (%.0f bytes each)\n", static_cast<unsigned long long>(n),
              static_cast<double>(baseline_bytes) / static_cast<double>(n));
  std::printf("baseline fwrite        %.3f s  %.2f M lines/s\n", base, n / base / 1e6);
  std::printf("pipeline emit->file    %.3f s  %.2f M events/s  ratio %.2f\n", pipe, n / pipe / 1e6, base / pipe);
  std::printf("  + building fields    %.3f s  %.2f M events/s  ratio %.2f\n", built, n / built / 1e6, base / built);
  std::printf("  with a sink spool     %.3f s  %.2f M events/s  ratio %.2f, %.2f of the pipeline without\n", spooled,
              n / spooled / 1e6, base / spooled, pipe / spooled);
  std::printf("(ratios: pipeline/fwrite, medians of %d runs)\n", runs);
  std::printf("journal memory         %.0f bytes per entry (%zu entries)\n", per_entry, journal_entries);
  std::printf("{\"events\":%llu,\"baseline_per_s\":%.0f,\"pipeline_per_s\":%.0f,\"ratio\":%.3f,"
              "\"with_fields_per_s\":%.0f,\"with_fields_ratio\":%.3f,\"spooled_per_s\":%.0f,\"spooled_vs_unspooled\":%.3f,"
              "\"journal_bytes_per_entry\":%.0f}\n",
              static_cast<unsigned long long>(n), n / base, n / pipe, base / pipe, n / built, base / built, n / spooled,
              pipe / spooled, per_entry);
  return 0;
}
