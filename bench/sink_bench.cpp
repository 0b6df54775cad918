// Throughput of one sink plugin through the real host: SinkHost, the sink's
// queue, batching, retries, asynchronous completion and, with --spool, the
// spool on disk. The events are realistic stray-connection events built
// before the clock starts; the clock stops when the host has counted every
// event delivered (or failed).
//
//   zctl_bench_sink --plugin NAME --config JSON [--events N] [--batch B]
//                   [--spool DIR] [--plugin-dir DIR] [--timeout SECONDS]
//
// Prints one JSON line: plugin, events, batch, spooled, seconds,
// events_per_s, delivered, failed, dropped. Exit 1 when not every event was
// delivered within the timeout. bench/sinks.py runs it against real
// receivers next to a baseline client.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "stray_event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"
#include "zctl/core/seq_store.hpp"
#include "zctl/core/sink_host.hpp"

using namespace zctl;
using Clock = std::chrono::steady_clock;

namespace {

EventPtr stray_event(uint64_t seq) {
  auto e = std::make_shared<Event>();
  e->seq = seq;
  e->event_namespace = "connection";
  e->event_type = "stray";
  e->time = std::chrono::system_clock::now();
  e->json = serialize_event("connection", "stray", "bench-node", e->time, seq, bench::stray_fields(seq));
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  std::string plugin, config = "{}", spool, plugin_dir = ZCTL_PLUGIN_DIR;
  uint64_t n = 1000000;
  uint32_t batch = 500;
  double timeout = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--plugin") plugin = value;
    else if (flag == "--config") config = value;
    else if (flag == "--events") n = std::stoull(value);
    else if (flag == "--batch") batch = static_cast<uint32_t>(std::stoul(value));
    else if (flag == "--spool") spool = value;
    else if (flag == "--plugin-dir") plugin_dir = value;
    else if (flag == "--timeout") timeout = std::stod(value);
    else {
      std::cerr << "unknown option " << flag << "\n";
      return 2;
    }
  }
  if (plugin.empty()) {
    std::cerr << "usage: zctl_bench_sink --plugin NAME --config JSON [--events N] [--batch B] [--spool DIR]\n";
    return 2;
  }
  // A pool cycled through: building a million events would measure malloc.
  std::vector<EventPtr> pool;
  for (uint64_t i = 1; i <= 4096; ++i) pool.push_back(stray_event(i));

  // The host's own sink/* announcements go to a journal, not to the sink.
  const std::string scratch = std::filesystem::temp_directory_path() / ("zctl-bench-sink-" + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);
  MetricsRegistry metrics;
  SeqStore seq(scratch + "/seq");
  Journal journal(1000);
  EventBus bus("bench-node", seq, journal, metrics);
  PluginHost plugins({plugin_dir});
  SinkHost sinks(plugins, metrics, bus);
  SinkConfig sink;
  sink.name = "bench";
  sink.plugin = plugin;
  sink.config_json = config;
  sink.queue.max_events = 100000;
  sink.queue.when_full = WhenFull::block;
  sink.queue.block_timeout = std::chrono::seconds(60);
  sink.queue.batch_max = batch;
  sink.retry.initial = std::chrono::milliseconds(10);
  sink.retry.max = std::chrono::milliseconds(200);
  if (!spool.empty()) {
    std::filesystem::remove_all(spool);
    sink.spool.dir = spool;
    sink.spool.max_bytes = 4ull << 30;
  }
  try {
    sinks.start({sink});
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    std::filesystem::remove_all(scratch);
    return 1;
  }
  const auto start = Clock::now();
  for (uint64_t i = 0; i < n; ++i) sinks.consume(pool[i % pool.size()]);
  const auto give_up = start + std::chrono::duration<double>(timeout);
  SinkStatus status;
  for (;;) {
    status = sinks.status()[0];
    if (status.delivered + status.failed + status.dropped >= n || Clock::now() > give_up) break;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  sinks.stop(std::chrono::seconds(5));
  if (!spool.empty()) std::filesystem::remove_all(spool);
  std::filesystem::remove_all(scratch);
  std::printf("{\"plugin\":\"%s\",\"events\":%llu,\"batch\":%u,\"spooled\":%s,\"seconds\":%.3f,\"events_per_s\":%.0f,"
              "\"delivered\":%llu,\"failed\":%llu,\"dropped\":%llu}\n",
              plugin.c_str(), static_cast<unsigned long long>(n), batch, spool.empty() ? "false" : "true", seconds,
              static_cast<double>(status.delivered) / seconds, static_cast<unsigned long long>(status.delivered),
              static_cast<unsigned long long>(status.failed), static_cast<unsigned long long>(status.dropped));
  return status.delivered == n ? 0 : 1;
}
