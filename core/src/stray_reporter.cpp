#include "stray_reporter.hpp"

#include <pthread.h>

#include "zctl/core/event.hpp"
#include "zctl/core/event_bus.hpp"
#include "zctl/core/log.hpp"

namespace zctl {

StrayReporter::StrayReporter(EventBus& bus, StrayConfig config) : bus_(bus), config_(std::move(config)) {}

StrayReporter::~StrayReporter() { stop(); }

void StrayReporter::start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "mesh-strays");
    run();
  });
}

void StrayReporter::report(StrayReport report) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(report));
  }
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
  // The log line first: whoever sees the event may look for it next.
  if (config_.action != StrayAction::none) {
    log_message(config_.log_level,
                "mesh: stray connection from " + r.remote_addr + ": no join within " +
                    format_duration(config_.grace_period) + " (stalled at " + std::string(r.pending_step) + ", " +
                    std::to_string(r.bytes_in) + " bytes in)" +
                    (config_.action == StrayAction::disconnect ? "; disconnecting" : "; keeping it open"));
  }
  EventFields fields;
  fields.add("remoteAddr", r.remote_addr)
      .add("localAddr", r.local_addr)
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
