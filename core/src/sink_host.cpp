#include "zctl/core/sink_host.hpp"

#include <algorithm>
#include <map>

#include "sink_worker.hpp"
#include "zctl/core/log.hpp"
#include "zctl/core/plugin_host.hpp"

namespace zctl {

namespace {

constexpr auto kSupervisePeriod = std::chrono::milliseconds(100);

// Loads the plugin and lets it validate the config, without creating anything.
std::shared_ptr<LoadedPlugin> load_and_validate(const PluginHost& plugins, const SinkConfig& config) {
  auto loaded = plugins.load_by_name(config.plugin);
  if (auto* error = std::get_if<PluginError>(&loaded)) {
    throw SinkSetupError("sink '" + config.name + "': " + error->message());
  }
  auto plugin = std::get<std::shared_ptr<LoadedPlugin>>(loaded);
  char err[512] = {};
  int32_t rc;
  try {
    rc = plugin->descriptor().validate_config(config.config_json.c_str(), err, sizeof err);
  } catch (...) {
    rc = -1;
    std::snprintf(err, sizeof err, "validate_config let an exception escape");
  }
  err[sizeof err - 1] = '\0';
  if (rc != ZCTL_SINK_OK) {
    throw SinkSetupError("sink '" + config.name + "' (plugin " + config.plugin +
                         "): invalid config: " + (err[0] ? err : "rejected without a reason"));
  }
  return plugin;
}

}  // namespace

SinkHost::SinkHost(const PluginHost& plugins, MetricsRegistry& metrics, EventBus& bus)
    : plugins_(plugins), metrics_(metrics), bus_(bus) {}

SinkHost::~SinkHost() { stop(Duration(0)); }

std::shared_ptr<SinkWorker> SinkHost::make_worker(const SinkConfig& config) {
  auto worker = std::make_shared<SinkWorker>(config, load_and_validate(plugins_, config), metrics_);
  worker->start();
  return worker;
}

void SinkHost::start(const std::vector<SinkConfig>& sinks) {
  std::vector<std::shared_ptr<SinkWorker>> started;
  std::string errors;
  for (const auto& config : sinks) {
    try {
      started.push_back(make_worker(config));
    } catch (const SinkSetupError& e) {
      errors += (errors.empty() ? "" : "\n") + std::string(e.what());
    }
  }
  if (!errors.empty()) {
    for (auto& worker : started) worker->stop(SinkWorker::Clock::now());
    throw SinkSetupError(errors);
  }
  {
    std::unique_lock lock(workers_mutex_);
    workers_ = std::move(started);
  }
  supervisor_ = std::thread([this] { supervise(); });
}

void SinkHost::consume(const EventPtr& event) {
  std::shared_lock lock(workers_mutex_);
  for (const auto& worker : workers_) worker->offer(event);
}

std::vector<std::string> SinkHost::reload(const std::vector<SinkConfig>& sinks) {
  std::vector<std::string> errors;
  std::vector<std::shared_ptr<SinkWorker>> next;
  std::vector<std::shared_ptr<SinkWorker>> retired;
  std::map<std::string, std::shared_ptr<SinkWorker>> current;
  {
    std::shared_lock lock(workers_mutex_);
    for (const auto& w : workers_) current[w->name()] = w;
  }
  for (const auto& config : sinks) {
    auto it = current.find(config.name);
    try {
      if (it == current.end()) {
        next.push_back(make_worker(config));
        log_info("sink " + config.name + ": added");
        continue;
      }
      auto worker = it->second;
      current.erase(it);
      next.push_back(worker);
      const SpoolConfig spool = worker->spool_config();
      if (spool.dir != config.spool.dir || spool.max_bytes != config.spool.max_bytes) {
        // The spool holds undelivered events in order; moving it under a
        // running worker could lose or reorder them.
        throw SinkSetupError("sink '" + config.name +
                             "': spool settings cannot change on reload; restart the node to apply them");
      }
      if (worker->config_fingerprint() == sink_config_fingerprint(config)) {
        worker->request_reopen();
      } else {
        worker->replace(config, load_and_validate(plugins_, config));
      }
    } catch (const SinkSetupError& e) {
      errors.emplace_back(e.what());
    }
  }
  for (auto& [name, worker] : current) retired.push_back(worker);
  {
    std::unique_lock lock(workers_mutex_);
    workers_ = std::move(next);
  }
  for (auto& worker : retired) {
    log_info("sink " + worker->name() + ": removed; draining its queue");
    worker->stop(SinkWorker::Clock::now() + std::chrono::seconds(5));
  }
  return errors;
}

bool SinkHost::stop(Duration drain_deadline) {
  {
    std::lock_guard lock(supervisor_mutex_);
    if (stopping_ && !supervisor_.joinable()) return all_stopped_;
    stopping_ = true;
  }
  supervisor_wake_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  std::vector<std::shared_ptr<SinkWorker>> workers;
  {
    std::unique_lock lock(workers_mutex_);
    workers.swap(workers_);
  }
  // Stop all at once so the deadline is shared, not multiplied.
  const auto deadline = SinkWorker::Clock::now() + drain_deadline;
  for (auto& worker : workers) worker->request_stop(deadline);
  for (auto& worker : workers) all_stopped_ = worker->wait_stopped(deadline + SinkWorker::kStopGrace) && all_stopped_;
  return all_stopped_;
}

void SinkHost::supervise() {
  std::unique_lock lock(supervisor_mutex_);
  while (!stopping_) {
    supervisor_wake_.wait_for(lock, kSupervisePeriod, [&] { return stopping_; });
    lock.unlock();
    std::vector<std::shared_ptr<SinkWorker>> workers;
    {
      std::shared_lock workers_lock(workers_mutex_);
      workers = workers_;
    }
    const auto now = SinkWorker::Clock::now();
    try {
      announce(workers, now);
    } catch (const std::exception& e) {
      // The only thread-level boundary here: log, keep supervising.
      log_error(std::string("sink supervisor: ") + e.what());
    }
    lock.lock();
  }
}

void SinkHost::announce(const std::vector<std::shared_ptr<SinkWorker>>& workers, SinkWorker::Clock::time_point now) {
  for (auto& worker : workers) {
    SinkReport report = worker->take_report(now);
    // Emitting here, not on the worker, keeps a worker from ever waiting
    // on the bus while a producer waits on that worker's queue.
    if (report.became_unhealthy) {
      log_warn("sink " + worker->name() + " is unhealthy: " + *report.became_unhealthy);
      bus_.emit("sink", "unhealthy", EventFields().add("sink", worker->name()).add("reason", *report.became_unhealthy));
    }
    if (report.recovered) {
      log_info("sink " + worker->name() + " recovered");
      bus_.emit("sink", "recovered", EventFields().add("sink", worker->name()));
    }
    for (const auto& [reason, count] : report.dropped) {
      bus_.emit("sink", "dropped", EventFields().add("sink", worker->name()).add("reason", reason).add("count", count));
    }
  }
}

std::vector<SinkStatus> SinkHost::status() const {
  std::shared_lock lock(workers_mutex_);
  std::vector<SinkStatus> out;
  for (const auto& w : workers_) {
    out.push_back(SinkStatus{w->name(), w->plugin_name(), w->up(), w->down_reason(), w->queued(), w->delivered(),
                             w->failed(), w->dropped()});
  }
  return out;
}

}  // namespace zctl
