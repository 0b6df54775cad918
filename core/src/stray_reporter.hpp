// Reports stray connections -- the log line and the connection/stray event
// -- on a thread of its own. The mesh thread only counts the stray, hands
// over what it knows and closes the socket, so a burst of connections
// reaching their deadline together is closed at the deadline, and joins
// keep getting turns, instead of each close waiting for the formatting,
// journaling and logging of the reports before it.
//
// Threads: report() from any thread (the mesh thread); the reporter's own
// thread logs and emits to the EventBus, in the order reported. That thread
// runs at a lower CPU priority (nice +10): in a burst the closes at the
// deadline come first and the reports follow, delayed but never dropped.
// Lifecycle: construct -> start() -> report()... -> stop(), which reports
// everything still queued before it joins: nothing handed over is lost.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "zctl/core/config.hpp"

namespace zctl {

class EventBus;

// What the mesh thread knew of the connection when its grace period ended.
struct StrayReport {
  boost::asio::ip::tcp::endpoint remote;
  boost::asio::ip::tcp::endpoint local;
  std::chrono::system_clock::time_point connected_at;
  std::string_view pending_step;  // a static name: "tls_handshake", "hello", ...
  std::optional<uint8_t> protocol_version;
  std::string node_id;  // empty: the peer never said
  uint64_t bytes_in = 0;
};

class StrayReporter {
 public:
  StrayReporter(EventBus& bus, StrayConfig config);
  ~StrayReporter();
  StrayReporter(const StrayReporter&) = delete;
  StrayReporter& operator=(const StrayReporter&) = delete;

  void start();
  // Takes every report out of `reports` (left empty), in order: one lock
  // and one wake-up for a whole batch of expiries.
  void report(std::vector<StrayReport>& reports);
  // The same, but never waits: false, taking nothing, while the reporter
  // holds the lock. The reporter runs at a lower priority and may be
  // preempted holding it; the mesh thread must not wait on that.
  bool try_report(std::vector<StrayReport>& reports);
  void stop();

 private:
  void run();
  void take(std::vector<StrayReport>& reports, std::unique_lock<std::mutex>& lock);
  void publish(const StrayReport& report);

  EventBus& bus_;
  const StrayConfig config_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<StrayReport> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace zctl
