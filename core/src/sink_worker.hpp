// One configured sink: a bounded queue, a worker thread that owns the plugin
// instance, and the per-sink metrics.
//
// Threads: offer() runs on the emitting thread (under the EventBus lock);
// the worker thread makes every plugin call after start(); take_report()
// and the status getters run on the supervisor thread. The worker's state
// is shared with its thread, so a thread stuck in a hung plugin can be
// abandoned at shutdown without freeing memory under it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "zctl/core/config.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/plugin_host.hpp"

namespace zctl {

// What the supervisor should announce since its last look.
struct SinkReport {
  std::optional<std::string> became_unhealthy;  // reason
  bool recovered = false;
  std::vector<std::pair<std::string, uint64_t>> dropped;  // reason -> count
};

class SinkWorker {
 public:
  using Clock = std::chrono::steady_clock;

  // Batches a plugin with ZCTL_SINK_CAP_PIPELINE may have pending at once.
  // Four left the kafka sink at 0.85-0.89 of kcat's rate (it waited for
  // acknowledgements with 4 000 events out); sixteen measured 0.95-1.09.
  static constexpr size_t kPipelineDepth = 16;

  SinkWorker(SinkConfig config, std::shared_ptr<LoadedPlugin> plugin, MetricsRegistry& metrics);
  ~SinkWorker();

  // Creates the first instance on the calling thread. Throws SinkSetupError
  // when the plugin rejects the config; a retryable failure is left to the
  // worker thread, which keeps trying with backoff.
  void start();

  // Filter, then queue under the when_full policy. Returns false when the
  // event was dropped (counted; announced later by the supervisor).
  bool offer(const EventPtr& event);

  void request_reopen();
  // Swaps the plugin instance between batches; the queue is kept.
  void replace(SinkConfig config, std::shared_ptr<LoadedPlugin> plugin);

  // Drains until the deadline, then flushes and destroys the instance.
  // Returns false when the worker was stuck in the plugin and was abandoned.
  bool stop(Clock::time_point deadline);
  // The two halves of stop(), so several workers drain at the same time.
  void request_stop(Clock::time_point deadline);
  bool wait_stopped(Clock::time_point give_up);
  // How long past the drain deadline a plugin call in progress may take.
  static constexpr auto kStopGrace = std::chrono::seconds(2);

  SinkReport take_report(Clock::time_point now);

  const std::string& name() const;
  std::string plugin_name() const;
  std::string config_fingerprint() const;
  bool up() const;
  std::string down_reason() const;
  uint64_t queued() const;  // in memory and in the spool
  SpoolConfig spool_config() const;
  uint64_t delivered() const;
  uint64_t failed() const;
  uint64_t dropped() const;

  struct State;  // shared with the worker thread; defined in the source

 private:
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// Fingerprint of everything in a SinkConfig, to tell a changed sink on reload.
std::string sink_config_fingerprint(const SinkConfig& config);

}  // namespace zctl
