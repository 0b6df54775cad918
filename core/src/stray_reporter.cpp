#include "stray_reporter.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "net_address.hpp"
#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"

namespace zctl {

namespace {
constexpr int kReporterNiceIncrement = 10;
}  // namespace

StrayReporter::StrayReporter(EventBus& bus, StrayConfig config) : bus_(bus), config_(std::move(config)) {}

StrayReporter::~StrayReporter() { stop(); }

void StrayReporter::start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "mesh-strays");
    // Lower than the mesh thread, so that with both CPUs busy in a flood the
    // closes keep their deadlines; raising a nice value needs no privilege,
    // and a failure only costs that ordering.
    const auto tid = static_cast<id_t>(gettid());
    errno = 0;
    const int nice = getpriority(PRIO_PROCESS, tid);  // a thread starts at its creator's
    if (errno == 0) setpriority(PRIO_PROCESS, tid, std::min(nice + kReporterNiceIncrement, 19));
    run();
  });
}

void StrayReporter::report(std::vector<StrayReport>& reports) {
  std::unique_lock lock(mutex_);
  take(reports, lock);
}

bool StrayReporter::try_report(std::vector<StrayReport>& reports) {
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  take(reports, lock);
  return true;
}

void StrayReporter::take(std::vector<StrayReport>& reports, std::unique_lock<std::mutex>& lock) {
  if (queue_.empty()) {
    queue_.swap(reports);
  } else {
    queue_.insert(queue_.end(), std::make_move_iterator(reports.begin()), std::make_move_iterator(reports.end()));
  }
  lock.unlock();
  reports.clear();
  wake_.notify_one();
}

void StrayReporter::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void StrayReporter::run() {
  std::vector<StrayReport> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything reported
      batch.swap(queue_);
    }
    for (const auto& report : batch) publish(report);
    batch.clear();
  }
}

void StrayReporter::publish(const StrayReport& r) {
  const std::string remote = format_endpoint(r.remote);
  // The log line first: whoever sees the event may look for it next.
  if (config_.action != StrayAction::none) {
    log_message(config_.log_level,
                "mesh: stray connection from " + remote + ": no join within " +
                    format_duration(config_.grace_period) + " (stalled at " + std::string(r.pending_step) + ", " +
                    std::to_string(r.bytes_in) + " bytes in)" +
                    (config_.action == StrayAction::disconnect ? "; disconnecting" : "; keeping it open"));
  }
  EventFields fields;
  fields.add("remoteAddr", remote)
      .add("localAddr", format_endpoint(r.local))
      .add("connectedAt", format_rfc3339(r.connected_at))
      .add("pendingStep", r.pending_step);
  if (r.protocol_version) {
    fields.add("protocolVersion", static_cast<int64_t>(*r.protocol_version));
  } else {
    fields.add_null("protocolVersion");
  }
  if (!r.node_id.empty()) fields.add("nodeId", r.node_id);
  fields.add("graceMs", static_cast<int64_t>(config_.grace_period.count()))
      .add("action", to_string(config_.action))
      .add("bytesIn", r.bytes_in);
  bus_.emit("connection", "stray", fields);
}

}  // namespace zctl
