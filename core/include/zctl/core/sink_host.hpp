// Runs the configured sinks.
//
// Each sink gets its own SinkWorker (own thread, bounded queue, batching,
// retries with backoff and jitter, metrics, health), so a slow, failing or
// hung plugin never delays another sink, the journal or the admin API. A
// supervisor thread announces health changes and drops as `sink/*` events
// (aggregated, never one per dropped event) and detects hung plugin calls.
//
// Lifecycle: construct -> start() -> attach to the EventBus -> ... ->
// detach -> stop(). reload() may be called between start() and stop() from
// any one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "zctl/core/config.hpp"
#include "zctl/core/event_bus.hpp"

namespace zctl {

class MetricsRegistry;
class PluginHost;
class SinkWorker;

// A sink that cannot start: unknown plugin, refused plugin, invalid config.
class SinkSetupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SinkStatus {
  std::string name;
  std::string plugin;
  bool up = false;
  std::string reason;  // why not up
  uint64_t queued = 0;
  uint64_t delivered = 0;
  uint64_t failed = 0;
  uint64_t dropped = 0;
};

class SinkHost : public EventConsumer {
 public:
  SinkHost(const PluginHost& plugins, MetricsRegistry& metrics, EventBus& bus);
  ~SinkHost() override;

  // Loads, validates and creates every sink; throws SinkSetupError listing
  // every sink that cannot start. Nothing is left running on failure.
  void start(const std::vector<SinkConfig>& sinks);

  void consume(const EventPtr& event) override;

  // SIGHUP: unchanged sinks reopen their files/connections; changed sinks
  // swap their plugin instance keeping their queue; new ones start; removed
  // ones drain and stop. Returns one message per sink that could not be
  // (re)configured; those keep their previous configuration.
  std::vector<std::string> reload(const std::vector<SinkConfig>& sinks);

  // Drains queues until `deadline` passes, flushes and destroys instances.
  // Returns false when a worker stuck inside its plugin had to be abandoned:
  // its thread still uses the MetricsRegistry, which must then outlive this.
  bool stop(Duration drain_deadline);

  std::vector<SinkStatus> status() const;

 private:
  std::shared_ptr<SinkWorker> make_worker(const SinkConfig& config);
  void supervise();
  void announce(const std::vector<std::shared_ptr<SinkWorker>>& workers, std::chrono::steady_clock::time_point now);

  const PluginHost& plugins_;
  MetricsRegistry& metrics_;
  EventBus& bus_;
  mutable std::shared_mutex workers_mutex_;
  std::vector<std::shared_ptr<SinkWorker>> workers_;
  std::mutex supervisor_mutex_;
  std::condition_variable supervisor_wake_;
  bool stopping_ = false;
  bool all_stopped_ = true;
  std::thread supervisor_;
};

}  // namespace zctl
